"""The learning rate and decoupled weight decay."""
from __future__ import annotations

from dataclasses import dataclass


from .base import Elementwise


# --- learning rate and decoupled decay ----------------------------------------------------


@dataclass
class ScaleByLearningRate(Elementwise):
    """``u ← −α·u``: from here on ``u`` is the signed change added to ``θ``."""

    lr: float

    def formula(self, u, param, state, t):
        return u * -self.lr


@dataclass
class DecoupledWeightDecay(Elementwise):
    """Decoupled decay (Loshchilov & Hutter 2019): ``θ ← θ(1 − αλ) + u``, i.e. ``u ← u − αλθ``.

    ``lr`` is the ``α`` of that product; ``None`` takes the step size an earlier step of the chain computed
    for this parameter (``AdafactorStepSize``, which varies per parameter), and runs on the reference path.
    """

    weight_decay: float
    lr: float | None = None

    def formula(self, u, param, state, t):
        if self.lr is None:
            from ..formula import NotTraceable

            raise NotTraceable("DecoupledWeightDecay(lr=None) takes the step size of an earlier step")
        return u - (self.lr * self.weight_decay) * param

    def __call__(self, u, param, state, ctx):
        if self.lr is not None:
            return super().__call__(u, param, state, ctx)
        if ctx.lr is None:
            raise RuntimeError("DecoupledWeightDecay(lr=None) needs an earlier step that sets the step size "
                               "(AdafactorStepSize); give lr= otherwise")
        return u.add_(param, alpha=-ctx.lr * self.weight_decay)

    def many(self, us, params, states, ctxs):
        if self.lr is not None:
            return super().many(us, params, states, ctxs)
        return [self(u, param, state, ctx) for u, param, state, ctx in zip(us, params, states, ctxs)]
