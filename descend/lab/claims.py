"""A claim from the course material, fixed before the run: what is said, what is measured, and when it holds."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

KEBAB = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


@dataclass(frozen=True)
class Claim:
    """One checkable statement.

    The claim *held* when ``effect <direction> threshold`` for the whole 95% confidence interval of the
    effect over seeds, *did not hold* when the whole interval violates it, and is *inconclusive* when the
    interval straddles the threshold. A deterministic claim (an identity, an analytic threshold) is run once
    and decided from its single value.
    """

    id: str           # kebab-case, unique across the lab
    source: str       # where the course says it: "seed 002, eq. 4.26"
    statement: str    # the claim in the course's words
    measurement: str  # what is measured, with units
    criterion: str    # the criterion in words, e.g. "ratio > 1"
    threshold: float
    direction: str    # ">" or "<"
    deterministic: bool = False

    def __post_init__(self):
        if not KEBAB.match(self.id):
            raise ValueError(f"claim id {self.id!r} is not kebab-case")
        if self.direction not in (">", "<"):
            raise ValueError(f"claim {self.id}: direction must be '>' or '<', not {self.direction!r}")
        if not math.isfinite(self.threshold):
            raise ValueError(f"claim {self.id}: threshold must be a finite number")
        for name in ("source", "statement", "measurement", "criterion"):
            if not getattr(self, name).strip():
                raise ValueError(f"claim {self.id}: {name} is empty")

    def satisfied(self, value: float) -> bool:
        """Whether one value meets the criterion (NaN never does)."""
        return value > self.threshold if self.direction == ">" else value < self.threshold
