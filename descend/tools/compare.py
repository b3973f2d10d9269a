"""Which optimizer for this model? Tune each on a small budget, run the best with several seeds, compare.

In the spirit of DeepOBS (a fixed tuning budget per optimizer, results over seeds) and AlgoPerf
(time to a target, performance profiles across tasks).
"""
from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class Run:
    """One training run: an optimizer at one learning rate and seed."""

    optimizer: str
    lr: float
    seed: int
    epoch_train_loss: list[float]  # mean training loss of each epoch
    epoch_seconds: list[float]  # wall time at the end of each epoch
    train_loss: float
    val_loss: float
    train_accuracy: float | None
    val_accuracy: float | None
    state_bytes: int

    @property
    def seconds(self) -> float:
        return self.epoch_seconds[-1] if self.epoch_seconds else 0.0

    def time_to(self, target: float) -> float:
        """Wall time until an epoch's mean training loss first reached ``target`` (inf: never; an epoch
        whose loss is not finite, a diverged one, reaches no target, not even an infinite one)."""
        return next((s for s, loss in zip(self.epoch_seconds, self.epoch_train_loss)
                     if math.isfinite(loss) and loss <= target), math.inf)


@dataclass
class Comparison:
    """Tuning runs, final runs (best lr × seeds) and the summary over seeds."""

    tuning: list[Run]
    final: list[Run]
    best_lr: dict[str, float]
    target_loss: float
    runs_per_optimizer: dict[str, int] = field(default_factory=dict)

    def table(self) -> list[dict[str, Any]]:
        """One row per optimizer: means (and spreads) over the seeds of the final runs."""
        rows = []
        for name, lr in self.best_lr.items():
            runs = [r for r in self.final if r.optimizer == name]

            def mean(values):
                values = [v for v in values if v is not None]
                return statistics.fmean(values) if values else None

            rows.append({
                "optimizer": name, "lr": lr, "seeds": len(runs),
                "train_loss": mean(r.train_loss for r in runs), "val_loss": mean(r.val_loss for r in runs),
                "val_loss_std": _spread([r.val_loss for r in runs]),
                "train_accuracy": mean(r.train_accuracy for r in runs), "val_accuracy": mean(r.val_accuracy for r in runs),
                "time_to_target_s": mean(t for t in (r.time_to(self.target_loss) for r in runs) if math.isfinite(t)),
                "reached_target": sum(math.isfinite(r.time_to(self.target_loss)) for r in runs) / len(runs),
                "wall_time_s": mean(r.seconds for r in runs), "state_bytes": runs[0].state_bytes,
                "runs": self.runs_per_optimizer.get(name),
            })
        return rows

    def to_markdown(self) -> str:
        columns = ["optimizer", "lr", "train_loss", "val_loss", "val_accuracy", "time_to_target_s", "reached_target",
                   "wall_time_s", "state_bytes", "runs"]
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for row in self.table():
            cells = []
            for column in columns:
                value = row[column]
                cells.append("—" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value))
            lines.append("| " + " | ".join(cells) + " |")
        target = f"Target training loss: {self.target_loss:.4g} (time to target: mean over the seeds that reached " \
            "it; reached_target: their fraction)." if math.isfinite(self.target_loss) else \
            "No target: no run reached a finite training loss (every one diverged)."
        return "\n".join(lines) + f"\n\n{target} Each optimizer's lr is the best of its tuning grid by validation " \
            "loss; other columns are means over seeds."

    def plot(self, axis=None):
        """Training-loss curves per epoch: the mean over seeds with a min–max band."""
        import matplotlib.pyplot as plt

        if axis is None:
            _, axis = plt.subplots(figsize=(7, 4.5))
        for name in self.best_lr:
            runs = [r for r in self.final if r.optimizer == name]
            epochs = range(1, len(runs[0].epoch_train_loss) + 1)
            curves = list(zip(*(r.epoch_train_loss for r in runs)))
            line, = axis.plot(epochs, [statistics.fmean(c) for c in curves], label=f"{name} (lr {self.best_lr[name]:.2g})")
            axis.fill_between(epochs, [min(c) for c in curves], [max(c) for c in curves], color=line.get_color(),
                              alpha=0.2)
        if math.isfinite(self.target_loss):
            axis.axhline(self.target_loss, color="k", linestyle=":", linewidth=1, label="target")
        axis.set_yscale("log"), axis.set_xlabel("epoch"), axis.set_ylabel("training loss"), axis.legend(fontsize=8)
        return axis.figure


