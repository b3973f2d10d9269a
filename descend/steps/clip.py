"""Gradient clipping by the global norm, and the trust ratio of LARS and LAMB.

Both scale ``u`` by a number computed from norms, and both keep NaN a NaN on every path, as their references
do: a comparison with NaN is false, so each condition below is written so that a NaN norm falls through to
the (NaN) factor rather than to 1.  (``min(1, NaN)`` would be 1 for Python numbers and NaN for tensors.)
"""
from __future__ import annotations

from dataclasses import dataclass

from ..plan.formula import norm, sqrt, where
from .base import GlobalReduction, Reduction


@dataclass
class ClipByGlobalNorm(GlobalReduction):
    """``u ← u · min(1, c / (‖u‖₂ + 10⁻⁶))`` with ``‖u‖₂`` the norm over every tensor the optimizer updates
    with this step (all its groups, all ranks): ``torch.nn.utils.clip_grad_norm_(params, c)`` as one step of
    the chain, with torch's ``10⁻⁶``.  A NaN or ±inf gradient makes the factor NaN or 0, as in torch.  The sum
    of squares is taken in a pass over the gradients before the update (``contributions``)."""

    max_norm: float

    def contributions(self, u, param, state, t):
        return {"squares": u * u}

    def formula(self, u, param, state, t, totals):
        factor = self.max_norm / (sqrt(totals["squares"]) + 1e-6)
        return u * where(factor > 1.0, 1.0, factor)


@dataclass
class ScaleByTrustRatio(Reduction):
    """``u ← u · r`` with the trust ratio ``r = κ·‖θ‖₂ / (‖u‖₂ + ε)`` of the whole tensor, and ``r = 1`` where
    either norm is 0 (You et al. 2017 and 2019; optax's ``scale_by_trust_ratio``): each layer's step is a
    fixed fraction of its weights, whatever the scale of its gradient."""

    trust_coefficient: float = 1.0
    eps: float = 0.0

    def formula(self, u, param, state, t):
        param_norm, update_norm = norm(param), norm(u)
        ratio = self.trust_coefficient * param_norm / (update_norm + self.eps)
        return u * where(param_norm <= 0.0, 1.0, where(update_norm <= 0.0, 1.0, ratio))
