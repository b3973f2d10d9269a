"""Declared optimizer state: what each step keeps (``StateSpec``) and how it is stored (a ``Codec``).

A step declares its entries once (``Step.state_specs``): the key (torch's name, so that torch checkpoints
load), the shape (like the parameter, one value per row or column of its last two dims, or one number),
the initial value, and which storage applies.  Checkpoints, state conversion, ``state_dtype`` and the fast
paths' buffer checks all read this one table.

The storage of an entry that follows the group's ``state_dtype`` is a ``Codec``: float32 / float64 as they
are, bfloat16 with stochastic or nearest rounding, float16, 8-bit block-quantised codes with per-block scales
(``Blockwise8bit``: descend.plan.blockwise).  Within one update, later steps read the value
an earlier step computed, unrounded; the codec rounds once, when the update stores it (the same rule on
every path).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from . import blockwise

SHAPES = ("param", "rows", "cols", "scalar")
RESERVED_KEYS = frozenset({"param", "grad", "step"})  # roles of the kernels, and the step counter


@dataclass(frozen=True)
class StateSpec:
    """One entry a step keeps per parameter.

    ``shape``: ``"param"`` (like the parameter, in its memory layout), ``"rows"`` (``param.shape[:-1]``:
    one value per row of the last two dims), ``"cols"`` (``param.shape[:-2] + param.shape[-1:]``),
    ``"scalar"`` (a 0-dim tensor).  ``init``: the starting value, a number, the name of the step's field
    that holds it, or ``"param"``: a copy of the parameter (schedule-free's ``z``).  ``storage``:
    ``"state"`` follows the group's ``state_dtype``; ``"default"`` is a float32 (torch's default dtype)
    tensor on the CPU, as torch keeps NAdam's ``mu_product``.  ``signed``:
    whether the entry takes negative values (a first moment) or not (a second moment); block codecs use it.
    """

    key: str
    shape: str = "param"
    init: float | str = 0.0
    storage: str = "state"
    signed: bool = True

    def __post_init__(self):
        if not isinstance(self.key, str) or not self.key:
            raise ValueError(f"StateSpec: key must be a non-empty string, got {self.key!r}")
        if self.key in RESERVED_KEYS or self.key.startswith("_"):
            raise ValueError(f"StateSpec: {self.key!r} cannot name a state entry: 'param', 'grad' and 'step' are the "
                             "optimizer's own, and names starting with '_' are reserved")
        if self.shape not in SHAPES:
            raise ValueError(f"StateSpec {self.key!r}: shape must be one of {SHAPES}, got {self.shape!r}")
        if self.storage not in ("state", "default"):
            raise ValueError(f"StateSpec {self.key!r}: storage must be 'state' or 'default', got {self.storage!r}")
        if self.init == "param" and (self.shape != "param" or self.storage != "state"):
            raise ValueError(f"StateSpec {self.key!r}: init='param' (a copy of the parameter) needs shape='param' "
                             "and storage='state'")

    def shape_for(self, param_shape: torch.Size) -> torch.Size:
        if self.shape == "param":
            return param_shape
        if self.shape == "scalar":
            return torch.Size()
        if len(param_shape) < 2:
            raise ValueError(f"state {self.key!r} keeps one value per {self.shape[:-1]} of a matrix; "
                             f"the parameter has shape {tuple(param_shape)}")
        return param_shape[:-1] if self.shape == "rows" else param_shape[:-2] + param_shape[-1:]

    def initial_value(self, step) -> float:
        return float(getattr(step, self.init) if isinstance(self.init, str) else self.init)


# --- codecs --------------------------------------------------------------------------------------


class Codec:
    """How the entries that follow a group's ``state_dtype`` are stored."""

    dtype: torch.dtype  # the storage dtype
    stochastic = False  # whether storing draws random bits (then every parameter keeps a step counter)
    blocks = False  # whether an entry is codes with per-block scales beside it (Blockwise8bit)

    def of(self, spec: StateSpec) -> Codec:
        """The codec of one entry: this one, for every entry that follows ``state_dtype``."""
        return self

    def compute_dtype(self, param_dtype: torch.dtype) -> torch.dtype:
        return torch.float64 if self.dtype == torch.float64 or param_dtype == torch.float64 else torch.float32

    def store(self, target: Tensor, value, step: float, lane: int, offset: int = 0) -> None:
        """``target ← value`` (rounded as this codec rounds); ``lane`` numbers the entries of one update
        that draw random bits (see ``random_bits``), ``offset`` the element offset of ``target`` in its whole
        entry (the reference path stores big tensors slice by slice)."""
        target.copy_(value)

    def __eq__(self, other):
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self):
        return hash((type(self), tuple(sorted(vars(self).items()))))


