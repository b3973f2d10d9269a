"""One colour per optimizer across the whole report, in matplotlib and in the interactive figures alike."""
from __future__ import annotations

import re
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

# Labels that are not a known optimizer (a λ, a β, a variant) draw from this list, by a stable hash of the
# label's key (see ``key``), so the same label has the same colour in every figure and every run. Each colour
# is at least ΔE 29 (CIE Lab) from every optimizer colour above and from the others: a λ never looks like Adam.
FALLBACK = ("#996600", "#ee3377", "#00bb88", "#990088", "#2288ff", "#007766", "#883366", "#bb9966", "#ee8855",
            "#4444bb")

# Categories that recur across panels and experiments keep one colour (learning rate too low / right / too high).
SEMANTIC = {
    "too low": "#2288ff", "right": "#007766", "just right": "#007766", "too high": "#ee3377",
    "train": "#ee8855", "test": "#4444bb",
}


def key(label: str) -> str:
    """What a label names, without what tells one run of it from another: ``"too low (α = 0.01)"`` and
    ``"too low (1e-4): test accuracy 0.09"`` are both ``"too low"``; ``"Adam (lr 0.1)"`` is ``"adam"``."""
    text = " ".join(label.strip().split()).lower()
    return re.split(r"\s*[(:]", text, maxsplit=1)[0].strip() or text


def canonical(label: str) -> str | None:
    """The known optimizer a label names, or None."""
    if label in KNOWN:
        return label
    spelled = " ".join(label.strip().lower().split())
    return ALIASES.get(spelled) or ALIASES.get(key(label)) or next(
        (name for name in KNOWN if name.lower() == key(label)), None)


def color(label: str) -> str:
    """The colour of ``label`` (a hex string matplotlib and plotly both accept)."""
    known = canonical(label)
    if known is not None:
        return KNOWN[known]
    if key(label) in SEMANTIC:
        return SEMANTIC[key(label)]
    return FALLBACK[zlib.crc32(key(label).encode()) % len(FALLBACK)]


def distinct(labels: list[str]) -> dict[str, str]:
    """Colours for the labels of one figure: each as ``color`` gives it, except that two labels with different
    keys never share a colour (a later one moves to the next free fallback colour). Use it where panels
    side by side must not give one colour two meanings."""
    chosen: dict[str, str] = {}
    owner: dict[str, str] = {}  # colour -> the key that holds it
    for label in labels:
        wanted = color(label)
        if owner.get(wanted, key(label)) != key(label) and canonical(label) is None:
            free = [c for c in FALLBACK if c not in owner]
            start = FALLBACK.index(wanted) if wanted in FALLBACK else 0
            ordered = FALLBACK[start:] + FALLBACK[:start]
            wanted = next((c for c in ordered if c in free), wanted)
        chosen[label] = wanted
        owner.setdefault(wanted, key(label))
    return chosen