def _spread(values: list[float]) -> float | None:
    """The population standard deviation over seeds; None when a seed diverged (no number describes it)."""
    if not all(math.isfinite(v) for v in values):
        return None
    return statistics.pstdev(values) if len(values) > 1 else 0.0


def _default_lr(optimizer_class: type, kwargs: dict[str, Any]) -> float:
    if kwargs.get("lr"):
        return kwargs["lr"]
    import inspect

    default = inspect.signature(optimizer_class).parameters.get("lr")
    return default.default if default is not None and isinstance(default.default, float) else 1e-3


def _evaluate(model, loss_fn, data) -> tuple[float, float | None]:
    model.eval()
    total, correct, count, classified = 0.0, 0, 0, True
    with torch.no_grad():
        for x, y in data:
            out = model(x)
            total += float(loss_fn(out, y)) * len(y)
            count += len(y)
            if classified and out.dim() == 2 and y.dim() == 1 and not y.is_floating_point():
                correct += int((out.argmax(1) == y).sum())
            else:
                classified = False
    model.train()
    if count == 0:
        raise ValueError("compare: a data loader yielded nothing")
    return total / count, (correct / count if classified else None)


def _train(name, optimizer_class, kwargs, lr, seed, model_fn, loss_fn, train_data, val_data, epochs) -> Run:
    torch.manual_seed(seed)
    model = model_fn()
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("compare: the model has no trainable parameters")
    extra = {"nonfinite": "skip"} if _takes_nonfinite(optimizer_class) else {}
    optimizer = optimizer_class([p for p in model.parameters() if p.requires_grad], **{**kwargs, "lr": lr}, **extra)
    started, epoch_losses, epoch_seconds = time.perf_counter(), [], []
    for _ in range(epochs):
        losses = []
        for x, y in train_data:
            def closure(x=x, y=y):
                optimizer.zero_grad()
                loss = loss_fn(model(x), y)
                loss.backward()
                return loss

            losses.append(float(optimizer.step(closure).detach()))
        if not losses:
            raise ValueError("compare: the training data yielded nothing")
        epoch_losses.append(statistics.fmean(losses) if all(map(math.isfinite, losses)) else math.inf)
        epoch_seconds.append(time.perf_counter() - started)
    train_loss, train_accuracy = _evaluate(model, loss_fn, train_data)
    val_loss, val_accuracy = _evaluate(model, loss_fn, val_data)
    state_bytes = sum(v.numel() * v.element_size() for s in optimizer.state.values() for k, v in s.items()
                      if isinstance(v, torch.Tensor) and k != "step")
    fix = lambda v: v if math.isfinite(v) else math.inf  # noqa: E731
    return Run(name, lr, seed, epoch_losses, epoch_seconds, fix(train_loss), fix(val_loss), train_accuracy,
               val_accuracy, state_bytes)


def _takes_nonfinite(optimizer_class: type) -> bool:
    import inspect

    return "nonfinite" in inspect.signature(optimizer_class).parameters


