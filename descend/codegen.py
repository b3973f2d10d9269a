"""One fused kernel for a whole chain, printed from the chain's own formulas.

``trace(chain, maximize)`` runs every step's ``formula`` (``descend.steps.Elementwise``) on symbols
and returns a ``Trace``: one expression graph for the new parameter and each state entry written.  The
numeric attributes of the steps become hyperparameter symbols, so one kernel serves every learning rate;
booleans, keys and ``None`` shape the graph.  ``Plan`` caches the trace of a chain by its structure and
reads the hyperparameter values of a chain in the order the kernel takes them.

``c_source(trace, param_dtype, state_dtype)`` prints the C/OpenMP kernel (compiled by ``descend.native``);
``descend.codegen_triton`` prints the Triton kernel from the same ``Trace``.  Scalar nodes (those that load
no tensor: bias corrections from ``t``, ``−α``) are computed once per tensor in double precision; the loop
over elements computes in float32 (float64 for float64 parameters) and reads and writes each tensor once.
"""
from __future__ import annotations

import copy
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .formula import Expr, Graph, NotTraceable, Trace, TracedState
from .steps import Elementwise, Transform


def _numeric(value: Any) -> bool:
    kind = type(value)
    if kind is float or kind is int:
        return True
    if isinstance(value, Tensor):
        return value.numel() == 1 and not value.is_complex() and value.dtype != torch.bool
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _attributes(step: Transform) -> dict[str, Any]:
    return vars(step) if hasattr(step, "__dict__") else {}


def signature(chain: Sequence[Transform], maximize: bool) -> tuple[tuple, list[float]]:
    """What a kernel is specialised on (hashable): the step types, their formulas (a formula redefined at run
    time makes a new kernel) and their non-numeric settings; and the numeric settings, the hyperparameters
    a kernel takes at run time, in the order ``trace`` made them symbols.  One walk over the chain, per step."""
    key: list = [bool(maximize)]
    values: list[float] = []
    for step in chain:
        kind = type(step)
        settings = []
        for name, value in _attributes(step).items():
            if _numeric(value):
                settings.append(name)
                values.append(float(value))
            elif isinstance(value, (bool, str, type(None), tuple)):
                settings.append((name, value))
            else:
                settings.append((name, repr(value)))
        key.append((kind, getattr(kind, "formula", None), getattr(kind, "prepare", None), tuple(settings)))
    return tuple(key), values


def hyperparameters(chain: Sequence[Transform]) -> list[float]:
    """``signature``'s values alone: the numeric attributes of the steps."""
    return signature(chain, False)[1]


def state_keys(chain: Sequence[Transform]) -> tuple[str, ...]:
    """The state entries the chain's steps keep (tensors, then per-tensor scalars)."""
    probe = torch.empty(2, 2, device="meta")
    return tuple(key for step in chain if step.stateful for key in step.state_keys(probe)) + tuple(
        key for step in chain for key in getattr(step, "scalar_state", ()))


def trace(chain: Sequence[Transform], maximize: bool, state_keys: Sequence[str] = ()) -> Trace:
    """The chain as one expression graph; raises ``NotTraceable`` naming the step that cannot be traced.

    ``state_keys`` are the entries the chain's steps keep (for the check that every entry a formula reads
    is kept by some step)."""
    graph = Graph()
    scalar_keys = [key for step in chain for key in getattr(step, "scalar_state", ())]
    state = TracedState(graph, scalar_keys)
    u = graph.leaf("load", "grad")
    if maximize:
        u = -u
    param = graph.leaf("load", "param")
    t = graph.leaf("scalar", "t")
    for index, step in enumerate(chain):
        name = type(step).__name__
        if not isinstance(step, Elementwise):
            raise NotTraceable(f"{name} is not elementwise (it has no formula)")
        symbolic = copy.copy(step)
        for field, value in _attributes(step).items():
            if _numeric(value):
                graph.hypers.append((index, field, float(value)))
                object.__setattr__(symbolic, field, graph.leaf("hyper", len(graph.hypers) - 1))
        try:
            u = symbolic.formula(u, param, state, t)
        except NotTraceable as error:
            raise NotTraceable(f"{name}: {error}") from None
        except Exception as error:  # an op the tracer does not know, a tensor method on a symbol, ...
            raise NotTraceable(f"{name}: {type(error).__name__}: {error}") from None
        if not isinstance(u, Expr):
            u = graph._wrap(u)
    known = set(state_keys)
    if known:
        unknown = sorted({e.args[0] for e in graph.nodes.values() if e.op == "load"} - known - {"param", "grad"})
        if unknown:
            raise NotTraceable(f"the chain reads state {unknown} that none of its steps keeps")
    return Trace(graph, param + u, dict(state.stored), sorted(scalar_keys))