class Plain(Codec):
    """float32 or float64, stored as computed."""

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype

    def __repr__(self):
        return str(self.dtype).replace("torch.", "")


class BFloat16(Codec):
    """bfloat16 state; ``rounding="stochastic"`` (default) or ``"nearest"``.

    Round-to-nearest biases a slow average: with β = 0.999, ``0.999·v`` rounds back to ``v`` in bfloat16
    and the average never decays.  Stochastic rounding adds 16 random bits below the kept ones before
    truncating, so it rounds up with probability equal to the dropped fraction and the stored value is
    unbiased.  The bits hash the element's offset and the parameter's step count (see ``random_bits``),
    so the reference path and the kernels store the same bits, for any thread count, and a resumed run
    the same bits as an uninterrupted one.
    """

    dtype = torch.bfloat16

    def __init__(self, rounding: str = "stochastic"):
        if rounding not in ("stochastic", "nearest"):
            raise ValueError(f"BFloat16: rounding must be 'stochastic' or 'nearest', got {rounding!r}")
        self.rounding = rounding
        self.stochastic = rounding == "stochastic"

    def __repr__(self):
        return "bfloat16" if self.stochastic else "bfloat16(rounding='nearest')"

    def store(self, target, value, step, lane, offset=0):
        if not self.stochastic or not isinstance(value, Tensor) or value.dtype == torch.bfloat16:
            target.copy_(value)
            return
        target.copy_(stochastic_bfloat16(value.float().expand(target.shape), target, step, lane, offset))


class Float16(Codec):
    """float16 state, rounded to nearest (torch's fused Adam keeps float16 moments for float16 parameters)."""

    dtype = torch.float16

    def __repr__(self):
        return "float16"


class Blockwise8bit(Codec):
    """8-bit block-quantised state (``state_dtype="8bit"``; descend.plan.blockwise): the entries shaped like
    the parameter are codes (uint8) with one float32 scale per block of 256 beside them (``scale_key``); the
    others (row and column statistics, scalars, schedule-free's copy of the parameter) stay float32.  A
    parameter whose entries would be under 4,096 elements or not a whole number of blocks keeps float32
    state (``codec_for`` decides, from its element count: its shard's under FSDP2)."""

    dtype = torch.uint8
    blocks = True

    def of(self, spec: StateSpec) -> Codec:
        if spec.shape == "param" and spec.storage == "state" and spec.init != "param":
            return self
        return Plain(torch.float32)

    def __repr__(self):
        return "8bit"


def codec_for(state_dtype: Any, param_dtype: torch.dtype, numel: int | None = None) -> Codec:
    """The codec of a group's ``state_dtype`` for a parameter of ``param_dtype`` (and ``numel`` elements, where
    the codec depends on it): None keeps float32/float64 parameters' own dtype and float32 for 16-bit ones
    (their moments would lose most of their bits); ``"8bit"`` keeps float64 parameters' state float64 and
    that of parameters too small to quantise (``blockwise.takes``) float32."""
    if isinstance(state_dtype, Codec):
        return state_dtype
    if isinstance(state_dtype, str) and state_dtype == "8bit":
        if param_dtype == torch.float64:
            return Plain(torch.float64)
        return Blockwise8bit() if numel is None or blockwise.takes(numel) else Plain(torch.float32)
    if state_dtype is None:
        return Plain(torch.float32 if param_dtype in (torch.bfloat16, torch.float16) else param_dtype)
    if state_dtype in (torch.float32, torch.float64):
        return Plain(state_dtype)
    if state_dtype == torch.bfloat16:
        return BFloat16()
    if state_dtype == torch.float16:
        return Float16()
    raise ValueError(f"unknown state_dtype {state_dtype!r}")


