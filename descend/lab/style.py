"""One colour per optimizer across the whole report, in matplotlib and in the interactive figures alike."""
from __future__ import annotations

import zlib

# Known optimizers get fixed, mutually distinct colours (colour-blind-aware where the count allows).
KNOWN = {
    "GD": "#4d4d4d",
    "SGD": "#1f77b4",
    "SGD+momentum": "#17becf",
    "Nesterov": "#2ca02c",
    "AdaGrad": "#ff7f0e",
    "RMSprop": "#9467bd",
    "Adadelta": "#8c564b",
    "Adam": "#d62728",
    "AdamW": "#e377c2",
    "Adafactor": "#bcbd22",
    "SAM": "#7f7f7f",
    "Lion": "#393b79",
    "NAdam": "#ad494a",
    "RAdam": "#637939",
}

# Other spellings the experiments use for the same optimizers.
ALIASES = {
    "sgd": "SGD", "plain sgd": "SGD", "vanilla": "SGD", "vanilla sgd": "SGD",
    "momentum": "SGD+momentum", "sgd + momentum": "SGD+momentum", "sgd momentum": "SGD+momentum",
    "heavy ball": "SGD+momentum", "heavy-ball": "SGD+momentum", "sgd+momentum": "SGD+momentum",
    "nesterov": "Nesterov", "sgd-nesterov": "Nesterov", "sgd+nesterov": "Nesterov", "sgd nesterov": "Nesterov",
    "adagrad": "AdaGrad", "rmsprop": "RMSprop", "adadelta": "Adadelta", "adam": "Adam", "adamw": "AdamW",
    "adafactor": "Adafactor", "sam": "SAM", "lion": "Lion", "nadam": "NAdam", "radam": "RAdam",
    "gd": "GD", "gradient descent": "GD", "full-batch gd": "GD",
}

# Labels that are not a known optimizer (a λ, a β, a variant) draw from this list by a stable hash of the label,
# so the same label has the same colour in every figure and every run.
FALLBACK = ("#003f5c", "#58508d", "#bc5090", "#ff6361", "#ffa600", "#2f4b7c", "#a05195", "#d45087", "#f95d6a",
            "#ff7c43", "#665191", "#00876c", "#6a9f58", "#e2a93b", "#c25a3c", "#4f8fc0", "#8a6fdf", "#3d9970")


def canonical(label: str) -> str | None:
    """The known optimizer a label names, or None."""
    if label in KNOWN:
        return label
    return ALIASES.get(" ".join(label.strip().lower().split()))


def color(label: str) -> str:
    """The colour of ``label`` (a hex string matplotlib and plotly both accept)."""
    known = canonical(label)
    if known is not None:
        return KNOWN[known]
    return FALLBACK[zlib.crc32(label.encode()) % len(FALLBACK)]