@dataclass
class Plan:
    """A chain's trace (or why there is none), cached by the chain's structure."""

    trace: Trace | None
    reason: str | None


_plans: dict[tuple, Plan] = {}


def plan(chain: Sequence[Transform], maximize: bool, keys: Sequence[str] | None = None) -> Plan:
    """The chain's cached ``Plan`` (see ``lookup``)."""
    return lookup(chain, maximize, keys)[0]


def lookup(chain: Sequence[Transform], maximize: bool, keys: Sequence[str] | None = None) -> tuple[Plan, list[float]]:
    """The chain's ``Plan``, traced on first sight of its structure and cached, and its hyperparameter values.
    ``keys``: the state entries the chain keeps (``state_keys(chain)`` when not given)."""
    key, values = signature(chain, maximize)
    found = _plans.get(key)
    if found is None:
        try:
            found = Plan(trace(chain, maximize, state_keys(chain) if keys is None else keys), None)
        except NotTraceable as error:
            found = Plan(None, str(error))
        _plans[key] = found
    return found, values


# --- C ---------------------------------------------------------------------------------------

C_STORAGE = {torch.float32: "float", torch.float64: "double", torch.bfloat16: "uint16_t", torch.float16: "_Float16"}
C_LOAD = {torch.float32: "{}", torch.float64: "{}", torch.bfloat16: "bf16_to_f32({})", torch.float16: "(float){}"}
C_STORE = {torch.float32: "(float)({})", torch.float64: "(double)({})", torch.bfloat16: "f32_to_bf16({})",
           torch.float16: "(_Float16)({})"}
DTYPE_NAMES = {torch.float32: "f32", torch.float64: "f64", torch.bfloat16: "bf16", torch.float16: "f16"}


def compute_dtype(param_dtype: torch.dtype) -> torch.dtype:
    """float64 parameters compute in double, everything else in float32."""
    return torch.float64 if param_dtype == torch.float64 else torch.float32


def _c_number(value: float) -> str:
    if math.isnan(value):
        return "NAN"
    if math.isinf(value):
        return "INFINITY" if value > 0 else "(-INFINITY)"
    return repr(float(value))


def _c_op(op: str, args: list[str], real: str) -> str:
    f = "f" if real == "float" else ""
    if op in ("add", "sub", "mul", "div"):
        return f"({args[0]} {dict(add='+', sub='-', mul='*', div='/')[op]} {args[1]})"
    table = {
        "neg": "(-{0})", "abs": f"fabs{f}({{0}})", "sqrt": f"sqrt{f}({{0}})", "exp": f"exp{f}({{0}})",
        "log": f"log{f}({{0}})", "pow": f"pow{f}({{0}}, {{1}})",
        "sign": f"(({real})(({{0}}) > 0) - ({real})(({{0}}) < 0))",
        "max": "({0} > {1} ? {0} : {1})", "min": "({0} < {1} ? {0} : {1})",
        "gt": f"(({real})({{0}} > {{1}}))", "ge": f"(({real})({{0}} >= {{1}}))",
        "where": "({0} != 0 ? {1} : {2})",
    }
    return table[op].format(*args)


def kernel_name(trace: Trace, param_dtype: torch.dtype, state_dtype: torch.dtype) -> str:
    return f"chain_{DTYPE_NAMES[param_dtype]}_{DTYPE_NAMES[state_dtype]}"


