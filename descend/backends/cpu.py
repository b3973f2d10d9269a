"""Runs a plan's generated C kernels on CPU tensors, behind a checked boundary.

Every buffer handed to a kernel is first checked against what the kernel was generated for (its dtype,
element count, layout and device: ``check_buffers``); a mismatch raises before any C code runs, so a
kernel never touches memory it was not generated for.  (The optimizer converts state that does not fit
its declaration before it gets here: ``descend.adapter.state``.)
"""
from __future__ import annotations

import math
import threading
from dataclasses import replace

import torch
from torch import Tensor

from ..plan import blockwise
from ..plan.plan import Variant
from ..plan.formula import ELEMENT
from ..plan.schedule import Schedule, schedule
from ..plan.trace import MATRIX_INPUT, MATRIX_OUTPUT, Segment
from . import build, eager
from .c import DTYPE_NAMES, SIGNATURE, Layout, compute_dtype, source
from .eager import Work

DTYPES = frozenset({torch.float32, torch.float64, torch.bfloat16, torch.float16})
_P = build.P
ARGTYPES = [build.I, _P, _P, _P, _P, _P, _P, _P, build.I]
_programs: dict[tuple, object] = {}
_early: dict[tuple, tuple[Schedule, Schedule]] = {}  # (id(plan), roles) -> (plan, kept alive; its early schedule)
_lock = threading.Lock()


class KernelUnavailable(RuntimeError):
    """A generated kernel could not be built (the message holds the compiler's)."""


def available() -> bool:
    return build.support() is not None  # (None when disabled: build.error says so)


def shape_of(tensor: Tensor, factored: bool) -> tuple[int, int, int]:
    """``(B, N, M)``: a stack of B matrices N×M (factored plans), or one row of all elements."""
    if factored and tensor.dim() >= 2:
        return math.prod(tensor.shape[:-2]), tensor.shape[-2], tensor.shape[-1]
    return 1, 1, tensor.numel()


def exact_roles(segment: Segment, layout: Layout) -> frozenset:
    """The state roles of ``segment`` stored in the compute dtype itself, rounded by nothing: a pass may
    write them early and a later one read them back, bit for bit (``schedule(..., early=...)``)."""
    compute = compute_dtype(layout.param_dtype)
    lanes = dict(layout.lanes)
    return frozenset(role for role, _ in segment.outputs[1:] if segment.axes[role] == ELEMENT
                     and layout.dtype(role) == compute and role not in lanes)


def for_layout(segment: Segment, plan: Schedule, layout: Layout) -> Schedule:
    """``plan``, or where it makes several passes, the schedule the C kernels run (cached): one whose passes
    walk each row a second time once its reductions are known (``schedule(..., tails=True)``), and that
    writes the state stored exactly in the first pass able to."""
    if len(plan.passes) < 2:
        return plan
    early = exact_roles(segment, layout)
    key = (id(plan), early)
    found = _early.get(key)
    if found is None:
        with _lock:
            found = _early[key] = (plan, schedule(segment.outputs, role_axes=segment.axes, early=early, tails=True))
    return found[1]


def program(segment: Segment, plan: Schedule, layout: Layout, kind: str):
    """The compiled function of ``plan`` for ``layout`` (cached); raises ``KernelUnavailable``."""
    key = (id(plan), layout, kind)
    found = _programs.get(key)
    if found is None and layout.blocks and plan.factored:
        raise KernelUnavailable("8-bit state in a pass over the rows of matrices (its rows are not whole blocks) "
                                "is not in the C kernels")
    if found is None:
        name = f"{kind}_{DTYPE_NAMES[layout.param_dtype]}"
        code = source(segment, for_layout(segment, plan, layout) if kind == "update" else plan, layout, name)
        found = build.function(code, name, ARGTYPES)
        if found is None:
            raise KernelUnavailable(build.failure(code) or build.error or "the kernel could not be built")
        with _lock:
            _programs[key] = (plan, found)  # the schedule is kept alive, so its id stays its own
        found = _programs[key]
    return found[1]


