"""The learning-rate range test (Smith 2017; fastai's ``lr_find``) for any model and descend optimizer."""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class LRFinderResult:
    """The curve of a range test and what it suggests.

    ``suggestion`` is the learning rate where the smoothed loss falls fastest (the steepest negative
    slope against log lr).  The regions split the tested range: ``too_low`` (the loss barely moves),
    ``right`` (the loss falls, up to its minimum), ``too_high`` (past the minimum: the loss rises).
    """

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float
    too_low: tuple[float, float]
    right: tuple[float, float]
    too_high: tuple[float, float] | None
    diverged_at: float | None

    def plot(self, axis=None):
        """Loss against learning rate (log x), the regions shaded and the suggestion marked."""
        import matplotlib.pyplot as plt

        if axis is None:
            _, axis = plt.subplots(figsize=(7, 4.5))
        axis.plot(self.lrs, self.losses, color="0.75", linewidth=1, label="loss")
        axis.plot(self.lrs, self.smoothed, color="tab:blue", label="smoothed loss")
        for (low, high), color, label in ((self.too_low, "tab:gray", "too low"), (self.right, "tab:green", "right"),
                                          (self.too_high, "tab:red", "too high")):
            if low is not None:
                axis.axvspan(low, high, color=color, alpha=0.12, label=label)
        axis.axvline(self.suggestion, color="k", linestyle="--", label=f"suggestion {self.suggestion:.2g}")
        axis.set_xscale("log"), axis.set_xlabel("learning rate"), axis.set_ylabel("loss")
        finite = [v for v in self.smoothed if math.isfinite(v)]
        if finite:
            axis.set_ylim(min(finite) * 0.9 if min(finite) > 0 else None, finite[0] * 1.5)
        axis.legend(fontsize=8)
        return axis.figure


def lr_find(
    model: nn.Module,
    loss_fn: Callable,
    data: Iterable,
    optimizer: type[torch.optim.Optimizer] | torch.optim.Optimizer | None = None,
    start: float = 1e-7,
    end: float = 10.0,
    steps: int = 100,
    smoothing: float = 0.98,
    diverge_factor: float = 4.0,
    **optimizer_kwargs,
) -> LRFinderResult:
    """Trains ``steps`` steps with the learning rate growing exponentially from ``start`` to ``end``.

    ``data`` yields ``(inputs, targets)`` batches (a DataLoader; it is cycled if shorter than
    ``steps``); the loss is ``loss_fn(model(inputs), targets)``.  ``optimizer`` is an optimizer
    class (default ``descend.Adam``, built with ``optimizer_kwargs``) or an existing optimizer of
    ``model``.  The test stops early once the smoothed loss exceeds ``diverge_factor`` × its best,
    or turns non-finite.  The model's parameters and buffers, and an existing optimizer's state,
    are restored afterwards, also when the test fails.
    """
    if not (0 < start < end) or not (math.isfinite(start) and math.isfinite(end)):
        raise ValueError(f"lr_find: need 0 < start < end, got start={start!r}, end={end!r}")
    if steps < 5:
        raise ValueError(f"lr_find: steps must be >= 5, got {steps}")
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"lr_find: smoothing must lie in [0, 1), got {smoothing!r}")
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("lr_find: the model has no trainable parameters")
    if optimizer is None:
        from .optimizers import Adam

        optimizer = Adam
    saved_model = copy.deepcopy(model.state_dict())
    if isinstance(optimizer, torch.optim.Optimizer):
        saved_optimizer = copy.deepcopy(optimizer.state_dict())
        opt = optimizer
    else:
        saved_optimizer = None
        opt = optimizer(trainable, lr=start, **optimizer_kwargs)
    was_training = model.training
    try:
        return _range_test(model, loss_fn, data, opt, start, end, steps, smoothing, diverge_factor)
    finally:
        model.load_state_dict(saved_model)
        model.train(was_training)
        if saved_optimizer is not None:
            optimizer.load_state_dict(saved_optimizer)


def _range_test(model, loss_fn, data, optimizer, start, end, steps, smoothing, diverge_factor) -> LRFinderResult:
    batches = iter(_cycle(data))
    lrs, losses, smoothed = [], [], []
    average, best, diverged_at = 0.0, math.inf, None
    model.train()
    for index in range(steps):
        lr = start * (end / start) ** (index / (steps - 1))
        for group in optimizer.param_groups:
            group["lr"] = lr
        try:
            inputs, targets = next(batches)
        except StopIteration:
            break

        def closure(inputs=inputs, targets=targets):
            optimizer.zero_grad()
            loss = loss_fn(model(inputs), targets)
            loss.backward()
            return loss

        try:
            loss = float(optimizer.step(closure).detach())
        except FloatingPointError:  # a descend optimizer refusing a non-finite gradient: the run diverged
            loss = math.nan
        if not math.isfinite(loss):
            if index == 0:
                raise ValueError("lr_find: the loss is not finite at the first step, before the learning rate grew")
            diverged_at = lr
            break
        average = smoothing * average + (1 - smoothing) * loss
        value = average / (1 - smoothing ** (index + 1))  # debiased, as Adam's moments
        lrs.append(lr), losses.append(loss), smoothed.append(value)
        best = min(best, value)
        if value > diverge_factor * best:
            diverged_at = lr
            break
    return _summarise(lrs, losses, smoothed, diverged_at)


def _cycle(data: Iterable):
    """The batches of ``data`` over and over (a one-shot iterator: once)."""
    while True:
        empty = True
        for batch in data:
            empty = False
            yield batch
        if empty:
            raise ValueError("lr_find: the data yielded no batches")
        if iter(data) is data:
            return


def _summarise(lrs, losses, smoothed, diverged_at) -> LRFinderResult:
    logs = [math.log(lr) for lr in lrs]
    lowest = min(range(len(smoothed)), key=smoothed.__getitem__)
    # the steepest descent of the smoothed loss against log lr, before its minimum
    slopes = [(smoothed[i + 1] - smoothed[i - 1]) / (logs[i + 1] - logs[i - 1]) for i in range(1, max(2, lowest))
              if i + 1 < len(smoothed)]
    steepest = 1 + min(range(len(slopes)), key=slopes.__getitem__) if slopes else lowest
    drop = smoothed[0] - smoothed[lowest]
    moving = next((i for i, v in enumerate(smoothed) if v <= smoothed[0] - 0.05 * drop), lowest)
    too_high = (lrs[lowest], diverged_at or lrs[-1]) if lowest < len(lrs) - 1 or diverged_at else None
    return LRFinderResult(
        lrs=lrs, losses=losses, smoothed=smoothed, suggestion=lrs[steepest], too_low=(lrs[0], lrs[moving]),
        right=(lrs[moving], lrs[lowest]), too_high=too_high, diverged_at=diverged_at,
    )
