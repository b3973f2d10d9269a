"""Training cost against iterations, in the style of Kingma & Ba (2015), Figure 3."""
from __future__ import annotations

import matplotlib.pyplot as plt
import torch

import descend

from .. import data
from ..core import Context, Result

NAME = "adam-paper"
TITLE = "12. Training cost of six optimizers, Adam-paper style"
CLAIM = ("As in Kingma & Ba's Figure 3, Adam trains as fast as the best of SGD+Nesterov, AdaGrad, RMSprop, Adadelta "
         "and Adafactor: its final training cost is within 1.5× of the lowest, on a CNN on MNIST-1D and on an MLP "
         "with dropout on digits, each optimizer at its best learning rate of a small grid.")

# name: (class, fixed kwargs, lr grid)
OPTIMIZERS = {
    "SGD+Nesterov": (descend.SGD, dict(momentum=0.9, nesterov=True), (0.01, 0.03, 0.1, 0.3)),
    "AdaGrad": (descend.Adagrad, {}, (0.01, 0.03, 0.1, 0.3)),
    "RMSprop": (descend.RMSprop, {}, (3e-4, 1e-3, 3e-3, 1e-2)),
    "Adadelta": (descend.Adadelta, {}, (0.3, 1.0, 3.0, 10.0)),
    "Adam": (descend.Adam, {}, (3e-4, 1e-3, 3e-3, 1e-2)),
    "Adafactor": (descend.Adafactor, dict(relative_step=False), (3e-3, 1e-2, 3e-2, 1e-1)),
}


STEPS = {"quick": 300, "full": 1000}  # iterations per run


def tasks(ctx: Context):
    return {
        "CNN on MNIST-1D": (lambda: data.cnn1d(), data.mnist1d(ctx.seed, 4000 if ctx.full else 2000), 128),
        "MLP with dropout on digits": (lambda: data.mlp(64, 256, 10, depth=2, dropout=0.3), data.digits(ctx.seed), 64),
    }


def run(ctx: Context) -> Result:
    steps = STEPS["full" if ctx.full else "quick"]
    record = 10
    numbers, curves = {}, {}
    work = [(task, name, lr) for task in tasks(ctx) for name, (_, _, grid) in OPTIMIZERS.items() for lr in grid]
    specs = tasks(ctx)
    for task, name, lr in ctx.track(work):
        make_model, split, batch = specs[task]
        optimizer_class, kwargs, _ = OPTIMIZERS[name]
        torch.manual_seed(ctx.seed)
        model = ctx.place(make_model())
        optimizer = optimizer_class(model.parameters(), lr=lr, nonfinite="skip", **kwargs)
        losses = data.train(model, optimizer, split, steps, batch, generator=ctx.generator(), record_every=record)
        cost = data.evaluate(model, split.x_train, split.y_train)[0]
        best = numbers.setdefault(task, {}).get(name)
        if best is None or cost < best["final_training_cost"]:
            grid = OPTIMIZERS[name][2]
            numbers[task][name] = {"lr": lr, "final_training_cost": cost, "lr_at_grid_edge": lr in (grid[0], grid[-1]),
                                   "test_accuracy": data.evaluate(model, split.x_test, split.y_test)[1]}
            curves[(task, name)] = losses

    figure, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for axis, task in zip(axes, specs):
        for name in OPTIMIZERS:
            axis.plot([i * record for i in range(len(curves[(task, name)]))], curves[(task, name)],
                      label=f"{name} (lr {numbers[task][name]['lr']:g})")
        axis.set_yscale("log"), axis.set_title(task), axis.set_xlabel("iterations"), axis.set_ylabel("training cost")
        axis.legend(fontsize=8)
    ctx.save(figure, "training-cost")

    ratios = {task: by_name["Adam"]["final_training_cost"] / min(v["final_training_cost"] for v in by_name.values())
              for task, by_name in numbers.items()}
    held = all(r <= 1.5 for r in ratios.values())
    chosen = [v for by_name in numbers.values() for v in by_name.values()]
    at_edge = sum(v["lr_at_grid_edge"] for v in chosen)
    summary = ("Adam's final training cost over the best optimizer's: "
               + ", ".join(f"{task} {r:.2f}×" for task, r in ratios.items())
               + f" ({steps} iterations; {at_edge} of {len(chosen)} chosen rates lie at an "
               "edge of their grid). Learning-rate grids: " + "; ".join(f"{n} {g}" for n, (_, _, g) in OPTIMIZERS.items()) + ".")
    return Result(held, summary, {"tasks": numbers, "adam_over_best": ratios, "steps": steps})
