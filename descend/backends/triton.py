"""The chain's fused GPU kernel: Triton source printed from the same segment and schedule as the C kernel.

One launch updates a whole list of parameters of one dtype (a multi-tensor kernel, like torch's fused
optimizers).  The grid has one program per *chunk*: ``CHUNK`` consecutive elements of one tensor.  Per
launch the host passes

* ``pointers[i, k]``: the address of tensor role ``k`` (``trace.loads``: param, grad, state entries ...)
  of tensor ``i``, and ``sizes[i]`` its number of elements;
* ``chunk_tensor[c]``, ``chunk_start[c]``: the tensor and first element of chunk ``c`` (the grid's index
  table, so a program finds its tensor with two loads and no search);
* ``scalars[i, j]``: the per-tensor numbers the element loop needs (see below);
* ``found``: one int32 on the device, set to 1 when a gradient element read is NaN or ±inf.

Scalars.  A node of the trace that loads no tensor (``−α``, ``1/(1 − β₁ᵗ)``, ``β₂``, constants) depends
only on ``t``, the hyperparameters and prepared scalars, all known on the host.  They are evaluated there,
once per tensor and step, in float64 (numpy, vectorised over the tensors), and every such node the element
loop uses (a division by one becomes a multiplication by its reciprocal, as in the C kernel) is one column
of ``scalars``, rounded once to the compute type.  So one compiled kernel serves every learning rate and
step, and the kernel itself never computes a power of ``β``.

Compute type: float32 for float32, bfloat16 and float16 parameters (with IEEE-rounded ``/`` and ``√``:
``tl.div_rn``, ``tl.sqrt_rn``), float64 for float64; state may have another storage dtype than the
parameter (float32 state for 16-bit parameters by default).  Each program runs its full ``BLOCK``-wide
slices without masks (with 16-byte vector loads and stores where every address of the launch is 16-byte
aligned: the ``ALIGN`` hint) and then one masked tail.

The source is written to a file in ``<descend cache>/triton`` and imported from there (Triton's ``jit``
reads a kernel's source with ``inspect``).  Under ``TRITON_INTERPRET=1`` (read by ``triton.jit`` when the
module is imported) the kernels run on CPU tensors: that is how the tests check them without a GPU.  The
variable may be set after ``import triton``, because the kernels call only builtins of ``triton.language``:
its ``@jit`` helpers (``tl.zeros``, ``tl.max`` ...) were decorated at import, compiled or interpreted for good.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import importlib.util
import sys
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..plan import blockwise
from ..plan.formula import Expr, NotTraceable, operands
from ..plan.plan import Variant
from ..plan.schedule import Schedule
from ..plan.state import Codec
from ..plan.trace import Segment
from . import build
from .c import DTYPE_NAMES, compute_dtype, role_var

triton = None  # the module, once a parameter on a device in DEVICE_TYPES asked for it (importing takes ~0.5 s)
_imported = False

BLOCK = 1024  # elements a program handles at once (a power of two); untuned: no GPU was at hand
CHUNK = 8 * BLOCK  # elements of one tensor one program updates (a multiple of BLOCK)
NUM_WARPS = 4
DEVICE_TYPES = frozenset({"cuda"})  # where the driver sends parameters to these kernels (tests add "cpu")
TL_DTYPES = {torch.float32: "tl.float32", torch.float64: "tl.float64", torch.bfloat16: "tl.bfloat16",
             torch.float16: "tl.float16"}
TL_STORAGE = {**TL_DTYPES, torch.uint8: "tl.uint8"}  # uint8: 8-bit codes (state_dtype="8bit")
Q8_TABLES = {True: 0, False: 512}  # offsets in the 8-bit tables: a map (256), then [-inf, its 255 boundaries]

error: str | None = None  # why the last kernel could not be had, when one could not
_lock = threading.RLock()


def available() -> bool:
    """True when triton can be imported (it is, on first call)."""
    global triton, _imported
    if not _imported:
        try:
            import triton as module
        except ImportError:  # descend without the [gpu] extra: CUDA parameters run the foreach reference path
            module = None
        triton, _imported = module, True
    return triton is not None


def interpreting() -> bool:
    """True under ``TRITON_INTERPRET=1``: kernels decorated now run in triton's CPU interpreter."""
    return available() and bool(triton.knobs.runtime.interpret)


