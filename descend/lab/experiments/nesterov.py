"""Nesterov momentum, three ways: the same iterates after a change of variable."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

import descend

from ..core import Context, Result
from .landscapes import rosenbrock, rosenbrock_gradient

NAME = "nesterov"
TITLE = "4. Nesterov momentum, three ways"
CLAIM = ("The exact Nesterov step (gradient at θ − αβv), the look-ahead form θ ← θ − α(βv_{t+1} + (1−β)g) and the "
         "reformulated velocity form produce the same iterates after the change of variable φ = θ − αβv.")

LR, BETA, START = 2e-3, 0.9, (-1.2, 1.0)


def gradient(point: np.ndarray) -> np.ndarray:
    return np.array(rosenbrock_gradient(*point))


def exact(steps: int) -> np.ndarray:
    """By hand: v ← βv + (1−β)∇f(θ − αβv); θ ← θ − αv.  Returns φ = θ − αβv at every step."""
    theta, v = np.array(START), np.zeros(2)
    phis = [theta - LR * BETA * v]
    for _ in range(steps):
        v = BETA * v + (1 - BETA) * gradient(theta - LR * BETA * v)
        theta = theta - LR * v
        phis.append(theta - LR * BETA * v)
    return np.array(phis)


def with_descend(steps: int, **kwargs) -> np.ndarray:
    phi = torch.tensor(START, dtype=torch.float64, requires_grad=True)
    optimizer = descend.SGD([phi], momentum=BETA, nesterov=True, **kwargs)
    path = [phi.detach().numpy().copy()]
    for _ in range(steps):
        phi.grad = torch.tensor(gradient(phi.detach().numpy()), dtype=torch.float64)
        optimizer.step()
        path.append(phi.detach().numpy().copy())
    return np.array(path)


def run(ctx: Context) -> Result:
    steps = 2000 if ctx.full else 500
    paths = {"exact (gradient at θ − αβv), by hand": exact(steps)}
    paths["look-ahead: SGD(momentum=β, dampening=β, nesterov=True)"] = with_descend(steps, lr=LR, dampening=BETA)
    paths["reformulated: SGD(lr=α(1−β), momentum=β, nesterov=True)"] = with_descend(steps, lr=LR * (1 - BETA))
    reference = paths["exact (gradient at θ − αβv), by hand"]
    gaps = {name: float(np.abs(path - reference).max()) for name, path in paths.items()}

    xs, ys = np.meshgrid(np.linspace(-1.5, 1.5, 200), np.linspace(-0.5, 2, 200))
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    left.contour(xs, ys, np.log1p(rosenbrock(xs, ys)), levels=25, cmap="viridis", linewidths=0.6)
    for (name, path), style in zip(paths.items(), ("-", "--", ":")):
        left.plot(path[:, 0], path[:, 1], style, linewidth=2, label=name.split(":")[0])
    left.legend(fontsize=8), left.set_title(f"Rosenbrock, α = {LR}, β = {BETA}: φ iterates")
    for name, path in list(paths.items())[1:]:
        right.semilogy(np.abs(path - reference).max(axis=1) + 1e-18, label=name.split(":")[0])
    right.set_title("max |φ − φ_exact| per step"), right.set_xlabel("step"), right.legend()
    ctx.save(figure, "three-ways")

    worst = max(gaps.values())
    held = worst < 1e-9
    summary = f"Over {steps} steps on Rosenbrock the three φ trajectories differ by at most {worst:.1e} (float64)."
    return Result(held, summary, {"max_difference": gaps, "steps": steps, "lr": LR, "beta": BETA})
