"""The C backend: one C/OpenMP function per traced segment, printed from its schedule.

The function runs the schedule's phases (descend.plan.schedule) for a list of tensors of one dtype:

    int <name>(int nt, void *const *ptrs, const int64_t *shape, const double *steps, const double *scalars,
               const double *hyper, const double *globals, double *results, int threads)

``ptrs[i*K + k]`` is the address of role ``k`` (``segment.loads``) of tensor ``i``; ``shape[3i..3i+2]`` its
``(B, N, M)`` (a stack of matrices; ``(1, 1, n)`` where the plan is flat); ``steps[i]`` its ``t``;
``scalars[i*S + s]`` its prepared scalar state; ``hyper`` the chain's hyperparameters; ``globals`` the
global reductions' totals; ``results[i*R + r]`` receives per-tensor results (the share of global totals).
It returns 1 when every gradient it read was finite.

Scalar nodes (per tensor) compute in double; the element loop computes in float32 (float64 for float64
parameters), reads each tensor role once per pass (prefetching ahead) and writes each output once, in the
final pass; a pass with a tail (``Pass.tail``: a second walk over each row once its sums are known) reads
the row again from the cache.  Sums are accumulated in double, item by item (``make_items`` in
``_prelude.h``), and the items' partial sums added in order: the same bits for any number of threads.  A
pass over a single tensor list with no reductions (every elementwise chain) splits the concatenated
elements evenly over the threads instead.  Temporaries and partial sums live in per-thread scratch memory
reused from call to call (``scratch`` in ``_prelude.h``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..plan.formula import COLS, ELEMENT, MATRIX, ROWS, SCALAR, Expr, operands
from ..plan.schedule import Between, Pass, Schedule, is_element
from ..plan.trace import Segment
from . import q8

C_STORAGE = {torch.float32: "float", torch.float64: "double", torch.bfloat16: "uint16_t", torch.float16: "uint16_t",
             torch.uint8: "uint8_t"}  # uint8: 8-bit codes, always read and written a block at a time
C_LOAD = {torch.float32: "{}", torch.float64: "{}", torch.bfloat16: "bf16_to_f32({})", torch.float16: "f16_to_f32({})"}
C_STORE = {torch.float32: "(float)({})", torch.float64: "(double)({})", torch.bfloat16: "f32_to_bf16({})",
           torch.float16: "f32_to_f16((float)({}))"}
DTYPE_NAMES = {torch.float32: "f32", torch.float64: "f64", torch.bfloat16: "bf16", torch.float16: "f16"}
SCRATCH_SLOTS = 64  # as _prelude.h
SIGNATURE = ("int nt, void *const *ptrs, const int64_t *shape, const double *steps, const double *scalars, "
             "const double *hyper, const double *globals, double *results, int threads")


def compute_dtype(param_dtype: torch.dtype) -> torch.dtype:
    """float64 parameters compute in double, everything else in float32."""
    return torch.float64 if param_dtype == torch.float64 else torch.float32


@dataclass(frozen=True)
class Layout:
    """What a printed function is specialised on besides its segment: the storage dtype of each role, the
    stochastic-rounding lane of each state role stored that way, and whether it checks the gradients."""

    dtypes: tuple[tuple[str, torch.dtype], ...]
    lanes: tuple[tuple[str, int], ...]
    check_grad: bool
    blocks: tuple[tuple[str, bool], ...] = ()  # the 8-bit roles (uint8 codes) and whether each is signed

    def dtype(self, role: str) -> torch.dtype:
        return dict(self.dtypes)[role]

    @property
    def param_dtype(self) -> torch.dtype:
        return self.dtype("param")


def role_var(role: str) -> str:
    return {"param": "P", "grad": "G"}.get(role, "S_" + "".join(c if c.isalnum() else "_" for c in role))


def _number(value: float) -> str:
    if math.isnan(value):
        return "NAN"
    if math.isinf(value):
        return "INFINITY" if value > 0 else "(-INFINITY)"
    return repr(float(value))


def _op(op: str, args: list[str], real: str, compute: str | None = None) -> str:
    """``op`` in C on values of type ``real``; ``compute`` is the element loop's type (for ``round``)."""
    f = "f" if real == "float" else ""
    if op == "round":  # to the compute type: a double holding a float32 where the kernel computes in float32
        return f"(({real})({compute})({args[0]}))" if compute not in (None, real) else f"({args[0]})"
    if op in ("add", "sub", "mul", "div"):
        return f"({args[0]} {dict(add='+', sub='-', mul='*', div='/')[op]} {args[1]})"
    table = {
        "neg": "(-{0})", "abs": f"fabs{f}({{0}})", "sqrt": f"sqrt{f}({{0}})", "exp": f"exp{f}({{0}})",
        "log": f"log{f}({{0}})", "pow": f"pow{f}({{0}}, {{1}})", "fma": f"fma{f}({{0}}, {{1}}, {{2}})",
        "sign": f"(({real})(({{0}}) > 0) - ({real})(({{0}}) < 0))",
        "max": "({0} > {1} ? {0} : {1})", "min": "({0} < {1} ? {0} : {1})",
        "gt": f"(({real})({{0}} > {{1}}))", "ge": f"(({real})({{0}} >= {{1}}))",
        "where": "({0} != 0 ? {1} : {2})",
    }
    return table[op].format(*args)


def _start(op: str) -> str:
    return "0.0" if op == "sum" else "-INFINITY"


