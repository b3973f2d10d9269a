"""Learning rate too low, right, and too high (the three slides of the CSCI1470 deck)."""
from __future__ import annotations

import math
from functools import lru_cache

import matplotlib.pyplot as plt
import torch

import descend

from .. import data, plots, tuning
from ..claims import BEYOND, SLIDES, Claim
from ..core import Context, Result

NAME = "learning-rate"
ORDER = 2
TITLE = "Learning rate too low / right / too high"
COST = {"tune": 0.4, "run": 0.5}

STEPS = {"quick": 60, "full": 300}
SLOW = 10  # "too low" is the best rate / 10, "too high" the best rate × 10
CAP = 10   # the too-low run may take up to CAP times the best rate's steps
LR_GRID = tuning.log_grid(1e-3, 1.0)
CURVATURES = (1.0, 10.0)  # f(θ) = ½ Σ λᵢ θᵢ²; λ_max = 10, so the threshold is 2/λ_max = 0.2

CLAIMS = [
    Claim(id="gd-diverges-above-two-over-lambda-max",
          source=f"{SLIDES}, slide “Too high”; the threshold 2/λ_max is {BEYOND} (the standard analysis of "
                 "gradient descent on a quadratic)",
          statement="Too large of a learning rate causes drastic updates which lead to divergent behaviors",
          quote="verbatim", kind="worked check", beyond_course=True,
          measurement="divergence threshold found by bisection on α for f(θ) = ½(θ₁² + 10θ₂²), divided by "
                      "2/λ_max = 0.2",
          criterion="ratio between 0.98 and 1.02", threshold=(0.98, 1.02), direction="between", scale="ratio",
          deterministic=True),
    Claim(id="lr-too-low-needs-many-more-updates", source=f"{SLIDES}, slide “Too low”",
          statement="A small learning rate requires many updates before reaching the minimum point",
          quote="verbatim",
          measurement=f"updates the best rate α*/{SLOW} needs to reach the full training loss α* reaches in "
                      f"{STEPS['quick']} steps, divided by the updates α* needs (least squares from digits' pixels to "
                      f"one-hot labels, plain SGD, batch 64; α* tuned on a grid; the slow run is stopped at {CAP}× "
                      "α*'s steps)",
          criterion="ratio > 3 (many more updates)", threshold=3.0, direction=">", scale="ratio",
          compares=("SGD",)),
    Claim(id="lr-too-high-diverges", source=f"{SLIDES}, slide “Too high”",
          statement="Too large of a learning rate causes drastic updates which lead to divergent behaviors",
          quote="verbatim",
          measurement=f"whether training at {SLOW}× the best rate α* ends with a full training loss above the "
                      "starting one (or non-finite): the proportion of seeds in which it does",
          criterion="proportion > 0.5 (it diverges in most seeds)", threshold=0.5, direction=">",
          scale="seed fraction", compares=("SGD",)),
]


def quadratic_run(lr: float, steps: int) -> list[float]:
    theta = torch.ones(len(CURVATURES), dtype=torch.float64, requires_grad=True)
    curvature = torch.tensor(CURVATURES, dtype=torch.float64)
    optimizer = descend.SGD([theta], lr=lr, nonfinite="ignore")
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = 0.5 * (curvature * theta**2).sum()
        loss.backward()
        losses.append(loss.item())
        optimizer.step()
    return losses


@lru_cache(maxsize=2)
def divergence_threshold(steps: int = 100, tolerance: float = 1e-4) -> float:
    """Bisection on α for the boundary between a shrinking and a growing loss (measured, not assumed)."""
    low, high = 0.01, 1.0
    while high - low > tolerance:
        middle = (low + high) / 2
        losses = quadratic_run(middle, steps)
        low, high = (middle, high) if losses[-1] < losses[0] else (low, middle)
    return (low + high) / 2


def least_squares(split: data.Split, seed: int, lr: float, steps: int, target: float | None = None,
                  every: int = 10) -> list[float]:
    """Plain SGD (batch 64, a new order each epoch) on linear least squares from the digits' pixels to their one-hot
    labels; returns the full training loss every ``every`` steps from step 0, inf once it is not finite. With a
    ``target``, stops once the loss is at or below it."""
    x, y = split.x_train, torch.nn.functional.one_hot(split.y_train, 10).float()
    generator = torch.Generator().manual_seed(seed)
    w = torch.zeros(64, 10, requires_grad=True)
    optimizer = descend.SGD([w], lr=lr, nonfinite="ignore")

    def loss_on(rows=slice(None)):
        return ((x[rows] @ w - y[rows]) ** 2).sum(1).mean()

    full = []
    order, position = torch.randperm(len(x), generator=generator), 0
    for step in range(steps + 1):
        if step % every == 0:
            with torch.no_grad():
                full.append(loss_on().item())
            if not math.isfinite(full[-1]) or (target is not None and full[-1] <= target):
                break
        if step == steps:
            break
        if position + 64 > len(x):
            order, position = torch.randperm(len(x), generator=generator), 0
        optimizer.zero_grad()
        loss_on(order[position:position + 64]).backward()
        position += 64
        optimizer.step()
    return [v if math.isfinite(v) else math.inf for v in full]