def takes(param: Tensor, grad: Tensor | None) -> bool:
    """True when a Triton kernel can update ``param`` in place: a dense tensor on a device in
    ``DEVICE_TYPES`` of a dtype the kernels take, its gradient alike (same device, dtype and strides).
    The interpreter takes CPU tensors only, compiled kernels GPU tensors only (the kernels dereference
    the addresses in their tables)."""
    return (param.device.type in DEVICE_TYPES and param.dtype in TL_DTYPES and available()
            and (param.device.type == "cpu") == interpreting()
            and grad is not None and grad.device == param.device and grad.dtype == param.dtype
            and grad.layout == torch.strided and grad.stride() == param.stride() and _dense(param))


def _dense(tensor: Tensor) -> bool:
    from ..adapter.routing import dense

    return dense(tensor)


# --- printing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """One per-tensor scalar the element loop reads: the value of ``node``, or its reciprocal."""

    node: Expr
    reciprocal: bool


def _tl_op(op: str, args: list[str], real: str) -> str:
    """A vector node (at least one operand is a block) in Triton; the same semantics as the C printer's."""
    fp32 = real == "tl.float32"
    if op == "div":
        return f"tl.div_rn({args[0]}, {args[1]})" if fp32 else f"({args[0]} / {args[1]})"
    if op in ("add", "sub", "mul"):
        return f"({args[0]} {dict(add='+', sub='-', mul='*')[op]} {args[1]})"
    table = {
        "neg": "(-{0})", "abs": "tl.abs({0})", "sqrt": "tl.sqrt_rn({0})" if fp32 else "tl.sqrt({0})",
        "exp": "tl.exp({0})", "log": "tl.log({0})",
        "sign": f"(({{0}} > 0).to({real}) - ({{0}} < 0).to({real}))",
        "max": "tl.where({0} > {1}, {0}, {1})", "min": "tl.where({0} < {1}, {0}, {1})",
        "gt": f"({{0}} > {{1}}).to({real})", "ge": f"({{0}} >= {{1}}).to({real})",
        "where": "tl.where({0} != 0, {1}, {2})", "fma": "tl.fma({0}, {1}, {2})",
        "round": "({0})",  # a block is of the compute type already
    }
    if op not in table:  # pow of a block has no IEEE-exact Triton form
        raise NotTraceable(f"the Triton printer has no vector form of {op!r}")
    return table[op].format(*args)


def kernel_name(param_dtype: torch.dtype, state_dtype: torch.dtype) -> str:
    return f"chain_{DTYPE_NAMES[param_dtype]}_{DTYPE_NAMES[state_dtype]}"


