"""Schedule-free averaging (Defazio et al. 2024, "The Road Less Scheduled"), as steps.

Schedule-free SGD keeps two sequences and evaluates the gradient at a third, their interpolation:

    y_t     = (1 − β) z_t + β x_t                       (where the gradient g_t is taken)
    z_{t+1} = z_t − γ_t g_t                             (the plain SGD sequence)
    x_{t+1} = (1 − c_{t+1}) x_t + c_{t+1} z_{t+1}       (the weighted average of the z's: the model to evaluate)

The parameter holds ``y`` while training and ``x`` while evaluating; ``z`` is the state entry ``"z"``,
made as a copy of the parameter at its first step.  ``x`` is never stored: from the definition of ``y``,

    x = (y − (1 − β) z) / β = lerp(y, z, 1 − 1/β)       and back   y = lerp(x, z, 1 − β),

so the switch between the two (``ScheduleFreeSwitch``) is an elementwise update of the parameter, and so
is a step written in ``y`` alone (``ScheduleFreeUpdate``):

    y_{t+1} = lerp(y_t, z_t, c_{t+1}) + γ_t (β(1 − c_{t+1}) − 1) g_t.

The numbers ``γ_t`` (the warmed-up learning rate), ``c_{t+1}`` (the averaging weight) and Adam's bias
correction change every step but are the same for every element: the optimizer computes them once per
step on the host and passes them in as hyperparameters (descend.optimizers.schedulefree), so one kernel
serves every step.  The order of operations is the ``schedulefree`` package's (1.4.1), so that its
numbers are met to the last bits where torch rounds the same way: ``torch.lerp`` (``lerp``) and
``add(·, alpha=·)`` (``fma``).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..plan.formula import fma, lerp, sqrt
from ..plan.state import StateSpec
from .base import Elementwise

Z = StateSpec("z", init="param")  # the SGD sequence, starting at the parameter


@dataclass
class SecondMoment(Elementwise):
    """``s ← β₂s + (1−β₂)u²`` (``EmaOfSquares``), rounded as schedulefree's ``s.mul_(β₂).addcmul_(u, u,
    value=1−β₂)``: torch's ``addcmul`` rounds ``(1−β₂)u·u + β₂s`` once, ``fma((1−β₂)u, u, β₂s)``.
    Passes ``u`` on."""

    decay: float
    key: str = "exp_avg_sq"

    def state_specs(self, ndim):
        return (StateSpec(self.key, signed=False),)

    def formula(self, u, param, state, t):
        state[self.key] = fma((1.0 - self.decay) * u, u, self.decay * state[self.key])
        return u


@dataclass
class ScaleByDebiasedInverseRms(Elementwise):
    """``u ← u / (√(s / c) + ε)``: Adam's normalisation by the second moment ``s`` an earlier step keeps
    in ``source``, with its bias correction ``c = 1 − β₂ᵏ`` given as a number (``k`` counted per param group,
    as schedule-free AdamW counts it, not per tensor)."""

    eps: float
    correction: float
    source: str = "exp_avg_sq"

    def formula(self, u, param, state, t):
        return u / (sqrt(state[self.source] / self.correction) + self.eps)


@dataclass
class DecayAtY(Elementwise):
    """Coupled weight decay taken at ``y`` (the parameter while training): ``u ← u + λy``, rounded once as
    schedulefree's ``u.add_(y, alpha=λ)`` (``AddWeightDecay`` rounds the product and the sum apart)."""

    weight_decay: float

    def formula(self, u, param, state, t):
        return fma(self.weight_decay, param, u)


@dataclass
class ScheduleFreeUpdate(Elementwise):
    """One schedule-free step in the ``y`` variables, with ``u`` the (normalised, decayed) gradient at ``y``:

        z ← z − γu
        y ← lerp(y, z_old, c) + γ(β(1 − c) − 1)·u

    ``lr`` is ``γ_t``, ``beta`` the interpolation ``β`` (momentum, or AdamW's ``β₁``), ``average`` the
    weight ``c_{t+1}`` of the new ``z`` in the average ``x``.  It returns the new parameter itself."""

    output = "param"

    lr: float
    beta: float
    average: float

    def state_specs(self, ndim):
        return (Z,)

    def formula(self, u, param, state, t):
        z = state[Z.key]
        state[Z.key] = fma(-self.lr, u, z)
        return fma(self.lr * (self.beta * (1.0 - self.average) - 1.0), u, lerp(param, z, self.average))


@dataclass
class ScheduleFreeSwitch(Elementwise):
    """``θ ← lerp(θ, z, w)``: from ``y`` to ``x`` with ``w = 1 − 1/β`` (``optimizer.eval()``), from ``x`` back
    to ``y`` with ``w = 1 − β`` (``optimizer.train()``).  It reads no gradient: ``u`` is ignored."""

    output = "param"

    weight: float

    @staticmethod
    def to_x(beta: float) -> ScheduleFreeSwitch:
        return ScheduleFreeSwitch(1.0 - 1.0 / beta)

    @staticmethod
    def to_y(beta: float) -> ScheduleFreeSwitch:
        return ScheduleFreeSwitch(1.0 - beta)

    def state_specs(self, ndim):
        return (Z,)

    def formula(self, u, param, state, t):
        return lerp(param, state[Z.key], self.weight)
