"""The reference path: a chain's steps one after another, in torch, on one tensor or on lists of tensors.

This is the definition every fast path is tested against, and the path that runs what they cannot
(another device without Triton, a formula that calls a torch function, a non-dense parameter).  The
formulas run on tensors (``Tensor`` arithmetic, one parameter at a time) or on ``TensorList`` values
(torch's ``_foreach_*`` ops, one launch per op for a whole list on CUDA).

The same rules as the kernels: 16-bit parameters compute in float32 and round once, when the update is
added; a step reads the state an earlier step of the same update assigned, unrounded, and the entries are
stored (rounded by the group's codec) once, at the end of the update or before a matrix step.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..plan.formula import ScalarList, TensorList
from ..plan.plan import Plan, Variant
from ..plan import blockwise
from ..plan.state import Codec
from ..plan.trace import UNDECLARED, global_label
from .recycle import Recycling

SIXTEEN_BIT = (torch.bfloat16, torch.float16)
CHUNK_ELEMENTS = 1 << 20  # lists go in chunks of max(largest tensor, this) elements: bounded temporaries


@dataclass
class Work:
    """One call of a backend: tensors of one device, dtype and plan variant, and what their update reads.

    ``params``, ``grads`` and state entries are this rank's shards (local tensors) where FSDP2 shards them
    (``shards[i]`` then says how); ``steps[i]`` is ``t`` (already counted), None where no counter is kept;
    ``totals`` the global reductions' totals, by part name; ``lanes`` the stochastic-rounding lane of each
    state entry stored through the codec."""

    plan: Plan
    variant: Variant
    chain: Sequence
    numbers: list[float]
    params: list[Tensor]
    grads: list[Tensor]
    states: list[dict]
    steps: list[float] | None
    codec: Codec
    totals: dict[str, float] = field(default_factory=dict)
    shards: list | None = None
    owner: str = "descend"
    dtensors: list | None = None  # FSDP2: the DTensor parameter where params[i] is its shard, else None
    origin: list[dict] | None = None  # FSDP2: the state as the optimizer keeps it (DTensor entries)

    @property
    def maximize(self) -> bool:
        return self.plan.maximize

    def t(self, i: int) -> float:
        return float(self.steps[i]) if self.steps is not None else 0.0

    @property
    def lanes(self) -> dict[str, int]:
        specs = [spec for spec in self.variant.specs if spec.storage == "state"]
        return {spec.key: lane for lane, spec in enumerate(specs)}


# --- state as a formula sees it ------------------------------------------------------------------


class UndeclaredState(KeyError):
    """A formula read or assigned a state entry that no step of its chain declares."""

    def __str__(self):
        return self.args[0]


def _declared(key, variant: Variant) -> None:
    if key not in variant.declared_keys:
        raise UndeclaredState(f"state {key!r} is read or assigned, but {UNDECLARED}")


def _read(state: dict, key: str, variant: Variant) -> Tensor:
    """An entry's value: 16-bit state widened to float32, 8-bit codes decoded with their scales."""
    value = state[key]
    if value.dtype == torch.uint8:
        return blockwise.read(value, state[blockwise.scale_key(key)], variant.spec_of[key].signed)
    return value.float() if value.dtype in SIXTEEN_BIT else value


def _store(state: dict, key: str, value, codec: Codec, variant: Variant, t: float, lanes: dict[str, int],
           offset: int = 0) -> None:
    target = state[key]
    if target.dtype == torch.uint8:
        blockwise.write(target, state[blockwise.scale_key(key)], value, variant.spec_of[key].signed)
    elif target.dtype == codec.dtype:
        codec.store(target, value, t, lanes.get(key, 0), offset)
    else:
        target.copy_(value)