def _combine(op: str, acc: str, value: str) -> str:
    return f"{acc} += {value};" if op == "sum" else f"{acc} = max_nan({acc}, {value});"


def _extent(axes: frozenset) -> str:
    return {SCALAR: "1", MATRIX: "B", ROWS: "(B * N)", COLS: "(B * M)"}[axes]


class _Printer:
    def __init__(self, segment: Segment, plan: Schedule, layout: Layout, name: str):
        self.segment, self.plan, self.layout, self.name = segment, plan, layout, name
        self.real = "double" if compute_dtype(layout.param_dtype) == torch.float64 else "float"
        self.ids = {id(node): index for index, node in enumerate(segment.order)}
        for node in plan.order:  # nodes the schedule made (regrouped sums) are numbered after the segment's
            self.ids.setdefault(id(node), len(self.ids))
        self.temps = {id(node): q for q, node in enumerate(plan.temporaries)}
        self.roles = segment.loads
        self.scalar_names = segment.scalars
        self.global_names = [name for name, _ in segment.globals]
        self.factored = plan.factored
        self.lanes = dict(layout.lanes)
        self.eight_bit = dict(layout.blocks)
        self.width = len(self.roles) + len(self.eight_bit)  # pointers per tensor: the roles, then the 8-bit scales
        self.hoisted: dict[int, str] = {}  # id(node) -> the name a per-tensor number is held in (hoist)

    # --- names ------------------------------------------------------------------------------------

    def n(self, node: Expr) -> int:
        return self.ids[id(node)]

    def storage(self, role: str) -> torch.dtype:
        return self.layout.dtype(role)

    def leaf(self, node: Expr) -> str:
        """A leaf as a C double expression."""
        if node.op == "const":
            return _number(node.args[0])
        if node.op == "hyper":
            return f"hyper[{node.args[0]}]"
        name = node.args[0]
        if name == "t":
            return "t"
        if name.startswith("size:"):
            axes = name.split(":", 1)[1]
            return "((double)(" + " * ".join({"b": "B", "i": "N", "j": "M"}[a] for a in axes) + "))" if axes else "1.0"
        if name.startswith("state:"):
            return f"scalars[i * {max(1, len(self.scalar_names))} + {self.scalar_names.index(name)}]"
        if name.startswith("global:"):
            return f"globals[{self.global_index(name.split(':', 1)[1])}]"
        raise ValueError(f"unknown leaf {name!r}")

    def global_index(self, part: str) -> int:
        return self.global_names.index(part)

    def temp(self, node: Expr, index: str) -> str:
        return f"T{self.temps[id(node)]}[{index}]"

    # --- between-phases: per tensor, loops over vectors, in double ------------------------------------

    def between_value(self, node: Expr, index: dict[str, str], lines: list[str]) -> str:
        """``node`` as a double expression inside a loop over the axes in ``index`` (b, r: a row, q: a column)."""
        if node.op in ("const", "hyper", "scalar"):
            return self.leaf(node)
        if id(node) in self.hoisted:
            return self.hoisted[id(node)]
        if id(node) in self.temps:
            return self.temp(node, self.vector_index(node.axes, index))
        if node.op == "load":  # vector state
            role = node.args[0]
            position = self.vector_index(node.axes, index)
            return f"(double){C_LOAD[self.storage(role)].format(f'{role_var(role)}[{position}]')}"
        args = [self.between_value(a, index, lines) for a in operands(node)]
        return _op(node.op, args, "double", self.real)

    def hoist(self, nodes) -> list[str]:
        """The per-tensor numbers inside the vector expressions of ``nodes`` (``1 − t^c`` in a loop over the
        rows), computed once per tensor before the loops: ``const double s<n> = …;`` lines, which
        ``between_value`` then reads (until ``self.hoisted`` is cleared, where their scope ends)."""
        found, seen = [], set()

        def visit(node):
            if id(node) in seen or id(node) in self.temps or node.op in ("const", "hyper", "scalar", "load"):
                return
            seen.add(id(node))
            for operand in operands(node):
                visit(operand)
            if node.scalar:
                found.append(node)

        for node in nodes:
            for operand in operands(node):
                visit(operand)
        lines = []
        for node in found:  # operands first
            args = [self.between_value(a, {}, []) for a in operands(node)]
            lines.append(f"const double s{self.n(node)} = {_op(node.op, args, 'double', self.real)};")
            self.hoisted[id(node)] = f"s{self.n(node)}"
        return lines

    @staticmethod
    def vector_index(axes: frozenset, index: dict[str, str]) -> str:
        if axes == SCALAR:
            return "0"
        if axes == MATRIX:
            return index["b"]
        if axes == ROWS:
            return index["r"]
        if axes == COLS:
            return index["q"]
        raise ValueError("an element value in a between-phase")

    def between(self, phase: Between) -> list[str]:
        body: list[str] = self.hoist(phase.nodes)
        for node in phase.nodes:
            q = self.temps[id(node)]
            if node.op in ("sum", "amax"):  # a reduction of a vector
                body += self.vector_reduction(node, q)
                continue
            axes = node.axes

            def value(index):
                return _op(node.op, [self.between_value(a, index, body) for a in operands(node)], "double", self.real)

            if axes == SCALAR:
                body.append(f"T{q}[0] = {value({})};")
            elif axes == MATRIX:
                body.append(f"for (int64_t b = 0; b < B; b++) T{q}[b] = {value({'b': 'b'})};")
            elif axes == ROWS:
                body.append(f"for (int64_t r = 0; r < B * N; r++) {{ const int64_t b = r / N; (void)b; "
                            f"T{q}[r] = {value({'b': 'b', 'r': 'r'})}; }}")
            else:
                body.append(f"for (int64_t q = 0; q < B * M; q++) {{ const int64_t b = q / M; (void)b; "
                            f"T{q}[q] = {value({'b': 'b', 'q': 'q'})}; }}")
        self.hoisted.clear()
        return self.per_tensor(body, parallel=True)

    def vector_reduction(self, node: Expr, q: int) -> list[str]:
        operand = node.args[0]
        combine = "acc += {};" if node.op == "sum" else "acc = max_nan(acc, {});"
        start = "0.0" if node.op == "sum" else "-INFINITY"
        source, result = operand.axes, node.axes
        if source == ROWS and result == MATRIX:
            loop = ("for (int64_t b = 0; b < B; b++) { double acc = " + start + "; "
                    "for (int64_t r = b * N; r < (b + 1) * N; r++) " + combine.format(
                        self.between_value(operand, {"b": "b", "r": "r"}, [])) + f" T{q}[b] = acc; }}")
        elif source == COLS and result == MATRIX:
            loop = ("for (int64_t b = 0; b < B; b++) { double acc = " + start + "; "
                    "for (int64_t q = b * M; q < (b + 1) * M; q++) " + combine.format(
                        self.between_value(operand, {"b": "b", "q": "q"}, [])) + f" T{q}[b] = acc; }}")
        elif result == SCALAR:
            extent, index = _extent(source), {MATRIX: "b", ROWS: "r", COLS: "q"}[source]
            div = {MATRIX: "1", ROWS: "N", COLS: "M"}[source]
            matrix = "" if source == MATRIX else f"const int64_t b = {index} / {div}; (void)b; "  # (b is the index)
            loop = (f"{{ double acc = {start}; for (int64_t {index} = 0; {index} < {extent}; {index}++) {{ "
                    + matrix + combine.format(
                        self.between_value(operand, {"b": "b", index: index}, [])) + f" }} T{q}[0] = acc; }}")
        else:
            raise ValueError(f"a reduction from {sorted(source)} to {sorted(result)}")
        return [loop]

    def per_tensor(self, body: list[str], parallel: bool) -> list[str]:
        """``body`` for every tensor, with its shape, ``t``, temporaries and vector-state pointers."""
        lines = ["#pragma omp parallel for schedule(dynamic) "
                 "num_threads(nt >= 4 * threads ? threads_for(total_size(nt, sizes), threads) : 1)"
                 if parallel else "", "for (int i = 0; i < nt; i++) {",
                 "  const int64_t B = shape[3 * i], N = shape[3 * i + 1], M = shape[3 * i + 2];",
                 "  const double t = steps[i];", "  (void)t; (void)B; (void)N; (void)M;",
                 "  if (B * N * M == 0) continue;"]
        lines += ["  " + line for line in self.pointer_lines(vector_only=True)]
        lines += ["  " + line for line in self.temp_pointer_lines()]
        lines += ["  " + line for line in body]
        lines.append("}")
        return [line for line in lines if line]

    def temp_pointer_lines(self) -> list[str]:
        return [f"double *restrict T{q} = tmp + toff[i * {len(self.plan.temporaries)} + {q}]; (void)T{q};"
                for q in range(len(self.plan.temporaries))]

    def pointer_lines(self, vector_only: bool = False) -> list[str]:
        lines = []
        written = {role for role, _ in self.segment.outputs}
        for k, role in enumerate(self.roles):
            if vector_only and self.segment.axes[role] == ELEMENT:
                continue
            const = "" if role in written else "const "
            storage = C_STORAGE[self.storage(role)]
            lines.append(f"{const}{storage} *restrict {role_var(role)} = ({const}{storage} *)ptrs[i * {self.width} "
                         f"+ {k}]; (void){role_var(role)};")
        for k, role in enumerate(self.eight_bit):
            if not vector_only:
                const = "" if role in written else "const "
                lines.append(f"{const}float *restrict A_{role_var(role)} = ({const}float *)ptrs[i * {self.width} + "
                             f"{len(self.roles) + k}]; (void)A_{role_var(role)};")
        return lines

    # --- element passes ------------------------------------------------------------------------------

    def element_operand(self, node: Expr) -> str:
        if is_element(node):
            return f"x{self.n(node)}"
        if node.axes == SCALAR:
            return f"k{self.n(node)}"
        if node.axes == COLS:
            return f"c{self.n(node)}"
        return f"w{self.n(node)}"

    def scalar_double(self, node: Expr) -> str:
        """A scalar node as a double expression in a pass's prologue (a temporary, a leaf, or inline)."""
        if id(node) in self.temps:
            return self.temp(node, "0")
        if node.op in ("const", "hyper", "scalar"):
            return self.leaf(node)
        return f"d{self.n(node)}"

    def pass_lines(self, phase: Pass, check: bool) -> list[str]:
        real = self.real
        walks = [phase] + ([phase.tail] if phase.tail is not None else [])
        # scalars (per tensor) the element loops read, cast once per tensor
        scalars: dict[int, Expr] = {}
        reciprocals = {}  # x / s with s per tensor: x · (1/s), the reciprocal once per tensor
        for walk in walks:
            for node in self.walk_operands(walk).values():
                if node.axes == SCALAR:
                    scalars[id(node)] = node
            for node in walk.elements:
                if id(node) not in walk.reloads and node.op == "div" and node.args[1].scalar:
                    reciprocals.setdefault(id(node.args[1]), node.args[1])
        prologue, seen = [], set()
        for walk in walks:
            for node in walk.prologue:
                if id(node) not in seen:
                    seen.add(id(node))
                    prologue.append(f"const double d{self.n(node)} = "
                                    f"{_op(node.op, [self.scalar_double(a) for a in operands(node)], 'double', real)};")
        casts, cast = [], set()
        for walk in walks:
            for node in walk.operands:
                if id(node) in scalars and id(node) not in cast:
                    cast.add(id(node))
                    casts.append(f"const {real} k{self.n(node)} = ({real})({self.scalar_double(node)});")
        casts += [f"const {real} q{self.n(node)} = ({real})(1.0 / {self.scalar_double(node)});"
                  for node in reciprocals.values()]
        reciprocal_names = {key: f"q{self.n(node)}" for key, node in reciprocals.items()}
        blocked = self.float16_roles(phase, check)
        main = self.walk_lines(phase, check, blocked, reciprocal_names)
        stored = [role for walk in walks for role, _ in walk.stores]
        pairs = sorted({self.lanes[role] // 2 for role in stored
                        if role in self.lanes and self.storage(role) == torch.bfloat16})
        seeds = ["const uint32_t seed = sr_seed(t);"] * bool(pairs)
        if not self.factored and not phase.reductions:
            return self.slice_pass(prologue + seeds + casts, main["loop"], check, blocked)
        tail = None
        if phase.tail is not None:
            tail = self.walk_lines(phase.tail, False, self.float16_roles(phase.tail, False), reciprocal_names)
        # a pass that another pass over the same data follows (one that does not write the parameter) walks
        # its items last to first when they are more than the cache holds, so that it ends where the next pass
        # begins, in the cache (in order otherwise: the prefetcher then streams each role from item to item)
        backward = "param" not in stored
        return self.item_pass(prologue + seeds + casts, main, phase.row_nodes, tail, check, backward)

    def walk_operands(self, walk: Pass) -> dict[int, Expr]:
        """The non-element values a walk's element loop reads directly."""
        direct: dict[int, Expr] = {}
        for node in walk.elements:
            if id(node) not in walk.reloads:
                for operand in operands(node):
                    if not is_element(operand):
                        direct[id(operand)] = operand
        for _, node in walk.stores:
            if not is_element(node):
                direct[id(node)] = node
        return direct

    def walk_lines(self, walk: Pass, check: bool, blocked: dict, reciprocals: dict) -> dict:
        """One walk over the elements (a pass, or its tail): the per-row and per-column values it reads
        (``rows``, ``cols``: lines), its element loop (``loop``), its reductions (``totals``, ``row_sums``,
        ``col_sums``: (temporary, op)) and the float16 roles it blocks (``blocked``)."""
        real = self.real
        direct = self.walk_operands(walk)
        used = [node for node in walk.operands if id(node) in direct]
        row_lines = [f"const {real} w{self.n(node)} = ({real})({self.row_value(node)});"
                     for node in used if node.axes in (ROWS, MATRIX)]
        # a column temporary read per element as float: from its float copy (made once per pass, F<q>)
        shadows = [self.temps[id(node)] for node in used if node.axes == COLS and id(node) in self.temps
                   and real == "float"]
        col_lines = [f"const {real} c{self.n(node)} = " + (
            f"F{self.temps[id(node)]}[b * M + c];" if self.temps.get(id(node)) in shadows else
            f"({real})({self.col_value(node)});") for node in used if node.axes == COLS]
        body = []
        for node in walk.elements:
            var = f"x{self.n(node)}"
            if id(node) in walk.reloads:  # stored by an earlier pass, exactly as computed
                body.append(f"const {real} {var} = {self.element_load(walk.reloads[id(node)], blocked)};")
            elif node.op == "load":
                body.append(f"const {real} {var} = {self.element_load(node.args[0], blocked)};")
            elif node.op == "div" and id(node.args[1]) in reciprocals:
                body.append(f"const {real} {var} = ({self.element_operand(node.args[0])} * "
                            f"{reciprocals[id(node.args[1])]});")
            else:
                body.append(f"const {real} {var} = {_op(node.op, [self.element_operand(a) for a in operands(node)], real)};")
        if check:
            grad = self.element_load("grad", blocked)
            body.insert(0, f"found |= nonfinite_{'f64' if real == 'double' else 'f32'}(({real}){grad});")
        accumulate, rows, totals, cols = [], [], [], []
        for node in walk.reductions:
            q = self.temps[id(node)]
            value = f"(double){self.element_operand(node.args[0])}"
            add = "{acc} += {v};" if node.op == "sum" else "{acc} = max_nan({acc}, {v});"
            if node.axes == SCALAR:
                totals.append((q, node.op))
                accumulate.append(add.format(acc=f"tot{q}[l]", v=value))
            elif node.axes == ROWS:
                rows.append((q, node.op))
                accumulate.append(add.format(acc=f"row{q}[l]", v=value))
            elif node.axes == COLS:
                cols.append((q, node.op))
                accumulate.append(add.format(acc=f"colp{q}[b * M + c]", v=value))
            else:
                raise ValueError(f"an element reduction to {sorted(node.axes)}")
        stores = [self.store_line(role, node, blocked) for role, node in walk.stores]
        pairs = sorted({self.lanes[role] // 2 for role, _ in walk.stores
                        if role in self.lanes and self.storage(role) == torch.bfloat16})
        # one hash per element, shared by all its entries (sr_more derives lanes 2 and up from it)
        hashes = ["const uint32_t h0 = sr_bits(j, seed);"] * bool(pairs)
        hashes += [f"const uint32_t h{p} = sr_more(h0, {p}u);" for p in pairs if p]
        read = [walk.reloads.get(id(node)) or node.args[0] for node in walk.elements
                if id(node) in walk.reloads or node.op == "load"]
        return dict(rows=row_lines, cols=col_lines, loop=hashes + body + accumulate + stores, totals=totals,
                    row_sums=rows, col_sums=cols, blocked=blocked, shadows=shadows,
                    read=[role for role in dict.fromkeys(read) if role not in blocked])

    def row_value(self, node: Expr) -> str:
        index = {"b": "b", "r": "r"}
        if id(node) in self.temps:
            return self.temp(node, self.vector_index(node.axes, index))
        if node.op == "load":
            return f"{C_LOAD[self.storage(node.args[0])].format(f'{role_var(node.args[0])}[r]')}"
        return self.between_value(node, index, [])

    def col_value(self, node: Expr) -> str:
        index = {"b": "b", "q": "b * M + c"}
        if id(node) in self.temps:
            return self.temp(node, index["q"])
        if node.op == "load":
            return f"{C_LOAD[self.storage(node.args[0])].format(f'{role_var(node.args[0])}[b * M + c]')}"
        return self.between_value(node, index, [])

    # --- float16 roles: widened and narrowed a block at a time (f16_widen / f16_narrow in _prelude.h) ---------

    def float16_roles(self, phase: Pass, check: bool) -> dict[str, tuple[bool, bool]]:
        """The float16 and 8-bit element roles a pass reads or writes: role -> (read, written)."""
        read = {phase.reloads[id(node)] if id(node) in phase.reloads else node.args[0]
                for node in phase.elements if id(node) in phase.reloads or node.op == "load"}
        read |= {"grad"} if check else set()
        written = {role for role, _ in phase.stores}
        return {role: (role in read, role in written) for role in self.roles if role in read | written
                and self.segment.axes[role] == ELEMENT and self.storage(role) in (torch.float16, torch.uint8)}

    def element_load(self, role: str, blocked: dict) -> str:
        if role in blocked:
            return f"F_{role_var(role)}[j - jb]"
        return C_LOAD[self.storage(role)].format(f"{role_var(role)}[j]")

    def in_blocks(self, blocked: dict, lo: str, hi: str, loop: list[str]) -> list[str]:
        """``loop`` (over ``[@JB@, @JE@)``) for the blocks ``[jb, je)`` of ``[lo, hi)``: the float16 roles it reads
        are widened into float buffers before it, those it writes narrowed from them after it; 8-bit roles are
        decoded and encoded the same way, a quantisation block at a time (``lo`` is then on a block's start)."""
        if not blocked:
            return [line.replace("@JB@", lo).replace("@JE@", hi) for line in loop]
        size = "Q8_BLOCK" if any(role in self.eight_bit for role in blocked) else "F16_BLOCK"
        loop = [line.replace("@JB@", "jb").replace("@JE@", "je") for line in loop]
        lines = [f"float F_{role_var(role)}[{size}];" for role in blocked]
        lines += [f"for (int64_t jb = {lo}; jb < {hi}; jb += {size}) {{",
                  f"  const int64_t je = jb + {size} < {hi} ? jb + {size} : {hi};"]
        for role, (read, _) in blocked.items():
            var = role_var(role)
            if read and role in self.eight_bit:
                lines.append(f"  q8_load({var} + jb, A_{var}[jb / Q8_BLOCK], &{self.table(role)}, F_{var}, je - jb);")
            elif read:
                lines.append(f"  f16_widen({var} + jb, F_{var}, je - jb);")
        lines += ["  " + line for line in loop]
        for role, (_, written) in blocked.items():
            var = role_var(role)
            if written and role in self.eight_bit:
                table = self.table(role)
                lines.append(f"  q8_store(F_{var}, {var} + jb, A_{var} + jb / Q8_BLOCK, &{table}, je - jb);")
            elif written:
                lines.append(f"  f16_narrow(F_{var}, {var} + jb, je - jb);")
        return lines + ["}"]

    def table(self, role: str) -> str:
        return q8.table_name(self.eight_bit[role])

    def store_line(self, role: str, node: Expr, blocked: dict) -> str:
        value = self.element_operand(node)
        storage = self.storage(role)
        if role in blocked:
            return f"F_{role_var(role)}[j - jb] = (float)({value});"
        lane = self.lanes.get(role)
        if lane is not None and storage == torch.bfloat16:
            bits = f"h{lane // 2}" if lane % 2 == 0 else f"(h{lane // 2} >> 16)"
            return f"{role_var(role)}[j] = f32_to_bf16_stochastic({value}, {bits});"
        return f"{role_var(role)}[j] = {C_STORE[storage].format(value)};"

    def slice_pass(self, prologue: list[str], element_loop: list[str], check: bool, blocked: dict) -> list[str]:
        lines = ["FOR_EACH_ALIGNED_SLICE(nt, sizes, threads, Q8_BLOCK, {" if self.eight_bit else "FOR_EACH_SLICE(nt, sizes, threads, {"]
        lines += ["  " + line for line in self.pointer_lines()]
        lines += ["  const int64_t B = shape[3 * i], N = shape[3 * i + 1], M = shape[3 * i + 2];",
                  "  (void)B; (void)N; (void)M;", "  const double t = steps[i]; (void)t;"]
        lines += ["  " + line for line in self.temp_pointer_lines()]
        lines += ["  " + line for line in prologue]
        loop = ["for (int64_t j = @JB@; j < @JE@; j++) {", *("  " + line for line in element_loop), "}"]
        lines += ["  uint32_t found = 0;", *("  " + line for line in self.in_blocks(blocked, "lo", "hi", loop))]
        lines += ["  REPORT(found);" if check else "  (void)found;", "});"]
        return lines

    def lane_loop(self, walk: dict, check: bool, prefetch: bool = False) -> list[str]:
        """A walk's element loop over the row ``[lo, hi)``, LANES elements at a time; with ``prefetch``, the
        roles it reads are asked for PREFETCH elements ahead (a first walk over the row, from memory)."""
        # Element j adds into lane (j − lo) mod LANES, whatever the alignment of the data: the sums are the same
        # bits on every run, and the lanes vectorise.
        body = ["      const int64_t j = j0 + l; const int64_t c = j - lo; (void)c;"]
        body += ["      " + line for line in walk["cols"]]
        body += ["      " + line.replace("found |= ", "seen[l] |= ") for line in walk["loop"]]
        simd = "#pragma omp simd"
        # (a float16 block is a whole number of LANES long: every element keeps its lane)
        ahead = [f"  __builtin_prefetch(&{role_var(role)}[j0 + PREFETCH]);" for role in walk["read"]] if prefetch else []
        loop = ["int64_t j0 = @JB@;", "for (; j0 + LANES <= @JE@; j0 += LANES) {", *ahead, f"  {simd}",
                "  for (int l = 0; l < LANES; l++) {", *(line[2:] for line in body), "  }", "}",
                "for (int l = 0; j0 + l < @JE@; l++) {", *(line[4:] for line in body), "}"]
        return self.in_blocks(walk["blocked"], "lo", "hi", loop)

    def row_walk(self, walk: dict, check: bool, prefetch: bool = False) -> list[str]:
        """A walk over row r: its per-row values, column-partial pointers and row accumulators, the element
        loop, and the row sums finished."""
        lines = [f"double *restrict colp{q} = items[it].part >= 0 ? colpart{q} + items[it].part - b * M : T{q};"
                 for q, _ in walk["col_sums"]]
        lines += walk["rows"]
        lines += [f"double row{q}[LANES]; for (int l = 0; l < LANES; l++) row{q}[l] = {_start(op)};"
                  for q, op in walk["row_sums"]]
        lines += self.lane_loop(walk, check, prefetch)
        lines += [f"{{ double acc = {_start(op)}; for (int l = 0; l < LANES; l++) "
                  f"{_combine(op, 'acc', f'row{q}[l]')} T{q}[r] = acc; }}" for q, op in walk["row_sums"]]
        return lines

    def item_pass(self, prologue, main, row_nodes, tail, check, backward: bool = False) -> list[str]:
        factored = 1 if self.factored else 0
        walks = [main] + ([tail] if tail is not None else [])
        totals = [total for walk in walks for total in walk["totals"]]
        cols = [col for walk in walks for col in walk["col_sums"]]
        lines = ["{", "int64_t items_n = 0, parts_n = 0;",
                 f"item_t *items = make_items(nt, shape, {factored}, &items_n, &parts_n);"]
        # partial sums in the kernel's scratch slots 1, 2, … (slot 0: the temporaries), malloc'd past the last
        slots = {q: k + 1 for k, (q, _) in enumerate(totals + cols) if k + 1 < SCRATCH_SLOTS - 1}

        def buffer(q, count):
            return f"scratch({slots[q]}, {count})" if q in slots else f"malloc(sizeof(double) * ({count} ? {count} : 1))"

        for q, _ in totals:
            lines.append(f"double *partial{q} = {buffer(q, 'items_n')};")
        for q, op in cols:
            start = "0.0" if op == "sum" else "-INFINITY"
            lines.append(f"double *colpart{q} = {buffer(q, 'parts_n')};")
            lines.append(f"for (int64_t p = 0; p < parts_n; p++) colpart{q}[p] = {start};")
            lines.append(f"for (int i = 0; i < nt; i++) {{ const int64_t B = shape[3 * i], M = shape[3 * i + 2]; "
                         f"double *T = tmp + toff[i * {len(self.plan.temporaries)} + {q}]; "
                         f"for (int64_t q = 0; q < B * M; q++) T[q] = {start}; }}")
        shadows = sorted({q for walk in walks for q in walk["shadows"]})
        ntemp = len(self.plan.temporaries)
        if shadows:  # float copies of column temporaries, at the temporaries' offsets (scratch slot 63)
            lines.append(f"float *ftmp = (float *)scratch({SCRATCH_SLOTS - 1}, tsize / 2 + 1);")
            lines += [f"for (int i = 0; i < nt; i++) {{ const int64_t B = shape[3 * i], M = shape[3 * i + 2]; "
                      f"const int64_t o = toff[i * {ntemp} + {q}]; for (int64_t q = 0; q < B * M; q++) "
                      f"ftmp[o + q] = (float)tmp[o + q]; }}" for q in shadows]
        if backward:
            lines.append("const int back = total_size(nt, sizes) > BACKWARD_MIN;")
        lines += ["#pragma omp parallel for schedule(dynamic, 1) "
                  "num_threads(items_n >= 2 ? threads_for(total_size(nt, sizes), threads) : 1)",
                  "for (int64_t it_ = 0; it_ < items_n; it_++) {",
                  f"  const int64_t it = {'back ? items_n - 1 - it_ : it_' if backward else 'it_'};",
                  "  const int i = items[it].i;",
                  "  const int64_t B = shape[3 * i], N = shape[3 * i + 1], M = shape[3 * i + 2];",
                  "  (void)B; (void)N;",
                  f"  const int64_t W = width_of(shape, i, {factored}), n = B * N * M;",
                  "  const double t = steps[i]; (void)t;"]
        lines += ["  " + line for line in self.pointer_lines()]
        lines += ["  " + line for line in self.temp_pointer_lines()]
        lines += [f"  const float *restrict F{q} = ftmp + toff[i * {ntemp} + {q}];" for q in shadows]
        lines += ["  " + line for line in prologue + self.hoist(row_nodes)]
        for q, op in totals:
            lines.append(f"  double tot{q}[LANES]; for (int l = 0; l < LANES; l++) tot{q}[l] = {_start(op)};")
        if check:  # the non-finite test, lane by lane like the sums (no reduction across the lanes per block)
            lines.append("  uint32_t seen[LANES]; for (int l = 0; l < LANES; l++) seen[l] = 0;")
        lines += ["  uint32_t found = 0;",
                  "  for (int64_t r = items[it].r0; r < items[it].r1; r++) {",
                  "    const int64_t lo = r * W, hi = lo + W < n ? lo + W : n;",
                  f"    const int64_t b = {'r / N' if self.factored else '0'}; (void)b;"]
        lines += ["    " + line for line in self.row_walk(main, check, prefetch=True)]
        # the row's own values, from its sums just finished; then the tail walks the row again (in the cache)
        lines += [f"    T{self.temps[id(node)]}[r] = "
                  f"{_op(node.op, [self.between_value(a, {'b': 'b', 'r': 'r'}, []) for a in operands(node)], 'double', self.real)};"
                  for node in row_nodes]
        self.hoisted.clear()
        if tail is not None:
            lines += ["    {", *("      " + line for line in self.row_walk(tail, False)), "    }"]
        lines.append("  }")
        if check:
            lines.append("  for (int l = 0; l < LANES; l++) found |= seen[l];")
        for q, op in totals:
            lines.append(f"  {{ double acc = {_start(op)}; for (int l = 0; l < LANES; l++) "
                         f"{_combine(op, 'acc', f'tot{q}[l]')} partial{q}[it] = acc; }}")
        lines += ["  REPORT(found);" if check else "  (void)found;", "}"]
        # the partial sums, added in item order
        for q, op in totals:
            combine = "acc += partial{q}[it];" if op == "sum" else "acc = max_nan(acc, partial{q}[it]);"
            lines.append(f"for (int64_t it = 0; it < items_n; ) {{ const int i = items[it].i; double acc = "
                         f"{'0.0' if op == 'sum' else '-INFINITY'}; for (; it < items_n && items[it].i == i; it++) "
                         + combine.format(q=q) + f" tmp[toff[i * {len(self.plan.temporaries)} + {q}]] = acc; }}")
            lines.append("" if q in slots else f"free(partial{q});")
        for q, op in cols:
            combine = "T[b * M + c] += colpart{q}[p + c];" if op == "sum" else \
                "T[b * M + c] = max_nan(T[b * M + c], colpart{q}[p + c]);"
            lines.append(f"for (int64_t it = 0; it < items_n; it++) {{ if (items[it].part < 0) continue; "
                         f"const int i = items[it].i; const int64_t N = shape[3 * i + 1], M = shape[3 * i + 2]; "
                         f"const int64_t b = items[it].r0 / N, p = items[it].part; "
                         f"double *T = tmp + toff[i * {len(self.plan.temporaries)} + {q}]; "
                         f"for (int64_t c = 0; c < M; c++) " + combine.format(q=q) + " }")
            lines.append("" if q in slots else f"free(colpart{q});")
        lines += ["free(items);", "}"]
        return [line for line in lines if line]

    # --- the function --------------------------------------------------------------------------------

    def vector_store_lines(self) -> list[str]:
        body = []
        for role, node in self.plan.vector_stores:
            storage = self.storage(role)
            index = {ROWS: "r", COLS: "q", MATRIX: "b", SCALAR: "0"}[self.segment.axes[role]]
            extent = _extent(self.segment.axes[role])
            value = self.temp(node, index) if id(node) in self.temps else self.between_value(node, {index: index}, [])
            lane = self.lanes.get(role)
            if lane is not None and storage == torch.bfloat16:
                bits = f"sr_bits({index}, sr_seed(t))"
                bits = (f"sr_more({bits}, {lane // 2}u)" if lane // 2 else bits) + (" >> 16" if lane % 2 else "")
                store = f"f32_to_bf16_stochastic((float)({value}), {bits})"
            else:
                store = C_STORE[storage].format(value)
            body.append(f"for (int64_t {index} = 0; {index} < {extent}; {index}++) {role_var(role)}[{index}] = {store};")
        return self.per_tensor(body, parallel=True) if body else []

    def result_lines(self) -> list[str]:
        count = len(self.plan.results)
        return [f"for (int i = 0; i < nt; i++) results[i * {count} + {k}] = "
                f"tmp[toff[i * {len(self.plan.temporaries)} + {self.temps[id(node)]}]];"
                for k, node in enumerate(self.plan.results)]

    def source(self) -> str:
        passes = self.plan.passes
        grad_passes = [p for p in passes if any(e.op == "load" and e.args[0] == "grad" for e in p.elements)]
        checked = (grad_passes[0] if grad_passes else passes[-1] if passes else None) if self.layout.check_grad else None
        ntemp = len(self.plan.temporaries)
        extents = [f"{_extent(node.axes)}" for node in self.plan.temporaries]
        blocked = len(passes) > 1
        body_name = f"{self.name}_block" if blocked else self.name
        lines = [f"/* roles: {', '.join(self.roles)}; temporaries: {ntemp}; passes: {len(self.plan.passes)} */",
                 f"{'static ' if blocked else ''}int {body_name}({SIGNATURE}) {{",
                 "  int bad = 0; (void)scalars; (void)hyper; (void)globals; (void)results;",
                 "  int64_t *sizes = malloc(sizeof(int64_t) * (nt ? nt : 1));",
                 "  for (int i = 0; i < nt; i++) sizes[i] = shape[3 * i] * shape[3 * i + 1] * shape[3 * i + 2];",
                 f"  int64_t *toff = malloc(sizeof(int64_t) * ((int64_t)nt * {ntemp} + 1)), tsize = 0;",
                 "  for (int i = 0; i < nt; i++) {",
                 "    const int64_t B = shape[3 * i], N = shape[3 * i + 1], M = shape[3 * i + 2]; (void)B; (void)N; (void)M;",
                 *[f"    toff[i * {ntemp} + {q}] = tsize; tsize += {extent};" for q, extent in enumerate(extents)],
                 "  }",
                 "  double *tmp = scratch(0, tsize);"]
        if ntemp:  # (a tensor with no elements has no items: its per-tensor results are 0)
            lines.append(f"  for (int i = 0; i < nt; i++) if (sizes[i] == 0) memset(tmp + toff[i * {ntemp}], 0, "
                         f"sizeof(double) * ((i + 1 < nt ? toff[(i + 1) * {ntemp}] : tsize) - toff[i * {ntemp}]));")
        for phase in self.plan.phases:
            phase_lines = self.between(phase) if isinstance(phase, Between) else self.pass_lines(phase, phase is checked)
            lines += ["  " + line for line in phase_lines]
        lines += ["  " + line for line in self.vector_store_lines()]
        lines += ["  " + line for line in self.result_lines()]
        lines += ["  free(toff); free(sizes);", "  return !bad;", "}"]
        if blocked:
            lines += self.blocks(body_name)
        signs = set(self.eight_bit.values())
        return "\n".join(q8.defines(signs) + ['#include "_prelude.h"', ""] + q8.tables(signs) + lines) + "\n"

    def blocks(self, body: str) -> list[str]:
        """A kernel of several passes runs each tensor that is a small share of the call's elements (at most a
        quarter of one thread's) on one thread, through every phase, the threads taking such tensors in turn:
        no barrier between the passes, and a pass after the first reads its tensor from the cache rather than
        from memory.  Larger tensors go one at a time, every thread working on each phase.  Either way a
        tensor's numbers are the same bits (its work items, and so its sums, depend on its shape alone)."""
        per_tensor = {"ptrs": self.width, "shape": 3, "steps": 1, "scalars": len(self.scalar_names),
                      "results": len(self.plan.results)}
        at = {name: f"{name} + (int64_t)i * {count}" if count else name for name, count in per_tensor.items()}
        call = (f"{body}(1, {at['ptrs']}, {at['shape']}, {at['steps']}, {at['scalars']}, hyper, globals, "
                f"{at['results']}, {{}})")
        return [f"int {self.name}({SIGNATURE}) {{",
                "  int64_t total = 0;",
                "  for (int i = 0; i < nt; i++) total += shape[3 * i] * shape[3 * i + 1] * shape[3 * i + 2];",
                "#define SMALL(i) (shape[3 * (i)] * shape[3 * (i) + 1] * shape[3 * (i) + 2] * 4 * threads <= total)",
                "  int finite = 1, small = 0;",
                "  int64_t small_total = 0;",
                "  for (int i = 0; i < nt; i++) if (SMALL(i)) small++, small_total += shape[3 * i] * shape[3 * i + 1] * "
                "shape[3 * i + 2];",
                "  if (small) {",
                "    #pragma omp parallel for schedule(dynamic, 1) "
                "num_threads(small >= 2 && small_total >= BLOCKS_PARALLEL_MIN ? threads : 1) "
                "reduction(& : finite)",
                "    for (int i = 0; i < nt; i++)",
                f"      if (SMALL(i)) finite &= {call.format('1')};",
                "  }",
                "  for (int i = 0; i < nt; i++)",
                f"    if (!SMALL(i)) finite &= {call.format('threads')};",
                "#undef SMALL",
                "  return finite;",
                "}"]


def source(segment: Segment, plan: Schedule, layout: Layout, name: str) -> str:
    """The C source of the function ``name`` that runs ``plan`` (a schedule of ``segment``) for ``layout``."""
    return _Printer(segment, plan, layout, name).source()
