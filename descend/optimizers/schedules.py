"""Learning-rate and momentum schedules.

Learning-rate schedules are ``torch.optim.lr_scheduler`` schedulers: descend
adds the two that torch lacks (warm-up + cosine, and ``1/√t``) as ``LambdaLR``
subclasses, and every torch scheduler (``StepLR``, ``LinearLR``,
``CosineAnnealingLR``, ``OneCycleLR``, ...) works unchanged with every descend
optimizer.  ``MomentumSchedule`` does for momentum what those do for the
learning rate.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, min_factor: float = 0.0) -> float:
    """Linear warm-up from 0 to 1 over ``warmup_steps``, then a cosine from 1 to ``min_factor`` at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = total_steps - warmup_steps
    progress = 1.0 if decay_steps <= 0 else min(1.0, (step - warmup_steps) / decay_steps)
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def inverse_sqrt_factor(step: int, warmup_steps: int = 0) -> float:
    """``1/√t`` (t = step + 1), after an optional linear warm-up; continuous at the end of warm-up."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return math.sqrt(max(1, warmup_steps) / (step + 1))


class WarmupCosine(LambdaLR):
    """``lr = base_lr · warmup_cosine_factor(step, ...)``; call ``step()`` once per optimizer step."""

    def __init__(self, optimizer, warmup_steps: int, total_steps: int, min_factor: float = 0.0, last_epoch: int = -1):
        if warmup_steps < 0 or total_steps <= 0 or warmup_steps > total_steps:
            raise ValueError(
                f"WarmupCosine: need 0 <= warmup_steps <= total_steps and total_steps > 0, "
                f"got warmup_steps={warmup_steps}, total_steps={total_steps}"
            )
        if not 0.0 <= min_factor <= 1.0:
            raise ValueError(f"WarmupCosine: min_factor must lie in [0, 1], got {min_factor!r}")
        self.warmup_steps, self.total_steps, self.min_factor = warmup_steps, total_steps, min_factor
        super().__init__(optimizer, self._factor, last_epoch)

    def _factor(self, step: int) -> float:
        return warmup_cosine_factor(step, self.warmup_steps, self.total_steps, self.min_factor)


class InverseSqrt(LambdaLR):
    """``lr = base_lr · inverse_sqrt_factor(step, warmup_steps)`` (the Transformer / AdaGrad-style ``1/√t``)."""

    def __init__(self, optimizer, warmup_steps: int = 0, last_epoch: int = -1):
        if warmup_steps < 0:
            raise ValueError(f"InverseSqrt: warmup_steps must be >= 0, got {warmup_steps}")
        self.warmup_steps = warmup_steps
        super().__init__(optimizer, self._factor, last_epoch)

    def _factor(self, step: int) -> float:
        return inverse_sqrt_factor(step, self.warmup_steps)


def _momentum_key(group: dict[str, Any]) -> str:
    for key in ("momentum", "betas", "beta1"):
        if key in group:
            return key
    raise ValueError("MomentumSchedule: this optimizer has no momentum (no 'momentum', 'betas' or 'beta1' in its groups)")


class MomentumSchedule:
    """Sets every param group's momentum to ``schedule(t)`` at each ``step()``.

    The momentum is ``momentum`` (SGD, RMSprop), ``betas[0]`` (Adam, AdamW) or
    ``beta1`` (Adafactor).  Like a torch lr scheduler it sets the value for
    ``t = 0`` when made, and ``state_dict()`` / ``load_state_dict()`` resume it.
    A momentum buffer is created (at zero) the first time the momentum is
    positive, so a ramp that starts at 0 starts averaging from that step on.
    Example, the classic 0.5 → 0.99 ramp over the first 1000 steps::

        momentum = MomentumSchedule(opt, linear_ramp(0.5, 0.99, 1000))
    """

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: Callable[[int], float], last_step: int = -1):
        self.optimizer = optimizer
        self.schedule = schedule
        self.keys = [_momentum_key(group) for group in optimizer.param_groups]
        self.last_step = last_step
        self.step()

    def step(self) -> None:
        self.last_step += 1
        value = float(self.schedule(self.last_step))
        if not 0.0 <= value < 1.0:
            raise ValueError(f"MomentumSchedule: schedule({self.last_step}) = {value!r}, must lie in [0, 1)")
        for group, key in zip(self.optimizer.param_groups, self.keys):
            if key == "betas":
                group["betas"] = (value, group["betas"][1])
            else:
                group[key] = value

    def get_last_momentum(self) -> list[float]:
        return [group["betas"][0] if key == "betas" else group[key] for group, key in zip(self.optimizer.param_groups, self.keys)]

    def state_dict(self) -> dict[str, Any]:
        return {"last_step": self.last_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_step = state_dict["last_step"] - 1
        self.step()


def linear_ramp(start: float, end: float, steps: int) -> Callable[[int], float]:
    """``t ↦`` ``start`` moving linearly to ``end`` over ``steps`` steps, then ``end``."""
    if steps <= 0:
        raise ValueError(f"linear_ramp: steps must be > 0, got {steps}")
    return lambda t: start + (end - start) * min(1.0, t / steps)