class Overlay(dict):
    """One parameter's state during one update: reads give the current value (16-bit state widened to
    float32, 8-bit state decoded, scalar state as a number), assignments are kept unrounded until ``flush``.
    Only the entries the chain declares can be read or assigned (not the step counter, say)."""

    def __init__(self, state: dict, variant: Variant):
        super().__init__()
        self.state, self.variant, self.scalar_keys = state, variant, variant.scalar_keys
        self.assigned: dict[str, Any] = {}

    def __missing__(self, key):
        _declared(key, self.variant)
        if key in self.scalar_keys:
            return self.state[key].item()
        return _read(self.state, key, self.variant)

    def __setitem__(self, key, value):
        _declared(key, self.variant)
        super().__setitem__(key, value)
        self.assigned[key] = value

    def flush(self, codec: Codec, t: float, lanes: dict[str, int], offset: int = 0) -> None:
        for key, value in self.assigned.items():
            _store(self.state, key, value, codec, self.variant, t, lanes, offset)
        self.assigned.clear()
        super().clear()


class ListOverlay(dict):
    """``Overlay`` for a list of parameters: entries are ``TensorList`` (or ``ScalarList``) values."""

    def __init__(self, states: list[dict], variant: Variant):
        super().__init__()
        self.states, self.variant, self.scalar_keys = states, variant, variant.scalar_keys
        self.assigned: dict[str, list] = {}

    def __missing__(self, key):
        _declared(key, self.variant)
        if key in self.scalar_keys:
            return ScalarList(state[key].item() for state in self.states)
        return TensorList(_read(state, key, self.variant) for state in self.states)

    def __setitem__(self, key, value):
        _declared(key, self.variant)
        super().__setitem__(key, value)
        self.assigned[key] = value

    def single(self, i: int) -> _Single:
        """The view of tensor ``i`` alone (for a step the list path cannot run)."""
        return _Single(self, i)

    def flush(self, codec: Codec, steps: list[float], lanes: dict[str, int]) -> None:
        for key, values in self.assigned.items():
            targets = [state[key] for state in self.states]
            if targets[0].dtype == torch.uint8 or (targets[0].dtype == codec.dtype and codec.stochastic):
                for state, value, t in zip(self.states, values, steps):
                    _store(state, key, value, codec, self.variant, t, lanes)
            else:
                torch._foreach_copy_(targets, list(values))
        self.assigned.clear()
        super().clear()


class _Single(dict):
    def __init__(self, overlay: ListOverlay, i: int):
        super().__init__()
        self.overlay, self.i = overlay, i

    def __missing__(self, key):
        return self.overlay[key][self.i]

    def __setitem__(self, key, value):
        values = list(self.overlay[key])  # the other tensors keep what they hold
        values[self.i] = value
        dict.__setitem__(self.overlay, key, TensorList(values))
        self.overlay.assigned[key] = self.overlay[key]


# --- one tensor at a time -------------------------------------------------------------------------


def _start(param: Tensor, grad: Tensor, maximize: bool) -> tuple[Tensor, Tensor]:
    """The parameter's value and ``u`` (the gradient, negated to maximize), float32 for 16-bit ones."""
    value = param.float() if param.dtype in SIXTEEN_BIT else param
    u = grad.float() if grad.dtype in SIXTEEN_BIT else grad
    return value, (u.neg() if maximize else u.clone())


def _finish(param: Tensor, u: Tensor, chain: Sequence) -> None:
    if chain and getattr(chain[-1], "output", "update") == "param":
        param.copy_(u)
    else:
        param.add_(u)


def update(work: Work, foreach: bool) -> None:
    """The update of every tensor of ``work`` (``foreach``: on lists, in chunks)."""
    if foreach:
        _update_lists(work)
        return
    owned = _owner_scheme(work)
    if owned:  # sharded matrices of a matrix step: each orthogonalised on one rank (descend.backends.sharded)
        from . import sharded

        sharded.update(work, owned)
    for i in range(len(work.params)):
        if i not in owned:
            _update_one(work, i)


def _owner_scheme(work: Work) -> list[int]:
    """The sharded parameters of ``work`` whose matrix step runs on one owner rank (none where the chain
    does not allow it: those are gathered whole on every rank, ``_update_gathered``)."""
    if work.dtensors is None or not work.plan.has_matrix:
        return []
    from . import sharded

    indices = [i for i, d in enumerate(work.dtensors) if d is not None and work.shards[i] is not None
               and d.dim() == 2 and d.numel()]
    return indices if indices and sharded.takes(work, work.variant) else []


