"""A claim's effect over seeds: an estimate, a 95% interval that stays inside the quantity's range, a verdict, the
one-line reason for it, and how many seeds were needed to reach it.

The interval depends on the claim's ``scale``:

* ``difference``: mean ± t₀.₉₇₅,ₙ₋₁·s/√n (Student t);
* ``ratio``: the same on the logarithms, exponentiated: a geometric mean and an interval inside (0, ∞);
* ``fraction`` and ``nonnegative``: the mean with a percentile bootstrap interval (resampling the seeds), which lies
  inside [min, max] of the seeds' values and so inside the range;
* ``seed fraction``: each seed gives 1 or 0 (the event happened or not); the proportion with its exact
  Clopper–Pearson interval.

When a seed's effect is infinite (a run diverged), the estimate is the median with the order-statistics interval
for it (binomial, distribution-free); a NaN (an undefined effect) leaves the claim inconclusive. A deterministic
claim runs once and is decided by its value.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .claims import Claim

LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 4000
VERDICTS = ("held", "did not hold", "inconclusive", "inconclusive (grid edge)")


def interval(claim: Claim, values: Sequence[float]) -> dict[str, Any]:
    """{"estimate", "center", "interval", "interval_method"} for the seeds' ``values`` (at least two, none NaN)."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    if claim.scale == "seed fraction":
        successes = int(np.sum(x > 0.5))
        return {"estimate": successes / n, "center": f"proportion of seeds ({successes} of {n})",
                "interval": list(clopper_pearson(successes, n)), "interval_method": "clopper-pearson"}
    if not np.all(np.isfinite(x)) or (claim.scale == "ratio" and np.any(x <= 0)):
        low, high = median_interval(x)
        return {"estimate": float(np.median(x)), "center": "median (a seed's effect is infinite or zero)",
                "interval": [low, high], "interval_method": "order statistics (median)"}
    if claim.scale == "ratio":
        center, low, high = student_t(np.log(x))
        return {"estimate": math.exp(center), "center": "geometric mean",
                "interval": [math.exp(low), math.exp(high)], "interval_method": "t-log"}
    if claim.scale in ("fraction", "nonnegative"):
        low, high = bootstrap_mean(x)
        return {"estimate": float(x.mean()), "center": "mean", "interval": [low, high],
                "interval_method": "bootstrap"}
    center, low, high = student_t(x)
    return {"estimate": center, "center": "mean", "interval": [low, high], "interval_method": "t"}


def student_t(x: np.ndarray) -> tuple[float, float, float]:
    from scipy.stats import t

    mean = math.fsum(x) / len(x)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in x) / (len(x) - 1))
    half = float(t.ppf(0.5 + LEVEL / 2, len(x) - 1)) * sd / math.sqrt(len(x))
    return mean, mean - half, mean + half


