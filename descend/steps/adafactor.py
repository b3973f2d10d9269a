"""Adafactor's steps (Shazeer & Stern 2018): factored second moment, update clipping, relative step size."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .base import Shards, Transform, ema_


def _rms(tensor: Tensor, shards: Shards | None = None) -> float:
    """Root mean square over the whole parameter (all shards)."""
    squares = tensor.double().square().sum().reshape(1)
    numel = tensor.numel()
    if shards is not None:
        shards.sum(squares)
        numel = math.prod(shards.full_shape)
    return math.sqrt(squares.item() / numel) if numel else 0.0


@dataclass
class FactoredSecondMoment(Transform):
    """Adafactor's preconditioner (Shazeer & Stern 2018, Alg. 4 and 5): ``u ← u / √V̂``.

    With ``β̂₂ₜ = 1 − t^c`` (``c = decay_rate``) and ``G² + ε₁``:
    a tensor of two or more dims, ``n × m`` in its last two, keeps only the row
    and column averages ``R ← β̂₂ₜR + (1−β̂₂ₜ)·mean_cols(G²+ε₁)``,
    ``C ← β̂₂ₜC + (1−β̂₂ₜ)·mean_rows(G²+ε₁)`` and rebuilds
    ``V̂ = R Cᵀ / mean(R)`` (the paper's ``R Cᵀ / 1ᵀR`` written with averages);
    a vector or scalar keeps the full ``V ← β̂₂ₜV + (1−β̂₂ₜ)(G²+ε₁)``.
    State: ``n + m`` floats per matrix instead of ``n·m``.
    """

    stateful = True

    decay_rate: float
    eps1: float

    @staticmethod
    def factored(param: Tensor) -> bool:
        return param.dim() >= 2

    def init(self, param):
        if self.factored(param):
            return {
                "exp_avg_sq_row": param.new_zeros(param.shape[:-1]),
                "exp_avg_sq_col": param.new_zeros(param.shape[:-2] + param.shape[-1:]),
            }
        return {"exp_avg_sq": torch.zeros_like(param)}

    def state_keys(self, param):
        return ("exp_avg_sq_row", "exp_avg_sq_col") if self.factored(param) else ("exp_avg_sq",)

    def __call__(self, u, param, state, ctx):
        beta2 = adafactor_beta2(ctx.step, self.decay_rate)
        squares = u.square().add_(self.eps1)
        if "exp_avg_sq_row" in state:
            row, col = state["exp_avg_sq_row"], state["exp_avg_sq_col"]
            shards = ctx.shards
            rows_split = shards is not None and shards.dim == param.dim() - 2
            rows = shards.full_shape[-2] if rows_split else param.shape[-2]
            column_sums = squares.sum(dim=-2)
            if rows_split:  # the rows of this matrix are spread over the ranks: add up their column sums
                shards.sum(column_sums)
            ema_(row, squares.mean(dim=-1), beta2, 1.0 - beta2)
            ema_(col, column_sums.div_(rows), beta2, 1.0 - beta2)
            row_total = row.sum(dim=-1, keepdim=True)
            if rows_split:
                shards.sum(row_total)
            row_factor = (row / row_total.div_(rows)).rsqrt_().unsqueeze(-1)
            col_factor = col.rsqrt().unsqueeze(-2)
            return u.mul_(row_factor).mul_(col_factor)
        ema_(state["exp_avg_sq"], squares, beta2, 1.0 - beta2)
        return u.mul_(state["exp_avg_sq"].rsqrt())


@dataclass
class ClipByRms(Transform):
    """Adafactor's update clipping ``Û = U / max(1, RMS(U)/d)`` (Shazeer & Stern, eq. 9)."""

    threshold: float

    def __call__(self, u, param, state, ctx):
        return u.div_(max(1.0, _rms(u, ctx.shards) / self.threshold))


@dataclass
class AdafactorStepSize(Transform):
    """Adafactor's step size, then ``u ← −α_t·u``.

    ``ρ_t = min(10⁻², 1/√t)`` (``min(10⁻⁶·t, 1/√t)`` with warm-up init) when
    ``lr`` is None, else ``ρ_t = lr``; with ``scale_parameter``
    ``α_t = max(ε₂, RMS(θ))·ρ_t``, else ``α_t = ρ_t``.
    """

    lr: float | None
    eps2: float
    scale_parameter: bool
    warmup_init: bool

    def __call__(self, u, param, state, ctx):
        step_size = adafactor_step_size(ctx.step, self.lr, self.warmup_init)
        if self.scale_parameter:
            step_size *= max(self.eps2, _rms(param, ctx.shards))
        ctx.lr = step_size
        return u.mul_(-step_size)


def adafactor_beta2(step: int, decay_rate: float) -> float:
    """``β̂₂ₜ = 1 − t^c``: 0 at the first step, so the first statistics are the first squares."""
    return 1.0 - step**decay_rate


def adafactor_step_size(step: int, lr: float | None, warmup_init: bool) -> float:
    """``ρ_t``: ``lr`` when given, else ``min(10⁻², 1/√t)`` (``min(10⁻⁶·t, 1/√t)`` with warm-up init)."""
    if lr is not None:
        return lr
    return min(1e-6 * step if warmup_init else 1e-2, 1.0 / math.sqrt(step))
