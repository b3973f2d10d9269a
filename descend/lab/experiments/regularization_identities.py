"""Weight decay as seed 002 eq. 4.26 writes it: SGD on C + (λ/2)‖θ‖² is multiplicative decay by (1 − αλ)."""
from __future__ import annotations

from functools import lru_cache

import matplotlib.pyplot as plt
import numpy as np
import torch

import descend

from .. import data
from ..claims import LECTURE, Claim
from ..core import Context, Result

NAME = "l2-is-decay-for-sgd"
TITLE = "SGD's L2 penalty is multiplicative weight decay (eq. 4.26)"
ORDER = 11  # beside the lab's experiment on the same topic (ties sort by NAME)

LR, LAMBDA, STEPS = 0.1, 0.05, 200

COST = {"run": 1.0}

CLAIMS = [
    Claim(id="sgd-l2-penalty-equals-decay", source=f"{LECTURE}, §4.5, eq. (4.26)",
          statement="Gradient descent on C̃(θ) = C(θ) + (λ/2)‖θ‖² is θ ← (1 − αλ)θ − α∇C(θ) (4.26).",
          quote="paraphrase", kind="worked check",
          measurement=f"largest |θ difference| over {STEPS} full-batch steps (float64, α = {LR}, λ = {LAMBDA}, "
                      "logistic regression on digits) between descend.SGD on C + (λ/2)‖θ‖², descend.SGD(weight_decay=λ) "
                      "on C, and (1 − αλ)θ − α∇C written out, relative to the largest |θ|",
          criterion="< 1e-12 (equal up to float64 rounding)", threshold=1e-12, direction="<", scale="nonnegative",
          deterministic=True),
    Claim(id="sgd-decay-without-gradient", source=f"{LECTURE}, §4.5, eq. (4.26)",
          statement="That is, independently of the value of the gradient, in every iteration, (4.26) continues to "
                    "decay the parameters, each time multiplying the previous parameter by a factor 1 − αλ.",
          quote="paraphrase", kind="worked check",
          measurement=f"|θ_t/((1 − αλ)^t θ₀) − 1| after {STEPS} steps of descend.SGD(weight_decay=λ) with ∇C = 0",
          criterion="< 1e-12", threshold=1e-12, direction="<", scale="nonnegative", deterministic=True),
]


@lru_cache(maxsize=1)
def trajectories() -> dict[str, np.ndarray]:
    split = data.digits(0)
    x, y = split.x_train.double(), split.y_train
    start = torch.randn(64, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def loss(w):
        return torch.nn.functional.cross_entropy(x @ w, y)

    paths = {}
    for name in ("penalty in the loss", "weight_decay=λ", "(1 − αλ)θ − α∇C by hand", "no decay"):
        w = start.clone().requires_grad_(True)
        optimizer = descend.SGD([w], lr=LR, weight_decay=LAMBDA if name == "weight_decay=λ" else 0.0)
        path = [w.detach().clone()]
        for _ in range(STEPS):
            if name == "(1 − αλ)θ − α∇C by hand":
                gradient, = torch.autograd.grad(loss(w), w)
                with torch.no_grad():
                    w.copy_((1 - LR * LAMBDA) * w - LR * gradient)
            else:
                optimizer.zero_grad()
                (loss(w) + (LAMBDA / 2 * w.square().sum() if name == "penalty in the loss" else 0.0)).backward()
                optimizer.step()
            path.append(w.detach().clone())
        paths[name] = torch.stack(path).numpy()
    return paths


@lru_cache(maxsize=1)
def pure_decay() -> float:
    theta = torch.linspace(-2, 2, 11, dtype=torch.float64, requires_grad=True)
    start = theta.detach().clone()
    optimizer = descend.SGD([theta], lr=LR, weight_decay=LAMBDA)
    for _ in range(STEPS):
        theta.grad = torch.zeros_like(theta)
        optimizer.step()
    expected = (1 - LR * LAMBDA) ** STEPS * start
    nonzero = expected != 0
    return (theta.detach()[nonzero] / expected[nonzero] - 1).abs().max().item()


def run(ctx: Context) -> Result:
    paths = trajectories()
    reference = paths["penalty in the loss"]
    scale = np.abs(reference).max()
    gaps = {name: float(np.abs(paths[name] - reference).max() / scale)
            for name in ("weight_decay=λ", "(1 − αλ)θ − α∇C by hand")}
    decay = pure_decay()
    if ctx.figures_wanted:
        figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
        styles = {"penalty in the loss": dict(linewidth=5, alpha=0.5), "weight_decay=λ": dict(linestyle="--"),
                  "(1 − αλ)θ − α∇C by hand": dict(linestyle=":", linewidth=2.5), "no decay": dict(color="black")}
        for name, path in paths.items():
            left.plot(np.linalg.norm(path.reshape(len(path), -1), axis=1), label=name,
                      **{"color": ctx.color(name), **styles[name]})
        left.set_xlabel("step"), left.set_ylabel("‖θ‖ (weight units)"), left.legend(fontsize=8)
        left.set_title(f"logistic regression on digits, α = {LR}, λ = {LAMBDA}")
        for name in gaps:
            right.semilogy(np.abs(paths[name] - reference).reshape(len(reference), -1).max(1) / scale + 1e-20,
                           color=ctx.color(name), label=name)
        right.set_xlabel("step"), right.set_ylabel("max |θ − θ_penalty| / max |θ| (dimensionless)")
        right.set_title("difference from SGD on C + (λ/2)‖θ‖²"), right.legend(fontsize=8)
        ctx.save(figure, "decay", caption="The three ways of writing SGD with an L2 penalty trace one trajectory "
                 "(differences at float64 rounding, 1e-20 drawn for an exact 0); without decay ‖θ‖ grows.",
                 claims=[c.id for c in CLAIMS])
    summary = (f"Over {STEPS} steps, largest relative difference from SGD on C + (λ/2)‖θ‖²: "
               + ", ".join(f"{k} {v:.1e}" for k, v in gaps.items())
               + f". With ∇C = 0, θ_t/((1 − αλ)^t θ₀) − 1 is at most {decay:.1e}.")
    return Result({"sgd-l2-penalty-equals-decay": max(gaps.values()), "sgd-decay-without-gradient": decay}, summary,
                  {"relative_difference": gaps, "pure_decay_error": decay, "lr": LR, "lambda": LAMBDA, "steps": STEPS})
