"""Buffers kept from one slice to the next: the reference chain on a big tensor without fresh pages per slice.

A formula's arithmetic makes a new tensor per operation.  On slices of a big tensor those are blocks of a
few hundred KiB to a few MiB, which the C allocator maps fresh and returns to the system when they are
freed (glibc trims the top of its heap and unmaps big blocks), so every slice page-faults its
temporaries in again, and the faults cost more than the arithmetic.  ``Recycling`` runs the slices of one
tensor: the n-th elementwise operation of a slice writes its result (``out=``) into the buffer the n-th
operation of the slice before wrote, the same torch op on the same operands, so the bits are those of
the allocating call.  An operation that does not fit (another shape or dtype, a reduction, a view, an op
without an ``out=`` form) runs as it would without the mode.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from numbers import Real

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

SIXTEEN_BIT = (torch.bfloat16, torch.float16)
_storage_uses = torch._C._storage_Use_Count


def _into(op: Callable) -> Callable:
    return lambda out, *args, **kwargs: op(*args, **kwargs, out=out)


def _reciprocal_times(out: Tensor, x: Tensor, other) -> Tensor:
    # Tensor.__rtruediv__ (``other / x``) is ``x.reciprocal() * other`` in torch: the same two ops
    return torch.mul(torch.reciprocal(x, out=out), other, out=out)


# the functions a formula's arithmetic reaches (operators arrive as the Tensor methods they call), and how
# each writes into a given buffer; every one is elementwise, its result of its operands' shape and dtype
_ELEMENTWISE: dict[Callable, Callable] = {}
for _name in ("add", "sub", "mul", "div", "maximum", "minimum", "pow", "sqrt", "neg", "abs", "sign", "exp", "log",
              "reciprocal"):
    _ELEMENTWISE[getattr(torch, _name)] = _ELEMENTWISE[getattr(Tensor, _name)] = _into(getattr(torch, _name))
_ELEMENTWISE[Tensor.__rtruediv__] = _reciprocal_times
_ELEMENTWISE[torch.lerp] = _into(torch.lerp)
_KWARGS = frozenset({"alpha"})  # torch.add(c, b, alpha=a): a fused multiply-add (descend.plan.formula.fma)


class Recycling(TorchFunctionMode):
    """The flat slices of one tensor, of at most ``numel`` elements each, computed in ``dtype`` on ``device``:
    call ``next_slice(n)`` before each (``n`` its elements).  An op's result goes into a buffer nothing
    holds any more (no Python reference but the pool's, no view of its memory), else into a new one: a
    slice needs as many buffers as it has results alive at once, and the next slice takes them over."""

    def __init__(self, numel: int, dtype: torch.dtype, device: torch.device):
        super().__init__()
        self.numel, self.dtype, self.device = numel, dtype, device
        self.shape = torch.Size((numel,))
        self.buffers: list[Tensor] = []

    def next_slice(self, numel: int) -> None:
        if numel > self.numel:
            raise ValueError(f"a slice of {numel} elements in buffers of {self.numel}")
        self.shape = torch.Size((numel,))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if torch.is_grad_enabled():  # out= takes no part in autograd; a step runs under no_grad
            return func(*args, **kwargs)
        if func is Tensor.clone and not kwargs and self._operands(args):
            return self._buffer().copy_(args[0])
        if func is Tensor.float and not kwargs and len(args) == 1 and self._widened(args[0]):
            return self._buffer().copy_(args[0])
        if func is torch.where and not kwargs and len(args) == 3 and self._condition(args[0]) \
                and self._operands(args[1:], tensors=True):
            return torch.where(*args, out=self._buffer())
        into = _ELEMENTWISE.get(func)
        if into is not None and kwargs.keys() <= _KWARGS and self._operands(args):
            return into(self._buffer(), *args, **kwargs)
        return func(*args, **kwargs)

    def _buffer(self) -> Tensor:
        for buffer in self.buffers:
            # held by nothing but this list (and this loop, and getrefcount's argument), and its memory by no
            # other tensor (a view); _storage_Use_Count counts the storage object untyped_storage() makes
            if sys.getrefcount(buffer) == 3 and _storage_uses(buffer.untyped_storage()._cdata) == 2:
                break
        else:
            buffer = torch.empty(self.numel, dtype=self.dtype, device=self.device)
            self.buffers.append(buffer)
        return buffer if self.shape[0] == self.numel else buffer[:self.shape[0]]
    def _operands(self, args, tensors: bool = False) -> bool:
        """Whether the result of an elementwise op on ``args`` is a tensor of the slice's shape and dtype: its
        tensors are of that dtype and device, each of the slice's shape or a single number (0-dim), at least
        one of the slice's shape; its other operands are real numbers (none for ``tensors``: ``where``'s
        ``out=`` form takes tensors only)."""
        whole = False
        for arg in args:
            if isinstance(arg, Tensor):
                if arg.dtype != self.dtype or arg.device != self.device:
                    return False
                if arg.shape == self.shape:
                    whole = True
                elif arg.dim():
                    return False
            elif tensors or not isinstance(arg, Real):
                return False
        return whole

    def _condition(self, arg) -> bool:
        return isinstance(arg, Tensor) and arg.dtype == torch.bool and arg.device == self.device and \
            arg.shape == self.shape

    def _widened(self, arg) -> bool:
        return isinstance(arg, Tensor) and arg.dtype in SIXTEEN_BIT and self.dtype == torch.float32 and \
            arg.device == self.device and arg.shape == self.shape
