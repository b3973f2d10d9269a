"""What every step is: ``Transform`` (``u ← f(u, θ, state)``), ``Elementwise`` (a step written once as
a formula), the context a step sees, and how state is stored (bfloat16 with stochastic rounding)."""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor



@dataclass
class Shards:
    """How a parameter is split across ranks (FSDP2): this rank holds a slice along ``dim``.

    Steps that reduce over a sharded dimension sum their partial results across ``group``.
    """

    dim: int
    full_shape: torch.Size
    group: object  # torch.distributed ProcessGroup

    def sum(self, tensor: Tensor) -> Tensor:
        """In place: the sum of ``tensor`` over the ranks."""
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=self.group)
        return tensor


@dataclass
class StepContext:
    """What one parameter's step knows besides its tensors."""

    step: int  # t, counted from 1
    lr: float | None = None  # the learning rate the update was scaled by, once known
    shards: Shards | None = None  # None: this rank holds the whole parameter


class Transform:
    """One named step ``u ← f(u, θ, state)``; subclasses are small dataclasses."""

    stateful = False  # True for a step that keeps per-parameter state

    def state_keys(self, param: Tensor) -> tuple[str, ...]:
        return (self.key,) if hasattr(self, "key") else ()

    def init(self, param: Tensor) -> dict[str, Tensor]:
        return {key: torch.zeros_like(param, memory_format=torch.preserve_format) for key in self.state_keys(param)}

    def ensure_state(self, param: Tensor, state: dict) -> None:
        """Creates this step's state entries that are missing (first step, or a step added later)."""
        if not all(key in state for key in self.state_keys(param)):
            for key, value in self.init(param).items():
                state.setdefault(key, value)

    def __call__(self, u: Tensor, param: Tensor, state: dict, ctx: StepContext) -> Tensor:
        raise NotImplementedError

    def many(self, us: list[Tensor], params: list[Tensor], states: list[dict], ctxs: list[StepContext]) -> list[Tensor]:
        """``__call__`` for each parameter of a list (one device and dtype)."""
        return [self(u, param, state, ctx) for u, param, state, ctx in zip(us, params, states, ctxs)]


def ema_(average: Tensor, value: Tensor, decay: float, weight: float) -> Tensor:
    """In place ``average ← decay·average + weight·value`` (weight = 1 − decay for an EMA)."""
    return average.mul_(decay).add_(value, alpha=weight)


class Elementwise(Transform):
    """A step whose new value of each element depends on that element alone, written once as ``formula``.

    ``formula(u, param, state, t)`` returns the new ``u``; it reads ``state[key]`` and assigns
    ``state[key] = ...`` for the entries it updates, with ``t`` the step count.  It is plain arithmetic
    with the functions of ``descend.formula`` (``sqrt``, ``maximum``, ``where`` ...), so the same code runs
    on tensors (the reference path), on lists of tensors (``_foreach_*`` ops), and on symbols, from which
    descend generates one fused C or Triton kernel for the whole chain.  Numeric attributes (``float``,
    ``int``, one-element tensors) are the step's hyperparameters, passed to a kernel at run time; booleans,
    strings and ``None`` are its structure (a kernel is specialised on them).

    ``scalar_state`` names per-tensor numbers kept in ``state`` (0-dim tensors, e.g. NAdam's product of
    momentum coefficients); ``prepare(state, t)`` updates them once per tensor and step, before the formula,
    and the formula reads them as numbers.
    """

    scalar_state: tuple[str, ...] = ()

    def formula(self, u, param, state, t):
        raise NotImplementedError

    def prepare(self, state: dict, t: float) -> None:
        """Per-tensor scalar work before ``formula`` (updates the ``scalar_state`` entries)."""

    def __call__(self, u, param, state, ctx):
        self.prepare(state, ctx.step)
        view = _Values(state, self.scalar_state, lambda value: value.item())
        u = self.formula(u, param, view, float(ctx.step))
        for key, value in view.stored.items():
            store_state(state[key], value, ctx.step, key)
        return u

    def many(self, us, params, states, ctxs):
        from ..formula import ScalarList, TensorList

        for state, ctx in zip(states, ctxs):
            self.prepare(state, ctx.step)
        view = _ListValues(states, self.scalar_state, ScalarList, TensorList)
        us = self.formula(TensorList(us), TensorList(params), view, ScalarList(float(c.step) for c in ctxs))
        for key, values in view.stored.items():
            targets = _entries(states, key)
            if targets[0].dtype == torch.bfloat16:
                for target, value, ctx in zip(targets, values, ctxs):
                    store_state(target, value, ctx.step, key)
            else:
                torch._foreach_copy_(targets, values)
        return us


