"""Adafactor's steps (Shazeer & Stern 2018), as Hugging Face's ``transformers`` Adafactor computes them:
the factored second moment, update clipping, the relative step size and its weight decay."""
from __future__ import annotations

from dataclasses import dataclass

from ..plan.formula import maximum, mean, minimum, per_col, per_row, sqrt
from ..plan.state import StateSpec
from .base import Reduction


@dataclass
class FactoredSecondMoment(Reduction):
    """Adafactor's preconditioner (Alg. 4 and 5): ``u ← u / √V̂``.

    With ``β̂₂ₜ = 1 − t^c`` (``c = decay_rate``) and ``G² + ε₁``: a tensor of two or more dims, ``n × m`` in
    its last two, keeps only the row and column averages ``R ← β̂₂ₜR + (1−β̂₂ₜ)·mean_cols(G²+ε₁)``,
    ``C ← β̂₂ₜC + (1−β̂₂ₜ)·mean_rows(G²+ε₁)``, and ``V̂ = R Cᵀ / mean(R)`` (the paper's ``R Cᵀ / 1ᵀR`` with
    averages), so ``u / √V̂ = u · R_i^{-½} · C_j^{-½} · mean(R)^{½}``; a vector or scalar keeps the full
    ``V ← β̂₂ₜV + (1−β̂₂ₜ)(G²+ε₁)``.  State: ``n + m`` floats per matrix instead of ``n·m``.
    """

    decay_rate: float
    eps1: float

    def state_specs(self, ndim):
        if ndim >= 2:
            return (StateSpec("exp_avg_sq_row", shape="rows", signed=False),
                    StateSpec("exp_avg_sq_col", shape="cols", signed=False))
        return (StateSpec("exp_avg_sq", signed=False),)

    def formula(self, u, param, state, t):
        beta2 = 1.0 - t**self.decay_rate  # 0 at the first step: the first statistics are the first squares
        squares = u * u + self.eps1
        if param.ndim >= 2:
            row = state["exp_avg_sq_row"] = beta2 * state["exp_avg_sq_row"] + (1.0 - beta2) * mean(squares, axis=-1)
            col = state["exp_avg_sq_col"] = beta2 * state["exp_avg_sq_col"] + (1.0 - beta2) * mean(squares, axis=-2)
            row_scale = sqrt(mean(row, axis=-1, keepdim=True))  # one per matrix of the stack
            return u * per_row(1.0 / sqrt(row)) * per_col(1.0 / sqrt(col)) * per_row(row_scale)
        full = state["exp_avg_sq"] = beta2 * state["exp_avg_sq"] + (1.0 - beta2) * squares
        return u / sqrt(full)


@dataclass
class ClipByRms(Reduction):
    """Adafactor's update clipping ``Û = U / max(1, RMS(U)/d)`` (eq. 9)."""

    threshold: float

    def formula(self, u, param, state, t):
        return u / maximum(1.0, sqrt(mean(u * u)) / self.threshold)


def relative_step_size(t, lr, warmup_init: bool):
    """``ρ_t``: ``lr`` when given, else ``min(10⁻², 1/√t)`` (``min(10⁻⁶·t, 1/√t)`` with warm-up init)."""
    if lr is not None:
        return lr
    return minimum(1e-6 * t if warmup_init else 1e-2, 1.0 / sqrt(t))


def step_size(param, t, lr, eps2, scale_parameter: bool, warmup_init: bool):
    """``α_t = ρ_t·max(ε₂, RMS(θ))`` (or ``ρ_t``), with ``RMS(θ)`` of the parameter before the update."""
    rho = relative_step_size(t, lr, warmup_init)
    if scale_parameter:
        return rho * maximum(eps2, sqrt(mean(param * param)))
    return rho


@dataclass
class AdafactorStepSize(Reduction):
    """``u ← α_t·u`` (see ``step_size``); a later ``Negate`` makes it a descent step."""

    lr: float | None
    eps2: float
    scale_parameter: bool
    warmup_init: bool

    def formula(self, u, param, state, t):
        return u * step_size(param, t, self.lr, self.eps2, self.scale_parameter, self.warmup_init)


@dataclass
class AdafactorWeightDecay(Reduction):
    """Hugging Face's decay ``θ ← θ − α_t·λ·θ``, with Adafactor's step size ``α_t`` (before ``Negate``:
    ``u ← u + α_tλθ``)."""

    weight_decay: float
    lr: float | None
    eps2: float
    scale_parameter: bool
    warmup_init: bool

    def formula(self, u, param, state, t):
        alpha = step_size(param, t, self.lr, self.eps2, self.scale_parameter, self.warmup_init)
        return u + (alpha * self.weight_decay) * param
