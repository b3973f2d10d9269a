"""Nesterov momentum (the lecture's §4.1 and Quiz 7): three forms that trace the same iterates, its smaller overshoot
of the valley floor, and the second gradient an exact Nesterov step needs beside RMSprop."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import torch

import descend

from ..claims import LECTURE, QUIZ, Claim
from ..core import Context, Result
from .landscapes import rosenbrock, rosenbrock_gradient

OVERSHOOT_RATES = (0.1, 0.3, 1.0)
OVERSHOOT_BETAS = (0.5, 0.9, 0.97)

NAME = "nesterov"
ORDER = 4
TITLE = "Nesterov momentum: three forms, the overshoot, the extra gradient"
COST = {"run": 1.0}
CLAIMS = [
    Claim(id="nesterov-forms-agree-after-change-of-variable",
          source=f"{LECTURE}, §4.1, eqs. (4.4)–(4.5) and (4.7)–(4.8); {QUIZ}, question 1 (c)",
          statement="While look-ahead momentum is not equivalent to Nesterov momentum, the gist of both methods is "
                    "similar.",
          quote="verbatim", kind="worked check",
          measurement="largest |φ − φ_exact| over 500 Rosenbrock steps, in float64, where φ = θ − αβv; two descend forms "
                      "(look-ahead with dampening β, reformulated velocity) against the exact update (4.4)–(4.5) by "
                      "hand: how far from equivalent they are",
          criterion="max difference < 1e-9 (identical iterates up to rounding: equivalent after all)",
          threshold=1e-9, direction="<", scale="nonnegative", deterministic=True),
    Claim(id="momentum-overshoots-nesterov-slows",
          source=f"{LECTURE}, §4.1, “Nesterov Momentum”",
          statement="An issue with this method is that the steps do not slow down after reaching the bottom of a "
                    "valley, and hence, there is a tendency to overshoot the valley floor. Therefore, if we know "
                    "approximately where the ball will be after each step, we can slow down the ball before the "
                    "hill slopes up again.",
          quote="verbatim",
          measurement="overshoot past the valley floor of f(θ) = θ²/2 from θ₀ = 1 (the deepest θ < 0 reached), "
                      "momentum (4.1)–(4.2) divided by Nesterov (4.4)–(4.5) at the same α and β; the smallest "
                      f"ratio over α ∈ {OVERSHOOT_RATES} × β ∈ {OVERSHOOT_BETAS}",
          criterion="smallest ratio > 1 (Nesterov overshoots less in every setting)", threshold=1.0, direction=">",
          scale="ratio", deterministic=True),
    Claim(id="exact-nesterov-with-rmsprop-needs-two-gradients",
          source=f"{LECTURE}, §4.1, “Nesterov Momentum”",
          statement="If we also require ∇C(θ^(t)) at each iteration for purpuses such as RMSprop, then the gradient "
                    "needs to be computed twice instead of once per iteration",
          quote="paraphrase", kind="worked check",
          measurement="gradient evaluations per step of exact Nesterov (4.4)–(4.5) with RMSprop's s from ∇C(θ), "
                      "written out, divided by those of descend.NAdam (look-ahead momentum with Adam's scaling), "
                      "counted in the closure over 50 steps",
          criterion="ratio between 1.99 and 2.01", threshold=(1.99, 2.01), direction="between", scale="ratio",
          deterministic=True),
]

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


def overshoot(lr: float, beta: float, nesterov: bool, steps: int = 300) -> tuple[float, np.ndarray]:
    """(deepest θ < 0 reached on f = θ²/2 from θ₀ = 1, the iterates); the EMA forms (4.1)–(4.2) and (4.4)–(4.5)."""
    theta, v, path = 1.0, 0.0, [1.0]
    for _ in range(steps):
        gradient = (theta - lr * beta * v) if nesterov else theta  # ∇f at the predicted point, or at θ
        v = beta * v + (1 - beta) * gradient
        theta = theta - lr * v
        path.append(theta)
    path = np.array(path)
    return float(max(-path.min(), 0.0)), path


def momentum_descend(lr: float, beta: float, steps: int = 300) -> np.ndarray:
    """The momentum update (4.1)–(4.2) with descend.SGD(momentum=β, dampening=β): it must match the hand-written one."""
    theta = torch.ones(1, dtype=torch.float64, requires_grad=True)
    optimizer = descend.SGD([theta], lr=lr, momentum=beta, dampening=beta)
    path = [1.0]
    for _ in range(steps):
        theta.grad = theta.detach().clone()
        optimizer.step()
        path.append(theta.item())
    return np.array(path)


def gradient_counts(steps: int = 50) -> dict[str, float]:
    """Gradient evaluations per step: exact Nesterov beside RMSprop (by hand) and descend.NAdam, on Rosenbrock."""
    calls = {"exact Nesterov + RMSprop": 0, "descend.NAdam (look-ahead)": 0}
    theta, v, s = np.array(START), np.zeros(2), np.zeros(2)
    lr, gamma = 1e-3, 0.999
    for _ in range(steps):
        g_here = gradient(theta)                       # ∇C(θ) for RMSprop's s
        g_ahead = gradient(theta - lr * BETA * v)      # ∇C(θ − αβv) for the momentum (4.4)
        calls["exact Nesterov + RMSprop"] += 2
        s = gamma * s + (1 - gamma) * g_here**2
        v = BETA * v + (1 - BETA) * g_ahead
        theta = theta - lr * v / (np.sqrt(s) + 1e-8)
    phi = torch.tensor(START, dtype=torch.float64, requires_grad=True)
    optimizer = descend.NAdam([phi], lr=lr)

    def closure():
        calls["descend.NAdam (look-ahead)"] += 1
        optimizer.zero_grad()
        loss = rosenbrock(phi[0], phi[1])
        loss.backward()
        return loss

    for _ in range(steps):
        optimizer.step(closure)
    return {name: count / steps for name, count in calls.items()}


def run(ctx: Context) -> Result:
    steps = 2000 if ctx.full else 500
    paths = {"exact (gradient at θ − αβv), by hand": exact(steps)}
    paths["look-ahead: SGD(momentum=β, dampening=β, nesterov=True)"] = with_descend(steps, lr=LR, dampening=BETA)
    paths["reformulated: SGD(lr=α(1−β), momentum=β, nesterov=True)"] = with_descend(steps, lr=LR * (1 - BETA))
    reference = paths["exact (gradient at θ − αβv), by hand"]
    gaps = {name: float(np.abs(path - reference).max()) for name, path in paths.items()}
    worst = max(gaps.values())
    overshoots = {(lr, beta): (overshoot(lr, beta, False)[0], overshoot(lr, beta, True)[0])
                  for lr in OVERSHOOT_RATES for beta in OVERSHOOT_BETAS}
    hand_vs_descend = max(float(np.abs(overshoot(lr, beta, False)[1] - momentum_descend(lr, beta)).max())
                          for lr, beta in overshoots)
    ratios = {key: (heavy / soft if soft > 0 else math.inf) for key, (heavy, soft) in overshoots.items()}
    counts = gradient_counts()
    if ctx.figures_wanted:
        draw(ctx, paths, reference)
        draw_overshoot(ctx, overshoots)
        figure, axis = plt.subplots(figsize=(6, 3.6))
        axis.bar(list(counts), list(counts.values()), color=[ctx.color("Nesterov"), ctx.color("NAdam")])
        axis.set_ylabel("gradient evaluations per step"), axis.set_title("counted in the closure, 50 steps")
        ctx.save(figure, "gradients", caption="Exact Nesterov needs ∇C at the predicted point for its momentum and "
                 "∇C(θ) for RMSprop's s: two gradients per step; the look-ahead form (NAdam) needs one.",
                 claims=["exact-nesterov-with-rmsprop-needs-two-gradients"])
    summary = (f"Over {steps} steps on Rosenbrock the three φ trajectories differ by at most {worst:.1e} (float64): "
               "after the change of variable φ = θ − αβv the look-ahead form is the exact Nesterov update. Overshoot "
               "past the valley floor of θ²/2 (momentum / Nesterov): "
               + ", ".join(f"α {lr:g}, β {beta:g}: {heavy:.3f} / {soft:.3f}"
                           for (lr, beta), (heavy, soft) in overshoots.items())
               + f" (the momentum form by hand matches descend.SGD to {hand_vs_descend:.0e}). Gradients per step: "
               + ", ".join(f"{name} {count:g}" for name, count in counts.items()) + ".")
    return Result({"nesterov-forms-agree-after-change-of-variable": worst,
                   "momentum-overshoots-nesterov-slows": min(ratios.values()),
                   "exact-nesterov-with-rmsprop-needs-two-gradients":
                       counts["exact Nesterov + RMSprop"] / counts["descend.NAdam (look-ahead)"]},
                  summary, {"max_difference": gaps, "steps": steps, "lr": LR, "beta": BETA,
                            "overshoot": {f"lr {lr:g}, beta {beta:g}": {"momentum": heavy, "nesterov": soft}
                                          for (lr, beta), (heavy, soft) in overshoots.items()},
                            "gradients_per_step": counts})


def draw_overshoot(ctx: Context, overshoots: dict) -> None:
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.3))
    lr, beta = 0.3, 0.9
    for nesterov, label in ((False, "momentum (4.1)–(4.2)"), (True, "Nesterov (4.4)–(4.5)")):
        path = overshoot(lr, beta, nesterov, 80)[1]
        left.plot(path, color=ctx.color("Nesterov" if nesterov else "SGD+momentum"), label=label)
    left.axhline(0.0, color="black", linewidth=0.8), left.set_xlabel("step"), left.set_ylabel("θ (valley floor at 0)")
    left.set_title(f"f = θ²/2 from θ₀ = 1, α = {lr}, β = {beta}"), left.legend(fontsize=8)
    labels = [f"α {a:g}\nβ {b:g}" for a, b in overshoots]
    x = np.arange(len(labels))
    right.bar(x - 0.2, [v[0] for v in overshoots.values()], 0.4, color=ctx.color("SGD+momentum"), label="momentum")
    right.bar(x + 0.2, [v[1] for v in overshoots.values()], 0.4, color=ctx.color("Nesterov"), label="Nesterov")
    right.set_xticks(x, labels, fontsize=7), right.set_ylabel("overshoot: deepest θ below the floor")
    right.set_title("overshoot at the same α and β"), right.legend(fontsize=8)
    ctx.save(figure, "overshoot", caption="Momentum runs past the valley floor and swings back; Nesterov, which takes "
             "its gradient where the ball is about to be, brakes earlier and overshoots less at every setting.",
             claims=["momentum-overshoots-nesterov-slows"])


def draw(ctx: Context, paths: dict[str, np.ndarray], reference: np.ndarray) -> None:
    xs, ys = np.meshgrid(np.linspace(-1.5, 1.5, 200), np.linspace(-0.5, 2, 200))
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    left.contour(xs, ys, np.log1p(rosenbrock(xs, ys)), levels=25, cmap="Greys", linewidths=0.6)
    for (name, path), style in zip(paths.items(), ("-", "--", ":")):
        short = name.split(":")[0].split(" (")[0]
        left.plot(path[:, 0], path[:, 1], style, linewidth=2, label=short, color=ctx.color(short))
    left.plot(1, 1, "k*", markersize=12)
    left.legend(fontsize=8), left.set_title(f"Rosenbrock, α = {LR}, β = {BETA}: φ iterates")
    left.set_xlabel("φ₁ (parameter, no unit)"), left.set_ylabel("φ₂")
    for name, path in list(paths.items())[1:]:
        short = name.split(":")[0]
        right.semilogy(np.abs(path - reference).max(axis=1) + 1e-18, label=short, color=ctx.color(short))
    right.set_title("max |φ − φ_exact| per step (1e-18 added for the log scale)")
    right.set_xlabel("step"), right.set_ylabel("largest coordinate difference"), right.legend()
    ctx.save(figure, "three-ways", caption="The three forms trace one path on Rosenbrock (left); their gap stays at "
             "float64 rounding, below 1e-12, at every step (right).",
             claims=["nesterov-forms-agree-after-change-of-variable"])