STATE_DTYPES = (None, torch.float32, torch.float64, torch.bfloat16, torch.float16, "8bit")


def check_state_dtype(owner: str, value: Any) -> None:
    if isinstance(value, Codec) or any(value is d or (type(value) is type(d) and value == d) for d in STATE_DTYPES):
        return
    raise ValueError(f"{owner}: state_dtype must be None, torch.float32, torch.float64, torch.bfloat16, "
                     f"torch.float16, \"8bit\" or a descend codec, got {value!r}")


# --- stochastic rounding ---------------------------------------------------------------------------

_U32 = 0xFFFFFFFF


def seed(step: float) -> int:
    """The seed of ``random_bits`` for one update at step ``step`` (``sr_seed`` in ``_prelude.h``)."""
    return ((int(step) & _U32) * 0x165667B1 + 0x27D4EB2F) & _U32


def random_bits(offsets: Tensor, seed_value: int) -> Tensor:
    """32 random bits per element offset (int64 in, int64 out): the murmur3 finaliser of ``offset + seed``
    (``sr_bits`` in ``_prelude.h``).  One draw serves every state entry of the element: lanes 0 and 1 take
    its low and high 16 bits, lanes 2p and 2p+1 those of ``more_bits(bits, p)``."""
    x = ((offsets & _U32) + seed_value) & _U32
    x ^= x >> 16
    x = (x * 0x85EBCA6B) & _U32
    x ^= x >> 13
    x = (x * 0xC2B2AE35) & _U32
    return x ^ (x >> 16)


def more_bits(bits: Tensor, pair: int) -> Tensor:
    """32 further bits from one draw, for lanes ``2·pair`` and ``2·pair + 1`` (``sr_more`` in ``_prelude.h``)."""
    x = bits ^ ((pair * 0x9E3779B9) & _U32)
    x ^= x >> 15
    x = (x * 0x2C1B3C6D) & _U32
    return x ^ (x >> 12)


