"""Steps to converge against the condition number: gradient descent O(κ), heavy-ball momentum O(√κ)."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch

import descend

from .. import plots
from ..claims import BEYOND, SLIDES, Claim
from ..core import Context, Result, fitted_slope

NAME = "condition-number"
ORDER = 3
TITLE = "Momentum against the condition number"
COST = {"run": 0.6}
_SOURCE = (f"{BEYOND}: the classical rates of gradient descent and of Polyak's heavy ball on quadratics (Polyak 1964; "
           f"Nesterov, Introductory Lectures on Convex Optimization, 2004, §2.1); the course shows the zigzag only, in "
           f"{SLIDES}, slide “Gradient Descent Paths on Quadratic Loss (New Hessian for Clear Zigzags)”")
CLAIMS = [
    Claim(id="gd-steps-grow-linearly-with-condition-number", source=_SOURCE,
          statement="Plain gradient descent zigzags across an ill-conditioned valley: at its best step 2/(L+μ) it "
                    "needs O(κ) steps.",
          quote="paraphrase", kind="worked check", beyond_course=True,
          measurement="fitted log-log slope of steps to ‖θ‖ ≤ 1e-4‖θ₀‖ against κ = 10 … 1000, on a 2-D "
                      "quadratic with curvatures 1 and κ",
          criterion="slope between 0.85 and 1.15", threshold=(0.85, 1.15), direction="between", deterministic=True),
    Claim(id="heavy-ball-steps-grow-as-root-condition-number", source=_SOURCE,
          statement="Momentum accelerates along the valley: heavy ball with α = 4/(√L+√μ)², "
                    "β = ((√κ−1)/(√κ+1))² needs O(√κ) steps.",
          quote="paraphrase", kind="worked check", beyond_course=True,
          measurement="fitted log-log slope of steps to ‖θ‖ ≤ 1e-4‖θ₀‖ against κ = 10 … 1000",
          criterion="slope between 0.35 and 0.65", threshold=(0.35, 0.65), direction="between", deterministic=True),
]

REDUCTION = 1e-4  # steps until ‖θ‖ ≤ 1e-4·‖θ₀‖


def steps_to_converge(kappa: float, momentum: bool, limit: int) -> int:
    mu, big_l = 1.0, kappa
    curvature = torch.tensor([mu, big_l], dtype=torch.float64)
    theta = torch.ones(2, dtype=torch.float64, requires_grad=True)
    theta.grad = torch.zeros(2, dtype=torch.float64)
    if momentum:
        lr = 4 / (math.sqrt(big_l) + math.sqrt(mu)) ** 2
        beta = ((math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1)) ** 2
        optimizer = descend.SGD([theta], lr=lr, momentum=beta)  # velocity form = heavy ball
    else:
        optimizer = descend.SGD([theta], lr=2 / (big_l + mu))
    view, gradient = theta.detach(), theta.grad
    start = view.norm().item()
    for step in range(1, limit + 1):
        torch.mul(curvature, view, out=gradient)
        optimizer.step()
        if view.norm().item() <= REDUCTION * start:
            return step
    return limit


def run(ctx: Context) -> Result:
    kappas = [10, 30, 100, 300, 1000] + ([3000, 10000] if ctx.full else [])
    limit = 200_000
    counts = {"GD": [], "heavy ball": []}
    for kappa in ctx.track(kappas):
        counts["GD"].append(steps_to_converge(kappa, False, limit))
        counts["heavy ball"].append(steps_to_converge(kappa, True, limit))
    slopes = {name: fitted_slope(kappas, steps) for name, steps in counts.items()}
    if ctx.figures_wanted:
        figure, axis = plt.subplots(figsize=(6.5, 4.5))
        for name, steps in counts.items():
            axis.loglog(kappas, steps, "o-", label=f"{name}: slope {slopes[name]:.2f}", color=ctx.color(name))
        axis.set_xlabel("condition number κ = L/μ"), axis.set_ylabel(f"steps to ‖θ‖ ≤ {REDUCTION:g}‖θ₀‖")
        axis.legend(), axis.set_title("steps to converge on a 2-D quadratic")
        ctx.save(figure, "slopes", caption="Log-log: gradient descent's step count grows like κ (slope 1), heavy "
                 "ball's like √κ (slope ½); at κ = 1000 that is thousands of steps against about a hundred.", claims=[c.id for c in CLAIMS])
        ctx.interactive(plots.curves({f"{name}": (kappas, steps) for name, steps in counts.items()},
                                     "steps to converge against κ", "condition number κ", "steps", log_x=True,
                                     log_y=True, mode="lines+markers"),
                        "slopes-interactive", caption="The same counts, interactive: hover a point for its κ and "
                        "step count.", claims=[c.id for c in CLAIMS])
    summary = (f"Fitted slopes: gradient descent {slopes['GD']:.2f}, heavy ball {slopes['heavy ball']:.2f}; "
               f"at κ = {kappas[-1]}: {counts['GD'][-1]} against {counts['heavy ball'][-1]} steps.")
    return Result({"gd-steps-grow-linearly-with-condition-number": slopes["GD"],
                   "heavy-ball-steps-grow-as-root-condition-number": slopes["heavy ball"]},
                  summary, {"kappas": kappas, "steps": counts, "slopes": slopes})
