"""Buffers kept from one slice to the next: the reference chain on a big tensor without fresh pages per slice.

A formula's arithmetic makes a new tensor per operation.  On slices of a big tensor those are blocks of a
few hundred KiB to a few MiB, which the C allocator maps fresh and returns to the system when they are
freed (glibc trims the top of its heap and unmaps big blocks), so every slice page-faults its
temporaries in again, and the faults cost more than the arithmetic.  ``Recycling`` runs the slices of one
tensor: an elementwise operation writes its result (``out=``) into a buffer of an earlier result that
nothing holds any more (of this slice or the one before), the same torch op on the same operands, so the
bits are those of the allocating call.  The integer arithmetic of stochastic rounding (``descend.plan.state.stochastic_bfloat16``)
is recycled the same way.  An operation that does not fit (another shape, mixed dtypes, a reduction, a view,
an op without an ``out=`` form) runs as it would without the mode.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from numbers import Real

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

_storage_uses = torch._C._storage_Use_Count


def _into(op: Callable) -> Callable:
    return lambda out, *args, **kwargs: op(*args, **kwargs, out=out)


def _reciprocal_times(out: Tensor, x: Tensor, other) -> Tensor:
    # Tensor.__rtruediv__ (``other / x``) is ``x.reciprocal() * other`` in torch: the same two ops
    return torch.mul(torch.reciprocal(x, out=out), other, out=out)


# the functions a formula's arithmetic reaches (operators arrive as the Tensor methods they call), and how
# each writes into a given buffer; every one is elementwise, its result of its operands' shape and dtype
_FLOATING: dict[Callable, Callable] = {}
for _name in ("add", "sub", "mul", "div", "maximum", "minimum", "pow", "sqrt", "neg", "abs", "sign", "exp", "log",
              "reciprocal"):
    _FLOATING[getattr(torch, _name)] = _FLOATING[getattr(Tensor, _name)] = _into(getattr(torch, _name))
_FLOATING[Tensor.__rtruediv__] = _reciprocal_times
_FLOATING[torch.lerp] = _into(torch.lerp)
# integer ops with integer operands give integers of the same dtype (stochastic rounding's hash)
_INTEGER: dict[Callable, Callable] = {Tensor.add: _into(torch.add), Tensor.mul: _into(torch.mul),
                                      Tensor.__and__: _into(torch.bitwise_and), Tensor.__xor__: _into(torch.bitwise_xor),
                                      Tensor.__rshift__: _into(torch.bitwise_right_shift)}
_KWARGS = frozenset({"alpha"})  # torch.add(c, b, alpha=a): a fused multiply-add (descend.plan.formula.fma)


class Recycling(TorchFunctionMode):
    """The flat slices of one tensor on ``device``, of at most ``numel`` elements each: call ``next_slice(n)``
    before each (``n`` its elements).  An op's result goes into a buffer (of its
    dtype) nothing holds any more (no Python reference but the pool's, no view of its memory), else into a
    new one: a slice needs as many buffers as it has results alive at once, and the next slice takes them
    over."""

    def __init__(self, numel: int, device: torch.device):
        super().__init__()
        self.numel, self.device = numel, device
        self.shape = torch.Size((numel,))
        self.buffers: list[Tensor] = []

    def next_slice(self, numel: int) -> None:
        if numel > self.numel:
            raise ValueError(f"a slice of {numel} elements in buffers of {self.numel}")
        self.shape = torch.Size((numel,))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in _RECYCLED or torch.is_grad_enabled():  # out= takes no part in autograd (steps: no_grad)
            return func(*args, **kwargs)
        recycled = self._recycled(func, args, kwargs)
        return func(*args, **kwargs) if recycled is None else recycled

    def _recycled(self, func, args, kwargs):
        if func is Tensor.clone and not kwargs and len(args) == 1 and self._slice_of(args[0]):
            return self._buffer(args[0].dtype).copy_(args[0])
        if func in (Tensor.float, Tensor.to) and not kwargs and self._slice_of(args[0]):
            dtype = torch.float32 if func is Tensor.float else args[1] if len(args) == 2 else None
            # a conversion is a copy into a tensor of the new dtype (to the same dtype it is no copy at all)
            if isinstance(dtype, torch.dtype) and dtype != args[0].dtype and (dtype, args[0].dtype) in _CONVERSIONS:
                return self._buffer(dtype).copy_(args[0])
            return None
        if func is torch.where and not kwargs and len(args) == 3 and self._slice_of(args[0], torch.bool):
            dtype = self._operands(args[1:], tensors=True)
            return None if dtype is None else torch.where(*args, out=self._buffer(dtype))
        if func is torch.isnan and not kwargs and len(args) == 1 and self._slice_of(args[0]) \
                and args[0].dtype.is_floating_point:
            return torch.ne(args[0], args[0], out=self._buffer(torch.bool))  # isnan(x) is x ≠ x
        if func is Tensor.masked_fill and not kwargs and len(args) == 3 and self._slice_of(args[0]) \
                and self._slice_of(args[1], torch.bool) and isinstance(args[2], Real):
            return self._buffer(args[0].dtype).copy_(args[0]).masked_fill_(args[1], args[2])
        if func is torch.arange and len(args) == 2 and all(type(a) is int for a in args) \
                and args[1] - args[0] == self.shape[0] and kwargs.get("device") in (None, self.device) \
                and kwargs.get("dtype") in (torch.int64, torch.int32) and kwargs.keys() <= {"dtype", "device"}:
            return torch.arange(*args, out=self._buffer(kwargs["dtype"]))
        if kwargs.keys() <= _KWARGS:
            dtype = self._operands(args)
            table = _FLOATING if dtype is not None and dtype.is_floating_point else _INTEGER
            into = table.get(func) if dtype is not None else None
            if into is not None and (not kwargs or dtype.is_floating_point):
                return into(self._buffer(dtype), *args, **kwargs)
        return None

    def _buffer(self, dtype: torch.dtype) -> Tensor:
        for buffer in self.buffers:
            # held by nothing but this list (the count _UNHELD), and its memory by no other tensor (a view);
            # _storage_Use_Count counts the storage object untyped_storage() makes
            if buffer.dtype == dtype and sys.getrefcount(buffer) == _UNHELD \
                    and _storage_uses(buffer.untyped_storage()._cdata) == 2:
                break
        else:
            buffer = torch.empty(self.numel, dtype=dtype, device=self.device)
            self.buffers.append(buffer)
        return buffer if self.shape[0] == self.numel else buffer[:self.shape[0]]

    def _operands(self, args, tensors: bool = False) -> torch.dtype | None:
        """The dtype of the result of an elementwise op on ``args`` when it is a tensor of the slice's shape
        (else None): its tensors are all of one floating or integer dtype (not bool) and of the device, each
        of the slice's shape or a single number (0-dim), at least one of the slice's shape; its other
        operands are numbers of that kind (none for ``tensors``: ``where``'s ``out=`` form takes tensors)."""
        dtype, whole = None, False
        for arg in args:
            if isinstance(arg, Tensor):
                if arg.device != self.device or arg.dtype == torch.bool or dtype not in (None, arg.dtype):
                    return None
                dtype = arg.dtype
                if arg.shape == self.shape:
                    whole = True
                elif arg.dim():
                    return None
            elif tensors or not isinstance(arg, Real) or isinstance(arg, bool):
                return None
        if not whole or not dtype.is_floating_point and any(isinstance(a, float) for a in args):
            return None
        return dtype

    def _slice_of(self, arg, dtype: torch.dtype | None = None) -> bool:
        return isinstance(arg, Tensor) and arg.device == self.device and arg.shape == self.shape and \
            (dtype is None or arg.dtype == dtype)


_CONVERSIONS = {(torch.float32, torch.bfloat16), (torch.float32, torch.float16), (torch.int64, torch.int32),
                (torch.int32, torch.int64)}  # (to, from): the widening of 16-bit state, stochastic rounding's

_RECYCLED = frozenset(_FLOATING) | frozenset(_INTEGER) | {Tensor.clone, Tensor.float, Tensor.to, torch.where, torch.isnan,
                                                         Tensor.masked_fill, torch.arange}


def _unheld() -> int:
    """``sys.getrefcount`` of a tensor held by a list alone, read in a loop over the list as ``_buffer`` reads
    it (the list's reference, the loop's, the argument's: 3 on CPython 3.11); measured, not assumed, as an
    interpreter may count the loop's reference or not, and any other holder adds one to it."""
    buffers = [torch.empty(0)]
    for buffer in buffers:
        return sys.getrefcount(buffer)


_UNHELD = _unheld()