def triton_source(segment: Segment, plan: Schedule, param_dtype: torch.dtype, state_dtype: torch.dtype,
                  dtypes: dict[str, torch.dtype] | None = None, eight_bit: tuple = ()) -> tuple[str, list[Column]]:
    """The Triton module of a single-pass ``segment`` (``plan`` its schedule) for parameters (and gradients)
    of ``param_dtype`` and state of ``state_dtype`` (``dtypes``: other roles' own, a matrix step's input and
    output), and the per-tensor scalar columns its kernel reads.  A segment after a matrix step reads no
    gradient, and so checks none.

    The module defines one kernel, ``chain_<p>_<s>(pointers, sizes, chunk_tensor, chunk_start, scalars,
    found, K, NK, BLOCK, CHUNK, ALIGN)`` (the last five ``tl.constexpr``).  Its element loop is printed
    twice, without masks for the full slices and with them for the tail: no helper functions, which the
    interpreter would re-patch on every call.

    ``eight_bit``: the 8-bit roles (uint8 codes) and whether each is signed.  Their scales' pointers follow the
    roles', the maps and boundaries are the ``q8`` argument (``Q8_TABLES``); a ``BLOCK`` is whole blocks of
    256, each decoded on load and, on store, scaled by its absolute maximum and coded by a binary search of
    the boundaries (the count of those at or below the quotient: blockwise.quantise's code)."""
    real = compute_dtype(param_dtype)
    signs = dict(eight_bit)
    real_tl = TL_DTYPES[real]
    roles = segment.loads
    (final,) = plan.passes
    columns: list[Column] = []
    column_names: dict[tuple[int, bool], str] = {}

    def column(expr: Expr, reciprocal: bool = False) -> str:
        key = (id(expr), reciprocal)
        if key not in column_names:
            column_names[key] = f"k{len(columns)}"
            columns.append(Column(expr, reciprocal))
        return column_names[key]

    def element_loop(masked: bool) -> list[str]:
        """Loads, the traced arithmetic and stores for the elements ``j`` (``m``: those < end)."""
        load = "tl.load({}, mask=m, other=0.0)" if masked else "tl.load({})"
        store = "tl.store({}, {}, mask=m)" if masked else "tl.store({}, {})"
        names: dict[int, str] = {}

        def operand(expr: Expr) -> str:
            return column(expr) if expr.scalar else names[id(expr)]

        if masked:
            lines = ["m = j < end", *(f"p{var} = {var} + j" for var in role_vars)]
        else:  # ALIGN: 16 where every address of the launch is (vector loads and stores), else 1
            lines = [f"p{var} = tl.multiple_of({var} + j, ALIGN)" for var in role_vars]
        for index, expr in enumerate(final.elements):
            var = f"x{index}"
            if expr.op == "load" and expr.args[0] in signs:
                role = role_var(expr.args[0])
                table = Q8_TABLES[signs[expr.args[0]]]
                lines.append(f"c{var} = {load.format('p' + role).replace('other=0.0', 'other=0')}.to(tl.int32)")
                scale = f"tl.load(A{role} + j // 256, mask=m, other=0.0)" if masked else f"tl.load(A{role} + j // 256)"
                lines.append(f"{var} = tl.load(q8 + {table} + c{var}) * {scale}")
            elif expr.op == "load":
                lines.append(f"{var} = {load.format('p' + role_var(expr.args[0]))}.to({real_tl})")
            elif expr.op == "div" and expr.args[1].scalar:  # x / s = x · (1/s), the reciprocal once per tensor
                lines.append(f"{var} = {operand(expr.args[0])} * {column(expr.args[1], True)}")
            else:
                lines.append(f"{var} = {_tl_op(expr.op, [operand(a) for a in operands(expr)], real_tl)}")
            names[id(expr)] = var
        grad = segment.graph.nodes.get(("load", "grad"))
        if "grad" not in roles:  # a segment after a matrix step: the first one checked the gradient
            grad_name = None
        elif grad is None or id(grad) not in names:  # a chain that ignores its gradient still reports a non-finite one
            lines.append(f"g = {load.format('p' + role_var('grad'))}.to({real_tl})")
            grad_name = "g"
        else:
            grad_name = names[id(grad)]
        largest = repr(torch.finfo(real).max)  # |g| <= largest fails for NaN and ±inf
        if grad_name is not None:
            lines.append(f"found = tl.maximum(found, tl.where(tl.abs({grad_name}) <= {largest}, 0, 1))")
        for k, (role, expr) in enumerate(final.stores):
            if role in signs:
                lines += eight_bit_store(k, role, operand(expr), masked)
                continue
            if storage[role] == torch.bfloat16 and real == torch.float32:  # rounded to nearest, ties to even,
                bits = f"b{k}"  # written out: the interpreter's own conversion truncates
                lines.append(f"{bits} = {operand(expr)}.to(tl.uint32, bitcast=True)")
                value = (f"tl.where(({bits} & 0x7FFFFFFF) > 0x7F800000, ({bits} >> 16) | 0x40, "
                         f"({bits} + 0x7FFF + (({bits} >> 16) & 1)) >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)")
            else:
                value = f"{operand(expr)}.to({TL_DTYPES[storage[role]]})"
            lines.append(store.format("p" + role_var(role), value))
        return lines

    def eight_bit_store(k: int, role: str, value: str, masked: bool) -> list[str]:
        var, blocks, boundaries = role_var(role), "BLOCK // 256", Q8_TABLES[signs[role]] + 256
        inside = " & m" if masked else ""
        lines = [f"v{k} = {value}",
                 f"a{k} = tl.where((v{k} == v{k}){inside}, tl.abs(v{k}), 0.0)",
                 f"n{k} = tl.where((v{k} != v{k}){inside}, 1.0, 0.0)"]
        # each block's maximum by halving (builtins only: the interpreter may run with triton imported before it)
        for width in (128, 64, 32, 16, 8, 4, 2, 1):
            for x in (f"a{k}", f"n{k}"):
                lines += [f"{x}l, {x}h = tl.split(tl.reshape({x}, [{blocks}, {width}, 2]))",
                          f"{x} = tl.maximum({x}l, {x}h)"]
        lines += [f"s{k} = tl.where(tl.reshape(n{k}, [{blocks}]) > 0, float('nan'), "
                  f"tl.maximum(tl.reshape(a{k}, [{blocks}]), 1e-12))",
                  f"e{k} = tl.reshape(tl.broadcast_to(tl.reshape(s{k}, [{blocks}, 1]), [{blocks}, 256]), [BLOCK])",
                  f"q{k} = tl.div_rn(v{k}, e{k})",
                  f"c{k} = tl.full([BLOCK], 0, tl.int32)"]
        lines += [f"c{k} = tl.where(tl.load(q8 + {boundaries} + c{k} + {step}) <= q{k}, c{k} + {step}, c{k})"
                  for step in (128, 64, 32, 16, 8, 4, 2, 1)]
        mask = ", mask=m" if masked else ""
        lines += [f"tl.store(p{var}, c{k}.to(tl.uint8){mask})",
                  f"tl.store(A{var} + j // 256, e{k}, mask=(j % 256 == 0){inside})"]
        return lines

    storage = {role: param_dtype if role in ("param", "grad") else (dtypes or {}).get(role, state_dtype)
               for role in roles}
    role_vars = [role_var(role) for role in roles]
    full_slices, tail = element_loop(masked=False), element_loop(masked=True)
    name = kernel_name(param_dtype, state_dtype)

    lines = [
        f'"""Generated by descend.backends.triton from a traced chain; roles: {", ".join(roles)}."""',
        "import triton",
        "import triton.language as tl",
        "",
        "",
        "@triton.jit",
        f"def {name}(pointers, sizes, chunk_tensor, chunk_start, scalars, found_flag,{' q8,' if signs else ''}",
        "        K: tl.constexpr, NK: tl.constexpr, BLOCK: tl.constexpr, CHUNK: tl.constexpr, ALIGN: tl.constexpr):",
        "    chunk = tl.program_id(0)",
        "    i = tl.load(chunk_tensor + chunk)  # the tensor this program updates",
        "    start = tl.multiple_of(tl.load(chunk_start + chunk), BLOCK)",
        "    end = tl.minimum(start + CHUNK, tl.load(sizes + i))",
            *(f"    {var} = tl.load(pointers + i * K + {k}).to(tl.pointer_type({TL_STORAGE[storage[role]]}))"
          for k, (var, role) in enumerate(zip(role_vars, roles))),
        *(f"    A{role_var(role)} = tl.load(pointers + i * K + {len(roles) + q}).to(tl.pointer_type(tl.float32))"
          for q, (role, _) in enumerate(eight_bit)),
        *(f"    k{c} = tl.load(scalars + i * NK + {c})" for c in range(len(columns))),
        "    found = tl.full([BLOCK], 0, tl.int32)",
        "    full = start + (end - start) // BLOCK * BLOCK",
        "    for offset in range(start, full, BLOCK):",
        "        j = tl.max_contiguous(tl.multiple_of(offset + tl.arange(0, BLOCK), BLOCK), BLOCK)",
        *("        " + line for line in full_slices),
        "    if full < end:",
        "        j = full + tl.arange(0, BLOCK)",
        *("        " + line for line in tail),
        "    tl.store(found_flag + 0 * found, found, mask=found > 0)  # every lane that saw one writes the same 1",
    ]
    return "\n".join(lines) + "\n", columns