def compare(
    model_fn: Callable[[], nn.Module],
    loss_fn: Callable,
    train_data: Iterable,
    val_data: Iterable,
    optimizers: dict[str, type | tuple[type, dict[str, Any]]],
    epochs: int = 3,
    budget_per_optimizer: int = 4,
    seeds: Sequence[int] = (0, 1, 2),
    target_loss: float | None = None,
    progress: bool = True,
) -> Comparison:
    """Tunes, then runs and compares each optimizer on the same model and data.

    Each optimizer gets ``budget_per_optimizer`` tuning runs (``epochs`` epochs, first seed) on a
    log grid of learning rates from a tenth to ten times its usual one, keeps the lr with the
    lowest validation loss, and is then trained once per seed.  ``optimizers`` maps names to a
    class or ``(class, keyword arguments)``.  ``target_loss`` (default: 1.1 × the lowest last-epoch
    mean training loss of any optimizer) defines the time-to-target column.  Non-finite runs count as
    infinitely bad; descend optimizers skip non-finite steps here.
    """
    if budget_per_optimizer < 1 or epochs < 1 or not seeds:
        raise ValueError("compare: budget_per_optimizer and epochs must be >= 1 and seeds not empty")
    if not optimizers:
        raise ValueError("compare: no optimizers given")
    from tqdm.auto import tqdm

    specs = {name: (spec if isinstance(spec, tuple) else (spec, {})) for name, spec in optimizers.items()}
    total = len(specs) * (budget_per_optimizer + len(seeds))
    bar = tqdm(total=total, desc="compare", disable=not progress, leave=False)
    tuning, final, best_lr, used = [], [], {}, {}
    for name, (cls, kwargs) in specs.items():
        usual = _default_lr(cls, kwargs)
        grid = [usual] if budget_per_optimizer == 1 else [
            usual * 10 ** (-1 + 2 * i / (budget_per_optimizer - 1)) for i in range(budget_per_optimizer)]
        runs = []
        for lr in grid:
            runs.append(_train(name, cls, kwargs, lr, seeds[0], model_fn, loss_fn, train_data, val_data, epochs))
            bar.update()
        tuning += runs
        best_lr[name] = min(runs, key=lambda r: r.val_loss).lr
        for seed in seeds:
            final.append(_train(name, cls, kwargs, best_lr[name], seed, model_fn, loss_fn, train_data, val_data,
                                epochs))
            bar.update()
        used[name] = len(grid) + len(seeds)
    bar.close()
    if target_loss is None:  # on the same measure as time_to: the mean training loss of the last epoch
        last = [statistics.fmean(r.epoch_train_loss[-1] for r in final if r.optimizer == n) for n in best_lr]
        finite = [loss for loss in last if math.isfinite(loss)]
        target_loss = 1.1 * min(finite) if finite else math.inf  # inf: every optimizer diverged, no target
    return Comparison(tuning, final, best_lr, target_loss, used)


def performance_profile(comparisons: dict[str, Comparison], metric: str = "val_loss",
                        taus: Sequence[float] | None = None) -> dict[str, list[float]]:
    """AlgoPerf/Dolan–Moré performance profile over tasks.

    For each optimizer, ρ(τ) = the fraction of tasks on which its ``metric`` (lower is better; a
    column of ``Comparison.table()``) is within a factor τ of the best optimizer's on that task.
    A non-finite value (a diverged run) is never within any factor; a task on which every optimizer
    diverged counts as lost for all of them.
    """
    taus = list(taus or [1 + 0.05 * i for i in range(41)])
    names = sorted({row["optimizer"] for c in comparisons.values() for row in c.table()})
    ratios: dict[str, list[float]] = {name: [] for name in names}
    for comparison in comparisons.values():
        values = {row["optimizer"]: row[metric] for row in comparison.table()}
        finite = [v for v in values.values() if v is not None and math.isfinite(v)]
        best = min(finite, default=None)  # None: every optimizer lost this task
        for name in names:
            value = values.get(name)
            if best is None or value is None or not math.isfinite(value):
                ratios[name].append(math.inf)
            elif best > 0:
                ratios[name].append(value / best)
            else:  # a best of 0 (or less): only the best is within a factor of it
                ratios[name].append(1.0 if value == best else math.inf)
    return {"tau": taus, **{name: [sum(r <= tau for r in ratios[name]) / len(comparisons) for tau in taus]
                            for name in names}}


def plot_profile(profile: dict[str, list[float]], axis=None, metric: str = "val_loss"):
    import matplotlib.pyplot as plt

    if axis is None:
        _, axis = plt.subplots(figsize=(6.5, 4.2))
    for name, fractions in profile.items():
        if name != "tau":
            axis.step(profile["tau"], fractions, where="post", label=name)
    axis.set_xlabel(f"τ (within τ × the best {metric})"), axis.set_ylabel("fraction of tasks"), axis.set_ylim(-0.02, 1.02)
    axis.legend(fontsize=8), axis.set_title("performance profile")
    return axis.figure
