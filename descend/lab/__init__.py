"""The lab: runnable experiments that check classic optimizer claims and write a report."""
from .core import Context, Result, run_lab
from .experiments import (
    adafactor_memory,
    adagrad_rmsprop,
    adam_paper,
    bias_correction,
    condition_number,
    convex_hull,
    dropout,
    gradient_noise,
    initialization,
    landscapes,
    learning_rate,
    nesterov,
    sam_flatness,
    weight_decay,
)

EXPERIMENTS = {
    module.NAME: module
    for module in (landscapes, learning_rate, condition_number, nesterov, adagrad_rmsprop, bias_correction,
                   gradient_noise, convex_hull, dropout, initialization, weight_decay, adam_paper, sam_flatness,
                   adafactor_memory)
}

__all__ = ["EXPERIMENTS", "Context", "Result", "run_lab"]
