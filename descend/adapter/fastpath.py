"""The steady-state step: a group's kernel calls, remembered after one full step and re-checked in a few
list-wide passes.

A full step routes every parameter, fits its state to its declaration and checks every buffer at the native
boundary.  When a group ran on generated C kernels alone, its calls are kept (``Bound``): the next step
re-checks, list by list, everything the full step established (the same parameter objects with a gradient,
their storage and shape, the gradients' dtypes, shapes and strides, the same state dicts holding the same
tensors over the same storage, dtype and shape, unmodified by anyone else (their version counters), the same
plan and options) and then only refreshes the gradients' addresses and counts the steps.  Anything else
(``model.double()``, a new gradient layout, ``load_state_dict``, an edited ``state_dtype``, ``x.data = y`` on a
gradient or a state entry, a sparse gradient) falls back to the full step, which checks it all again.
"""
from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..backends import build, cpu
from ..backends.eager import Work
from ..plan.plan import Plan
from .state import finishing


def bindable(buckets, works: Sequence[Work]) -> bool:
    """Whether a group's step can be remembered: every bucket on a single-segment C kernel over dense
    gradients, no global sums, no step with a ``finish`` (the remembered calls run the kernels alone)."""
    return bool(buckets) and all(b.path == "c" and not b.sparse for b in buckets) and all(
        len(w.variant.pieces) == 1 and not w.variant.globals and w.dtensors is None and not finishing(w.chain)
        for w in works)


class Bound:
    """One group's C kernel calls, as the last full step made them."""

    def __init__(self, optimizer, group: dict, plan: Plan, options: tuple, works: Sequence[Work]):
        self.group, self.plan, self.options = group, plan, options
        self.params = [p for p in group["params"] if p.grad is not None]  # in the group's order
        position = {id(p): k for k, p in enumerate(self.params)}
        self.order = [position[id(p)] for w in works for p in w.params]  # the calls' order (bucket by bucket)
        self.ptrs = [p.data_ptr() for p in self.params]
        self.shapes = [p.shape for p in self.params]
        self.strides = [p.grad.stride() for p in self.params]
        self.grad_kinds = [(p.grad.dtype, p.grad.shape) for p in self.params]
        self.table = optimizer.state
        self.dicts = [optimizer.state.get(p) for p in self.params]
        self.calls = [cpu.bind(work) for work in works]
        self.entries = [entry for call in self.calls for entry in call.entries]
        self.versions = [entry._version for entry in self.entries]
        self.storage = [(entry.data_ptr(), entry.dtype, entry.shape) for entry in self.entries]
        self.locations = [location for call in self.calls for location in call.locations]

    def current(self, optimizer, group: dict, plan: Plan, options: tuple) -> list[Tensor] | None:
        """The gradients, in the calls' order, when nothing the last full step checked has changed; None
        otherwise."""
        if group is not self.group or plan is not self.plan or options != self.options or optimizer.state is not self.table:
            return None
        params = [p for p in group["params"] if p.grad is not None]
        if len(params) != len(self.params) or not all(map(operator.is_, params, self.params)):
            return None
        if [p.data_ptr() for p in params] != self.ptrs or [p.shape for p in params] != self.shapes:
            return None
        grads = [p.grad for p in params]
        if [(g.dtype, g.shape) for g in grads] != self.grad_kinds:  # ``p.grad.data = ...`` passes torch's checks
            return None
        try:
            if [g.stride() for g in grads] != self.strides:
                return None
        except (RuntimeError, NotImplementedError):  # a sparse gradient has no strides
            return None
        table = optimizer.state
        if not all(map(operator.is_, [table.get(p) for p in params], self.dicts)):
            return None
        if not all(map(operator.is_, [d.get(key) for d, key in self.locations], self.entries)):
            return None
        if [entry._version for entry in self.entries] != self.versions:
            return None
        # ``entry.data = other`` keeps the tensor and its version counter: the kernel's addresses would be stale
        if [(entry.data_ptr(), entry.dtype, entry.shape) for entry in self.entries] != self.storage:
            return None
        return [grads[k] for k in self.order]

    def step(self, grads: list[Tensor], numbers: list[float]) -> bool:
        """The remembered calls with this step's gradients and numbers; False when a gradient held NaN or ±inf."""
        finite, start = True, 0
        for call in self.calls:
            count = call.count
            finite = call.run(grads[start:start + count], numbers) and finite
            start += count
        torch.autograd.graph.increment_version(self.params)
        if any(call.counters and not call.c_counters for call in self.calls):  # torch counted them: new versions
            self.versions = [entry._version for entry in self.entries]
        return finite


def options_of(group: dict[str, Any]) -> tuple:
    return (group.get("fused"), group.get("foreach"), group.get("state_dtype"))


__all__ = ["Bound", "bindable", "options_of", "build"]
