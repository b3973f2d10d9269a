"""Hyperparameter grids that grow until the best value lies inside them.

A comparison is evidence only when every compared optimizer ran at its own best setting: ``search`` evaluates a
grid (the product of its axes), and while the best point sits at an end of an axis it adds the next value beyond
that end, at most ``extensions`` times per axis. The record it returns is what results.json keeps for the claim:
the final grid, the best point, and ``at_edge``, true when the best still sits at an end of a grid that could have
grown further (the verdict is then "inconclusive (grid edge)"). An axis's admissible bound (momentum 0, no weight
decay) is not an edge: nothing lies beyond it. A grid whose every setting scores the same (a model that learns
nothing at any rate: every score within 0.1% of the others) is ``flat``: no setting is best, so no end is an edge.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

FLAT = 1e-3  # settings whose scores all lie within 0.1% of each other: the grid is flat, no setting is best


def half_decade(value: float, up: bool) -> float:
    """The neighbour of ``value`` on the 1, 3, 10, 30, … grid: 0.03 → 0.1 (up) or 0.01 (down)."""
    exponent = math.floor(math.log10(value) + 1e-9)
    ones = value / 10**exponent < 2  # a 1·10^k rather than a 3·10^k
    if up:
        return float(f"{(3 if ones else 10) * 10**exponent:.0e}")
    return float(f"{(0.3 if ones else 1) * 10**exponent:.0e}")


def geometric(value: float, factor: float) -> float:
    """``value·factor`` rounded to 3 significant digits; half-decade factors land on the 1, 3, 10, … grid."""
    if abs(factor - math.sqrt(10)) < 1e-9 or abs(factor - 1 / math.sqrt(10)) < 1e-9:
        return half_decade(value, factor > 1)
    return float(f"{value * factor:.3g}")


def log_grid(low: float, high: float, per_decade: int = 2) -> tuple[float, ...]:
    """``per_decade`` values per decade from ``low`` to ``high`` (both included)."""
    count = round(math.log10(high / low) * per_decade)
    if per_decade == 2:
        values = [low]
        for _ in range(count):
            values.append(half_decade(values[-1], up=True))
        return tuple(values)
    return tuple(float(f"{low * 10 ** (k / per_decade):.3g}") for k in range(count + 1))


@dataclass(frozen=True)
class Axis:
    """One hyperparameter's starting grid (increasing) and how it continues past its ends, ``per_decade`` steps
    per decade.

    ``kind="log"``: steps of the value itself (learning rates). ``kind="log0"``: the same upwards, and 0 below
    the lowest value (weight decay: none at all is the admissible bound). ``kind="momentum"``: steps of 1 − value,
    for μ, β, γ and p in [0, 1): 0.9 → 0.97 → 0.99 upwards, 0.7 → 0 downwards (0 is the admissible bound).
    """

    name: str
    values: tuple[float, ...]
    kind: str = "log"
    per_decade: int = 2

    def __post_init__(self):
        if not self.values or list(self.values) != sorted(set(self.values)):
            raise ValueError(f"axis {self.name}: values must be increasing and distinct, got {self.values}")
        if self.kind not in ("log", "log0", "momentum"):
            raise ValueError(f"axis {self.name}: kind must be 'log', 'log0' or 'momentum', not {self.kind!r}")

    def beyond(self, value: float, up: bool) -> float | None:
        """The next value past ``value`` (an end of the grid), or None at the axis's admissible bound."""
        factor = 10 ** (1 / self.per_decade)
        if self.kind == "log0" and not up:
            return None if value == 0.0 else 0.0
        if self.kind in ("log", "log0"):
            return geometric(value, factor if up else 1 / factor)
        gap = 1.0 - value
        if not up and gap >= 1.0:
            return None  # μ = 0: plain gradient steps, nothing below
        gap = geometric(gap, 1 / factor if up else factor)
        return 0.0 if gap >= 1.0 else round(1.0 - gap, 12)


def lr_axis(*values: float, per_decade: int = 2) -> Axis:
    return Axis("lr", tuple(values), per_decade=per_decade)


def momentum_axis(*values: float, name: str = "momentum", per_decade: int = 2) -> Axis:
    return Axis(name, tuple(values), kind="momentum", per_decade=per_decade)


def search(score: Callable[[list[dict[str, float]]], Sequence[float]], axes: Sequence[Axis], metric: str,
           extensions: int = 3) -> dict[str, Any]:
    """The best point of the grid by ``score`` (lower is better; NaN and ±inf count as diverged), growing the grid
    at an end that holds the best point.

    ``score`` takes a list of points ({axis name: value}) and returns one number per point, so a caller can run
    many settings at once. Returns the tuning record: ``grid``, ``best``, ``at_edge``, ``edges`` (axes whose best is
    at an extendable end), ``at_bound``, ``extensions`` (values added per axis), ``metric`` and every ``scores``.
    """
    grid = {axis.name: list(axis.values) for axis in axes}
    added = {axis.name: 0 for axis in axes}
    scores: dict[tuple[float, ...], float] = {}
    while True:
        points = list(itertools.product(*(grid[axis.name] for axis in axes)))
        new = [p for p in points if p not in scores]
        if new:
            for point, value in zip(new, score([dict(zip(grid, p)) for p in new])):
                value = float(value)
                scores[point] = value if math.isfinite(value) else math.inf
        best = min(points, key=lambda p: scores[p])  # ties: the first in grid order
        finite = [scores[p] for p in points if math.isfinite(scores[p])]
        flat = len(finite) == len(points) > 1 and max(finite) - min(finite) <= FLAT * max(abs(min(finite)), 1e-30)
        if flat:
            best = points[len(points) // 2]  # every setting scores the same: none is best, none is an edge
            break
        grew = False
        for index, axis in enumerate(axes):
            values, value = grid[axis.name], best[index]
            for up, end in ((False, values[0]), (True, values[-1])):
                if value != end or added[axis.name] >= extensions:
                    continue
                following = axis.beyond(value, up)
                if following is not None and following not in values:
                    values.insert(len(values) if up else 0, following)
                    added[axis.name] += 1
                    grew = True
        if not grew:
            break
    best_point = dict(zip(grid, best))
    edges, bounds = [], []
    for index, axis in enumerate(axes if not flat else ()):
        values, value = grid[axis.name], best[index]
        for up, end in ((False, values[0]), (True, values[-1])):
            if value == end:
                (edges if axis.beyond(value, up) is not None else bounds).append(axis.name)
    return {"grid": grid, "best": best_point, "at_edge": bool(edges), "edges": sorted(set(edges)),
            "at_bound": sorted(set(bounds)), "flat": flat, "extensions": added, "metric": metric,
            "best_score": scores[best],
            "scores": [{**dict(zip(grid, p)), "score": scores[p]} for p in sorted(scores)]}


def one_at_a_time(run: Callable[..., float]) -> Callable[[list[dict[str, float]]], list[float]]:
    """A ``score`` for ``search`` from a function of one point's keyword arguments."""
    return lambda points: [run(**point) for point in points]