# --- the per-tensor scalars, on the host ------------------------------------------------------

_NUMPY = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "pow": np.power,
    "neg": np.negative, "abs": np.abs, "sqrt": np.sqrt, "exp": np.exp, "log": np.log,
    "sign": lambda a: np.greater(a, 0) * 1.0 - np.less(a, 0),
    "max": lambda a, b: np.where(np.greater(a, b), a, b), "min": lambda a, b: np.where(np.less(a, b), a, b),
    "gt": lambda a, b: np.greater(a, b) * 1.0, "ge": lambda a, b: np.greater_equal(a, b) * 1.0,
    "where": lambda c, a, b: np.where(np.not_equal(c, 0), a, b), "fma": lambda a, b, c: a * b + c,
}


def scalar_table(segment: Segment, columns: Sequence[Column], steps: Sequence[float],
                 prepared: Sequence[Sequence[float]] | None, hyper: Sequence[float],
                 totals: dict[str, float] | None = None, sizes: Sequence[int] = (),
                 shapes: Sequence[tuple[int, int, int]] = (), real: torch.dtype = torch.float32) -> np.ndarray:
    """``scalars[i, j]``: column ``j`` for tensor ``i`` (float64), from the step counts ``steps``, the
    prepared scalars (``prepared[i]`` in ``segment.scalars`` order), the hyperparameters ``hyper``, the global
    totals and the tensors' sizes (``shapes``: their ``(B, N, M)``, for ``size(x, axis)``; without them a size
    is the element count); ``round`` rounds to ``real``, the kernel's compute type.

    Every scalar node is evaluated once for all tensors (numpy arrays over the tensors), in double
    precision, with the semantics of the C kernel's prologue (``max``/``min`` as ``a > b ? a : b``)."""
    count = len(steps)
    t = np.asarray(steps, dtype=np.float64)
    if count and not segment.scalars and (t == t[0]).all():
        t = t[0]  # the usual case, one t for all: every node once, as a number, broadcast into the table
    extra = np.asarray(prepared, dtype=np.float64).reshape(count, len(segment.scalars)) if segment.scalars else None
    values: dict[int, object] = {}
    with np.errstate(all="ignore"):  # IEEE results (inf, NaN) as in C, no warnings
        for expr in segment.order:
            if not expr.scalar:
                continue
            if expr.op == "const":
                value = expr.args[0]
            elif expr.op == "hyper":
                value = float(hyper[expr.args[0]])
            elif expr.op == "scalar":
                name = expr.args[0]
                if name == "t":
                    value = t
                elif name.startswith("state:"):
                    value = extra[:, segment.scalars.index(name)]
                elif name.startswith("global:"):
                    value = float((totals or {})[name.split(":", 1)[1]])
                elif shapes:  # size:<axes>, the product of those of (B, N, M)
                    dims = [dict(zip("bij", shape)) for shape in shapes]
                    value = np.asarray([math.prod(d[a] for a in name[5:]) for d in dims], dtype=np.float64)
                else:  # size:… of a flat tensor: its number of elements
                    value = np.asarray(sizes, dtype=np.float64)
            elif expr.op == "round":
                narrow = np.float64 if real == torch.float64 else np.float32
                value = np.asarray(values[id(expr.args[0])]).astype(narrow).astype(np.float64)
            else:
                value = _NUMPY[expr.op](*(values[id(a)] for a in operands(expr)))
            values[id(expr)] = value
        table = np.empty((count, len(columns)), dtype=np.float64)
        for j, col in enumerate(columns):
            value = values[id(col.node)]
            table[:, j] = np.divide(1.0, value) if col.reciprocal else value
    return table