def _update_one(work: Work, i: int) -> None:
    if work.dtensors is not None and work.dtensors[i] is not None and needs_full(work.variant):
        _update_gathered(work, i)
        return
    param, grad, state = work.params[i], work.grads[i], work.states[i]
    if param.numel() == 0:
        return  # nothing to update (and a mean over no elements would put NaN into state)
    if param.numel() > SLICE_ELEMENTS and _sliceable(work.variant, param, grad, state):
        with Recycling(SLICE_ELEMENTS, param.device) as buffers:
            for start in range(0, param.numel(), SLICE_ELEMENTS):
                buffers.next_slice(min(SLICE_ELEMENTS, param.numel() - start))
                _run(work, *_slice(work.variant, param, grad, state, start), work.t(i), start)
        return
    _run(work, param, grad, state, work.t(i))


SLICE_ELEMENTS = 1 << 18  # an elementwise chain runs big tensors slice by slice, in buffers kept (recycle.py)


def _sliceable(variant: Variant, param: Tensor, grad: Tensor, state: dict) -> bool:
    """An elementwise chain (no statistic, no matrix step, no look at the ndim) on a contiguous tensor whose
    gradient and state are contiguous too: its update of a slice needs nothing beyond that slice."""
    if variant.pieces is None or variant.reads_ndim or len(variant.pieces) > 1 or variant.globals:
        return False
    plan = variant.schedules[0]
    if plan.temporaries or len(plan.passes) > 1:
        return False
    return param.is_contiguous() and grad.is_contiguous() and all(
        state[spec.key].is_contiguous() for spec in variant.specs if spec.shape == "param" and spec.key in state)


