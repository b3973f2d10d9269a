"""A claim from the course material, fixed before the run: what is said, where, what is measured, and when it holds.

The course is five documents (``shared/seeds/`` beside the repository); a claim's ``source`` names the document the
way a reader of the course would (lecture, author, section, equation, slide title), never by its file name.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

KEBAB = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")

# The course's documents, as a citation names them.
ASSIGNMENT = "Assignment 3 (written), Adam and dropout, student's answers"  # 000
PREPARATION = "CS 7150 Deep Learning (P. Hand), Day 8 preparation questions, graded student answers"  # 001
LECTURE = "S. Moka, MATH5836 Week 4 lecture notes (UNSW)"  # 002
QUIZ = "Quiz 7 with hints (CS231n-style notes)"  # 003
SLIDES = "R. Balestrieri, CSCI1470 Deep Learning slides"  # 004
BEYOND = "beyond the course"  # a result the course does not state: the source says where it comes from
DOCUMENTS = (ASSIGNMENT, PREPARATION, LECTURE, QUIZ, SLIDES)

KINDS = ("experiment", "worked check")
QUOTES = ("verbatim", "paraphrase")
# The range of the measured quantity, which decides the interval (see verdicts.py):
SCALES = {
    "difference": (-math.inf, math.inf),  # mean with a Student-t interval
    "ratio": (0.0, math.inf),             # geometric mean, t-interval of the logarithms
    "fraction": (0.0, 1.0),               # a per-seed fraction: bootstrap interval of the mean over seeds
    "nonnegative": (0.0, math.inf),       # a per-seed size (a largest error): bootstrap interval of the mean
    "seed fraction": (0.0, 1.0),          # 1 or 0 per seed (the event happened or not): Clopper–Pearson
}


@dataclass(frozen=True)
class Claim:
    """One checkable statement.

    ``direction`` is ``">"`` or ``"<"`` against a number, or ``"between"`` a pair ``(low, high)`` (an equivalence
    margin for "similar", a tolerance around a predicted value). The claim *held* when the whole 95% interval of the
    effect meets the criterion, *did not hold* when the whole interval misses it, and is *inconclusive* when it
    straddles a limit. A comparison (``compares`` names the tuned optimizers) whose best hyperparameter still sits
    at the edge of its extended grid is *inconclusive (grid edge)*.

    ``kind`` is ``"worked check"`` for identities and statements that cannot fail given the setup (a formula
    evaluated, an invariant of the algorithm): they check the lab's arithmetic and the course's algebra, and are
    counted apart from the experiments, which could have come out either way.
    """

    id: str           # kebab-case, unique across the lab
    source: str       # in the course's terms: "S. Moka, MATH5836 Week 4 lecture notes (UNSW), §4.5, eq. (4.26)"
    statement: str    # the claim, in the source's words when ``quote`` is "verbatim"
    measurement: str  # what is measured, with units
    criterion: str    # the criterion in words, e.g. "ratio > 1"
    threshold: float | tuple[float, float]
    direction: str    # ">", "<" or "between"
    quote: str        # "verbatim": ``statement`` is the source's own words; "paraphrase": it is the lab's
    kind: str = "experiment"
    scale: str = "difference"
    deterministic: bool = False  # one run decides it (no randomness anywhere in it)
    compares: tuple[str, ...] = ()  # labels of the tuning records this claim's comparison rests on
    beyond_course: bool = False  # the statement, or the criterion's number, comes from outside the course

    def __post_init__(self):
        if not KEBAB.match(self.id):
            raise ValueError(f"claim id {self.id!r} is not kebab-case")
        if self.direction not in (">", "<", "between"):
            raise ValueError(f"claim {self.id}: direction must be '>', '<' or 'between', not {self.direction!r}")
        limits = self.threshold if self.direction == "between" else (self.threshold,)
        if self.direction == "between" and not (isinstance(self.threshold, tuple) and len(self.threshold) == 2
                                                and self.threshold[0] < self.threshold[1]):
            raise ValueError(f"claim {self.id}: 'between' needs a threshold (low, high) with low < high")
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in limits):
            raise ValueError(f"claim {self.id}: threshold must be finite numbers")
        for name, allowed in (("kind", KINDS), ("quote", QUOTES), ("scale", tuple(SCALES))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"claim {self.id}: {name} must be one of {allowed}, not {getattr(self, name)!r}")
        for name in ("source", "statement", "measurement", "criterion"):
            if not getattr(self, name).strip():
                raise ValueError(f"claim {self.id}: {name} is empty")
        if not any(document in self.source for document in DOCUMENTS + (BEYOND,)):
            raise ValueError(f"claim {self.id}: the source must name a course document or say {BEYOND!r}")
        if self.beyond_course and BEYOND not in self.source:
            raise ValueError(f"claim {self.id}: a claim beyond the course says so in its source ({BEYOND!r})")

    @property
    def range(self) -> tuple[float, float]:
        """The values the measured quantity can take."""
        return SCALES[self.scale]

    def satisfied(self, value: float) -> bool:
        """Whether one value meets the criterion (NaN never does)."""
        if self.direction == "between":
            low, high = self.threshold
            return low < value < high
        return value > self.threshold if self.direction == ">" else value < self.threshold

    def violated(self, low: float, high: float) -> bool:
        """Whether every value of [low, high] misses the criterion."""
        if self.direction == "between":
            lo, hi = self.threshold
            return high <= lo or low >= hi
        return high <= self.threshold if self.direction == ">" else low >= self.threshold

    def threshold_text(self) -> str:
        if self.direction == "between":
            return f"between {self.threshold[0]:g} and {self.threshold[1]:g}"
        return f"{'above' if self.direction == '>' else 'below'} {self.threshold:g}"
