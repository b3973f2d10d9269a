"""Lion's sign update, NAdam's Nesterov correction and RAdam's rectification."""
from __future__ import annotations

from dataclasses import dataclass

from ..plan.formula import maximum, sign, sqrt, where
from ..plan.state import StateSpec
from .base import Elementwise


@dataclass
class LionInterpolation(Elementwise):
    """Lion's two averages (Chen et al. 2023, Alg. 2): emits ``c = β₁m + (1−β₁)u``, then keeps
    ``m ← β₂m + (1−β₂)u``.

    The update direction interpolates with ``β₁``; the momentum that is kept decays with ``β₂``
    (``β₂ > β₁`` by default): the current gradient weighs more in the step than in the memory.
    """

    stateful = True

    beta1: float
    beta2: float
    key: str = "exp_avg"

    def formula(self, u, param, state, t):
        momentum = state[self.key]
        state[self.key] = self.beta2 * momentum + (1.0 - self.beta2) * u
        return self.beta1 * momentum + (1.0 - self.beta1) * u


@dataclass
class SignUpdate(Elementwise):
    """``u ← sign(u)``: every coordinate moves by the same magnitude (signSGD, Lion)."""

    def formula(self, u, param, state, t):
        return sign(u)


@dataclass
class NesterovMomentumCorrection(Elementwise):
    """NAdam's Nesterov step (Dozat 2016, with torch.optim.NAdam's momentum schedule).

    With ``μ_t = β₁(1 − ½·0.96^{tψ})`` (``ψ`` = ``momentum_decay``) and ``Π_t = ∏_{i≤t} μ_i`` kept in
    ``state["mu_product"]``, and ``m`` the first moment an earlier step keeps in ``source``:

        u ← (1 − μ_t)/(1 − Π_t) · u  +  μ_{t+1}/(1 − Π_t·μ_{t+1}) · m

    the bias-corrected gradient and the bias-corrected momentum of the next step, so the update looks
    one step ahead along the momentum.  ``Π`` is a 0-dim tensor of the default dtype, as in torch.
    """

    scalar_state = ("mu_product",)

    beta1: float
    momentum_decay: float
    source: str = "exp_avg"

    def state_specs(self, ndim):
        # on the CPU, in the default dtype: where torch.optim.NAdam keeps it
        return (StateSpec("mu_product", shape="scalar", init=1.0, storage="default"),)

    def momentum_coefficient(self, t):
        """``μ_t = β₁(1 − ½·0.96^{tψ})``."""
        return self.beta1 * (1.0 - 0.5 * 0.96 ** (t * self.momentum_decay))

    def prepare(self, state, t):
        state["mu_product"].mul_(self.momentum_coefficient(t))  # Π_t ← Π_{t−1}·μ_t, in place as torch does

    def formula(self, u, param, state, t):
        mu, mu_next = self.momentum_coefficient(t), self.momentum_coefficient(t + 1.0)
        product = state["mu_product"]
        return u * ((1.0 - mu) / (1.0 - product)) + state[self.source] * (mu_next / (1.0 - product * mu_next))


@dataclass
class RectifiedScale(Elementwise):
    """RAdam's rectified adaptive step (Liu et al. 2020, Alg. 2), on the bias-corrected momentum ``u``.

    With ``ρ∞ = 2/(1−β₂) − 1`` and ``ρ_t = ρ∞ − 2tβ₂ᵗ/(1−β₂ᵗ)`` (the length of the approximated simple
    moving average), and ``s`` the second moment an earlier step keeps in ``source``:

        u ← r_t · √(1−β₂ᵗ) / (√s + ε) · u   where ρ_t > 5,
            r_t = √((ρ_t−4)(ρ_t−2)ρ∞ / ((ρ∞−4)(ρ∞−2)ρ_t))
        u ← u                                 otherwise (plain momentum SGD while the variance is intractable)
    """

    beta2: float
    eps: float
    source: str = "exp_avg_sq"

    def formula(self, u, param, state, t):
        beta2_t = self.beta2**t
        rho_inf = 2.0 / (1.0 - self.beta2) - 1.0
        rho_t = rho_inf - 2.0 * t * beta2_t / (1.0 - beta2_t)
        # r_t is only used where ρ_t > 5 (so ρ∞ > 5 too); the clamps keep the unused branch finite
        rho_tc, rho_infc = maximum(rho_t, 5.0), maximum(rho_inf, 5.0)
        rectification = sqrt((rho_tc - 4.0) * (rho_tc - 2.0) * rho_infc / ((rho_infc - 4.0) * (rho_infc - 2.0) * rho_tc))
        adaptive = u * (rectification * sqrt(1.0 - beta2_t)) / (sqrt(state[self.source]) + self.eps)
        return where(rho_t > 5.0, adaptive, u)
