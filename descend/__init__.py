"""descend: first-order training optimizers as drop-in ``torch.optim`` classes."""
from .tools.compare import Comparison, compare, performance_profile
from .tools.landscape import landscape
from .tools.lr_find import LRFinderResult, lr_find
from .adapter.optimizer import ChainOptimizer
from .optimizers import (LAMB, LARS, SAM, SGD, Adadelta, Adafactor, Adagrad, Adam, AdamW, InverseSqrt, Lion,
                         Muon, MuonWithAuxAdamW, muon_param_groups,
                         MomentumSchedule, NAdam, RAdam, RMSprop, WarmupCosine, frozen_batchnorm_stats, linear_ramp,
                         make_optimizer)
from .optimizers import AdamWScheduleFree, SGDScheduleFree
from .optimizers import ASGD, Adamax, Rprop, SparseAdam
from .tools.telemetry import Telemetry
from .steps import Elementwise, GlobalReduction, MatrixStep, Reduction, StateSpec

__version__ = "0.1.0"

__all__ = [
    "SGD",
    "Adagrad",
    "RMSprop",
    "Adadelta",
    "Adam",
    "AdamW",
    "Adafactor",
    "Lion",
    "LAMB",
    "LARS",
    "NAdam",
    "RAdam",
    "AdamWScheduleFree",
    "SGDScheduleFree",
    "Adamax",
    "ASGD",
    "Rprop",
    "SparseAdam",
    "Muon",
    "MuonWithAuxAdamW",
    "muon_param_groups",
    "SAM",
    "frozen_batchnorm_stats",
    "ChainOptimizer",
    "make_optimizer",
    "Elementwise",
    "Reduction",
    "GlobalReduction",
    "MatrixStep",
    "StateSpec",
    "WarmupCosine",
    "InverseSqrt",
    "MomentumSchedule",
    "linear_ramp",
    "lr_find",
    "LRFinderResult",
    "Telemetry",
    "compare",
    "Comparison",
    "performance_profile",
    "landscape",
]