def layouts(variant: Variant, param_dtype: torch.dtype, codec) -> list[Layout | None]:
    """The layout of each piece of ``variant`` (None for a matrix step) for these dtypes."""
    lanes = {spec.key: lane for lane, spec in enumerate(s for s in variant.specs if s.storage == "state")}
    found: list[Layout | None] = []
    extra: dict[str, torch.dtype] = {}
    compute = compute_dtype(param_dtype)
    for index, piece in enumerate(variant.pieces):
        if not isinstance(piece, Segment):
            extra = {MATRIX_INPUT: piece.output_dtype or piece.input_dtype or compute}
            found.append(None)
            continue
        following = variant.pieces[index + 1] if index + 1 < len(variant.pieces) else None
        if following is not None:
            extra[MATRIX_OUTPUT] = following.input_dtype or compute
        specs = variant.spec_of
        dtypes = tuple((role, param_dtype if role in ("param", "grad") else extra.get(role) or (
            codec.of(specs[role]).dtype if role in specs else codec.dtype)) for role in piece.loads)
        blocks = tuple((role, specs[role].signed) for role, dtype in dtypes if dtype == torch.uint8)
        found.append(Layout(dtypes, tuple((r, lanes[r]) for r in piece.loads if r in lanes and codec.stochastic),
                            index == 0, blocks))
    return found


def ready(variant: Variant, param_dtype: torch.dtype, codec) -> None:
    """Builds every kernel of ``variant`` for these dtypes (cached); raises ``KernelUnavailable`` with the
    compiler's message when one cannot be built."""
    for piece, plan, layout in zip(variant.pieces, variant.schedules, layouts(variant, param_dtype, codec)):
        if layout is not None:
            program(piece, plan, layout, "update")
    for stage, global_stage in enumerate(variant.globals):
        segment = variant.pieces[0]
        layout = layouts(variant, param_dtype, codec)[0]
        program(segment, global_stage.schedule, replace(layout, check_grad=False), f"share{stage}")


def passes(variant: Variant, param_dtype: torch.dtype, codec) -> int:
    """How many passes over the data the C kernels of ``variant`` make (``KernelInfo.passes``)."""
    return sum(len(for_layout(piece, plan, layout).passes) for piece, plan, layout in
               zip(variant.pieces, variant.schedules, layouts(variant, param_dtype, codec)) if layout is not None)


def c_source(variant: Variant, param_dtype: torch.dtype, codec, index: int = 0) -> str:
    """The C source of the ``index``-th segment of a variant (``KernelInfo.c_source``)."""
    pieces = [(p, s, layout) for p, s, layout in zip(variant.pieces, variant.schedules,
                                                     layouts(variant, param_dtype, codec)) if layout is not None]
    segment, plan, layout = pieces[index]
    return source(segment, for_layout(segment, plan, layout), layout, f"update_{DTYPE_NAMES[param_dtype]}")


# --- the boundary ----------------------------------------------------------------------------------


def check_buffers(segment: Segment, layout: Layout, table: list[list[Tensor]], params: list[Tensor],
                  factored: bool) -> None:
    """Raises ``RuntimeError`` unless every buffer is one the kernel was generated for: the role's dtype, on
    the CPU, with the element count and layout the role has for its parameter (like the parameter for
    element roles, contiguous for row/column state).  Checked on every call, for every buffer (one pass of
    list comprehensions per role; the precise complaint is looked for only when something is wrong)."""
    shapes = strides = None
    for role, tensors in zip(segment.loads, table):
        dtype = layout.dtype(role)
        fine = all(isinstance(t, Tensor) and t.dtype == dtype and t.is_cpu and t.layout == torch.strided
                   for t in tensors)
        if fine and segment.axes[role] == frozenset("bij"):
            if shapes is None:
                shapes, strides = [p.shape for p in params], [p.stride() for p in params]
            fine = [t.shape for t in tensors] == shapes and [t.stride() for t in tensors] == strides and (
                not factored or all(t.is_contiguous() for t in tensors))
        elif fine:
            fine = [t.numel() for t in tensors] == [_vector_size(segment.axes[role], p) for p in params] and all(
                t.is_contiguous() for t in tensors)
        if not fine:
            _refuse(role, dtype, segment.axes[role] == frozenset("bij"), tensors, params, factored, segment)
    for (role, _), scales in zip(layout.blocks, table[len(segment.loads):]):
        fine = all(isinstance(s, Tensor) and s.dtype == torch.float32 and s.is_cpu and s.layout == torch.strided
                   and s.dim() == 1 and s.is_contiguous() and p.numel() % blockwise.BLOCK == 0
                   and s.numel() * blockwise.BLOCK == p.numel() for s, p in zip(scales, params))
        if not fine or len(scales) != len(params):
            raise RuntimeError(f"descend: the scales of the 8-bit {role} buffer are not one float32 per block of "
                               f"{blockwise.BLOCK} elements of its parameter (contiguous, on the CPU); nothing was run")


