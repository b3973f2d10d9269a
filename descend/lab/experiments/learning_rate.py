"""Learning rate too low, right, and too high."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch

import descend

from .. import data
from ..core import Context, Result

NAME = "learning-rate"
TITLE = "2. Learning rate too low / right / too high"
CLAIM = ("Gradient descent on a quadratic with largest curvature λ_max converges for α < 2/λ_max and diverges above "
         "it; on a real task a too-small rate learns slowly and a too-large one fails to learn.")

CURVATURES = (1.0, 10.0)  # f(θ) = ½ Σ λᵢ θᵢ²; λ_max = 10, so the threshold is 2/λ_max = 0.2


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


def divergence_threshold(steps: int = 200, tolerance: float = 1e-4) -> float:
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
    quadratic_rates = {"too low (0.01)": 0.01, "right (0.15)": 0.15, "too high (0.21)": 0.21}
    curves = {label: quadratic_run(lr, 60) for label, lr in quadratic_rates.items()}

    split = data.digits(ctx.seed)
    steps = 600 if ctx.full else 250
    task_rates = {"too low (1e-4)": 1e-4, "right (0.3)": 0.3, "too high (30)": 30.0}
    task_curves, final = {}, {}
    for label, lr in ctx.track(task_rates.items(), total=len(task_rates)):
        torch.manual_seed(ctx.seed)
        model = ctx.place(data.mlp(64, 64, 10, depth=1))
        optimizer = descend.SGD(model.parameters(), lr=lr, momentum=0.9, dampening=0.9, nonfinite="skip")
        task_curves[label] = data.train(model, optimizer, split, steps, generator=ctx.generator())
        final[label] = data.evaluate(model, split.x_test, split.y_test)[1]

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for label, losses in curves.items():
        left.semilogy(losses, label=label)
    left.set_title(f"quadratic, λ = {CURVATURES}: 2/λ_max = {threshold:.3f}, measured {measured:.4f}")
    left.set_xlabel("step"), left.set_ylabel("loss"), left.legend()
    for label, losses in task_curves.items():
        right.plot([x if math.isfinite(x) else float("nan") for x in losses], label=f"{label}: test acc {final[label]:.2f}")
    right.set_yscale("log"), right.set_title("MLP on digits, SGD with EMA momentum"), right.set_xlabel("step")
    right.legend()
    ctx.save(figure, "curves")

    low, right_acc, high = final.values()
    held = abs(measured - threshold) / threshold < 0.02 and right_acc > max(low, high) + 0.2
    summary = (f"Measured divergence threshold {measured:.4f} against 2/λ_max = {threshold:.4f} "
               f"({abs(measured - threshold) / threshold:.2%} off). Digits test accuracy: too low {low:.2f}, "
               f"right {right_acc:.2f}, too high {high:.2f}.")
    return Result(held, summary, {"threshold_theory": threshold, "threshold_measured": measured,
                                  "test_accuracy": final, "quadratic_final_loss": {k: v[-1] for k, v in curves.items()}})
