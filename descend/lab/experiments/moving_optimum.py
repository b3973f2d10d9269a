"""AdaGrad's vanishing step against RMSprop and Adam on a noisy regression whose optimum moves (the lecture's
Remark 4.3.1; the preparation answers on Adam's non-stationary objectives): every optimizer at its best lr."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import torch

import descend

from .. import plots, tuning
from ..claims import LECTURE, PREPARATION, QUIZ, Claim
from ..core import Context, Result

NAME = "moving-optimum"
ORDER = 5
TITLE = "A moving optimum: AdaGrad's vanishing step against RMSprop and Adam"
COST = {"tune": 3.0, "run": 0.5}

PHASES = 6  # the optimum jumps PHASES − 1 times
PHASE_STEPS = {"quick": 50, "full": 200}
SAMPLES, FEATURES, BATCH, NOISE = 256, 10, 32, 0.3
OPTIMIZERS = {"AdaGrad": (descend.Adagrad, (0.3, 1.0, 3.0)), "RMSprop": (descend.RMSprop, (0.03, 0.1, 0.3)),
              "Adam": (descend.Adam, (0.03, 0.1, 0.3)), "SGD": (descend.SGD, (0.03, 0.1, 0.3))}
METRIC = ("mean over all steps of the excess full-data loss over the current phase's least-squares floor (how "
          "closely the optimizer follows the moving optimum)")

CLAIMS = [
    Claim(id="adagrad-effective-rate-only-shrinks",
          source=f"{LECTURE}, §4.3, eq. (4.18) and Remark 4.3.1; {QUIZ}, question 1 (d)",
          statement="As a consequence, the effective learning rate decreases during training, often making it "
                    "infinitesimally small before convergence.",
          quote="verbatim", kind="worked check",
          measurement="largest ratio of AdaGrad's mean effective rate α/(√s + ε) to its value one step earlier, over "
                      "the whole run (s only grows, so the rate can only fall)",
          criterion="< 1.000001 (never rises)", threshold=1.000001, direction="<", scale="ratio", deterministic=True),
    Claim(id="rmsprop-tracks-a-moved-optimum", source=f"{LECTURE}, §4.3, Remark 4.3.1",
          statement="RMS prop was introduced in the context of deep learning after Adagrad, and overcomes this problem "
                    "via exponential smoothing of the squares of the partial derivatives.",
          quote="verbatim",
          measurement=f"{METRIC}: AdaGrad's divided by RMSprop's (noisy least squares, {FEATURES} weights, the optimum "
                      f"jumps {PHASES - 1} times; each at its best lr of a grid widened until the best is inside)",
          criterion="ratio > 1 (RMSprop closer to each new optimum)", threshold=1.0, direction=">", scale="ratio",
          compares=("AdaGrad", "RMSprop")),
    Claim(id="adam-tracks-non-stationary-objective", source=f"{PREPARATION}, answer to question 5",
          statement="This means that the algorithm converges even if the objective changes with time and thus, Adam "
                    "works with non-stationary (noisy) objective.",
          quote="verbatim",
          measurement="Adam's mean excess full-data loss over the last phase divided by its mean over the first "
                      "(Adam at its best lr)",
          criterion="ratio < 3 (it converges as well after the moves as before them)", threshold=3.0, direction="<",
          scale="ratio", compares=("Adam",)),
    Claim(id="adam-beats-adagrad-on-moving-optimum", source=f"{PREPARATION}, answer to question 5",
          statement="Similar to RMSProp, Adam maintains per-parameter learning rates that are adapted based on "
                    "exponential average of recent magnitudes of the gradients for the weights",
          quote="verbatim",
          measurement=f"{METRIC}: AdaGrad's divided by Adam's (each at its best lr)",
          criterion="ratio > 1 (Adam closer to each new optimum)", threshold=1.0, direction=">", scale="ratio",
          compares=("AdaGrad", "Adam")),
]


def problem(seed: int):
    """(x, targets per phase, least-squares floor per phase): the optimum jumps; the targets carry noise."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(SAMPLES, FEATURES, generator=generator)
    targets = [x @ (2 * torch.randn(FEATURES, generator=generator)) + NOISE * torch.randn(SAMPLES, generator=generator)
               for _ in range(PHASES)]
    floors = []
    for y in targets:
        w = torch.linalg.lstsq(x.double(), y[:, None].double(), driver="gelsd").solution[:, 0].float()
        floors.append(((x @ w - y) ** 2).mean().item())
    return x, targets, floors, generator


