"""Momentum, running averages of gradients and their squares, and the steps that divide by them."""
from __future__ import annotations

from dataclasses import dataclass

from ..plan.formula import fma, maximum, sqrt
from ..plan.state import StateSpec
from .base import Elementwise


@dataclass
class AddWeightDecay(Elementwise):
    """Coupled L2 penalty: ``g ← g + λθ`` (the gradient of ``λ/2·‖θ‖²``); ``fused``: rounded once (a fused
    multiply-add), as torch.optim's ``grad.add(θ, alpha=λ)``."""

    weight_decay: float
    fused: bool = False

    def formula(self, u, param, state, t):
        if self.fused:
            return fma(self.weight_decay, param, u)
        return u + self.weight_decay * param


@dataclass
class Momentum(Elementwise):
    """Momentum buffer ``b ← μb + (1−d)u`` with ``b₀ = 0``; emits ``b``.

    ``d = 0`` is the velocity form (``v = −αb`` gives ``v ← μv − αg, θ ← θ + v``);
    ``d = μ`` is the exponential moving average ``b ← βb + (1−β)g``.
    With ``nesterov`` it emits ``μb + (1−d)u`` instead: the same average taken once
    more with the current gradient.  For ``d = 0`` this is the reformulated
    Nesterov step ``θ ← θ − μv_prev + (1+μ)v`` (Sutskever et al. 2013, eq. 4
    in the velocity variables); for ``d = μ = β`` the look-ahead step
    ``θ ← θ − α(βb_{t+1} + (1−β)g)``.
    """

    stateful = True

    momentum: float
    dampening: float = 0.0
    nesterov: bool = False
    key: str = "momentum_buffer"

    def formula(self, u, param, state, t):
        buffer = state[self.key] = self.momentum * state[self.key] + (1.0 - self.dampening) * u
        if self.nesterov:
            return self.momentum * buffer + (1.0 - self.dampening) * u
        return buffer


@dataclass
class TrackEma(Elementwise):
    """Keeps ``ḡ ← γḡ + (1−γ)u`` (for the centred RMSprop) and passes ``u`` on."""

    stateful = True

    decay: float
    key: str = "grad_avg"

    def formula(self, u, param, state, t):
        state[self.key] = self.decay * state[self.key] + (1.0 - self.decay) * u
        return u


@dataclass
class SumOfSquares(Elementwise):
    """AdaGrad's accumulator ``s ← s + u²`` (starting at ``initial``); passes ``u`` on."""

    initial: float = 0.0
    key: str = "sum"

    def state_specs(self, ndim):
        return (StateSpec(self.key, init="initial", signed=False),)

    def formula(self, u, param, state, t):
        state[self.key] = state[self.key] + u * u
        return u


@dataclass
class EmaOfSquares(Elementwise):
    """Running average of squares ``s ← γs + (1−γ)u²``; passes ``u`` on."""

    decay: float
    key: str = "square_avg"

    def state_specs(self, ndim):
        return (StateSpec(self.key, signed=False),)

    def formula(self, u, param, state, t):
        state[self.key] = self.decay * state[self.key] + (1.0 - self.decay) * (u * u)
        return u


@dataclass
class RunningMax(Elementwise):
    """AMSGrad: ``v_max ← max(v_max, v)`` of another step's state; passes ``u`` on."""

    source: str = "exp_avg_sq"
    key: str = "max_exp_avg_sq"

    def state_specs(self, ndim):
        return (StateSpec(self.key, signed=False),)

    def formula(self, u, param, state, t):
        state[self.key] = maximum(state[self.key], state[self.source])
        return u


@dataclass
class BiasCorrection(Elementwise):
    """Adam's first-moment correction ``u ← u / (1 − β^t)`` (Kingma & Ba, Alg. 1)."""

    beta: float

    def formula(self, u, param, state, t):
        return u / (1.0 - self.beta**t)


@dataclass
class ScaleByInverseRms(Elementwise):
    """Divides by the root of the running second moment ``s`` an earlier step keeps in ``source``.

    ``u ← u / (√(ŝ − ḡ²) + ε)`` with ``ŝ = s / (1 − β^t)`` when ``debias_beta``
    is given (Adam's second-moment correction), ``ḡ`` the running mean of
    gradients when ``center_key`` is given (centred RMSprop), and ``ε`` inside
    the root instead, ``u / √(s + ε)``, when ``eps_inside_sqrt`` (Adadelta).
    """

    source: str
    eps: float
    eps_inside_sqrt: bool = False
    center_key: str | None = None
    debias_beta: float | None = None

    def formula(self, u, param, state, t):
        second_moment = state[self.source]
        if self.center_key is not None:  # s − ḡ² ≥ 0 exactly, but rounding can dip below 0 (then √ is NaN)
            center = state[self.center_key]
            second_moment = maximum(second_moment - center * center, 0.0)
        if self.eps_inside_sqrt:
            return u / sqrt(second_moment + self.eps)
        denominator = sqrt(second_moment)
        if self.debias_beta is not None:
            denominator = denominator / sqrt(1.0 - self.debias_beta**t)
        return u / (denominator + self.eps)


@dataclass
class AdadeltaUnitCorrection(Elementwise):
    """Zeiler 2012, Alg. 1: ``Δ ← √(d + ε)·u`` then ``d ← ρd + (1−ρ)Δ²``; emits ``Δ``.

    Multiplying by the RMS of past updates gives the step the units of ``θ``.
    """

    rho: float
    eps: float
    key: str = "acc_delta"

    def state_specs(self, ndim):
        return (StateSpec(self.key, signed=False),)

    def formula(self, u, param, state, t):
        delta = u * sqrt(state[self.key] + self.eps)
        state[self.key] = self.rho * state[self.key] + (1.0 - self.rho) * (delta * delta)
        return delta


@dataclass
class LrDecay(Elementwise):
    """AdaGrad's learning-rate decay ``u ← u / (1 + (t−1)·decay)`` (as torch.optim.Adagrad)."""

    decay: float

    def formula(self, u, param, state, t):
        return u / (1.0 + (t - 1.0) * self.decay)
