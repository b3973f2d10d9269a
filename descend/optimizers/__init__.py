"""The optimizers: drop-in ``torch.optim`` classes, each a chain of the named steps in ``descend.transforms``.

Signatures and defaults follow torch.optim where it has the class; every class adds ``nonfinite`` (see
``ChainOptimizer``).  ``SAM`` wraps any of them; ``schedules`` holds lr and momentum schedules;
``make_optimizer`` builds a class of your own from a chain.
"""
from .adafactor import Adafactor
from .adam import Adam, AdamW, NAdam, RAdam
from .adamax import Adamax
from .adaptive import Adadelta, Adagrad, RMSprop
from .asgd import ASGD
from .compose import make_optimizer
from .lion import Lion
from .rprop import Rprop
from .muon import Muon, MuonWithAuxAdamW, muon_param_groups
from .sam import SAM, frozen_batchnorm_stats
from .schedulefree import AdamWScheduleFree, SGDScheduleFree
from .schedules import InverseSqrt, MomentumSchedule, WarmupCosine, linear_ramp
from .sgd import SGD
from .sparse_adam import SparseAdam
from .trust import LAMB, LARS

__all__ = ["SGD", "Adagrad", "RMSprop", "Adadelta", "Adam", "AdamW", "NAdam", "RAdam", "Adafactor", "Lion", "LAMB", "LARS",
           "Muon", "MuonWithAuxAdamW", "muon_param_groups",
           "SAM", "AdamWScheduleFree", "SGDScheduleFree", "Adamax", "ASGD", "Rprop", "SparseAdam",
           "frozen_batchnorm_stats", "make_optimizer", "InverseSqrt", "MomentumSchedule", "WarmupCosine", "linear_ramp"]
