"""8-bit block-quantised state (``state_dtype="8bit"``): the codec and its definition in torch ops.

An entry of ``n`` elements (``n`` a multiple of ``BLOCK``, at least ``SMALLEST``) is kept as ``n`` uint8
codes (laid out like the parameter) and ``n / BLOCK`` float32 scales, one per block of ``BLOCK`` consecutive
elements in memory order: a value is ``MAP[code] · scale``.  Storing a block takes its absolute maximum (at
least ``1e-12``) as the scale and each element's nearest code of ``value / scale``: the largest code whose
map value is at most the quotient, one up when the quotient is at least half way to the next one (in
float32: ``x − MAP[c] >= (MAP[c+1] − MAP[c]) · 0.5``; a NaN takes code 0, its block's scale is NaN).  The map
is bitsandbytes' dynamic quantisation map (Dettmers et al. 2022), signed for entries that take negative
values (a first moment) and unsigned for the others (``StateSpec.signed``); these are the semantics of
torchao's ``AdamW8bit``.  Smaller entries, and those of other sizes, stay float32, as torchao keeps them.

In a state dict the codes are the entry itself (``state["exp_avg"]``, uint8) and the scales sit beside it
under ``scale_key`` (``state["exp_avg_absmax"]``, float32): plain tensors.  The generated C kernels dequantise and quantise a block at a time (``q8_load`` / ``q8_store``
in ``_prelude.h``, with the tables printed from here by descend.backends.q8), the Triton kernels a slice of
whole blocks at a time; both are tested against the functions here, code for code.
"""
from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

BLOCK = 256
SMALLEST = 4096  # fewer elements than this stay float32 (bitsandbytes' and torchao's rule)
SMALLEST_SCALE = 1e-12  # a block of zeros keeps this scale (its codes are those of 0)


@lru_cache(maxsize=2)
def dynamic_map(signed: bool) -> tuple[float, ...]:
    """The 256 sorted values of the dynamic map (float32 values): 0, 1 and, for each decade ``10^-6 .. 10^0``,
    the midpoints of an even split of ``[0.1, 1]`` (``2^i`` of them in decade ``i`` signed, with their
    negatives, ``2^(i+1)`` unsigned), times the decade."""
    values = [0.0, 1.0]
    for i in range(7):
        count = 2 ** i if signed else 2 ** (i + 1)
        edges = torch.linspace(0.1, 1, count + 1)  # float32, as bitsandbytes computes the map
        means = (edges[:-1] + edges[1:]) / 2.0
        decade = (10 ** (i - 6) * means).tolist()
        values += decade + ([-v for v in decade] if signed else [])
    return tuple(torch.tensor(sorted(values), dtype=torch.float32).tolist())


@lru_cache(maxsize=8)
def _table(signed: bool, device: torch.device) -> tuple[Tensor, Tensor]:
    """The map and its half gaps ``(MAP[c+1] − MAP[c]) · 0.5`` (float32; the last one 0) on ``device``."""
    values = torch.tensor(dynamic_map(signed), dtype=torch.float32, device=device)
    half = torch.cat([(values[1:] - values[:-1]) * 0.5, values.new_zeros(1)])
    return values, half


def half_gaps(signed: bool) -> tuple[float, ...]:
    return tuple(_table(signed, torch.device("cpu"))[1].tolist())


# --- the kernels' lookup: the code of a quotient from its float32 bits ----------------------------------
#
# The nearest-code rule is a step function of the quotient x: the code is the number of boundaries at or
# below x, one boundary per gap of the map (the smallest float32 that rounds up, under the float32 rule of
# ``quantise``).  The kernels split [-2, 2] into cells by sign, exponent (|x| < 2^-23 is one cell: it is
# the code of 0) and the top ``CELL_BITS`` mantissa bits; no cell holds two boundaries, so a cell's code is
# its first code, plus one at or past its boundary, found from the quotient's remaining bits.

CELL_BITS = 7
LOW_BITS = 23 - CELL_BITS
LOW = (1 << LOW_BITS) - 1
TINY_EXPONENT = 127 - 24  # exponents up to this one: |x| < 2^-23
EXPONENTS = 25  # per sign: the tiny cell's exponent, then 2^-23 .. 2^0


