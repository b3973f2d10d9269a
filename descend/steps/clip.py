"""Gradient clipping by the global norm, and the trust ratio of LARS and LAMB."""
from __future__ import annotations

from dataclasses import dataclass

from ..plan.formula import minimum, norm, sqrt, where
from .base import GlobalReduction, Reduction


@dataclass
class ClipByGlobalNorm(GlobalReduction):
    """``u ← u · min(1, c / (‖g‖₂ + 10⁻⁶))`` with ``‖g‖₂`` the norm of every gradient the optimizer updates (all
    groups, all ranks): ``torch.nn.utils.clip_grad_norm_(params, c)`` as one step of the chain.  The sum of
    squares is taken in the same pass as the non-finite check."""

    max_norm: float

    def contributions(self, u, param, state, t):
        return {"squares": u * u}

    def formula(self, u, param, state, t, totals):
        return u * minimum(1.0, self.max_norm / (sqrt(totals["squares"]) + 1e-6))


@dataclass
class ScaleByTrustRatio(Reduction):
    """``u ← u · r`` with the trust ratio ``r = κ·‖θ‖ / (‖u‖ + ε)``, and ``r = 1`` where either norm is 0
    (You et al. 2017 and 2019; optax's ``scale_by_trust_ratio``): each layer's step is a fixed fraction of
    its weights, whatever the scale of its gradient."""

    trust_coefficient: float = 1.0
    eps: float = 0.0

    def formula(self, u, param, state, t):
        param_norm, update_norm = norm(param), norm(u)
        ratio = self.trust_coefficient * param_norm / (update_norm + self.eps)
        both = (param_norm > 0.0) * (update_norm > 0.0)
        return u * where(both, ratio, 1.0)
