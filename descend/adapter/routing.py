"""Which path updates each parameter: a generated C kernel, a generated Triton kernel, or the reference chain
(one tensor at a time, or on lists with torch's ``_foreach_*`` ops).

``fused=None`` (default) takes a kernel wherever one can run the parameter and the reference chain
elsewhere; ``fused=False`` always the reference chain; ``fused=True`` insists on a kernel and raises where
none can run.  ``foreach`` picks how the reference chain runs: ``True`` on lists, ``False`` one tensor at a
time, ``None`` as torch.optim does (lists on CUDA, one at a time on the CPU).  The generated kernels are
multi-tensor kernels already (one call per dtype for a whole group), so ``foreach=True`` with ``fused=None``
takes them too; ``fused=False, foreach=True`` is the reference chain on torch's ``_foreach_*`` ops.

Sparse gradients go only to a class that declares ``sparse_gradients`` (SparseAdam), which takes no dense
ones: their bucket is marked ``sparse``, and its path is the one the gathered rows take
(descend.adapter.sparse).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..backends import cpu, triton
from ..plan.plan import Plan, Variant
from ..plan.state import Codec, codec_for
from .distributed import is_dtensor, local, sharding_possible

try:  # the devices where torch's _foreach_* ops have fast (multi-tensor) kernels
    from torch.utils._foreach_utils import _get_foreach_kernels_supported_devices

    FOREACH_DEVICES = frozenset(_get_foreach_kernels_supported_devices())
except ImportError:
    FOREACH_DEVICES = frozenset({"cuda"})

_warned: set[str] = set()


@dataclass
class Bucket:
    """Parameters of one group that take the same path: one ``variant``, device and dtype."""

    path: str  # "c", "triton", "foreach" or "one"
    variant: Variant
    codec: Codec
    params: list[Tensor]
    sparse: bool = False  # sparse gradients: the path updates the rows they name (descend.adapter.sparse)


def takes_foreach(group: dict[str, Any], param: Tensor) -> bool:
    if sharding_possible() and is_dtensor(param):
        return False  # sharded parameters go one at a time (their reductions sum across ranks)
    if group["foreach"] is None:
        return param.device.type in FOREACH_DEVICES
    return bool(group["foreach"])


def _single_pass(variant: Variant) -> bool:
    """One elementwise pass and no per-tensor statistic (what a sharded parameter's kernel may run)."""
    return len(variant.pieces) == 1 and len(variant.schedules[0].passes) == 1 and not variant.schedules[0].temporaries


def _matches(param: Tensor, grad: Tensor) -> bool:
    return (grad.dtype == param.dtype and grad.layout == torch.strided and grad.device == param.device
            and grad.stride() == param.stride())


def kernel_reason(variant: Variant, param: Tensor, grad: Tensor, codec: Codec) -> tuple[str, str | None]:
    """The backend whose kernel would update ``param`` (``"c"`` or ``"triton"``) and why it cannot (None: it
    can).  Triton takes what its device list names (CUDA; the CPU too under ``TRITON_INTERPRET=1`` where a
    test says so), C the other CPU parameters."""
    backend = "triton" if triton.takes(local(param), local(grad)) or not local(param).is_cpu else "c"
    return backend, _reason(backend, variant, param, grad, codec)


def _reason(backend: str, variant: Variant, param: Tensor, grad: Tensor, codec: Codec) -> str | None:
    if variant.pieces is None:
        return f"its chain cannot be generated: {variant.reason}"
    shard, shard_grad = (local(param), local(grad)) if sharding_possible() and is_dtensor(param) else (param, grad)
    if shard is not param and not _single_pass(variant):
        return "a sharded parameter whose chain reads statistics of whole tensors runs on the reference path"
    if not _matches(shard, shard_grad):
        return (f"its gradient ({shard_grad.dtype}, {shard_grad.layout}, strides {tuple(shard_grad.stride())}) is not laid "
                f"out like the parameter ({shard.dtype}, strides {tuple(shard.stride())})")
    needs_rows = any(s.factored for s in variant.schedules if s is not None) or len(variant.pieces) > 1
    if needs_rows and not shard.is_contiguous():
        return "its chain works on rows and columns, and the parameter is not contiguous"
    if not dense(shard):
        return "the parameter is not dense (a view with gaps)"
    if backend == "c":
        if not cpu.available():
            return f"the C kernels are unavailable ({cpu.build.error})"
        if shard.dtype not in cpu.DTYPES:
            return f"no C kernel takes {shard.dtype}"
        try:
            cpu.ready(variant, shard.dtype, codec)
        except cpu.KernelUnavailable as error:
            return f"its generated kernel could not be built: {error}"
        return None
    return triton.reason(variant, shard, codec)


def dense(tensor: Tensor) -> bool:
    """True when ``tensor`` covers its memory exactly once with no gaps (contiguous in some order of its
    dims, e.g. ``channels_last``): a kernel can then treat it as a flat array."""
    if tensor.is_contiguous():
        return True
    expected = 1
    for stride, size in sorted((s, n) for s, n in zip(tensor.stride(), tensor.shape) if n != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def route(owner: str, group: dict[str, Any], plan: Plan, params: list[Tensor], sparse: bool = False
          ) -> list[Bucket]:
    """The buckets of ``params`` (those of ``group`` with a gradient); raises for a gradient no path takes
    (sparse, unless ``sparse``: the class takes sparse gradients only; complex) and, with ``fused=True``, for a
    parameter no kernel can update."""
    fused, foreach = group["fused"], group["foreach"]
    reference_only = fused is False
    buckets: dict[tuple, Bucket] = {}
    memo: dict[tuple, str | None] = {}  # the kernel verdict per (variant, dtype, device, layout kind)
    for param in params:
        grad = param.grad
        if sparse or grad.layout != torch.strided:
            check_sparse(owner, sparse, param, grad)
        if grad.is_complex() or param.is_complex():
            raise TypeError(f"{owner} does not support complex parameters; pass torch.view_as_real(p)")
        variant = plan.variant(param.dim())
        codec = codec_for(group.get("state_dtype"), param.dtype, local(param).numel())
        like, like_grad = (param, grad) if not sparse else rows_like(owner, variant, param, grad)
        path = None
        if not reference_only:
            key = (id(variant), like.dtype, like.device, like.is_contiguous(), like_grad.dtype, like_grad.stride() ==
                   like.stride(), is_dtensor(like), codec)
            if key not in memo:
                memo[key] = kernel_reason(variant, like, like_grad, codec)
            backend, reason = memo[key]
            if reason is None:
                path = backend
            elif fused:
                raise RuntimeError(fused_refusal(owner, param, reason))
            elif variant.pieces is None:
                warn_once(owner, reason)
        if path is None:
            path = "foreach" if takes_foreach(group, param) else "one"
        bucket_key = (path, id(variant), param.device, param.dtype, codec, sparse)
        if bucket_key not in buckets:
            buckets[bucket_key] = Bucket(path, variant, codec, [], sparse)
        buckets[bucket_key].params.append(param)
    return list(buckets.values())


def check_sparse(owner: str, sparse: bool, param: Tensor, grad: Tensor) -> None:
    """Raises unless ``grad``'s layout is one the class takes: dense (every class but SparseAdam) or sparse COO
    (SparseAdam, which takes no dense ones, as torch.optim.SparseAdam; its words)."""
    if not sparse:
        raise TypeError(f"{owner} does not support sparse gradients; use descend.SparseAdam")
    if grad.layout == torch.strided:
        raise RuntimeError(f"{owner} does not support dense gradients, please consider Adam instead")
    if grad.layout != torch.sparse_coo or is_dtensor(param):
        raise TypeError(f"{owner} takes sparse COO gradients of unsharded parameters, got a {grad.layout} gradient "
                        f"of a {type(param).__name__}")


def rows_like(owner: str, variant: Variant, param: Tensor, grad: Tensor) -> tuple[Tensor, Tensor]:
    """Empty stand-ins for the rows a sparse gradient names, as descend.adapter.sparse gathers them (dense,
    ``[nnz, *dense dims]``), and for its values: what the kernels will be handed.  Raises ``TypeError`` where the
    chain needs more than the rows (state or statistics of the whole tensor)."""
    if variant.pieces is None or len(variant.pieces) > 1 or variant.reads_ndim or any(
            s.temporaries or len(s.passes) > 1 for s in variant.schedules) or any(
            spec.shape not in ("param", "scalar") for spec in variant.specs):
        raise TypeError(f"{owner}: sparse gradients update only the rows they name, so the chain must be elementwise "
                        f"(its state shaped like the parameter, no statistics of whole tensors)")
    shape = (0, *param.shape[grad.sparse_dim():])
    return param.new_empty(shape), torch.empty(shape, dtype=grad.dtype, device=grad.device)


def fused_refusal(owner: str, param: Tensor, reason: str) -> str:
    """Why ``fused=True`` cannot update ``param``; it begins with torch.optim's words for the same refusal,
    so that code matching on them keeps working, then says why descend's kernels cannot."""
    return (
        f"{owner}: `fused=True` requires all the params to be floating point Tensors of supported devices: "
        f"['cpu', 'cuda'] but {param.dtype} and {param.device.type} (descend's kernels cannot update this "
        f"{param.dtype} parameter on {param.device}: {reason})"
    )


def warn_once(owner: str, reason: str) -> None:
    """A warning that a group runs on the reference path, once per reason."""
    if reason not in _warned:
        _warned.add(reason)
        from .warn import warn_user

        warn_user(f"{owner}: {reason}; it runs on the reference path", RuntimeWarning)
