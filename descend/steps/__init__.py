"""The named steps every descend optimizer is composed from.

An optimizer step turns the gradient ``g`` of one parameter ``θ`` into a signed change ``u`` and applies
``θ ← θ + u``.  Each step below is one transformation ``u ← f(u, θ, state)`` from the textbooks, in the
spirit of optax's ``scale_by_adam`` / ``add_decayed_weights`` / ``scale_by_learning_rate``:

    SGD        = [AddWeightDecay, Momentum, ScaleByLearningRate]
    Adam       = [AddWeightDecay, EmaOfSquares, Momentum(EMA), BiasCorrection,
                  ScaleByInverseRms, ScaleByLearningRate]
    AdamW      = Adam without AddWeightDecay, then DecoupledWeightDecay
    Adafactor  = [FactoredSecondMoment, ClipByRms, AdafactorStepSize, Momentum(EMA)?,
                  AdafactorWeightDecay?, Negate]
    AdamWScheduleFree = [SecondMoment, ScaleByDebiasedInverseRms, DecayAtY?, ScheduleFreeUpdate]
    ...

A step's ``formula`` is the textbook line itself (``s ← βs + (1−β)u²`` is
``state[k] = β * state[k] + (1 - β) * (u * u)``), and it is the only place the formula is written: the same
code runs on tensors (the reference path), on lists of tensors (torch's ``_foreach_*`` ops) and on
symbols, from which descend generates the fused C and Triton kernels of a whole chain.  The kinds of step
(``Elementwise``, ``Reduction``, ``GlobalReduction``, ``MatrixStep``) are described in ``base``.

A step declares the state it keeps (``state_specs``, see ``descend.plan.state.StateSpec``); a step may read
the entries an earlier step keeps (``ScaleByInverseRms(source=...)``).  Entry names follow torch.optim
(``exp_avg``, ``square_avg``, ...), so a torch.optim checkpoint loads into the matching descend optimizer.
"""
from ..plan.formula import (NotTraceable, amax, clamp_min, exp, fma, lerp, log, maximum, mean, minimum, norm, per_col,
                            per_row, sign, size, sqrt, total, where)
from ..plan.state import StateSpec
from .adafactor import AdafactorStepSize, AdafactorWeightDecay, ClipByRms, FactoredSecondMoment
from .base import Elementwise, GlobalReduction, MatrixStep, Reduction, Transform
from .clip import ClipByGlobalNorm, ScaleByTrustRatio
from .muon import MuonMomentum, NewtonSchulz, OrthogonalUpdate
from .moments import (AdadeltaUnitCorrection, AddWeightDecay, BiasCorrection, EmaOfSquares, LrDecay, Momentum, RunningMax,
                      ScaleByInverseRms, SumOfSquares, TrackEma)
from .scale import DecoupledWeightDecay, Negate, ScaleByLearningRate
from .schedulefree import DecayAtY, ScaleByDebiasedInverseRms, ScheduleFreeSwitch, ScheduleFreeUpdate, SecondMoment
from .torch_rest import (CorrectedStepSize, AveragedSgd, DivideBy, InfinityNorm, LerpMomentum, MomentsByIncrement,
                         ResilientStepSize)
from .variants import LionInterpolation, NesterovMomentumCorrection, RectifiedScale, SignUpdate

__all__ = [
    "Transform", "Elementwise", "Reduction", "GlobalReduction", "MatrixStep", "StateSpec",
    "AddWeightDecay", "Momentum", "TrackEma", "SumOfSquares", "EmaOfSquares", "RunningMax", "BiasCorrection",
    "ScaleByInverseRms", "AdadeltaUnitCorrection", "LrDecay",
    "FactoredSecondMoment", "ClipByRms", "AdafactorStepSize", "AdafactorWeightDecay",
    "ScaleByLearningRate", "Negate", "DecoupledWeightDecay",
    "LionInterpolation", "SignUpdate", "NesterovMomentumCorrection", "RectifiedScale",
    "SecondMoment", "ScaleByDebiasedInverseRms", "DecayAtY", "ScheduleFreeUpdate", "ScheduleFreeSwitch",
    "InfinityNorm", "LerpMomentum", "DivideBy", "AveragedSgd", "ResilientStepSize", "MomentsByIncrement",
    "CorrectedStepSize",
    "ClipByGlobalNorm", "ScaleByTrustRatio",
    "MuonMomentum", "NewtonSchulz", "OrthogonalUpdate",
    "sqrt", "exp", "log", "sign", "maximum", "minimum", "where", "clamp_min", "fma", "lerp", "size",
    "total", "mean", "norm", "amax", "per_row", "per_col", "NotTraceable",
]
