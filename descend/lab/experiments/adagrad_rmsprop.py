"""AdaGrad's vanishing step against RMSprop on a problem whose optimum moves (seed 002, Remark 4.3.1)."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch

import descend

from .. import plots
from ..claims import Claim
from ..core import Context, Result

NAME = "adagrad-vs-rmsprop"
ORDER = 5
TITLE = "AdaGrad's vanishing step vs RMSprop"
CLAIMS = [
    Claim(id="adagrad-effective-rate-only-shrinks",
          source="seed 002, eq. 4.18 and Remark 4.3.1; seed 003, Quiz 7 (d)",
          statement="For AdaGrad the sequence sᵢ is strictly non-decreasing, so the effective learning rate "
                    "α/(√s + ε) decreases during training.",
          measurement="AdaGrad's mean effective rate α/(√s + ε) at the end divided by its value just before the "
                      "optimum moves (least squares, 10 weights)",
          criterion="ratio < 1", threshold=1.0, direction="<"),
    Claim(id="rmsprop-tracks-a-moved-optimum",
          source="seed 002, Remark 4.3.1; seed 003, Quiz 7 (e)",
          statement="RMSprop overcomes AdaGrad's vanishing rate via exponential smoothing of the squared "
                    "derivatives: its updates do not get monotonically smaller.",
          measurement="log₁₀ of the final full-data loss, AdaGrad divided by RMSprop, after the least-squares optimum "
                      "moves half-way through training (a ratio that spans decades from seed to seed: its log is "
                      "averaged)",
          criterion="log₁₀ ratio > 1 (RMSprop's loss at least 10× lower)", threshold=1.0, direction=">"),
]


def run(ctx: Context) -> Result:
    steps = 2000 if ctx.full else 600
    shift = steps // 2
    generator = ctx.generator()
    x = torch.randn(256, 10, generator=generator)
    weights = [torch.randn(10, generator=generator), 3 * torch.randn(10, generator=generator)]
    targets = [x @ w for w in weights]
    records = {}
    for name, make in ctx.track({"AdaGrad": lambda p: descend.Adagrad(p, lr=0.3),
                                 "RMSprop": lambda p: descend.RMSprop(p, lr=0.03, alpha=0.99)}.items(), total=2):
        w = torch.zeros(10, requires_grad=True)
        optimizer = make([w])
        telemetry = descend.Telemetry(optimizer)  # records the mean effective rate α/(√s+ε) every step
        losses = []
        for step in range(steps):
            target = targets[0 if step < shift else 1]  # the optimum moves at `shift`
            index = torch.randint(0, 256, (32,), generator=generator)
            optimizer.zero_grad()
            loss = ((x[index] @ w - target[index]) ** 2).mean()
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                losses.append(((x @ w - target) ** 2).mean().item())
        telemetry.close()
        records[name] = (losses, telemetry.series("effective_lr_mean")[1])

    numbers = {}
    for name, (losses, effective) in records.items():
        numbers[name] = {"effective_lr_at_shift": effective[shift - 1], "effective_lr_at_end": effective[-1],
                         "effective_lr_end_over_start": effective[-1] / effective[0],
                         "loss_after_shift": losses[shift], "final_loss": losses[-1]}
    adagrad, rmsprop = numbers["AdaGrad"], numbers["RMSprop"]
    if ctx.figures_wanted:
        draw(ctx, records, shift)
    summary = (f"Effective rate end/start: AdaGrad {adagrad['effective_lr_end_over_start']:.3f}, RMSprop "
               f"{rmsprop['effective_lr_end_over_start']:.3f}. Final loss after the optimum moved: AdaGrad "
               f"{adagrad['final_loss']:.3g}, RMSprop {rmsprop['final_loss']:.3g}.")
    return Result({"adagrad-effective-rate-only-shrinks": adagrad["effective_lr_at_end"] / adagrad["effective_lr_at_shift"],
                   "rmsprop-tracks-a-moved-optimum": math.log10(adagrad["final_loss"] / rmsprop["final_loss"])},
                  summary, numbers)


def draw(ctx: Context, records: dict, shift: int) -> None:
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, (losses, effective) in records.items():
        left.semilogy(losses, label=name, color=ctx.color(name))
        right.semilogy(effective, label=name, color=ctx.color(name))
    for axis in (left, right):
        axis.axvline(shift, color="gray", linestyle="--"), axis.set_xlabel("step"), axis.legend()
    left.set_title("full-data loss (the optimum moves at the dashed line)")
    left.set_ylabel("mean squared error (log scale)")
    right.set_title("mean effective learning rate α/(√s + ε)"), right.set_ylabel("effective rate (log scale)")
    ctx.save(figure, "effective-lr", caption="After the optimum moves (dashed), AdaGrad's rate keeps shrinking and "
             "its loss stalls; RMSprop's rate recovers and its loss falls again.")
    steps = list(range(len(next(iter(records.values()))[0])))
    ctx.interactive(plots.curves({name: (steps, losses) for name, (losses, _) in records.items()},
                                 "full-data loss; the optimum moves half-way", "step", "mean squared error",
                                 log_y=True), "loss-interactive",
                    caption="The loss curves, interactive: hover for values, click a legend entry to hide it.")