# --- building and caching kernels ------------------------------------------------------------


@dataclass
class Kernel:
    """A generated kernel: the jit function, the scalar columns it reads, and where its source lies."""

    segment: Segment  # kept alive, so that the id in the cache key stays its own
    plan: Schedule
    function: object
    columns: list[Column]
    path: Path
    param_dtype: torch.dtype
    state_dtype: torch.dtype
    tried: set  # devices where a trial launch compiled and ran it
    dtypes: dict = field(default_factory=dict)  # the storage of the roles of a matrix step's input and output
    eight_bit: tuple = ()  # the 8-bit roles and whether each is signed

    def dtype(self, role: str) -> torch.dtype:
        return self.param_dtype if role in ("param", "grad") else self.dtypes.get(role, self.state_dtype)


_kernels: dict[tuple, Kernel | None] = {}


def _cache_dir() -> Path:
    folder = build.cache_dir() / "triton"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    except OSError:  # an unwritable cache: a private temporary folder for this process
        global _fallback_dir
        if _fallback_dir is None:
            _fallback_dir = Path(tempfile.mkdtemp(prefix="descend-triton-"))
        return _fallback_dir


_fallback_dir: Path | None = None


def _import(source: str, stem: str) -> tuple[object, Path]:
    """Writes ``source`` to ``<cache>/triton/<stem>-<hash>.py`` (atomically, once) and imports it."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:20]
    path = _cache_dir() / f"{stem}-{digest}.py"
    try:
        current = path.read_text()
    except OSError:
        current = None
    if current != source:
        build.write_atomically(path, source.encode())
    module_name = f"descend_triton_{stem}_{digest}_{'interpreted' if interpreting() else 'compiled'}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module, path


def _unavailable(reason: str) -> None:
    global error
    error = reason
    build.warn_once(reason, "those parameters run the reference path")


def single_pass(variant: Variant) -> bool:
    """One segment, one pass over the elements, no statistic of a tensor."""
    return runs(variant) and len(variant.pieces) == 1


def runs(variant: Variant) -> bool:
    """What the Triton kernels run: segments of one pass over the elements each, no statistic of a tensor, no
    global reduction; between two segments a matrix step (run in torch, as on the CPU)."""
    return (variant.pieces is not None and not variant.globals
            and all(len(s.passes) == 1 and not s.temporaries for s in variant.schedules if s is not None))


def segment_dtypes(variant: Variant, param_dtype: torch.dtype) -> list[dict[str, torch.dtype] | None]:
    """Per piece, the storage of the roles a matrix step hands over: what the segment before it writes (the
    step's ``input_dtype``) and what the segment after it reads (its ``output_dtype``); None for the step."""
    from ..plan.trace import MATRIX_INPUT, MATRIX_OUTPUT

    compute = compute_dtype(param_dtype)
    found: list[dict[str, torch.dtype] | None] = []
    extra: dict[str, torch.dtype] = {}
    for index, piece in enumerate(variant.pieces):
        if not isinstance(piece, Segment):
            extra = {MATRIX_INPUT: piece.output_dtype or piece.input_dtype or compute}
            found.append(None)
            continue
        following = variant.pieces[index + 1] if index + 1 < len(variant.pieces) else None
        if following is not None:
            extra[MATRIX_OUTPUT] = following.input_dtype or compute
        found.append(dict(extra))
    return found


def reason(variant: Variant, param: Tensor, codec: Codec) -> str | None:
    """Why no Triton kernel can update ``param`` (None: one can)."""
    if param.device.type not in DEVICE_TYPES or not available():
        return ("CUDA parameters need triton: pip install 'descend[gpu]'" if not available() else
                f"no kernel runs parameters on {param.device.type}")
    if (param.device.type == "cpu") != interpreting():
        return "compiled Triton kernels take GPU tensors only (the interpreter, CPU ones only)"
    if param.dtype not in TL_DTYPES:
        return f"no Triton kernel takes {param.dtype}"
    if not runs(variant):
        return "the Triton kernels run elementwise segments of one pass each (this chain has statistics of whole " \
               "tensors or a global reduction)"
    if codec.stochastic or (codec.dtype not in TL_DTYPES and not codec.blocks):
        return f"state stored as {codec} is not in the Triton kernels"
    if codec.blocks and (BLOCK % blockwise.BLOCK or BLOCK & (BLOCK - 1)):
        return f"8-bit state needs the Triton kernels' BLOCK ({BLOCK}) a power of two of whole blocks of 256"
    for piece, plan, dtypes in zip(variant.pieces, variant.schedules, segment_dtypes(variant, param.dtype)):
        if dtypes is None:
            continue
        state_dtype, dtypes, eight_bit = storage(variant, piece, codec, dtypes)
        if kernel(piece, plan, param.dtype, state_dtype, param.device if param.device.type != "cpu" else None, dtypes,
                  eight_bit) is None:
            return f"the Triton kernel could not be had: {error}"
    return None


def storage(variant: Variant, piece: Segment, codec: Codec, dtypes: dict | None) -> tuple[torch.dtype, dict, tuple]:
    """A segment's kernel storage under ``codec``: the state dtype, the roles' own dtypes, the 8-bit roles."""
    if not codec.blocks:
        return codec.dtype, dtypes, ()
    specs = variant.spec_of
    eight_bit = tuple((role, specs[role].signed) for role in piece.loads if role in specs and codec.of(specs[role]).blocks)
    return torch.float32, {**(dtypes or {}), **{role: torch.uint8 for role, _ in eight_bit}}, eight_bit


def kernel(segment: Segment, plan: Schedule, param_dtype: torch.dtype, state_dtype: torch.dtype,
           device: torch.device | None = None, dtypes: dict[str, torch.dtype] | None = None,
           eight_bit: tuple = ()) -> Kernel | None:
    """The generated Triton kernel of a single-pass segment for these dtypes (cached per process, and its
    source on disk); None when it cannot be had (``error`` says why; a warning says so once).  With a
    ``device`` other than the CPU, the first call there also compiles and runs it once on scratch tensors,
    so that a kernel that does not compile is refused before any optimizer state has changed."""
    if not available():
        return None
    dtypes = dict(dtypes or {})
    key = (id(plan), param_dtype, state_dtype, tuple(sorted(dtypes.items(), key=str)), interpreting(), eight_bit)
    with _lock:
        if key not in _kernels:
            found = None
            try:
                source, columns = triton_source(segment, plan, param_dtype, state_dtype, dtypes, eight_bit)
                module, path = _import(source, kernel_name(param_dtype, state_dtype))
                found = Kernel(segment, plan, getattr(module, kernel_name(param_dtype, state_dtype)), columns, path,
                               param_dtype, state_dtype, set(), dtypes, eight_bit)
            except Exception as exc:  # noqa: BLE001 - any failure means: no kernel, the reference path runs
                _unavailable(f"could not generate a Triton kernel: {type(exc).__name__}: {exc}")
            _kernels[key] = found
        found = _kernels[key]
        if found is not None and device is not None and device.type != "cpu" and str(device) not in found.tried:
            try:
                _trial(found, device)
                found.tried.add(str(device))
            except Exception as exc:  # noqa: BLE001
                _unavailable(f"the Triton kernel {found.path} failed on {device}: {type(exc).__name__}: {exc}")
                _kernels[key] = found = None
    return found


def _trial(kernel: Kernel, device: torch.device) -> None:
    """One launch on scratch tensors of ``BLOCK + 3`` elements (a full slice and a tail): Triton compiles
    on first launch, so this is where a compiler error shows."""
    roles = kernel.segment.loads
    n = BLOCK if kernel.eight_bit else BLOCK + 3  # (8-bit state: whole blocks)
    tensors = [torch.zeros(n, dtype=kernel.dtype(role), device=device) for role in roles]
    state = dict(zip(roles, tensors))
    state.update({blockwise.scale_key(role): torch.ones(n // blockwise.BLOCK, device=device)
                  for role, _ in kernel.eight_bit})
    prepared = [[1.0] * len(kernel.segment.scalars)] if kernel.segment.scalars else None
    hyper_count = max((e.args[0] + 1 for e in kernel.segment.order if e.op == "hyper"), default=0)
    found = launch(kernel, [state["param"]], [state[kernel.segment.first]], [state], [1.0], prepared,
                   [0.0] * hyper_count, {})
    found.item()  # waits for it: an error in the launch shows here


# --- launching --------------------------------------------------------------------------------

_layouts: OrderedDict = OrderedDict()  # the index tables of recent launches, by addresses and sizes
LAYOUTS_KEPT = 64


def _layout(addresses: list[int], sizes: list[int], roles: int, device: torch.device):
    """``pointers``, ``sizes``, ``chunk_tensor``, ``chunk_start`` on ``device``, and ``ALIGN`` (16 where
    every address is 16-byte aligned, else 1); cached: a training loop updates the same tensors every step,
    so after the first step a launch uploads only its scalars."""
    key = (str(device), tuple(addresses), tuple(sizes), CHUNK)
    found = _layouts.get(key)
    if found is None:
        chunk_tensor, chunk_start = [], []
        for i, size in enumerate(sizes):
            starts = range(0, size, CHUNK)
            chunk_tensor.extend([i] * len(starts))
            chunk_start.extend(starts)
        found = (torch.tensor(addresses, dtype=torch.int64).reshape(len(sizes), roles).to(device),
                 torch.tensor(sizes, dtype=torch.int64).to(device),
                 torch.tensor(chunk_tensor, dtype=torch.int64).to(device),
                 torch.tensor(chunk_start, dtype=torch.int64).to(device),
                 16 if all(address % 16 == 0 for address in addresses) else 1)
        _layouts[key] = found
        if len(_layouts) > LAYOUTS_KEPT:
            _layouts.popitem(last=False)
    else:
        _layouts.move_to_end(key)
    return found


def _to_device(table: np.ndarray, device: torch.device) -> Tensor:
    values = torch.from_numpy(table)
    if device.type == "cpu":
        return values
    return values.pin_memory().to(device, non_blocking=True)  # no host sync: the pinned block is kept until copied


def launch(kernel: Kernel, params: Sequence[Tensor], grads: Sequence[Tensor], states: Sequence[dict],
           steps: Sequence[float], prepared: Sequence[Sequence[float]] | None, hyper: Sequence[float],
           totals: dict[str, float], extra: dict[str, Sequence[Tensor]] | None = None) -> Tensor:
    """Runs ``kernel`` once over all ``params``; returns ``found`` (int32, one element, on their device):
    1 when a gradient held NaN or ±inf.  Reading it is the caller's choice (``found.item()`` syncs).
    ``grads`` are what the segment starts from (the gradients, or a matrix step's results); ``extra`` holds the
    tensors of other roles that are no state (the input of the matrix step that follows)."""
    if CHUNK % BLOCK:
        raise ValueError(f"descend.backends.triton: CHUNK ({CHUNK}) must be a multiple of BLOCK ({BLOCK})")
    roles = kernel.segment.loads
    device = params[0].device
    first, extra = kernel.segment.first, extra or {}
    by_role = [params if role == "param" else grads if role == first else extra[role] if role in extra
               else [state[role] for state in states] for role in roles]
    by_role += [_scales(role, states, params) for role, _ in kernel.eight_bit]
    addresses = [address for row in zip(*([t.data_ptr() for t in tensors] for tensors in by_role))
                 for address in row]  # tensor by tensor, role by role
    sizes = [param.numel() for param in params]
    found = torch.zeros(1, dtype=torch.int32, device=device)
    if not any(sizes):
        return found
    pointers, size_table, chunk_tensor, chunk_start, align = _layout(addresses, sizes, len(by_role), device)
    real = compute_dtype(kernel.param_dtype)
    shapes = [_matrices(param) for param in params]
    table = scalar_table(kernel.segment, kernel.columns, steps, prepared, hyper, totals, sizes, shapes, real)
    if not kernel.columns:
        table = np.zeros((1, 1))
    scalars = _to_device(table.astype(np.float64 if real == torch.float64 else np.float32), device)
    with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():  # triton launches
        kernel.function[(len(chunk_tensor),)](  # on the current device: make it the tensors' one
            pointers, size_table, chunk_tensor, chunk_start, scalars, found, *([_tables(device)] if kernel.eight_bit else []),
            K=len(by_role), NK=max(1, len(kernel.columns)), BLOCK=BLOCK, CHUNK=CHUNK, ALIGN=align,
            num_warps=NUM_WARPS)
    return found


def _scales(role: str, states: Sequence[dict], params: Sequence[Tensor]) -> list[Tensor]:
    """The scales of an 8-bit role, checked: one float32 per block of 256 of its parameter, contiguous, beside it."""
    scales = [state.get(blockwise.scale_key(role)) for state in states]
    for scale, param in zip(scales, params):
        if not isinstance(scale, Tensor) or scale.dtype != torch.float32 or scale.device != param.device or \
                not scale.is_contiguous() or scale.numel() * blockwise.BLOCK != param.numel():
            raise RuntimeError(f"descend: the scales of the 8-bit {role} buffer are not one float32 per block of "
                               f"{blockwise.BLOCK} elements of its parameter (contiguous, on its device); nothing was run")
    return scales


_q8_tables: dict[str, Tensor] = {}


def _tables(device: torch.device) -> Tensor:
    """The 8-bit maps and their boundaries (``Q8_TABLES``), float32 on ``device``."""
    key = str(device)
    if key not in _q8_tables:
        values = []
        for signed in (True, False):
            values += list(blockwise.dynamic_map(signed)) + list(blockwise.decades(signed)["boundaries"])
        _q8_tables[key] = torch.tensor(values, dtype=torch.float32, device=device)
    return _q8_tables[key]


def _matrices(param: Tensor) -> tuple[int, int, int]:
    """``(B, N, M)``: ``param`` as a stack of matrices (a vector is one row), as ``size(x, axis)`` reads it."""
    if param.dim() >= 2:
        return math.prod(param.shape[:-2]), param.shape[-2], param.shape[-1]
    return 1, 1, param.numel()


def update(work) -> Tensor:
    """One step of ``work`` (a ``descend.backends.eager.Work`` routed here: dense, one dtype): one launch per
    segment, and each matrix step in torch between two (on the ``u`` the launch before it wrote, a stack of
    same-shape matrices at a time, as on the CPU); returns the device flag of the first launch, which reads
    the gradients."""
    from ..plan.trace import MATRIX_OUTPUT
    from . import eager

    variant, params = work.variant, work.params
    steps = work.steps if work.steps is not None else [0.0] * len(params)
    matrix_steps = iter(step for step in work.chain if getattr(step, "kind", "") == "matrix")
    first, scratch, flag = work.grads, None, None
    for piece, plan, dtypes in zip(variant.pieces, variant.schedules, segment_dtypes(variant, params[0].dtype)):
        if dtypes is None:
            values = [p.float() if p.dtype in eager.SIXTEEN_BIT else p for p in params]
            first = [u.contiguous() for u in eager._matrix_by_shape(scratch, values, work.states, next(matrix_steps),
                                                                     steps)]
            continue
        state_dtype, dtypes, eight_bit = storage(variant, piece, work.codec, dtypes)
        found = kernel(piece, plan, params[0].dtype, state_dtype, params[0].device, dtypes, eight_bit)
        if found is None:
            raise RuntimeError(f"descend: no Triton kernel for this chain: {error}")
        extra = {}
        if MATRIX_OUTPUT in piece.loads:
            scratch = extra[MATRIX_OUTPUT] = [torch.empty_like(p, dtype=dtypes[MATRIX_OUTPUT],
                                                               memory_format=torch.contiguous_format) for p in params]
        prepared = ([[float(state[name.split(":", 1)[1]]) for name in piece.scalars] for state in work.states]
                    if piece.scalars else None)
        launched = launch(found, params, first, work.states, steps, prepared, work.numbers, work.totals, extra)
        flag = launched if flag is None else flag
    torch.autograd.graph.increment_version(list(params))
    return flag


__all__ = ["available", "interpreting", "kernel", "launch", "reason", "scalar_table", "takes", "triton_source",
           "update"]