def bootstrap_mean(x: np.ndarray) -> tuple[float, float]:
    """Percentile interval of the mean over resampled seeds (a fixed generator: the same values, the same interval)."""
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(0)
    means = x[rng.integers(0, len(x), size=(BOOTSTRAP_RESAMPLES, len(x)))].mean(axis=1)
    low, high = np.quantile(means, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return float(max(low, x.min())), float(min(high, x.max()))


def clopper_pearson(successes: int, n: int) -> tuple[float, float]:
    from scipy.stats import beta

    alpha = 1 - LEVEL
    low = 0.0 if successes == 0 else float(beta.ppf(alpha / 2, successes, n - successes + 1))
    high = 1.0 if successes == n else float(beta.ppf(1 - alpha / 2, successes + 1, n - successes))
    return low, high


def median_interval(x: np.ndarray) -> tuple[float, float]:
    """[x₍ⱼ₎, x₍ₙ₊₁₋ⱼ₎] with the largest j whose two-sided binomial coverage of the median is ≥ 95%; [min, max]
    when there are too few seeds for that."""
    from scipy.stats import binom

    ordered = np.sort(x)
    n = len(x)
    j = 0
    while j + 1 <= n // 2 and binom.cdf(j, n, 0.5) <= (1 - LEVEL) / 2:
        j += 1  # P(fewer than j+1 values below the median) still within the tail
    j = max(j, 1)
    return float(ordered[j - 1]), float(ordered[n - j])


def decide(claim: Claim, low: float, high: float) -> str:
    if claim.satisfied(low) and claim.satisfied(high):
        return "held"
    if claim.violated(low, high):
        return "did not hold"
    return "inconclusive"


def _number(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    return f"{value:.3g}" if value == 0 or 1e-3 <= abs(value) < 1e4 else f"{value:.2e}"


def edges(tuning: dict[str, dict]) -> list[str]:
    """'SGD: lr at the top of its grid (0.3)' for every tuning record whose best value sits at a grid edge."""
    found = []
    for label, record in tuning.items():
        for axis in record.get("edges", []):
            grid = record["grid"][axis]
            where = "top" if record["best"][axis] == grid[-1] else "bottom"
            found.append(f"{label}'s best {axis} {record['best'][axis]:g} is at the {where} of its grid")
    return found


def aggregate(claim: Claim, effects: Sequence[float], tuning: dict[str, dict] | None = None) -> dict[str, Any]:
    """Everything results.json records about a claim's outcome: the seeds' effects, estimate, interval, verdict, the
    reason for it and the number of seeds it needed."""
    values = [float(v) for v in effects]
    tuning = tuning or {}
    entry: dict[str, Any] = {"effects": values, "deterministic": claim.deterministic}
    if claim.deterministic:
        values = values[:1]
        value = values[0]
        entry.update(effects=values, n=1, mean=value, estimate=value, center="one deterministic run",
                     interval=[value, value] if math.isfinite(value) else None, interval_method="deterministic")
    elif any(math.isnan(v) for v in values):
        entry.update(n=len(values), mean=math.nan, estimate=math.nan, center="undefined", interval=None,
                     interval_method="none (an effect is undefined)")
    elif len(values) < 2:
        entry.update(n=1, mean=values[0], estimate=values[0], center="one seed", interval=None,
                     interval_method="none (one seed: run with --seeds 2 or more)")
    else:
        entry.update(n=len(values), **interval(claim, values))
        entry["mean"] = entry["estimate"]
    entry["ci"] = entry["interval"]  # the name earlier readers use

    if entry["interval"] is not None:
        low, high = entry["interval"]
        verdict = decide(claim, low, high)
    elif claim.deterministic and not math.isnan(values[0]):
        verdict = "held" if claim.satisfied(values[0]) else "did not hold"
    else:
        verdict = "inconclusive"
    reason = _reason(claim, entry, verdict)
    at_edge = edges(tuning)
    if at_edge:
        verdict = "inconclusive (grid edge)"
        reason = (f"{'; '.join(at_edge)} even after widening it: the comparison measures the grid, not the claim "
                  f"(the interval alone: {reason})")
    entry.update(verdict=verdict, reason=reason, tuning=tuning,
                 seeds_needed=1 if claim.deterministic else seeds_needed(claim, values, verdict))
    entry["note"] = "deterministic: one run, no interval" if claim.deterministic else ""
    return entry


def _reason(claim: Claim, entry: dict[str, Any], verdict: str) -> str:
    limit = claim.threshold_text()
    if entry["interval"] is None:
        if claim.deterministic:
            return f"the one deterministic run gave {_number(entry['estimate'])}, {'' if verdict == 'held' else 'not '}{limit}"
        if math.isnan(entry["estimate"]):
            bad = [i for i, v in enumerate(entry["effects"]) if math.isnan(v)]
            return f"the effect is undefined (NaN) for seed #{bad[0] + 1}: no verdict"
        return "one seed gives no interval: run with --seeds 2 or more"
    low, high = entry["interval"]
    if claim.deterministic:
        return f"the one deterministic run gave {_number(low)}, {'' if verdict == 'held' else 'not '}{limit}"
    span = f"the {entry['n']}-seed 95% interval [{_number(low)}, {_number(high)}]"
    if verdict == "held":
        return f"{span} lies entirely {limit}"
    if verdict == "did not hold":
        return f"{span} lies entirely outside the criterion ({claim.criterion})"
    return f"{span} straddles the criterion ({claim.criterion}): more seeds may decide it"


def seeds_needed(claim: Claim, values: Sequence[float], verdict: str) -> int | None:
    """The fewest seeds (the first k of them) from which on every longer prefix gives the final verdict; None when
    the final verdict is not decided."""
    if verdict not in ("held", "did not hold") or len(values) < 2:
        return None
    needed = len(values)
    for k in range(len(values) - 1, 1, -1):
        prefix = values[:k]
        low, high = interval(claim, prefix)["interval"]
        if decide(claim, low, high) != verdict:
            break
        needed = k
    return needed
