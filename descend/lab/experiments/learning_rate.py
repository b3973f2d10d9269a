"""Learning rate too low, right, and too high (seed 004's three slides)."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch

import descend

from .. import data, plots
from ..claims import Claim
from ..core import Context, Result

NAME = "learning-rate"
ORDER = 2
TITLE = "Learning rate too low / right / too high"
CLAIMS = [
    Claim(id="gd-diverges-above-two-over-lambda-max",
          source="seed 004, slides “Too low”, “Just right”, “Too high”",
          statement="Too large a learning rate causes drastic updates which lead to divergent behaviour; on a "
                    "quadratic the boundary is α = 2/λ_max.",
          measurement="divergence threshold found by bisection on α for f(θ) = ½(θ₁² + 10θ₂²), relative distance "
                      "to 2/λ_max = 0.2",
          criterion="relative distance < 0.02",
          threshold=0.02, direction="<", deterministic=True),
    Claim(id="lr-too-low-or-too-high-learns-less",
          source="seed 004, slides “Too low” (“requires many updates”) and “Too high”",
          statement="A small learning rate requires many updates before reaching the minimum; a too high one "
                    "diverges; the right one swiftly reaches the minimum.",
          measurement="test accuracy of an MLP on digits after 200 steps at α = 0.3 minus the better of α = 1e-4 "
                      "and α = 30 (SGD, EMA momentum 0.9)",
          criterion="difference > 0.2 (20 accuracy points)",
          threshold=0.2, direction=">"),
]

CURVATURES = (1.0, 10.0)  # f(θ) = ½ Σ λᵢ θᵢ²; λ_max = 10, so the threshold is 2/λ_max = 0.2
TASK_RATES = {"too low (1e-4)": 1e-4, "right (0.3)": 0.3, "too high (30)": 30.0}


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


def divergence_threshold(steps: int = 100, tolerance: float = 1e-4) -> float:
    """Bisection on α for the boundary between a shrinking and a growing loss (measured, not assumed)."""
    low, high = 0.01, 1.0
    while high - low > tolerance:
        middle = (low + high) / 2
        losses = quadratic_run(middle, steps)
        low, high = (middle, high) if losses[-1] < losses[0] else (low, middle)
    return (low + high) / 2


def run(ctx: Context) -> Result:
    threshold = 2 / max(CURVATURES)
    measured = divergence_threshold()
    split = data.digits(ctx.seed)
    steps = 600 if ctx.full else 200
    task_curves, final = {}, {}
    for label, lr in ctx.track(TASK_RATES.items(), total=len(TASK_RATES)):
        torch.manual_seed(ctx.seed)
        model = ctx.place(data.mlp(64, 64, 10, depth=1))
        optimizer = descend.SGD(model.parameters(), lr=lr, momentum=0.9, dampening=0.9, nonfinite="skip")
        task_curves[label] = data.train(model, optimizer, split, steps, generator=ctx.generator())
        final[label] = data.evaluate(model, split.x_test, split.y_test)[1]
    low, right, high = final.values()
    if ctx.figures_wanted:
        draw(ctx, threshold, measured, task_curves, final)
    summary = (f"Measured divergence threshold {measured:.4f} against 2/λ_max = {threshold:.4f} "
               f"({abs(measured - threshold) / threshold:.2%} off). Digits test accuracy: too low {low:.2f}, "
               f"right {right:.2f}, too high {high:.2f}.")
    return Result({"gd-diverges-above-two-over-lambda-max": abs(measured - threshold) / threshold,
                   "lr-too-low-or-too-high-learns-less": right - max(low, high)}, summary,
                  {"threshold_theory": threshold, "threshold_measured": measured, "test_accuracy": final})


def draw(ctx: Context, threshold: float, measured: float, task_curves: dict, final: dict) -> None:
    rates = {"too low (α = 0.01)": 0.01, "right (α = 0.15)": 0.15, "too high (α = 0.21)": 0.21}
    curves = {label: quadratic_run(lr, 60) for label, lr in rates.items()}
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for label, losses in curves.items():
        left.semilogy(losses, label=label, color=ctx.color(label))
    left.set_title(f"GD on ½(θ₁² + 10θ₂²): 2/λ_max = {threshold:.3f}, measured {measured:.4f}")
    left.set_xlabel("step"), left.set_ylabel("loss f(θ) (log scale)"), left.legend()
    for label, losses in task_curves.items():
        right.plot([x if math.isfinite(x) else float("nan") for x in losses], color=ctx.color(label),
                   label=f"{label}: test accuracy {final[label]:.2f}")
    right.set_yscale("log"), right.set_title("MLP on digits, SGD with EMA momentum 0.9")
    right.set_xlabel("step"), right.set_ylabel("mini-batch cross-entropy (nats, log scale)"), right.legend(fontsize=8)
    ctx.save(figure, "curves", caption="Left: just below 2/λ_max the loss still falls, just above it grows. Right: "
             "on a real task the too-low rate barely moves and the too-high one blows up; the middle one learns.")
    steps = list(range(len(next(iter(task_curves.values())))))
    ctx.interactive(plots.curves({label: (steps, [v if math.isfinite(v) else None for v in losses])
                                  for label, losses in task_curves.items()},
                                 "MLP on digits: training loss at three learning rates", "step",
                                 "mini-batch cross-entropy (nats)", log_y=True),
                    "curves-interactive", caption="The digits curves, interactive: hover for values, click a legend "
                    "entry to hide it.")