def c_source(trace: Trace, param_dtype: torch.dtype, state_dtype: torch.dtype) -> str:
    """The C kernel of ``trace`` for parameters (and gradients) of ``param_dtype`` and state of
    ``state_dtype``: ``int chain_<p>_<s>(int nt, void **ptrs, const int64_t *n, const double *steps,
    const double *scalars, const double *hyper, int threads)``, which updates ``nt`` tensors
    (``ptrs[i*K + k]`` is the k-th tensor role of tensor i, in ``trace.loads`` order), and returns 1 when
    every gradient it read was finite."""
    real = "double" if compute_dtype(param_dtype) == torch.float64 else "float"
    roles = trace.loads
    names: dict[int, str] = {}
    prologue: list[str] = []
    body: list[str] = []
    written = {name for name, _ in trace.outputs}

    def storage(role: str) -> torch.dtype:
        return param_dtype if role in ("param", "grad") else state_dtype

    casts: list[str] = []
    cast_names: dict[str, str] = {}  # a scalar a vector node uses, converted to the compute type once per tensor

    def cast(double_value: str) -> str:
        if double_value not in cast_names:
            cast_names[double_value] = f"k{len(cast_names)}"
            casts.append(f"const {real} {cast_names[double_value]} = ({real})({double_value});")
        return cast_names[double_value]

    def operand(expr: Expr) -> str:
        return cast(names[id(expr)]) if expr.scalar else names[id(expr)]

    for index, expr in enumerate(trace.order):
        var = f"x{index}"
        if expr.op == "const":
            names[id(expr)] = _c_number(expr.args[0])
        elif expr.op == "hyper":
            names[id(expr)] = f"hyper[{expr.args[0]}]"
        elif expr.op == "scalar":
            name = expr.args[0]
            names[id(expr)] = "t" if name == "t" else \
                f"scalars[i * {len(trace.scalars)} + {trace.scalars.index(name.split(':', 1)[1])}]"
        elif expr.op == "load":
            role = expr.args[0]
            body.append(f"const {real} {var} = {C_LOAD[storage(role)].format(f'{_role_var(role)}[j]')};")
            names[id(expr)] = var
        elif expr.scalar:  # once per tensor, in double
            prologue.append(f"const double {var} = {_c_op(expr.op, [names[id(a)] for a in expr.args], 'double')};")
            names[id(expr)] = var
        elif expr.op == "div" and expr.args[1].scalar:  # x / s = x · (1/s), the reciprocal once per tensor
            prologue.append(f"const double {var}r = 1.0 / {names[id(expr.args[1])]};")
            names[f"{var}r"] = f"{var}r"
            reciprocal = cast(f"{var}r")
            body.append(f"const {real} {var} = ({operand(expr.args[0])} * {reciprocal});")
            names[id(expr)] = var
        else:
            body.append(f"const {real} {var} = {_c_op(expr.op, [operand(a) for a in expr.args], real)};")
            names[id(expr)] = var
    stores = []
    for role, expr in trace.outputs:
        value = operand(expr)
        if role != "param" and state_dtype == torch.bfloat16:  # unbiased: see steps.store_state
            seed = f"seed_{_role_var(role)}"
            prologue.append(f"const uint32_t {seed} = sr_seed({zlib.crc32(role.encode())}u, t);")
            stores.append(f"{_role_var(role)}[j] = f32_to_bf16_stochastic({value}, sr_bits(j, {seed}));")
        else:
            stores.append(f"{_role_var(role)}[j] = {C_STORE[storage(role)].format(value)};")
    pointers = []
    for k, role in enumerate(roles):
        const = "" if role in written else "const "
        pointers.append(f"{const}{C_STORAGE[storage(role)]} *restrict {_role_var(role)} = "
                        f"({const}{C_STORAGE[storage(role)]} *)ptrs[i * {len(roles)} + {k}];")
    grad = _role_var("grad")
    check = (f"found |= nonfinite_{'f64' if real == 'double' else 'f32'}"
             f"(({real}){C_LOAD[param_dtype].format(f'{grad}[j]')});")
    name = kernel_name(trace, param_dtype, state_dtype)
    lines = [
        f"/* roles: {', '.join(roles)}; hyperparameters: "
        f"{', '.join(f'{i}:{f}' for i, (_, f, _) in enumerate(trace.graph.hypers))} */",
        f"int {name}(int nt, void *const *ptrs, const int64_t *n, const double *steps, const double *scalars,",
        "           const double *hyper, int threads) {",
        "  int bad = 0;",
        "  FOR_EACH_SLICE(nt, n, threads, {",
        *("    " + line for line in pointers),
        "    const double t = steps[i];",
        "    (void)t; (void)scalars; (void)hyper;",
        *("    " + line for line in prologue),
        *("    " + line for line in casts),
        "    uint32_t found = 0;",
        "    for (int64_t j = lo; j < hi; j++) {",
        f"      {check}",
        *("      " + line for line in body),
        *("      " + line for line in stores),
        "    }",
        "    REPORT(found);",
        "  });",
        "  return !bad;",
        "}",
    ]
    return '#include "_prelude.h"\n\n' + "\n".join(lines) + "\n"


def _role_var(role: str) -> str:
    return {"param": "P", "grad": "G"}.get(role, "S_" + "".join(c if c.isalnum() else "_" for c in role))


__all__ = ["Plan", "c_source", "hyperparameters", "lookup", "plan", "signature", "state_keys", "trace"]
