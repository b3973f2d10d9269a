"""The learning rate, the sign flip, and decoupled weight decay."""
from __future__ import annotations

from dataclasses import dataclass

from .base import Elementwise


@dataclass
class ScaleByLearningRate(Elementwise):
    """``u ← −α·u``: from here on ``u`` is the signed change added to ``θ``."""

    lr: float

    def formula(self, u, param, state, t):
        return u * -self.lr


@dataclass
class Negate(Elementwise):
    """``u ← −u`` (optax's ``scale(-1)``): for chains whose steps scale by a positive step size."""

    def formula(self, u, param, state, t):
        return -u


@dataclass
class DecoupledWeightDecay(Elementwise):
    """Decoupled decay (Loshchilov & Hutter 2019): ``θ ← θ(1 − αλ) + u``, i.e. ``u ← u − αλθ``."""

    weight_decay: float
    lr: float

    def formula(self, u, param, state, t):
        return u - (self.lr * self.weight_decay) * param