def _slice(variant: Variant, param: Tensor, grad: Tensor, state: dict, start: int):
    stop = start + SLICE_ELEMENTS
    part = dict(state)
    for spec in variant.specs:
        if spec.shape == "param" and spec.key in state:
            part[spec.key] = state[spec.key].view(-1)[start:stop]
            if part[spec.key].dtype == torch.uint8:  # and its scales (a slice is a whole number of blocks)
                scales = blockwise.scale_key(spec.key)
                part[scales] = state[scales][start // blockwise.BLOCK:-(-stop // blockwise.BLOCK)]
    return param.view(-1)[start:stop], grad.view(-1)[start:stop], part


def _run(work: Work, param: Tensor, grad: Tensor, state: dict, t: float, offset: int = 0) -> None:
    """The chain on one tensor (or a slice of one, at element ``offset``): ``param`` updated in place,
    ``state`` stored through the codec."""
    lanes = work.lanes
    value, u = _start(param, grad, work.maximize)
    view = Overlay(state, work.variant)
    for index, step in enumerate(work.chain):
        kind = getattr(step, "kind", "elementwise")
        if kind == "matrix":
            view.flush(work.codec, t, lanes)
            u = _matrix([u], [value], [state], step, t)[0]
        elif kind == "global":
            u = step.formula(u, value, view, t, _totals_of(work.totals, global_label(work.chain, index)))
        else:
            u = step.formula(u, value, view, t)
        if not isinstance(u, Tensor):
            u = torch.as_tensor(u, dtype=value.dtype, device=value.device).expand(value.shape)
    view.flush(work.codec, t, lanes, offset)
    _finish(param, u, work.chain)


def needs_full(variant: Variant) -> bool:
    """Whether a sharded parameter's update needs all of it: a statistic of the tensor, or a matrix step."""
    if variant.pieces is None:
        return True
    return len(variant.pieces) > 1 or any(s.temporaries or len(s.passes) > 1 for s in variant.schedules if s)


def _update_gathered(work: Work, i: int) -> None:
    """A sharded parameter (FSDP2) whose chain reads statistics of the whole tensor: every rank gathers the
    parameter, its gradient and its sharded state, runs the chain on the whole tensors, and keeps its own
    shard; row and column state is kept whole on every rank.  The numbers are the unsharded run's."""
    from ..adapter.distributed import gather, is_dtensor, local_chunk

    dparam = work.dtensors[i]
    origin = work.origin[i]
    full = gather(dparam)
    state = {key: gather(value) if is_dtensor(value) else value for key, value in origin.items()}
    if full.numel():
        _run(work, full, gather(dparam.grad), state, work.t(i))
    work.params[i].copy_(local_chunk(full, dparam))
    for key, value in origin.items():
        if is_dtensor(value):
            value.to_local().copy_(local_chunk(state[key], value))


def contributions(work: Work, stage: int) -> dict[str, float]:
    """Every tensor's share of the global totals of ``stage`` (``variant.globals``), summed over ``work``'s
    tensors: the chain up to each global step, run without storing anything.  A sharded parameter adds its
    shard's share (the ranks' shares are added by the caller)."""
    wanted = set(work.variant.globals[stage].labels)
    sums: dict[str, float] = dict.fromkeys(work.variant.globals[stage].parts or (), 0.0)
    steps_of = {index for index, step in enumerate(work.chain)
                if getattr(step, "kind", "") == "global" and global_label(work.chain, index) in wanted}
    upto = max(steps_of)
    for i, (param, grad, state) in enumerate(zip(work.params, work.grads, work.states)):
        if param.numel() == 0:
            continue
        t = work.t(i)
        value, u = _start(param, grad, work.maximize)
        view = Overlay(state, work.variant)  # never flushed: nothing is stored
        for index, step in enumerate(work.chain[:upto + 1]):
            if index in steps_of:
                for name, contribution in step.contributions(u, value, view, t).items():
                    part = f"{global_label(work.chain, index)}:{name}"
                    sums[part] = sums.get(part, 0.0) + _sum(contribution)
                if index == upto:
                    break
            if getattr(step, "kind", "elementwise") == "global":
                u = step.formula(u, value, view, t, _totals_of(work.totals, global_label(work.chain, index)))
            else:
                u = step.formula(u, value, view, t)
    return sums


def _sum(value) -> float:
    if isinstance(value, Tensor):
        return float(value.double().sum())
    return float(value)


def _totals_of(totals: dict[str, float], label: str) -> dict[str, float]:
    prefix = f"{label}:"
    return {name[len(prefix):]: value for name, value in totals.items() if name.startswith(prefix)}


def _matrix(us: list[Tensor], values: list[Tensor], states: list[dict], step, t) -> list[Tensor]:
    """A matrix step over tensors of one shape: stacked, ``apply``-ed, unstacked."""
    dtype = step.input_dtype or us[0].dtype
    stack = torch.stack([u.to(dtype) for u in us])
    params = torch.stack(values)
    state = _Stacked(states)
    result = step.apply(stack, params, state, t)
    return list(result.unbind(0))


class _Stacked(dict):
    """The state entries of several same-shape parameters, stacked on first read."""

    def __init__(self, states):
        super().__init__()
        self.states = states

    def __missing__(self, key):
        if any(state[key].dtype == torch.uint8 for state in self.states):
            raise ValueError(f"state {key!r} is kept in 8 bits, and a matrix step reads it; use another state_dtype")
        value = torch.stack([state[key] for state in self.states])
        self[key] = value
        return value


# --- lists -------------------------------------------------------------------------------------------

_warned_steps: set[str] = set()


def _update_lists(work: Work) -> None:
    """The update on lists of tensors, in chunks of at most ``max(largest, CHUNK_ELEMENTS)`` elements, so
    that the temporaries of a big model stay as small as on the one-tensor path; a big CPU tensor of an
    elementwise chain takes the one-tensor path, slice by slice (``_slice_alone``)."""
    indices = [i for i, p in enumerate(work.params) if p.numel()]
    sliced = [i for i in indices if _slice_alone(work, i)]
    for i in sliced:
        _update_one(work, i)
    indices = [i for i in indices if i not in sliced]
    if not indices:
        return
    largest = max(CHUNK_ELEMENTS, *(work.params[i].numel() for i in indices))
    chunk, size = [], 0
    for i in indices + [None]:
        if i is None or (chunk and size + work.params[i].numel() > largest):
            _update_chunk(work, chunk)
            chunk, size = [], 0
        if i is not None:
            chunk.append(i)
            size += work.params[i].numel()


def _slice_alone(work: Work, i: int) -> bool:
    """Whether a big CPU float32 or float64 tensor of a list leaves it for the one-tensor path, slice by slice (its
    temporaries those of a slice, not of the tensor): on the CPU a ``_foreach_*`` op on these dtypes is the
    per-tensor op, the numbers are the same."""
    param = work.params[i]
    return param.numel() > SLICE_ELEMENTS and param.is_cpu and param.dtype in (torch.float32, torch.float64) \
        and (work.dtensors is None or work.dtensors[i] is None) \
        and _sliceable(work.variant, param, work.grads[i], work.states[i])


def _update_chunk(work: Work, indices: list[int]) -> None:
    params = [work.params[i] for i in indices]
    states = [work.states[i] for i in indices]
    steps = [work.t(i) for i in indices]
    ts = ScalarList(steps)
    lanes = work.lanes
    sixteen = params[0].dtype in SIXTEEN_BIT  # computed in float32, rounded once into the parameter
    values = TensorList(p.float() for p in params) if sixteen else TensorList(params)
    grads = [work.grads[i] for i in indices]
    if sixteen:  # fresh float32 copies: u may start as them
        grads = [g.float() for g in grads]
        us = TensorList(torch._foreach_neg(grads) if work.maximize else grads)
    else:
        us = TensorList(torch._foreach_neg(grads) if work.maximize else torch._foreach_mul(grads, 1.0))
    view = ListOverlay(states, work.variant)
    for index, step in enumerate(work.chain):
        kind = getattr(step, "kind", "elementwise")
        if kind == "matrix":
            view.flush(work.codec, steps, lanes)
            us = TensorList(_matrix_by_shape(us, values, states, step, ts))
            continue
        totals = _totals_of(work.totals, global_label(work.chain, index)) if kind == "global" else None
        try:
            result = step.formula(us, values, view, ts, totals) if kind == "global" else \
                step.formula(us, values, view, ts)
            if not isinstance(result, TensorList) or len(result) != len(us):
                raise TypeError(f"returned {type(result).__name__}, not one tensor per parameter")
            us = result
        except (TypeError, AttributeError, RuntimeError, ValueError, NotImplementedError) as error:
            _warn_fallback(type(step).__name__, error)
            us = TensorList(_one_step(step, kind, us[k], values[k], view.single(k), steps[k], totals)
                            for k in range(len(us)))
    view.flush(work.codec, steps, lanes)
    if work.chain and getattr(work.chain[-1], "output", "update") == "param":
        torch._foreach_copy_(params, list(us))
    elif sixteen:  # no mixed-dtype in-place add: the float32 sum, then one rounding copy
        torch._foreach_add_(values, list(us))
        torch._foreach_copy_(params, list(values))
    else:
        torch._foreach_add_(params, list(us))


def _one_step(step, kind, u, value, view, t, totals):
    result = step.formula(u, value, view, t, totals) if kind == "global" else step.formula(u, value, view, t)
    if not isinstance(result, Tensor):
        result = torch.full_like(value, float(result))
    return result


def _matrix_by_shape(us, values, states, step, ts) -> list[Tensor]:
    results: list[Tensor | None] = [None] * len(us)
    by_shape: dict[torch.Size, list[int]] = {}
    for k, u in enumerate(us):
        by_shape.setdefault(u.shape, []).append(k)
    for indices in by_shape.values():
        out = _matrix([us[k] for k in indices], [values[k] for k in indices], [states[k] for k in indices], step,
                      ts[indices[0]])
        for k, value in zip(indices, out):
            results[k] = value
    return results


def _warn_fallback(name: str, error: Exception) -> None:
    reason = f"{name} cannot run on lists of tensors ({type(error).__name__}: {error})"
    if reason not in _warned_steps:
        _warned_steps.add(reason)
        from ..adapter.warn import warn_user

        warn_user(f"descend: {reason}; the foreach path runs that step one tensor at a time", RuntimeWarning)


def finite(tensors: Sequence[Tensor]) -> bool:
    """True when no tensor holds a NaN or an infinity (one host sync)."""
    flags = [torch.isfinite(t).all() for t in tensors if t.numel()]
    if not flags:
        return True
    return bool(torch.stack([f.cpu() if f.device.type != "cpu" else f for f in flags]).all())


__all__ = ["Work", "update", "contributions", "finite", "CHUNK_ELEMENTS"]
