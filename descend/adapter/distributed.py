"""PyTorch's own distributed engine, as descend's optimizers meet it: FSDP2's sharded parameters
(``DTensor``), ZeroRedundancyOptimizer's share of the parameters, and the agreement between ranks on
whether a step is taken."""
from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass
class Shards:
    """How a parameter is split across ranks (FSDP2): this rank holds a slice along ``dim``.

    Reductions over a sharded dimension add their partial results across ``group``."""

    dim: int
    full_shape: torch.Size
    group: object  # torch.distributed ProcessGroup

    def sum(self, tensor: Tensor) -> Tensor:
        """In place: the sum of ``tensor`` over the ranks."""
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=self.group)
        return tensor

    def max(self, tensor: Tensor) -> Tensor:
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=self.group)
        return tensor


def _dtensor_class() -> type | None:
    """``DTensor`` once something (FSDP2, the user) has imported ``torch.distributed.tensor``; until then no
    tensor can be one, and descend does not import it itself (it adds half a second to ``import descend``)."""
    module = sys.modules.get("torch.distributed.tensor")
    return getattr(module, "DTensor", None)


def is_dtensor(tensor: Tensor) -> bool:
    dtensor = _dtensor_class()
    return dtensor is not None and isinstance(tensor, dtensor)


def sharding_possible() -> bool:
    """DTensor parameters need an initialised process group: without one, no per-tensor checks are needed."""
    return _dtensor_class() is not None and torch.distributed.is_available() and torch.distributed.is_initialized()


def local(tensor: Tensor) -> Tensor:
    """This rank's shard of a DTensor (FSDP2's parameters), or the tensor itself."""
    return tensor.to_local() if is_dtensor(tensor) else tensor


def shards_of(param: Tensor, owner: str) -> Shards | None:
    """How a DTensor parameter is split: None when this rank holds all of it."""
    if not is_dtensor(param):
        return None
    from torch.distributed.tensor import Replicate, Shard

    placements = param.placements
    if all(isinstance(p, Replicate) for p in placements):
        return None
    if len(placements) != 1 or not isinstance(placements[0], Shard):
        raise NotImplementedError(
            f"{owner}: parameters sharded as {placements} are not supported; a 1-D mesh with Shard(dim) "
            "(FSDP2's fully_shard) or Replicate is"
        )
    return Shards(placements[0].dim % param.dim(), param.shape, param.device_mesh.get_group())


def gather(tensor: Tensor) -> Tensor:
    """All of a DTensor, on every rank (an all-gather)."""
    return tensor.full_tensor() if is_dtensor(tensor) else tensor


def local_chunk(full: Tensor, like: Tensor) -> Tensor:
    """This rank's shard of ``full``, split as the DTensor ``like`` is (``Shard(dim)``: ``torch.chunk``)."""
    shards = shards_of(like, "descend")
    if shards is None:
        return full
    import torch.distributed as dist

    world, rank = dist.get_world_size(shards.group), dist.get_rank(shards.group)
    pieces = torch.chunk(full, world, dim=shards.dim)
    if rank < len(pieces):
        return pieces[rank]
    return full.narrow(shards.dim, 0, 0)


def agreed(flag: bool, tensors: Sequence[Tensor]) -> bool:
    """``flag`` and-ed over the ranks when ``tensors`` include DTensors, whose shards differ per rank;
    ``flag`` itself otherwise."""
    sharded = [t for t in tensors if is_dtensor(t)] if sharding_possible() else []
    if not sharded:
        return flag
    return all_ranks(flag, sharded[0].device_mesh.get_group())


def all_ranks(flag: bool, group: Any) -> bool:
    """``flag`` and-ed over the ranks of ``group``."""
    import torch.distributed as dist

    value = torch.tensor([1 if flag else 0], dtype=torch.int32)
    dist.all_reduce(value, op=dist.ReduceOp.MIN, group=group)
    return bool(value.item())


def sum_over_ranks(values: list[float], group: Any) -> list[float]:
    """``values`` summed over the ranks of ``group`` (float64, one message)."""
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)
    return tensor.tolist()


def sum_shares_over_ranks(more: bool, shares: dict[str, float], group: Any) -> tuple[bool, dict[str, float]]:
    """``shares`` summed over the ranks of ``group`` by name (in rank order: the same bits on every rank),
    and whether any rank has ``more`` to sum.  A rank may hold no share (no gradient in its part of the
    parameters), so the names are gathered with the numbers."""
    import torch.distributed as dist

    gathered: list = [None] * dist.get_world_size(group)
    dist.all_gather_object(gathered, (more, shares), group=group)
    total: dict[str, float] = {}
    for _, theirs in gathered:
        for name in sorted(theirs):
            total[name] = total.get(name, 0.0) + theirs[name]
    return any(flag for flag, _ in gathered), total


def sharded_group(tensors: Sequence[Tensor]) -> Any:
    """The process group of the first sharded parameter among ``tensors``, or None."""
    if not sharding_possible():
        return None
    for tensor in tensors:
        if is_dtensor(tensor):
            return tensor.device_mesh.get_group()
    return None


def zero_redundancy_group() -> Any:
    """The process group of the ``ZeroRedundancyOptimizer`` building this optimizer, if one is.

    ZeRO gives each rank's optimizer only that rank's share of the parameters, so the ranks must agree
    on whether a gradient was finite and add up global sums (the gradient norm); ZeRO builds its local
    optimizer in its own methods, so the caller's frames tell.
    """
    module = sys.modules.get("torch.distributed.optim.zero_redundancy_optimizer")
    if module is None:
        return None
    frame = sys._getframe(1)
    for _ in range(10):
        frame = frame.f_back
        if frame is None:
            return None
        caller = frame.f_locals.get("self")
        if isinstance(caller, module.ZeroRedundancyOptimizer):
            return caller.process_group
    return None
