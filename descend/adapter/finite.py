"""Whether gradients hold NaN or ±inf, and what an optimizer's ``nonfinite`` policy does about it."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..backends import build
from .distributed import agreed, local

_FINITE_KERNELS = {torch.float32: "all_finite_f32", torch.float64: "all_finite_f64", torch.bfloat16: "all_finite_u16",
                   torch.float16: "all_finite_u16"}


def locally_finite(tensors: Sequence[Tensor]) -> bool:
    """True when none of ``tensors`` (this rank's) holds a NaN or an infinity: one pass over the contiguous CPU
    ones in C (16-bit ones by their exponent bits), one host sync for the rest; meta tensors hold no values."""
    by_kernel: dict[str, list[Tensor]] = {}
    others = []
    library = build.support() if not build.disabled() else None
    for tensor in tensors:
        if tensor.device.type == "meta" or not tensor.numel():
            continue
        if library is not None and tensor.is_cpu and tensor.dtype in _FINITE_KERNELS and tensor.is_contiguous() \
                and tensor.layout == torch.strided:
            by_kernel.setdefault(_FINITE_KERNELS[tensor.dtype], []).append(tensor)
        else:
            others.append(tensor)
    for name, group in by_kernel.items():
        sizes = [t.numel() if t.dtype != torch.float16 else -t.numel() for t in group]
        if not getattr(library, name)(len(group), build.pointers(group), build.int64s(sizes), build.threads()):
            return False
    if not others:
        return True
    flags = [torch.isfinite(tensor.coalesce().values() if tensor.is_sparse else tensor).all() for tensor in others]
    return bool(torch.stack([flag.cpu() for flag in flags]).all())


def all_finite(tensors: Sequence[Tensor]) -> bool:
    """True when no tensor holds a NaN or an infinity; for DTensors (sharded parameters) each rank checks its
    shard and the ranks agree on the answer, so that they all take, or all skip, the step."""
    return agreed(locally_finite([local(t) for t in tensors]), tensors)


def gradients_pass(owner: str, policy: str, gradients: Sequence[Tensor], advice: str) -> bool:
    """The ``nonfinite`` policy checked before a step: True to go on, False to skip; ``"raise"``
    raises ``FloatingPointError`` (with ``advice``) before anything has changed."""
    if policy == "ignore" or all_finite(gradients):
        return True
    if policy == "raise":
        raise FloatingPointError(f"{owner}: a gradient holds NaN or inf; nothing was updated. {advice}")
    return False


def check_nonfinite_policy(owner: str, policy) -> None:
    from .options import NONFINITE_POLICIES

    if policy not in NONFINITE_POLICIES:
        raise ValueError(f"{owner}: nonfinite must be one of {NONFINITE_POLICIES}, got {policy!r}")
