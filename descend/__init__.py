"""descend: first-order training optimizers as drop-in ``torch.optim`` classes."""
from .tools.compare import Comparison, compare, performance_profile
from .tools.landscape import landscape
from .tools.lr_find import LRFinderResult, lr_find
from .adapter.optimizer import ChainOptimizer
from .optimizers import (SAM, SGD, Adadelta, Adafactor, Adagrad, Adam, AdamW, InverseSqrt, Lion, MomentumSchedule, Muon,
                         MuonWithAuxAdamW, NAdam, RAdam, RMSprop, WarmupCosine, frozen_batchnorm_stats, linear_ramp,
                         make_optimizer, muon_param_groups)
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
    "NAdam",
    "RAdam",
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
