"""The named steps every descend optimizer is composed from.

An optimizer step turns the gradient ``g`` of one parameter ``θ`` into a signed
change ``u`` and applies ``θ ← θ + u``.  Each step below is one transformation
``u ← f(u, θ, state)`` from the textbooks, in the spirit of optax's
``scale_by_adam`` / ``add_decayed_weights`` / ``scale_by_learning_rate``:

    SGD        = [AddWeightDecay, Momentum, ScaleByLearningRate]
    Adam       = [AddWeightDecay, EmaOfSquares, Momentum(EMA), BiasCorrection,
                  ScaleByInverseRms, ScaleByLearningRate]
    AdamW      = Adam without AddWeightDecay, then DecoupledWeightDecay
    ...

Most steps are ``Elementwise``: their ``formula`` is the textbook line itself
(``s ← βs + (1−β)u²`` is ``state[k] = β * state[k] + (1 - β) * (u * u)``), and it is
the only place the formula is written.  The same code runs on tensors (the
reference path), on lists of tensors (torch's ``_foreach_*`` ops, one launch per
op for a whole list on CUDA) and on symbols, from which ``descend.codegen``
generates one fused C or Triton kernel for a whole chain.  The others (Adafactor's
factored second moment, update clipping and step size, which reduce over whole
matrices) are written as tensor code, with a hand-written kernel for Adafactor's
chain (``_kernels.c``).

A step may keep per-parameter state (a momentum buffer, a running average of
squared gradients); it names its entries in ``state_keys`` (by default its ``key``
field) and creates them in ``init``; a step may read the entries an earlier step
keeps (``ScaleByInverseRms(source=...)``), and the tracer checks that some step of
the chain keeps every entry read.  Entry names follow torch.optim (``exp_avg``,
``square_avg``, ...), so a torch.optim checkpoint loads into the matching descend
optimizer.
"""
from __future__ import annotations

import math
from .adafactor import AdafactorStepSize, ClipByRms, FactoredSecondMoment, adafactor_beta2, adafactor_step_size
from .base import Elementwise, Shards, StepContext, Transform, ema_, store_state
from .moments import (AdadeltaUnitCorrection, AddWeightDecay, BiasCorrection, EmaOfSquares, LrDecay, Momentum, RunningMax,
                      ScaleByInverseRms, SumOfSquares, TrackEma)
from .scale import DecoupledWeightDecay, ScaleByLearningRate
from .variants import LionInterpolation, NesterovMomentumCorrection, RectifiedScale, SignUpdate
from ..formula import clamp_min, exp, log, maximum, minimum, sign, sqrt, where

__all__ = [
    "Transform", "Elementwise", "StepContext", "Shards", "ema_", "store_state",
    "AddWeightDecay", "Momentum", "TrackEma", "SumOfSquares", "EmaOfSquares", "RunningMax", "BiasCorrection",
    "ScaleByInverseRms", "AdadeltaUnitCorrection", "LrDecay",
    "FactoredSecondMoment", "ClipByRms", "AdafactorStepSize", "adafactor_beta2", "adafactor_step_size",
    "ScaleByLearningRate", "DecoupledWeightDecay",
    "LionInterpolation", "SignUpdate", "NesterovMomentumCorrection", "RectifiedScale",
    "sqrt", "exp", "log", "sign", "maximum", "minimum", "where", "clamp_min",
]