def tune(ctx: Context) -> dict:
    split = data.digits(ctx.seed)
    steps = STEPS["full" if ctx.full else "quick"]
    score = tuning.one_at_a_time(lambda lr: least_squares(split, ctx.seed, lr, steps)[-1])
    return {"SGD": tuning.search(score, [tuning.lr_axis(*LR_GRID)], metric=f"full training loss after {steps} steps")}


def steps_to(curve: list[float], target: float, every: int = 10) -> int | None:
    return next((i * every for i, v in enumerate(curve) if v <= target), None)


def run(ctx: Context) -> Result:
    threshold = 2 / max(CURVATURES)
    measured = divergence_threshold()
    split = data.digits(ctx.seed)
    steps = STEPS["full" if ctx.full else "quick"]
    best = ctx.tuned["SGD"]["best"]["lr"]
    right = least_squares(split, ctx.seed, best, steps)
    target = right[-1]
    right_steps = steps_to(right, target)
    low = least_squares(split, ctx.seed, best / SLOW, CAP * steps, target=target)
    low_steps = steps_to(low, target)
    high = least_squares(split, ctx.seed, best * SLOW, steps)
    diverged = not math.isfinite(high[-1]) or high[-1] > high[0]
    slower = (low_steps if low_steps is not None else CAP * steps) / right_steps
    if ctx.figures_wanted:
        draw(ctx, threshold, measured, {f"too low (α*/{SLOW} = {best / SLOW:.3g})": low, f"best (α* = {best:.3g})": right,
                                        f"too high ({SLOW}α* = {best * SLOW:.3g})": high})
    summary = (f"Measured divergence threshold {measured:.4f} against 2/λ_max = {threshold:.4f}. Least squares "
               f"on digits, best rate α* = {best:g}: it reaches training loss {target:.3f} in {right_steps} steps; "
               f"α*/{SLOW} needs {low_steps if low_steps is not None else f'more than {CAP * steps}'} steps; "
               f"{SLOW}α* ends at {high[-1]:.3g} from {high[0]:.3g} ({'diverged' if diverged else 'did not diverge'}).")
    notes = {} if low_steps is not None else {
        "lr-too-low-needs-many-more-updates": f"the slow run was stopped at {CAP}× the steps: the ratio is a lower bound"}
    return Result({"gd-diverges-above-two-over-lambda-max": measured / threshold,
                   "lr-too-low-needs-many-more-updates": slower,
                   "lr-too-high-diverges": float(diverged)}, summary,
                  {"threshold_theory": threshold, "threshold_measured": measured, "best_lr": best,
                   "target_loss": target, "steps_best": right_steps, "steps_too_low": low_steps,
                   "too_high_final_loss": high[-1], "too_high_start_loss": high[0], "too_high_diverged": diverged},
                  notes=notes)


def draw(ctx: Context, threshold: float, measured: float, task_curves: dict[str, list[float]]) -> None:
    rates = {"too low (α = 0.01)": 0.01, "right (α = 0.15)": 0.15, "too high (α = 0.21)": 0.21}
    curves = {label: quadratic_run(lr, 60) for label, lr in rates.items()}
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for label, losses in curves.items():
        left.semilogy(losses, label=label, color=ctx.color(label))
    left.set_title(f"GD on ½(θ₁² + 10θ₂²): 2/λ_max = {threshold:.3f}, measured {measured:.4f}")
    left.set_xlabel("step"), left.set_ylabel("loss f(θ) (log scale)"), left.legend()
    for label, losses in task_curves.items():
        right.plot([10 * i for i in range(len(losses))], [v if math.isfinite(v) else float("nan") for v in losses],
                   color=ctx.color(label), label=label)
    right.set_yscale("log"), right.set_title("least squares on digits, plain SGD (first seed)")
    right.set_xlabel("step"), right.set_ylabel("full training squared error (log scale)"), right.legend(fontsize=8)
    ctx.save(figure, "curves", caption="Left: just below 2/λ_max the loss still falls, just above it grows. Right: at a "
             "tenth of the best rate the loss needs many times the updates to get as low; at ten times the best rate "
             "it rises.", claims=[c.id for c in CLAIMS])
    ctx.interactive(plots.curves({label: ([10 * i for i in range(len(v))], [x if math.isfinite(x) else None for x in v])
                                  for label, v in task_curves.items()},
                                 "least squares on digits: the best rate, a tenth of it and ten times it",
                                 "step", "full training squared error", log_y=True),
                    "curves-interactive", caption="The digits curves, interactive: hover for values, click a legend "
                    "entry to hide it.", claims=["lr-too-low-needs-many-more-updates", "lr-too-high-diverges"])