def boundaries(signed: bool) -> Tensor:
    """The 255 float32 boundaries: ``B[c]`` is the least quotient that takes code ``c + 1`` or above."""
    table, half = _table(signed, torch.device("cpu"))
    low, high, gap = table[:-1], table[1:], half[:-1]
    x = (low + gap).clamp(max=high)  # near the boundary; then moved by float32 steps onto it
    for _ in range(64):
        below = torch.nextafter(x, low)
        down = (below > low) & ((below - low) >= gap)
        up = ~((x - low) >= gap) & (x < high)
        if not (down.any() or up.any()):
            break
        x = torch.where(down, below, torch.where(up, torch.nextafter(x, high), x))
    return x


@lru_cache(maxsize=2)
def cells(signed: bool) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Each cell's code and threshold, in the kernels' cell order (sign, exponent, mantissa bits): a quotient
    whose low ``LOW_BITS`` bits ``b`` (``LOW − b`` for a negative one: larger is then nearer 0) reach the
    threshold takes the cell's code plus one, the others the code (mod 256; a cell without a boundary has
    the code below its own and threshold 0).  The last cell is NaN's."""
    bounds = boundaries(signed)
    per_sign = EXPONENTS << CELL_BITS
    index = torch.arange(per_sign, dtype=torch.int64)
    exponent, mantissa = (index >> CELL_BITS) + TINY_EXPONENT, index & ((1 << CELL_BITS) - 1)
    first_bits = (exponent << 23) | (mantissa << LOW_BITS)
    first = first_bits.to(torch.int32).view(torch.float32)
    last = (first_bits + LOW).to(torch.int32).view(torch.float32)
    tiny = index < (1 << CELL_BITS)  # |x| < 2^-23, one cell: no boundary is that small
    first = torch.where(tiny, torch.zeros(()), first)
    last = torch.where(tiny, torch.tensor(2.0 ** -23).nextafter(torch.zeros(())), last)
    lows = torch.cat([first, torch.where(tiny, -last, -last)])  # positive cells, then negative ones
    highs = torch.cat([last, torch.where(tiny, last, -first)])
    start = torch.searchsorted(bounds, lows, right=True)
    end = torch.searchsorted(bounds, highs, right=True)
    assert int((end - start).max()) <= 1, "a cell holds two boundaries"
    low = bounds[start.clamp(max=bounds.numel() - 1)].view(torch.int32).long() & LOW
    negative = torch.arange(2 * per_sign) >= per_sign
    threshold = torch.where(negative, LOW - low, low)
    held = end > start
    code = torch.where(held, start, (start - 1) % 256)
    # and one cell more, for NaN: code 0 (255 + 1)
    return tuple(code.tolist()) + (255,), tuple(torch.where(held, threshold, 0).tolist()) + (0,)


# --- the vector kernels' search: no table gathers --------------------------------------------------
#
# Within a decade 10^(d-7) .. 10^(d-6) the map's values are evenly spaced: at positions t = j + 1/2 of
# t = |x|·A_d − C_d.  The code of the nearest one, or of a neighbour at the decade's edges, is low or
# low + 1 with low = BASE_d + floor(t − 1/2) (clamped to BASE_d − 1 .. BASE_d + n_d − 1) for x >= 0,
# NEGATIVE_d − floor(t + 1/2) (clamped to 0 .. n_d subtracted) for x < 0 on the signed map, −1 for x < 0 on
# the unsigned one; one comparison with boundary low + 1 of [−inf, B_0, .., B_254] decides.  (Checked
# against ``quantise`` on every boundary and decade edge and their neighbours, and a stride over all
# float32 in [−1, 1]: tests/test_eightbit.py.)