def stochastic_bfloat16(value: Tensor, like: Tensor, step: float, lane: int, offset: int = 0) -> Tensor:
    """``value`` (float32) rounded stochastically to bfloat16, for the elements of ``like`` (its memory
    offsets decide the bits), as a float32 tensor whose low 16 bits are zero."""
    bits = value.contiguous().view(torch.int32).to(torch.int64) & _U32
    if like.numel():
        offsets = torch.arange(offset, offset + like.numel(), dtype=torch.int64, device=like.device).as_strided(
            like.shape, like.stride())
    else:
        offsets = torch.zeros(like.shape, dtype=torch.int64, device=like.device)
    drawn = random_bits(offsets, seed(step))
    noise = ((more_bits(drawn, lane // 2) if lane >= 2 else drawn) >> (16 * (lane % 2))) & 0xFFFF
    rounded = ((bits + noise) & 0xFFFF0000).to(torch.int32).view(torch.float32)
    return rounded.masked_fill(torch.isnan(value), math.nan)


# --- making and fitting entries -------------------------------------------------------------------


def new_entry(spec: StateSpec, step, param: Tensor, codec: Codec) -> Tensor:
    """A fresh entry of ``spec`` for ``param`` (this rank's shard of it under FSDP2: ``param`` is local)."""
    if spec.init == "param":  # a copy of the parameter, stored as the codec says
        return torch.empty_like(param, dtype=codec.dtype, memory_format=torch.preserve_format).copy_(param.detach())
    value = spec.initial_value(step)
    if spec.storage == "default":
        return torch.full(spec.shape_for(param.shape), value, dtype=torch.get_default_dtype())
    if spec.shape == "param":
        return torch.full_like(param, value, dtype=codec.dtype, memory_format=torch.preserve_format)
    return torch.full(spec.shape_for(param.shape), value, dtype=codec.dtype, device=param.device)


def fits(spec: StateSpec, entry: Any, param: Tensor, codec: Codec) -> bool:
    """Whether ``entry`` is stored as ``spec`` and ``codec`` say for ``param``: dtype, device, shape and
    layout (like the parameter for ``"param"`` entries, contiguous for the others)."""
    if not isinstance(entry, Tensor):
        return False
    if spec.storage == "default":
        return entry.dtype == torch.get_default_dtype() and entry.dim() == 0 and entry.device.type == "cpu"
    if entry.dtype != codec.dtype or entry.device != param.device:
        return False
    if spec.shape == "param":
        return entry.shape == param.shape and entry.stride() == param.stride()
    return entry.shape == spec.shape_for(param.shape) and entry.is_contiguous()


def refit(spec: StateSpec, entry: Tensor, param: Tensor, codec: Codec, owner: str) -> Tensor:
    """``entry`` converted to what ``fits`` asks (after ``model.double()``, a ``state_dtype`` edit, a
    checkpoint, ``channels_last``); an entry of another shape (a parameter resized after its state was
    made) is a ``RuntimeError``."""
    expected = spec.shape_for(param.shape)
    if not isinstance(entry, Tensor):
        raise RuntimeError(f"{owner}: state {spec.key!r} holds {type(entry).__name__}, not a tensor")
    if entry.shape != expected:
        if entry.numel() == 1 and spec.shape == "scalar":
            entry = entry.reshape(())
        else:
            raise RuntimeError(
                f"{owner}: state {spec.key!r} of a parameter of shape {tuple(param.shape)} has shape "
                f"{tuple(entry.shape)}, expected {tuple(expected)}; the parameter was resized after its optimizer "
                "state was made (re-create the optimizer, or delete optimizer.state[param])")
    if spec.storage == "default":
        return entry.detach().to(dtype=torch.get_default_dtype(), device="cpu", copy=True)
    fixed = torch.empty_like(param, dtype=codec.dtype) if spec.shape == "param" else torch.empty(
        expected, dtype=codec.dtype, device=param.device)
    return fixed.copy_(entry.detach())


# --- entries with companions (8-bit codes and their scales) ------------------------------------------


def _local_numel(param) -> int:
    """The element count of this rank's shard of ``param`` (its own under no sharding): blocks are the shard's."""
    return param.to_local().numel() if hasattr(param, "to_local") else param.numel()


def made(spec: StateSpec, step, param, codec: Codec) -> dict[str, Tensor]:
    """The fresh entries of ``spec`` for ``param``: ``{key: entry}``, and its scales for an 8-bit entry."""
    codec = codec.of(spec)
    if not codec.blocks:
        return {spec.key: new_entry(spec, step, param, codec)}
    one = torch.full((blockwise.BLOCK,), spec.initial_value(step), dtype=torch.float32)
    codes, scales = blockwise.quantise(one, spec.signed)
    return {spec.key: torch.full_like(param, int(codes[0]), dtype=torch.uint8, memory_format=torch.preserve_format),
            blockwise.scale_key(spec.key): torch.full((_local_numel(param) // blockwise.BLOCK,), float(scales[0]),
                                                      dtype=torch.float32, device=param.device)}


def _scales_fit(scales: Any, param) -> bool:
    return (isinstance(scales, Tensor) and scales.dtype == torch.float32 and scales.device == param.device
            and scales.dim() == 1 and scales.is_contiguous()
            and scales.numel() * blockwise.BLOCK == _local_numel(param))


def fits_state(spec: StateSpec, state: dict, param, codec: Codec) -> bool:
    """Whether ``state`` holds ``spec``'s entries as ``codec`` stores them for ``param`` (see ``fits``)."""
    codec = codec.of(spec)
    if not fits(spec, state.get(spec.key), param, codec):
        return False
    return not codec.blocks or _scales_fit(state.get(blockwise.scale_key(spec.key)), param)


def _local(tensor):
    """This rank's shard of a DTensor (FSDP2), a tensor itself otherwise."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def _like(shard: Tensor, param) -> Tensor:
    """``shard`` as ``param`` holds it: a DTensor of the same mesh and placements where ``param`` is one."""
    if not hasattr(param, "to_local"):
        return shard
    from torch.distributed.tensor import DTensor

    return DTensor.from_local(shard, param.device_mesh, param.placements, run_check=False, shape=param.shape,
                              stride=param.stride())


def _as_float(spec: StateSpec, source: dict, owner: str) -> Tensor:
    """The value of ``source[spec.key]``: 8-bit codes decoded with the scales beside them (a shard's codes
    with that shard's scales)."""
    entry = source[spec.key]
    if not isinstance(entry, Tensor) or entry.dtype != torch.uint8:
        return entry
    codes, scales = _local(entry), source.get(blockwise.scale_key(spec.key))
    if not isinstance(scales, Tensor) or scales.numel() * blockwise.BLOCK != codes.numel() or not (
            codes.is_contiguous() or codes.is_contiguous(memory_format=torch.channels_last)):
        raise RuntimeError(f"{owner}: state {spec.key!r} holds 8-bit codes ({codes.numel()} of them) without their "
                           f"{codes.numel() // blockwise.BLOCK} scales in {blockwise.scale_key(spec.key)!r}")
    decoded = blockwise.read(codes.detach(), _local(scales).detach().float().reshape(-1).to(codes.device), spec.signed)
    return _like(decoded, entry)


def refit_state(spec: StateSpec, source: dict, param, codec: Codec, owner: str) -> dict[str, Tensor]:
    """``source``'s entries of ``spec`` (a state or a checkpoint's, 8-bit or not) converted to what
    ``fits_state`` asks: 8-bit codes laid out as asked are copied as they are (a checkpoint loads back bit for
    bit), other values are decoded and stored anew; an entry of another shape is a ``RuntimeError``."""
    codec = codec.of(spec)
    entry = source[spec.key]
    if not codec.blocks:
        return {spec.key: refit(spec, _as_float(spec, source, owner), param, codec, owner)}
    scales, shard = source.get(blockwise.scale_key(spec.key)), _local(param)
    key, scale_key = spec.key, blockwise.scale_key(spec.key)
    if isinstance(entry, Tensor) and entry.dtype == torch.uint8 and entry.shape == param.shape and \
            entry.stride() == param.stride() and isinstance(scales, Tensor) and \
            scales.numel() * blockwise.BLOCK == shard.numel():
        codes = torch.empty_like(shard, dtype=torch.uint8).copy_(_local(entry).detach())
        fresh = torch.empty(scales.numel(), dtype=torch.float32, device=shard.device)
        return {key: _like(codes, param), scale_key: fresh.copy_(_local(scales).detach().reshape(-1))}
    value = refit(spec, _local(_as_float(spec, source, owner)), shard, Plain(torch.float32), owner)
    codes = torch.empty_like(shard, dtype=torch.uint8)
    scales = torch.empty(shard.numel() // blockwise.BLOCK, dtype=torch.float32, device=shard.device)
    blockwise.write(codes, scales, value, spec.signed)
    return {key: _like(codes, param), scale_key: scales}


def fit(spec: StateSpec, step, state: dict, param, codec: Codec, owner: str) -> None:
    """``state``'s entries of ``spec`` made when missing and converted when they do not fit (the scales of
    an entry no longer kept in 8 bits dropped)."""
    if state.get(spec.key) is None:
        state.update(made(spec, step, param, codec))
    elif not fits_state(spec, state, param, codec):
        state.update(refit_state(spec, state, param, codec, owner))
    if not codec.of(spec).blocks:
        state.pop(blockwise.scale_key(spec.key), None)
