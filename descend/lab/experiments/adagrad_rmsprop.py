"""AdaGrad's vanishing step against RMSprop on a problem whose optimum moves."""
from __future__ import annotations

import matplotlib.pyplot as plt
import torch

import descend

from ..core import Context, Result

NAME = "adagrad-vs-rmsprop"
TITLE = "5. AdaGrad's vanishing step vs RMSprop"
CLAIM = ("AdaGrad's effective learning rate α/(√s+ε) only shrinks, so after the optimum moves it re-converges slowly; "
         "RMSprop's running average forgets old gradients and tracks the moved optimum: its final loss is at least "
         "10× lower.")


def run(ctx: Context) -> Result:
    steps = 3000 if ctx.full else 1000
    shift = steps // 2
    generator = ctx.generator()
    x = torch.randn(256, 10, generator=generator)
    weights = [torch.randn(10, generator=generator), 3 * torch.randn(10, generator=generator)]
    records = {}
    for name, make in ctx.track({"AdaGrad": lambda p: descend.Adagrad(p, lr=0.3),
                                 "RMSprop": lambda p: descend.RMSprop(p, lr=0.03, alpha=0.99)}.items(), total=2):
        w = torch.zeros(10, requires_grad=True)
        optimizer = make([w])
        telemetry = descend.Telemetry(optimizer)  # records the mean effective rate α/(√s+ε) every step
        losses = []
        for step in range(steps):
            target = x @ weights[0 if step < shift else 1]  # the optimum moves at `shift`
            index = torch.randint(0, 256, (32,), generator=generator)
            optimizer.zero_grad()
            loss = ((x[index] @ w - target[index]) ** 2).mean()
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                losses.append(((x @ w - target) ** 2).mean().item())
        telemetry.close()
        records[name] = (losses, telemetry.series("effective_lr_mean")[1])

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, (losses, effective) in records.items():
        left.semilogy(losses, label=name)
        right.semilogy(effective, label=name)
    for axis in (left, right):
        axis.axvline(shift, color="gray", linestyle="--"), axis.set_xlabel("step"), axis.legend()
    left.set_title("full-data loss (the optimum moves at the dashed line)")
    right.set_title("mean effective learning rate α/(√s + ε)")
    ctx.save(figure, "effective-lr")

    numbers = {}
    for name, (losses, effective) in records.items():
        numbers[name] = {
            "effective_lr_at_shift": effective[shift - 1], "effective_lr_at_end": effective[-1],
            "effective_lr_end_over_start": effective[-1] / effective[0],
            "loss_after_shift": losses[shift], "final_loss": losses[-1],
        }
    adagrad, rmsprop = numbers["AdaGrad"], numbers["RMSprop"]
    held = (adagrad["effective_lr_at_end"] < adagrad["effective_lr_at_shift"]
            and rmsprop["final_loss"] < 0.1 * adagrad["final_loss"])
    summary = (f"Effective rate end/start: AdaGrad {adagrad['effective_lr_end_over_start']:.3f}, RMSprop "
               f"{rmsprop['effective_lr_end_over_start']:.3f}. Final loss after the optimum moved: AdaGrad "
               f"{adagrad['final_loss']:.3g}, RMSprop {rmsprop['final_loss']:.3g}.")
    return Result(held, summary, numbers)