def _refuse(role, dtype, element, tensors, params, factored, segment) -> None:
    for tensor, param in zip(tensors, params):
        if not isinstance(tensor, Tensor) or tensor.dtype != dtype or not tensor.is_cpu or \
                tensor.layout != torch.strided:
            raise RuntimeError(f"descend: the {role} buffer is {_describe(tensor)}, the kernel takes {dtype} on "
                               "the CPU; nothing was run")
        if element:
            if tensor.shape != param.shape or tensor.stride() != param.stride() or (
                    factored and not tensor.is_contiguous()):
                raise RuntimeError(f"descend: the {role} buffer has shape {tuple(tensor.shape)} and strides "
                                   f"{tensor.stride()}, its parameter {tuple(param.shape)} and {param.stride()}; "
                                   "nothing was run")
        else:
            expected = _vector_size(segment.axes[role], param)
            if tensor.numel() != expected or not tensor.is_contiguous():
                raise RuntimeError(f"descend: the {role} buffer has {tensor.numel()} elements "
                                   f"(contiguous: {tensor.is_contiguous()}), the kernel reads {expected}; "
                                   "nothing was run")
    raise RuntimeError(f"descend: the {role} buffers do not fit the kernel; nothing was run")


def _vector_size(axes: frozenset, param: Tensor) -> int:
    b, n, m = shape_of(param, True)
    return {frozenset("bi"): b * n, frozenset("bj"): b * m, frozenset("b"): b, frozenset(): 1}[axes]


def _describe(tensor) -> str:
    if not isinstance(tensor, Tensor):
        return type(tensor).__name__
    return f"{tensor.dtype} on {tensor.device} ({tensor.layout})"


# --- calls -------------------------------------------------------------------------------------------


def _arguments(work: Work, segment: Segment, table: list[list[Tensor]], factored: bool, results: int):
    count = len(work.params)
    addresses = [0] * (len(table) * count)
    width = len(table)
    for k, tensors in enumerate(table):
        addresses[k::width] = [t.data_ptr() for t in tensors]
    shapes = [value for p in work.params for value in shape_of(p, factored)]
    steps = build.doubles(work.steps if work.steps is not None else [0.0] * count)
    scalars = build.doubles([float(state[name.split(":", 1)[1]]) for state in work.states for name in segment.scalars]
                            or [0.0])
    hyper = build.doubles(work.numbers or [0.0])
    totals = build.doubles([work.totals.get(name, math.nan) for name, _ in segment.globals] or [0.0])
    out = build.doubles([0.0] * max(1, count * results))
    return build.int64s(addresses), build.int64s(shapes), steps, scalars, hyper, totals, out


def _table(work: Work, segment: Segment, layout: Layout, first: list[Tensor], scratch: list[Tensor] | None
           ) -> list[list[Tensor]]:
    table = []
    for role in segment.loads:
        if role == "param":
            table.append(work.params)
        elif role in ("grad", MATRIX_INPUT):
            table.append(first)
        elif role == MATRIX_OUTPUT:
            table.append(scratch)
        else:
            table.append([state[role] for state in work.states])
    for role, _ in layout.blocks:  # the 8-bit roles' scales, after the roles (the kernel's pointers ``A_*``)
        table.append([state.get(blockwise.scale_key(role)) for state in work.states])
    return table


def update(work: Work) -> bool:
    """The update of every tensor of ``work`` by the variant's kernels (and its matrix steps, in torch);
    False when a gradient held NaN or ±inf (noticed while reading it; the update is applied regardless)."""
    variant = work.variant
    finite = True
    first, scratch = work.grads, None
    all_layouts = layouts(variant, work.params[0].dtype, work.codec)
    matrix_steps = iter(step for step in work.chain if getattr(step, "kind", "") == "matrix")  # with this call's numbers
    for index, (piece, plan, layout) in enumerate(zip(variant.pieces, variant.schedules, all_layouts)):
        if layout is None:  # a matrix step, in torch, on the u the segment before it wrote
            values = [p.float() if p.dtype in eager.SIXTEEN_BIT else p for p in work.params]
            first = [f.contiguous() for f in eager._matrix_by_shape(
                scratch, values, work.states, next(matrix_steps), [work.t(i) for i in range(len(work.params))])]
            continue
        scratch = None
        if MATRIX_OUTPUT in piece.loads:  # the u the matrix step takes, in its input dtype
            scratch = [torch.empty_like(p, dtype=layout.dtype(MATRIX_OUTPUT), memory_format=torch.contiguous_format)
                       for p in work.params]
        table = _table(work, piece, layout, first, scratch)
        check_buffers(piece, layout, table, work.params, plan.factored)
        function = program(piece, plan, layout, "update")
        arguments = _arguments(work, piece, table, plan.factored, 0)
        finite = bool(function(len(work.params), *arguments, build.threads())) and finite
    torch.autograd.graph.increment_version(work.params)
    return finite


