"""descend: first-order training optimizers as drop-in ``torch.optim`` classes."""
from .tools.compare import Comparison, compare, performance_profile
from .tools.landscape import landscape
from .tools.lr_find import LRFinderResult, lr_find
from .compose import make_optimizer
from .optimizer import ChainOptimizer
from .optimizers import SGD, Adadelta, Adafactor, Adagrad, Adam, AdamW, Lion, NAdam, RAdam, RMSprop
from .sam import SAM, frozen_batchnorm_stats
from .tools.telemetry import Telemetry
from .transforms import Elementwise
from .schedules import InverseSqrt, MomentumSchedule, WarmupCosine, linear_ramp

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
    "SAM",
    "frozen_batchnorm_stats",
    "ChainOptimizer",
    "make_optimizer",
    "Elementwise",
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
