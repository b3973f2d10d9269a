"""The steps of the rest of torch.optim: Adamax's infinity norm, ASGD's averaging, Rprop's step sizes, and
SparseAdam's moments.

Each is written as torch.optim's one-tensor-at-a-time path rounds it (which products round where), so that
every path of descend gives torch's numbers: where torch computes ``m + (1−β)(g − m)`` the formula says so,
where it computes one fused multiply-add (``torch.add(x, y, alpha=a)``) the formula calls ``fma``.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..plan.formula import fma, lerp, maximum, minimum, sign, sqrt, where
from ..plan.state import StateSpec
from .base import Elementwise

# --- Adamax (Kingma & Ba 2015, §7.1) ---------------------------------------------------------------


@dataclass
class InfinityNorm(Elementwise):
    """Adamax's exponentially weighted infinity norm ``u_t ← max(β₂·u_{t−1}, |g| + ε)``, kept in
    ``state["exp_inf"]``; passes ``g`` on.  (``ε`` inside the max keeps the divisor positive.)"""

    beta2: float
    eps: float
    key: str = "exp_inf"

    def state_specs(self, ndim):
        return (StateSpec(self.key, signed=False),)

    def formula(self, u, param, state, t):
        state[self.key] = maximum(state[self.key] * self.beta2, abs(u) + self.eps)
        return u


@dataclass
class LerpMomentum(Elementwise):
    """The first moment as torch.optim's Adam family keeps it, ``m ← lerp(m, g, 1 − β)`` (= ``βm + (1−β)g``,
    rounded as ``torch.lerp``); emits ``m``."""

    stateful = True

    beta: float
    key: str = "exp_avg"

    def formula(self, u, param, state, t):
        state[self.key] = lerp(state[self.key], u, 1.0 - self.beta)
        return state[self.key]


@dataclass
class DivideBy(Elementwise):
    """``u ← u / s`` with ``s`` the state an earlier step keeps in ``source`` (Adamax: ``m / u_t``)."""

    source: str

    def formula(self, u, param, state, t):
        return u / state[self.source]


# --- ASGD (Polyak & Juditsky 1992; the schedule of Bottou 2012, as torch.optim.ASGD) -----------------


@dataclass
class AveragedSgd(Elementwise):
    """Decayed SGD with a running average of the iterates; returns the new parameter.

    With ``η`` and ``μ`` the step size and averaging weight kept in ``state["eta"]`` and ``state["mu"]``
    (0-dim float32 tensors, as torch.optim.ASGD keeps them; ``η₀ = lr``, ``μ₀ = 1``):

        θ ← θ(1 − λη) − ηg          (one fused multiply-add, as torch's ``add_(g, alpha=−η)``)
        ā ← ā + μ(θ − ā)  where μ ≠ 1, else ā ← θ

    and after the update (``finish``, at step ``t``) ``η ← lr / (1 + λ·lr·t)^α`` and ``μ ← 1 / max(1, t − t₀)``:
    averaging starts once ``t`` passes ``t₀``.
    """

    output = "param"
    scalar_state = ("eta", "mu")
    counts_steps = True

    lr: float
    lambd: float
    alpha: float
    t0: float

    def state_specs(self, ndim):
        return (StateSpec("eta", shape="scalar", init="lr", storage="default"),
                StateSpec("mu", shape="scalar", init=1.0, storage="default"), StateSpec("ax"))

    def formula(self, u, param, state, t):
        eta, mu, average = state["eta"], state["mu"], state["ax"]
        updated = fma(-eta, u, param * (1.0 - self.lambd * eta))
        averaging = (mu < 1.0) + (mu > 1.0)  # μ ≠ 1
        state["ax"] = where(averaging, average + (updated - average) * mu, updated)
        return updated

    def finish(self, state, t):
        state["eta"].fill_(self.lr / ((1.0 + self.lambd * self.lr * t) ** self.alpha))
        state["mu"].fill_(1.0 / max(1.0, t - self.t0))


# --- Rprop (Riedmiller & Braun 1993, as torch.optim.Rprop: "Rprop without weight-backtracking") ------


@dataclass
class ResilientStepSize(Elementwise):
    """Rprop's per-coordinate step sizes ``s`` (``state["step_size"]``, from ``lr``) and the previous gradient
    ``g⁻`` (``state["prev"]``); emits ``sign(g)·s``.

        s ← clamp(s·η₊, s_min, s_max)   where g·g⁻ > 0 (the same sign twice: speed up)
        s ← clamp(s·η₋, s_min, s_max)   where g·g⁻ < 0 (the sign flipped: a minimum was jumped; slow down,
                                        and take no step this time: g ← 0)
        s ← clamp(s, s_min, s_max)      where g·g⁻ = 0
        g⁻ ← g

    Only the gradient's sign is used.  (torch.optim.Rprop finds the flips by comparing its factor with
    ``η₋`` in the parameter's dtype; in float32 an ``η₋`` within 3·10⁻⁸ of 1 rounds to 1 there and torch then
    also drops the steps where ``g·g⁻ = 0``; descend compares signs.)
    """

    counts_steps = True

    etaminus: float
    etaplus: float
    step_size_min: float
    step_size_max: float
    lr: float  # the step sizes' starting value

    def state_specs(self, ndim):
        return (StateSpec("prev"), StateSpec("step_size", init="lr", signed=False))

    def clamp(self, size):
        return minimum(maximum(size, self.step_size_min), self.step_size_max)

    def formula(self, u, param, state, t):
        agreement, size = u * state["prev"], state["step_size"]
        state["step_size"] = where(agreement > 0.0, self.clamp(size * self.etaplus),
                                   where(agreement < 0.0, self.clamp(size * self.etaminus), self.clamp(size)))
        u = where(agreement < 0.0, 0.0, u)
        state["prev"] = u
        return sign(u) * state["step_size"]


# --- SparseAdam (torch.optim.SparseAdam: Adam on the rows a sparse gradient names) ---------------------


@dataclass
class MomentsByIncrement(Elementwise):
    """Adam's two moments in the increment form torch.optim.SparseAdam rounds them by:
    ``m ← m + (g − m)(1 − β₁)``, ``v ← v + (g² − v)(1 − β₂)``; emits ``m``."""

    beta1: float
    beta2: float

    def state_specs(self, ndim):
        return (StateSpec("exp_avg"), StateSpec("exp_avg_sq", signed=False))

    def formula(self, u, param, state, t):
        m, v = state["exp_avg"], state["exp_avg_sq"]
        state["exp_avg"] = m + (u - m) * (1.0 - self.beta1)
        state["exp_avg_sq"] = v + (u * u - v) * (1.0 - self.beta2)
        return state["exp_avg"]


@dataclass
class CorrectedStepSize(Elementwise):
    """``u ← −α·√(1 − β₂ᵗ)/(1 − β₁ᵗ)·u`` (``β₂`` None: ``u ← −α/(1 − β₁ᵗ)·u``): the bias corrections folded into
    the step size, the ordering at the end of Kingma & Ba's §2 (Adam's ``ε`` is then added to the uncorrected
    ``√v``) and of their Adamax; one number per tensor and step, rounded once."""

    lr: float
    beta1: float
    beta2: float | None = None

    def formula(self, u, param, state, t):
        if self.beta2 is None:
            return u * -(self.lr / (1.0 - self.beta1**t))
        return u * -(self.lr * sqrt(1.0 - self.beta2**t) / (1.0 - self.beta1**t))