class _Values(dict):
    """A parameter's state as a formula sees it: reads give the current value, assignments are collected."""

    def __init__(self, state: dict, scalar_keys, as_number):
        super().__init__()
        self.state, self.scalar_keys, self.as_number = state, scalar_keys, as_number
        self.stored: dict[str, Any] = {}

    def __missing__(self, key):
        value = self.state[key]
        if key in self.scalar_keys:
            return self.as_number(value)
        return value.float() if value.dtype in _SIXTEEN_BIT else value  # 16-bit state computes in float32

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self.stored[key] = value


class _ListValues(_Values):
    """``_Values`` for a list of parameters: each entry is a ``TensorList`` (or a ``ScalarList``)."""

    def __init__(self, states: list[dict], scalar_keys, scalar_list, tensor_list):
        super().__init__({}, scalar_keys, None)
        self.states, self.scalar_list, self.tensor_list = states, scalar_list, tensor_list

    def __missing__(self, key):
        if key in self.scalar_keys:
            return self.scalar_list(state[key].item() for state in self.states)
        values = _entries(self.states, key)
        return self.tensor_list(v.float() if v.dtype in _SIXTEEN_BIT else v for v in values)


def store_state(target: Tensor, value, step: float, key: str) -> None:
    """``target ← value``; into bfloat16 state (``state_dtype=torch.bfloat16``) with stochastic rounding.

    Round-to-nearest would bias a slow average: with β = 0.999, ``0.999·v`` rounds back to ``v`` in
    bfloat16 and the average never decays.  Adding 16 random bits below the kept ones before truncating
    rounds up with probability equal to the dropped fraction, so the stored value is unbiased.  The bits
    hash the element's memory offset, the step and the entry's name (``_prelude.h``'s ``sr_bits``), so this
    reference and the kernels store the same bits.
    """
    if target.dtype != torch.bfloat16 or not isinstance(value, Tensor) or value.dtype == torch.bfloat16:
        target.copy_(value)
        return
    value = torch.as_tensor(value, dtype=torch.float32).expand(target.shape)
    bits = value.float().contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    offsets = torch.arange(target.numel(), dtype=torch.int64, device=target.device).as_strided(
        target.shape, target.stride()) if target.numel() else torch.zeros(target.shape, dtype=torch.int64)
    random = _sr_bits(offsets, _sr_seed(zlib.crc32(key.encode()), step))
    rounded = ((bits + (random & 0xFFFF)) & 0xFFFF0000).to(torch.int32)
    nan = torch.isnan(value)
    result = rounded.view(torch.float32).masked_fill(nan, float("nan"))
    target.copy_(result)  # exact: the low 16 bits are zero


_U32 = 0xFFFFFFFF
_SIXTEEN_BIT = (torch.bfloat16, torch.float16)


def _sr_seed(salt: int, step: float) -> int:
    return (salt * 0x27D4EB2F + (int(step) & _U32) * 0x165667B1) & _U32


def _sr_bits(offsets: Tensor, seed: int) -> Tensor:
    x = ((offsets & _U32) * 0x9E3779B1 + seed) & _U32
    x ^= x >> 16
    x = (x * 0x85EBCA6B) & _U32
    x ^= x >> 13
    x = (x * 0xC2B2AE35) & _U32
    return x ^ (x >> 16)


def _entries(states: list[dict], key: str) -> list[Tensor]:
    return [state[key] for state in states]
