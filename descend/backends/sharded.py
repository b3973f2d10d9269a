"""A chain with a matrix step on FSDP2-sharded matrices: each matrix orthogonalised on one owner rank.

A matrix step (Muon's Newton–Schulz iteration) needs all of a matrix, but only its ``u``: where the step
says so (``reads_param_or_state = False``) and the chain's segments are elementwise, a step of every
sharded matrix of a ``Work`` runs as

1. the segment before the matrix step, on each rank's shards (on the DTensors: elementwise, no message);
2. each matrix's ``u`` (in the step's ``input_dtype``) gathered to its owner rank: one ``gather``, never an
   all-gather to every rank.  Owners are assigned by the matrix step's flops, largest first, each to the rank
   with the least work so far (the same assignment on every rank: it depends on the shapes alone);
3. on each rank, the matrix step on the matrices it owns, a stack of same-shape matrices at a time;
4. each result scattered back from its owner (one ``scatter``), and the segment after it on the shards.

Each shard's numbers are those of the unsharded run: the elementwise work is the same arithmetic on fewer
elements, and the matrix step sees the whole matrix.  ``size(param, axis)`` reads the whole parameter's shape
(a DTensor's ``shape`` is its global one).
"""
from __future__ import annotations

import heapq
from collections.abc import Sequence

import torch
from torch import Tensor

from ..plan.plan import Variant
from ..plan.trace import Segment, global_label

SIXTEEN_BIT = (torch.bfloat16, torch.float16)


def takes(work, variant: Variant) -> bool:
    """Whether ``work``'s sharded matrices can take the owner scheme: the chain traced, with one matrix step
    that reads ``u`` alone, and its segments elementwise (one pass, no statistic of a tensor)."""
    if variant.pieces is None or sum(not isinstance(piece, Segment) for piece in variant.pieces) != 1:
        return False
    matrix_steps = [step for step in work.chain if getattr(step, "kind", "") == "matrix"]
    return (all(not step.reads_param_or_state for step in matrix_steps)
            and all(len(s.passes) <= 1 and not s.temporaries for s in variant.schedules if s is not None))


def flops(shape: Sequence[int]) -> int:
    """What a Newton–Schulz-like step costs on an ``A × B`` matrix, up to a constant: ``X Xᵀ`` and ``(·)X`` on
    the wide orientation (n = min, m = max) are ``n²m`` each, the square of the Gram matrix ``n³``."""
    n, m = sorted(shape[-2:])
    return 2 * n * n * m + n * n * n


def owners(shapes: Sequence[Sequence[int]], world: int) -> list[int]:
    """The rank that orthogonalises each matrix: largest first (ties in order), each to the least loaded rank
    (ties to the lowest); deterministic, so every rank computes the same assignment."""
    load = [(0, rank) for rank in range(world)]
    heapq.heapify(load)
    assigned = [0] * len(shapes)
    for index in sorted(range(len(shapes)), key=lambda i: (-flops(shapes[i]), i)):
        work, rank = heapq.heappop(load)
        assigned[index] = rank
        heapq.heappush(load, (work + flops(shapes[index]), rank))
    return assigned


def _chunks(length: int, world: int) -> list[int]:
    """The shard lengths of ``torch.chunk(length, world)`` (FSDP2's ``Shard(dim)``), zeros for empty ranks."""
    size = -(-length // world)
    return [max(0, min(size, length - rank * size)) for rank in range(world)]


def _padded(local: Tensor, dim: int, length: int) -> Tensor:
    shape = list(local.shape)
    shape[dim] = length
    out = local.new_zeros(shape)
    out.narrow(dim, 0, local.shape[dim]).copy_(local)
    return out


def _run_steps(work, steps, u, value, view, t):
    from .eager import _totals_of

    for index, step in steps:
        if getattr(step, "kind", "elementwise") == "global":
            u = step.formula(u, value, view, t, _totals_of(work.totals, global_label(work.chain, index)))
        else:
            u = step.formula(u, value, view, t)
    return u


def update(work, indices: list[int]) -> None:
    """The update of the sharded matrices ``indices`` of ``work`` (each ``work.dtensors[i]`` a DTensor
    ``Shard(dim)`` on a 1-D mesh), by the owner scheme above; one chain with one matrix step."""
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor

    from .eager import Overlay, _finish, _start

    cut = next(k for k, step in enumerate(work.chain) if getattr(step, "kind", "") == "matrix")
    step = work.chain[cut]
    before, after = list(enumerate(work.chain))[:cut], list(enumerate(work.chain))[cut + 1:]
    group = work.shards[indices[0]].group
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    lanes = work.lanes

    inputs, views = {}, {}
    for i in indices:  # 1. the segment before the matrix step, on the shards
        dparam = work.dtensors[i]
        value, u = _start(dparam, dparam.grad, work.maximize)
        views[i] = Overlay(work.origin[i], work.variant)
        u = _run_steps(work, before, u, value, views[i], work.t(i))
        views[i].flush(work.codec, work.t(i), lanes)
        inputs[i] = u.to_local().to(step.input_dtype or u.dtype)

    shapes = [tuple(work.dtensors[i].shape) for i in indices]
    assigned = owners(shapes, world)
    full: dict[int, Tensor] = {}
    for i, owner in zip(indices, assigned):  # 2. each u to its owner
        dim, length = work.shards[i].dim, work.dtensors[i].shape[work.shards[i].dim]
        pieces = _chunks(length, world)
        sent = _padded(inputs[i], dim, pieces[0])
        received = [torch.empty_like(sent) for _ in range(world)] if rank == owner else None
        dist.gather(sent, received, dst=dist.get_global_rank(group, owner), group=group)
        if rank == owner:
            full[i] = torch.cat([r.narrow(dim, 0, n) for r, n in zip(received, pieces)], dim=dim)

    results: dict[int, Tensor] = {}
    by_shape: dict[tuple, list[int]] = {}
    for i in full:  # 3. the matrix step on the matrices this rank owns, same shapes stacked
        by_shape.setdefault(tuple(full[i].shape), []).append(i)
    for members in by_shape.values():
        stack = step.apply(torch.stack([full[i] for i in members]), None, {}, work.t(members[0]))
        results.update(zip(members, stack.unbind(0)))

    for i, owner in zip(indices, assigned):  # 4. each result back to its shards, and the segment after it
        dim, length = work.shards[i].dim, work.dtensors[i].shape[work.shards[i].dim]
        pieces = _chunks(length, world)
        dtype = step.output_dtype or step.input_dtype or inputs[i].dtype
        shape = list(inputs[i].shape)
        shape[dim] = pieces[0]
        mine = torch.empty(shape, dtype=dtype)
        parts = None
        if rank == owner:
            offsets = [sum(pieces[:r]) for r in range(world)]
            parts = [_padded(results[i].narrow(dim, o, n), dim, pieces[0]).contiguous()
                     for o, n in zip(offsets, pieces)]
        dist.scatter(mine, parts, src=dist.get_global_rank(group, owner), group=group)
        dparam = work.dtensors[i]
        local = mine.narrow(dim, 0, pieces[rank]).contiguous()
        u = DTensor.from_local(local, dparam.device_mesh, dparam.placements, shape=dparam.shape,
                               stride=dparam.stride(), run_check=False)
        value = dparam.float() if dparam.dtype in SIXTEEN_BIT else dparam
        u = _run_steps(work, after, u, value, views[i], work.t(i))
        views[i].flush(work.codec, work.t(i), lanes)
        _finish(dparam, u, work.chain)