@lru_cache(maxsize=2)
def decades(signed: bool) -> dict[str, tuple]:
    """The vector search's per-decade constants (decades 0..6), its decade thresholds and its boundaries."""
    d = torch.arange(7)
    count = 2 ** d if signed else 2 ** (d + 1)
    width = 0.9 / count.double()
    return {"A": tuple((1.0 / (10.0 ** (d.double() - 6) * width)).float().tolist()),
            "C": tuple((0.1 / width).float().tolist()),
            "count": tuple(count.tolist()),
            "base": tuple(((128 if signed else 0) + count - 1).tolist()),
            "negative": tuple((127 - count).tolist()) if signed else (0,) * 7,
            "thresholds": tuple(torch.tensor([10.0 ** (k - 7) for k in range(1, 7)]).float().tolist()),
            "boundaries": (float("-inf"),) + tuple(boundaries(signed).tolist())}


def vector_codes(x: Tensor, signed: bool) -> Tensor:
    """The vector kernels' search, in torch ops (float32 as the kernels compute): the codes of quotients."""
    plan = decades(signed)
    A, C = torch.tensor(plan["A"]), torch.tensor(plan["C"])
    count, base, negative = (torch.tensor(plan[k]) for k in ("count", "base", "negative"))
    magnitude = x.abs()
    d = (magnitude[:, None] >= torch.tensor(plan["thresholds"])).sum(1)
    t = magnitude * A[d] - C[d]
    low = base[d] + torch.minimum(torch.floor(t - 0.5).long().clamp(min=-1), count[d] - 1)
    if signed:
        low = torch.where(x < 0, negative[d] - torch.minimum(torch.floor(t + 0.5).long().clamp(min=0), count[d]), low)
    else:
        low = torch.where(x < 0, -1, low)
    codes = low + (x >= torch.tensor(plan["boundaries"])[low + 1]).long()
    return codes.masked_fill(x.isnan(), 0)


def takes(numel: int) -> bool:
    """Whether an entry of ``numel`` elements is kept in 8 bits."""
    return numel >= SMALLEST and numel % BLOCK == 0


def scale_key(key: str) -> str:
    """The key of the scales of 8-bit entry ``key``."""
    return f"{key}_absmax"


def flat(tensor: Tensor) -> Tensor:
    """The elements of a dense tensor (contiguous in some order of its dims) in memory order, as a 1-d view."""
    return tensor.as_strided((tensor.numel(),), (1,))


def quantise(values: Tensor, signed: bool) -> tuple[Tensor, Tensor]:
    """``values`` (1-d, float32, a whole number of blocks) as codes (uint8) and scales (float32)."""
    blocks = values.float().reshape(-1, BLOCK)
    scales = blocks.abs().amax(dim=1).clamp(min=SMALLEST_SCALE)  # NaN stays NaN (its block decodes to NaN)
    scaled = blocks / scales[:, None]
    table, half = _table(signed, values.device)
    below = (torch.searchsorted(table, scaled.contiguous(), right=True) - 1).clamp(min=0)  # largest MAP[c] <= x
    up = (scaled - table[below]) >= half[below]
    codes = (below + (up & (below < BLOCK - 1))).masked_fill(scaled.isnan(), 0).to(torch.uint8)
    return codes.reshape(-1), scales


def dequantise(codes: Tensor, scales: Tensor, signed: bool) -> Tensor:
    """1-d codes and their scales as float32 values."""
    table, _ = _table(signed, codes.device)
    return (table[codes.long()].reshape(-1, BLOCK) * scales[:, None]).reshape(-1)


def read(codes: Tensor, scales: Tensor, signed: bool) -> Tensor:
    """The float32 values of an 8-bit entry, laid out like its codes."""
    out = torch.empty_like(codes, dtype=torch.float32)
    flat(out).copy_(dequantise(flat(codes), scales, signed))
    return out


def write(codes: Tensor, scales: Tensor, value, signed: bool) -> None:
    """``codes``, ``scales`` ← ``value`` (a tensor or number broadcast to the entry's shape) quantised."""
    laid_out = torch.empty_like(codes, dtype=torch.float32)
    laid_out.copy_(value if isinstance(value, Tensor) else torch.tensor(float(value)))
    new_codes, new_scales = quantise(flat(laid_out), signed)
    flat(codes).copy_(new_codes)
    scales.copy_(new_scales)


__all__ = ["BLOCK", "SMALLEST", "dynamic_map", "half_gaps", "takes", "scale_key", "quantise", "dequantise",
           "read", "write", "flat"]