def track(seed: int, name: str, lr: float, phase_steps: int, curve_every: int = 0):
    """(mean excess full-data loss of each phase, the effective rates of AdaGrad, the curve every ``curve_every``)."""
    x, targets, floors, generator = problem(seed)
    optimizer_class = OPTIMIZERS[name][0]
    w = torch.zeros(FEATURES, requires_grad=True)
    optimizer = optimizer_class([w], lr=lr, nonfinite="skip")
    sums, rates, curve = [0.0] * PHASES, [], []
    for step in range(PHASES * phase_steps):
        phase = step // phase_steps
        index = torch.randint(0, SAMPLES, (BATCH,), generator=generator)
        optimizer.zero_grad()
        ((x[index] @ w - targets[phase][index]) ** 2).mean().backward()
        optimizer.step()
        if name == "AdaGrad":
            rates.append((lr / (optimizer.state[w]["sum"].sqrt() + optimizer.param_groups[0]["eps"])).mean().item())
        with torch.no_grad():
            excess = ((x @ w - targets[phase]) ** 2).mean().item() - floors[phase]
        sums[phase] += excess / phase_steps
        if curve_every and step % curve_every == 0:
            curve.append(max(excess, 1e-12))
    means = [v if math.isfinite(v) and not optimizer.skipped_steps else math.inf for v in sums]
    return means, rates, curve


def tune(ctx: Context) -> dict:
    steps = PHASE_STEPS["full" if ctx.full else "quick"]
    return {name: tuning.search(tuning.one_at_a_time(
        lambda lr, name=name: sum(track(ctx.seed, name, lr, steps)[0]) / PHASES),
        [tuning.lr_axis(*grid)], metric=METRIC) for name, (_, grid) in OPTIMIZERS.items()}


def run(ctx: Context) -> Result:
    steps = PHASE_STEPS["full" if ctx.full else "quick"]
    ends, curves, rates = {}, {}, []
    for name in ctx.track([n for n in OPTIMIZERS if n != "SGD" or ctx.figures_wanted]):  # SGD: the figure's reference
        lr = ctx.tuned[name]["best"]["lr"]
        ends[name], r, curves[name] = track(ctx.seed, name, lr, steps, curve_every=5 if ctx.figures_wanted else 0)
        rates = r or rates
    score = {name: sum(v) / PHASES for name, v in ends.items()}
    rises = max(b / a for a, b in zip(rates, rates[1:]))
    if ctx.figures_wanted:
        draw(ctx, curves, rates, steps)
    summary = (f"Mean excess loss per phase (the optimum jumps every {steps} steps): "
               + "; ".join(f"{name} (lr {ctx.tuned[name]['best']['lr']:g}) " + ", ".join(f"{v:.2g}" for v in values)
                           for name, values in ends.items())
               + f". AdaGrad's effective rate fell from {rates[0]:.3g} to {rates[-1]:.3g} and never rose (largest "
               f"step-to-step ratio {rises:.6f}).")
    return Result({"adagrad-effective-rate-only-shrinks": rises,
                   "rmsprop-tracks-a-moved-optimum": score["AdaGrad"] / score["RMSprop"],
                   "adam-tracks-non-stationary-objective": ends["Adam"][-1] / ends["Adam"][0],
                   "adam-beats-adagrad-on-moving-optimum": score["AdaGrad"] / score["Adam"]}, summary,
                  {"phase_end_excess_loss": ends, "score": score, "adagrad_rate_first_last": [rates[0], rates[-1]]})


def draw(ctx: Context, curves: dict, rates: list[float], steps: int) -> None:
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
    for name, curve in curves.items():
        left.semilogy([5 * i for i in range(len(curve))], curve, label=f"{name} (lr {ctx.tuned[name]['best']['lr']:g})",
                      color=ctx.color(name))
    right.semilogy(rates, color=ctx.color("AdaGrad"), label="AdaGrad: mean α/(√s + ε)")
    for axis in (left, right):
        for k in range(1, PHASES):
            axis.axvline(k * steps, color="gray", linestyle="--", linewidth=0.8)
        axis.set_xlabel("step"), axis.legend(fontsize=8)
    left.set_title("excess full-data loss; the optimum jumps at each dashed line")
    left.set_ylabel("loss − least-squares floor (log scale)")
    right.set_title("AdaGrad's effective learning rate only falls"), right.set_ylabel("effective rate (log scale)")
    ctx.save(figure, "tracking", caption="Each optimizer at its own best learning rate, after every jump of the "
             "optimum (dashed): the claims compare how far above the floor each stays on average; AdaGrad's rate "
             "(right) only falls.", claims=[c.id for c in CLAIMS])
    ctx.interactive(plots.curves({name: ([5 * i for i in range(len(c))], c) for name, c in curves.items()},
                                 "excess loss; the optimum jumps every " f"{steps} steps", "step",
                                 "loss − least-squares floor", log_y=True), "tracking-interactive",
                    caption="The excess-loss curves, interactive: hover for values, click a legend entry to hide it.",
                    claims=["rmsprop-tracks-a-moved-optimum", "adam-beats-adagrad-on-moving-optimum",
                            "adam-tracks-non-stationary-objective"])
