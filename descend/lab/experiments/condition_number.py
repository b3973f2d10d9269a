"""Steps to converge against the condition number: gradient descent O(κ), heavy-ball momentum O(√κ)."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch

import descend

from ..core import Context, Result, fitted_slope

NAME = "condition-number"
TITLE = "3. Momentum against the condition number"
CLAIM = ("On quadratics with condition number κ, gradient descent at its best step 2/(L+μ) needs O(κ) steps and "
         "heavy-ball momentum with the optimal α = 4/(√L+√μ)², β = ((√κ−1)/(√κ+1))² needs O(√κ): fitted log-log "
         "slopes near 1 and 1/2.")

REDUCTION = 1e-6  # steps until ‖θ‖ ≤ 1e-6·‖θ₀‖


def steps_to_converge(kappa: float, momentum: bool, limit: int) -> int:
    mu, big_l = 1.0, kappa
    curvature = torch.tensor([mu, big_l], dtype=torch.float64)
    theta = torch.ones(2, dtype=torch.float64, requires_grad=True)
    if momentum:
        lr = 4 / (math.sqrt(big_l) + math.sqrt(mu)) ** 2
        beta = ((math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1)) ** 2
        optimizer = descend.SGD([theta], lr=lr, momentum=beta)  # velocity form = heavy ball
    else:
        optimizer = descend.SGD([theta], lr=2 / (big_l + mu))
    start = theta.detach().norm().item()
    for step in range(1, limit + 1):
        theta.grad = curvature * theta.detach()
        optimizer.step()
        if theta.detach().norm().item() <= REDUCTION * start:
            return step
    return limit


def run(ctx: Context) -> Result:
    kappas = [10, 30, 100, 300, 1000, 3000, 10000]
    limit = 200_000
    counts = {"gradient descent": [], "heavy ball": []}
    for kappa in ctx.track(kappas):
        counts["gradient descent"].append(steps_to_converge(kappa, False, limit))
        counts["heavy ball"].append(steps_to_converge(kappa, True, limit))
    slopes = {name: fitted_slope(kappas, steps) for name, steps in counts.items()}

    figure, axis = plt.subplots(figsize=(6.5, 4.5))
    for name, steps in counts.items():
        axis.loglog(kappas, steps, "o-", label=f"{name}: slope {slopes[name]:.2f}")
    axis.set_xlabel("condition number κ"), axis.set_ylabel(f"steps to ‖θ‖ ≤ {REDUCTION:g}‖θ₀‖"), axis.legend()
    axis.set_title("steps to converge on a 2-D quadratic")
    ctx.save(figure, "slopes")

    held = 0.85 <= slopes["gradient descent"] <= 1.15 and 0.35 <= slopes["heavy ball"] <= 0.65
    summary = (f"Fitted slopes: gradient descent {slopes['gradient descent']:.2f}, heavy ball {slopes['heavy ball']:.2f}; "
               f"at κ = 10⁴: {counts['gradient descent'][-1]} against {counts['heavy ball'][-1]} steps.")
    return Result(held, summary, {"kappas": kappas, "steps": counts, "slopes": slopes})
