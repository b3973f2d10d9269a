"""Muon's three steps (Jordan et al. 2024; torch.optim.Muon): momentum, Newton–Schulz orthogonalisation, and
the shape-scaled update with decoupled decay.

    Muon = [MuonMomentum, NewtonSchulz, OrthogonalUpdate]

The first and the last are elementwise, so each runs as one pass of a generated kernel; the middle one is a
``MatrixStep``: torch's bf16 matrix products on a stack of same-shape matrices at once.  The roundings are
torch's, so that the numbers are torch.optim.Muon's bit for bit on the CPU: ``lerp`` rounds as torch's,
the orthogonalised matrix is stored to bfloat16 by rounding to nearest, and the update is the two roundings
``θ ← θ·(1 − αλ)`` then ``θ ← θ − α̃·O`` (``fma``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..plan.formula import fma, lerp, maximum, rounded, size, sqrt
from .base import Elementwise, MatrixStep

ADJUST_LR_FNS = (None, "original", "match_rms_adamw")


@dataclass
class MuonMomentum(Elementwise):
    """The momentum buffer as an EMA, ``B ← B + (1−μ)(g − B)`` (torch's ``B.lerp_(g, 1−μ)``, from ``B₀ = 0``);
    emits ``g + μ(B − g)`` with ``nesterov`` (``g.lerp(B, μ)``), else ``B``."""

    stateful = True
    momentum: float
    nesterov: bool = True
    key: str = "momentum_buffer"

    def formula(self, u, param, state, t):
        buffer = state[self.key] = lerp(state[self.key], u, 1.0 - self.momentum)
        return lerp(u, buffer, self.momentum) if self.nesterov else buffer


@dataclass
class NewtonSchulz(MatrixStep):
    r"""``O ≈ UVᵀ`` for ``U = USVᵀ``: ``ns_steps`` iterations of the quintic
    ``X ← aX + (bXXᵀ + c(XXᵀ)²)X`` from ``X₀ = U/max(‖U‖_F, ε)`` (so that ‖X₀‖₂ ≤ 1), on ``Uᵀ`` where ``U`` is tall
    (the Gram matrix is then the small one).  In bfloat16 with torch's own products, as torch.optim.Muon; the
    products of a stack of same-shape matrices are one batched call each (torch loops over the matrices)."""

    input_dtype = torch.bfloat16
    reads_param_or_state = False  # under FSDP2 only u is gathered, to the matrix's owner rank
    ns_coefficients: tuple[float, float, float] = (3.4445, -4.7750, 2.0315)
    eps: float = 1e-7
    ns_steps: int = 5

    def apply(self, u: Tensor, param, state, t) -> Tensor:
        a, b, c = self.ns_coefficients
        tall = u.shape[-2] > u.shape[-1]
        x = u.mT if tall else u
        for matrix in x:  # each matrix's own norm, reduced and divided exactly as torch does it for one
            matrix.div_(matrix.norm().clamp(min=self.eps))
        if not batched(x):  # small matrices: torch's products one matrix at a time, as torch.optim.Muon
            return _looped(x, a, b, c, int(self.ns_steps), tall)
        for _ in range(int(self.ns_steps)):
            gram = torch.bmm(x, x.mT)
            polynomial = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)
            x = torch.baddbmm(x, polynomial, x, beta=a)
        return x.mT if tall else x


ONE_DNN_MIN = 16 ** 3  # torch's mkldnn_gemm_min_size: a CPU bf16 product larger than this goes to oneDNN


def batched(x: Tensor) -> bool:
    """Whether the batched products give each matrix what torch's one-matrix products give it: on a GPU, or on
    the CPU for matrices whose every product (the smallest is ``n³``, n the short side) exceeds oneDNN's
    threshold, so that ``mm`` and ``bmm`` both run oneDNN's kernel; below it each takes another kernel of its
    own (which sum in other orders, and round α·AB + βC otherwise)."""
    return x.device.type != "cpu" or x.shape[-2] ** 3 > ONE_DNN_MIN


def _looped(x: Tensor, a: float, b: float, c: float, steps: int, tall: bool) -> Tensor:
    out = []
    for matrix in x:
        for _ in range(steps):
            gram = matrix @ matrix.T
            polynomial = torch.addmm(gram, gram, gram, beta=b, alpha=c)
            matrix = torch.addmm(matrix, polynomial, matrix, beta=a)
        out.append(matrix.T if tall else matrix)
    return torch.stack(out)


def adjusted_ratio(adjust_lr_fn: str | None, rows, cols):
    """The factor of the learning rate for an ``A × B`` matrix: ``√max(1, A/B)`` ("original", Keller Jordan's) or
    ``0.2·√max(A, B)`` ("match_rms_adamw", Moonshot's: the update's RMS matches AdamW's)."""
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * sqrt(maximum(rows, cols))
    return sqrt(maximum(1.0, rows / cols))


@dataclass
class OrthogonalUpdate(Elementwise):
    """``θ ← θ·(1 − αλ)``, then ``θ ← θ − α·r(A, B)·O`` with ``r`` the shape factor of ``adjusted_ratio``
    (``A × B`` the parameter's shape, read with ``size``: a per-tensor number of each kernel): torch's
    ``param.mul_(1 − αλ)`` and ``param.add_(O, alpha=−α·r)``, each rounded once."""

    output = "param"
    lr: float
    weight_decay: float
    adjust_lr_fn: str | None = None
    lr_tensor: bool = False  # the group's lr is a tensor: torch then computes α·r and 1 − αλ in float32

    def formula(self, u, param, state, t):
        ratio = adjusted_ratio(self.adjust_lr_fn, size(param, -2), size(param, -1))
        if not self.lr_tensor:
            return fma(-(self.lr * ratio), u, param * (1.0 - self.lr * self.weight_decay))
        lr = rounded(self.lr, param)
        step = rounded(lr * rounded(ratio, param), param)
        decay = rounded(1.0 - rounded(lr * rounded(self.weight_decay, param), param), param)
        return fma(-step, u, param * decay)