class Call:
    """A single-segment kernel call with its arguments built (``bind``): the next steps refresh the gradients'
    addresses, the step counts, prepared scalars and hyperparameters, and call again."""

    def __init__(self, work: Work):
        segment, plan = work.variant.pieces[0], work.variant.schedules[0]
        self.layout = layouts(work.variant, work.params[0].dtype, work.codec)[0]
        self.function = program(segment, plan, self.layout, "update")
        self.count, self.width = len(work.params), len(segment.loads) + len(self.layout.blocks)
        self.work = work
        table = _table(work, segment, self.layout, work.grads, None)
        self.addresses, self.shapes, self.steps, self.scalars, self.hyper, self.totals, self.out = _arguments(
            work, segment, table, plan.factored, 0)
        states = work.states
        roles = [role for role in segment.loads if role not in ("param", "grad")]
        roles += [blockwise.scale_key(role) for role, _ in self.layout.blocks]
        self.locations = [(state, role) for state in states for role in roles]
        self.counters = work.steps is not None
        if self.counters:
            self.locations += [(state, "step") for state in states]
            self.counter_list = [state["step"] for state in states]
            self.counter_table = build.pointers(self.counter_list)
            # float32 CPU counters are counted in C; others (float64 under a float64 default dtype, as torch
            # keeps them) by torch
            self.c_counters = all(c.dtype == torch.float32 and c.is_cpu and c.dim() == 0 for c in self.counter_list)
        self.entries = [state[role] for state, role in self.locations]
        self.scalar_names = [name.split(":", 1)[1] for name in segment.scalars]
        self.preparing = [step for step in work.chain if getattr(step, "scalar_state", ())]

    def run(self, grads: list[Tensor], numbers: list[float]) -> bool:
        self.addresses[1::self.width] = build.int64s([g.data_ptr() for g in grads])
        if self.counters:
            if self.c_counters:
                build.support().count_steps(self.count, self.counter_table, self.steps)
            else:
                torch._foreach_add_(self.counter_list, 1.0)
                self.steps[:] = build.doubles([float(c) for c in self.counter_list])
        if self.preparing:
            states, steps = self.work.states, self.steps
            for i, state in enumerate(states):
                for step in self.preparing:
                    step.prepare(state, steps[i] if self.counters else 0.0)
            self.scalars[:] = build.doubles([float(state[name]) for state in states for name in self.scalar_names]
                                            or [0.0])
        if numbers:
            self.hyper[:] = build.doubles(numbers)
        return bool(self.function(self.count, self.addresses, self.shapes, self.steps, self.scalars, self.hyper,
                                  self.totals, self.out, build.threads()))


def bind(work: Work) -> Call:
    """``work``'s kernel call, kept for the next steps (descend.adapter.fastpath)."""
    return Call(work)


def contributions(work: Work, stage: int) -> dict[str, float]:
    """The shares of ``work``'s tensors in the global totals of ``stage``, summed in tensor order."""
    variant = work.variant
    segment = variant.pieces[0]
    global_stage = variant.globals[stage]
    plan = global_stage.schedule
    first = layouts(variant, work.params[0].dtype, work.codec)[0]
    layout = replace(first, check_grad=False)
    table = _table(work, segment, layout, work.grads, None)
    check_buffers(segment, layout, table, work.params, plan.factored)
    function = program(segment, plan, layout, f"share{stage}")
    arguments = _arguments(work, segment, table, plan.factored, len(global_stage.parts))
    function(len(work.params), *arguments, build.threads())
    out = arguments[-1]
    width = len(global_stage.parts)
    return {part: math.fsum(out[i * width + k] for i in range(len(work.params)))
            for k, part in enumerate(global_stage.parts)}


__all__ = ["available", "update", "contributions", "check_buffers", "c_source", "passes", "ready", "layouts",
           "KernelUnavailable", "DTYPES", "SIGNATURE"]
