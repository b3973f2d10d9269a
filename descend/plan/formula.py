"""The formula language: a step written once, evaluated four ways.

A step such as ``s ← βs + (1−β)u²`` is plain Python arithmetic in its ``formula`` method (see
``descend.steps``), with the functions below (``sqrt``, ``where``, ``lerp``, ``norm`` ...).  The same
code then runs on

* ``torch.Tensor`` values: the reference path, one parameter at a time;
* ``TensorList`` values: the reference path on lists of parameters, with torch's ``_foreach_*`` ops;
* ``Expr`` values: a trace, an expression graph from which ``descend.backends`` print one fused C
  (OpenMP) or Triton kernel per pass of a whole chain.

Axes.  A traced tensor is seen as a stack of matrices ``(b, i, j)``: ``b`` runs over the leading dims,
``i`` and ``j`` over the last two (a vector is one row: ``j`` alone varies).  Every node records the axes
it varies along: an element of the parameter varies along all three, a row statistic (``mean(x,
axis=-1)``) along ``b, i``, a column statistic along ``b, j``, a per-tensor number (``norm(u)``, a
hyperparameter, ``t``) along none.  A node that varies along none is *scalar*: the kernels compute it once
per tensor, in double precision.  Reductions (``total``, ``norm``, ``amax``, ``mean``) cut a chain into
passes over the data; ``descend.plan.schedule`` decides which pass computes what.

A formula may branch in Python on its structural settings (booleans, ``None``, state keys, and
``param.ndim``), never on a hyperparameter's value or a tensor's: under tracing those are symbols, and
``bool()`` of a symbol raises ``NotTraceable``.  Per-step conditions are written with ``where``.
"""
from __future__ import annotations

import math
import operator
from collections.abc import Callable
from numbers import Real
from typing import Any

import torch
from torch import Tensor


class NotTraceable(TypeError):
    """A formula did something a kernel cannot express (Python control flow on a symbol, an unknown op)."""


ELEMENT = frozenset("bij")
ROWS = frozenset("bi")  # one value per row: a statistic over the last axis
COLS = frozenset("bj")  # one value per column: a statistic over the second-to-last axis
MATRIX = frozenset("b")  # one value per matrix of the stack
SCALAR = frozenset()  # one value per tensor
_ORDER = "bij"


def _ordered(axes: frozenset) -> str:
    return "".join(axis for axis in _ORDER if axis in axes)


# --- the expression graph ------------------------------------------------------------------


class Expr:
    """A node of a traced formula: ``op`` applied to ``args`` (other nodes, or a leaf's name / value).

    Leaves: ``load`` (a tensor role: ``"param"``, ``"grad"``, a state key, a matrix step's output),
    ``hyper`` (the index of a hyperparameter, a double passed per call), ``scalar`` (a per-tensor double:
    ``"t"``, a prepared scalar ``"state:<key>"``, a size ``"size:numel"``, a global total
    ``"global:<i>"``), ``const`` (a number).  Reductions (``sum``, ``max``) carry the axes they reduce
    over as their second argument.
    """

    __slots__ = ("graph", "op", "args", "axes", "__weakref__")
    __array_priority__ = 1000  # numpy scalars defer to our operators

    def __init__(self, graph: Graph, op: str, args: tuple, axes: frozenset):
        self.graph, self.op, self.args, self.axes = graph, op, args, axes

    @property
    def scalar(self) -> bool:
        """True for a per-tensor value (it varies along no axis of the tensor)."""
        return not self.axes

    @property
    def ndim(self) -> int:
        """The parameter's number of dims (a structural setting: a plan is made per ndim when read)."""
        self.graph.reads_ndim = True
        return self.graph.ndim

    def __repr__(self) -> str:
        return f"Expr({self.op}, {self.args}, axes={_ordered(self.axes) or '-'})"

    def __bool__(self):
        raise NotTraceable("a formula branches in Python on a traced value; use descend.steps.where(...)")

    def __hash__(self):
        return id(self)

    # arithmetic: every operator builds a node
    def __add__(self, other): return self.graph.node("add", self, other)
    def __radd__(self, other): return self.graph.node("add", other, self)
    def __sub__(self, other): return self.graph.node("sub", self, other)
    def __rsub__(self, other): return self.graph.node("sub", other, self)
    def __mul__(self, other): return self.graph.node("mul", self, other)
    def __rmul__(self, other): return self.graph.node("mul", other, self)
    def __truediv__(self, other): return self.graph.node("div", self, other)
    def __rtruediv__(self, other): return self.graph.node("div", other, self)
    def __pow__(self, other): return self.graph.power(self, other)
    def __rpow__(self, other): return self.graph.power(other, self)
    def __neg__(self): return self.graph.node("neg", self)
    def __pos__(self): return self
    def __abs__(self): return self.graph.node("abs", self)
    def __gt__(self, other): return self.graph.node("gt", self, other)
    def __lt__(self, other): return self.graph.node("gt", other, self)
    def __ge__(self, other): return self.graph.node("ge", self, other)
    def __le__(self, other): return self.graph.node("ge", other, self)


# op -> number of operands; reductions take one operand and the axes they reduce over
OPS = {
    "add": 2, "sub": 2, "mul": 2, "div": 2, "pow": 2, "neg": 1, "abs": 1, "sqrt": 1, "exp": 1, "log": 1,
    "sign": 1, "max": 2, "min": 2, "gt": 2, "ge": 2, "where": 3, "fma": 3, "sum": 1, "amax": 1, "round": 1,
}
# "round": the value rounded to the kernel's compute type (float32, or float64 for float64 parameters): a
# per-tensor number is computed in double, and where a formula needs it as torch holds it (a float32 weight
# of lerp) it says so; on element values, which are of the compute type already, it changes nothing
REDUCTIONS = frozenset({"sum", "amax"})


class Graph:
    """The nodes of one trace, hash-consed (the same op on the same operands is one node)."""

    def __init__(self, ndim: int = 1):
        self.nodes: dict[tuple, Expr] = {}
        self.ndim = ndim
        self.reads_ndim = False

    def leaf(self, op: str, name: Any, axes: frozenset = SCALAR) -> Expr:
        key = (op, name)
        if key not in self.nodes:
            self.nodes[key] = Expr(self, op, (name,), axes)
        return self.nodes[key]

    def const(self, value: float) -> Expr:
        return self.leaf("const", float(value))

    def node(self, op: str, *args: Any) -> Expr:
        operands = tuple(a if isinstance(a, Expr) else self._wrap(a) for a in args)
        folded = _fold(op, operands)
        if folded is not None:
            return self.const(folded) if not isinstance(folded, Expr) else folded
        key = (op, *(id(a) for a in operands))
        if key not in self.nodes:
            axes = frozenset().union(*(a.axes for a in operands))
            self.nodes[key] = Expr(self, op, operands, axes)
        return self.nodes[key]

    def reduce(self, op: str, operand: Any, over: frozenset) -> Expr:
        """``op`` (``sum`` or ``amax``) of ``operand`` over the axes ``over`` (those it varies along)."""
        operand = operand if isinstance(operand, Expr) else self._wrap(operand)
        over = frozenset(over) & operand.axes
        if not over:
            return operand
        key = (op, id(operand), _ordered(over))
        if key not in self.nodes:
            self.nodes[key] = Expr(self, op, (operand, _ordered(over)), operand.axes - over)
        return self.nodes[key]

    def power(self, base: Any, exponent: Any) -> Expr:
        """``base ** exponent``; a small integer or ½ power of a tensor value is written out (u·u, √u)."""
        if isinstance(exponent, Real) and not isinstance(exponent, bool) and isinstance(base, Expr) \
                and not base.scalar:
            if exponent == 0.5:
                return self.node("sqrt", base)
            if float(exponent).is_integer() and 1 <= exponent <= 4:
                result = base
                for _ in range(int(exponent) - 1):
                    result = self.node("mul", result, base)
                return result
        return self.node("pow", base, exponent)

    def _wrap(self, value: Any) -> Expr:
        if isinstance(value, Tensor) and value.numel() == 1 and not value.requires_grad:
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, Real):
            raise NotTraceable(f"a formula used {type(value).__name__} {value!r} where a number belongs")
        return self.const(float(value))


_FOLD: dict[str, Callable] = {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul, "div": operator.truediv, "pow": operator.pow,
    "neg": operator.neg, "abs": abs, "sqrt": math.sqrt, "max": max, "min": min, "exp": math.exp, "log": math.log,
}


def _fold(op: str, args: tuple[Expr, ...]):
    """Constant folding, and the identities x·1, x/1, x+0, x−0 (so that a default step adds no work)."""
    values = [a.args[0] if a.op == "const" else None for a in args]
    if all(v is not None for v in values) and op in _FOLD:
        try:
            return float(_FOLD[op](*values))
        except (ArithmeticError, ValueError):
            return None
    if op in ("mul", "div") and values[1] == 1.0:
        return args[0]
    if op == "mul" and values[0] == 1.0:
        return args[1]
    if op in ("add", "sub") and values[1] == 0.0:
        return args[0]
    if op == "add" and values[0] == 0.0:
        return args[1]
    return None


def topological(roots) -> list[Expr]:
    """Every node ``roots`` depend on, each after its operands."""
    seen: set[int] = set()
    order: list[Expr] = []
    for root in roots:
        stack = [(root, False)]
        while stack:
            node, done = stack.pop()
            if done:
                order.append(node)
                continue
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.append((node, True))
            stack.extend((arg, False) for arg in reversed(operands(node)) if id(arg) not in seen)
    return order


def operands(node: Expr) -> tuple[Expr, ...]:
    """The nodes ``node`` is computed from (a reduction's axes and a leaf's name are not nodes)."""
    if node.op in ("load", "hyper", "scalar", "const"):
        return ()
    if node.op in REDUCTIONS:
        return (node.args[0],)
    return node.args


# --- lists of tensors: torch's _foreach_* ops ---------------------------------------------------


class TensorList(list):
    """A list of tensors (one device and dtype) whose arithmetic is torch's ``_foreach_*`` ops."""

    def _binary(self, other, foreach: str, scalar_op: Callable, reverse: bool = False):
        if isinstance(other, TensorList):
            return TensorList(getattr(torch, foreach)(other, self) if reverse else getattr(torch, foreach)(self, other))
        if reverse:
            return TensorList([scalar_op(s, t) for s, t in zip(_per_tensor(other, len(self)), self)])
        return TensorList(getattr(torch, foreach)(self, _scalars(other, len(self))))

    def __add__(self, other): return self._binary(other, "_foreach_add", operator.add)
    def __radd__(self, other): return self._binary(other, "_foreach_add", operator.add)
    def __mul__(self, other): return self._binary(other, "_foreach_mul", operator.mul)
    def __rmul__(self, other): return self._binary(other, "_foreach_mul", operator.mul)
    def __truediv__(self, other): return self._binary(other, "_foreach_div", operator.truediv)
    def __rtruediv__(self, other): return self._binary(other, "_foreach_div", operator.truediv, reverse=True)
    def __neg__(self): return TensorList(torch._foreach_neg(self))
    def __pos__(self): return self
    def __abs__(self): return TensorList(torch._foreach_abs(self))

    def __pow__(self, other):
        if isinstance(other, TensorList):
            return TensorList(torch._foreach_pow(self, other))
        return TensorList(torch._foreach_pow(self, _scalars(other, len(self))))

    def __rpow__(self, other):
        return TensorList(operator.pow(o, t) for o, t in zip(_per_tensor(other, len(self)), self))

    def __sub__(self, other):
        if isinstance(other, TensorList):
            return TensorList(torch._foreach_sub(self, other))
        return TensorList(torch._foreach_sub(self, _scalars(other, len(self))))

    def __rsub__(self, other):
        return TensorList(torch._foreach_add(torch._foreach_neg(self), _scalars(other, len(self))))

    def __gt__(self, other): return TensorList(t > o for t, o in zip(self, _per_tensor(other, len(self))))
    def __lt__(self, other): return TensorList(t < o for t, o in zip(self, _per_tensor(other, len(self))))
    def __ge__(self, other): return TensorList(t >= o for t, o in zip(self, _per_tensor(other, len(self))))
    def __le__(self, other): return TensorList(t <= o for t, o in zip(self, _per_tensor(other, len(self))))

    @property
    def ndim(self) -> int:
        dims = {t.dim() for t in self}
        if len(dims) != 1:
            raise ValueError(f"a formula read ndim of a list of tensors of {sorted(dims)} dims")
        return dims.pop()


class ScalarList(list):
    """One float per tensor of a ``TensorList`` (the step count ``t``, a bias correction ...)."""

    def _map(self, other, op, reverse=False):
        if isinstance(other, TensorList):
            return NotImplemented
        others = _per_tensor(other, len(self))
        return ScalarList(op(o, s) if reverse else op(s, o) for s, o in zip(self, others))

    def __add__(self, o): return self._map(o, operator.add)
    def __radd__(self, o): return self._map(o, operator.add, True)
    def __sub__(self, o): return self._map(o, operator.sub)
    def __rsub__(self, o): return self._map(o, operator.sub, True)
    def __mul__(self, o): return self._map(o, operator.mul)
    def __rmul__(self, o): return self._map(o, operator.mul, True)
    def __truediv__(self, o): return self._map(o, operator.truediv)
    def __rtruediv__(self, o): return self._map(o, operator.truediv, True)
    def __pow__(self, o): return self._map(o, operator.pow)
    def __rpow__(self, o): return self._map(o, operator.pow, True)
    def __neg__(self): return ScalarList(-s for s in self)
    def __pos__(self): return self
    def __abs__(self): return ScalarList(abs(s) for s in self)
    def __gt__(self, o): return self._map(o, operator.gt)
    def __lt__(self, o): return self._map(o, operator.lt)
    def __ge__(self, o): return self._map(o, operator.ge)
    def __le__(self, o): return self._map(o, operator.le)


def _per_tensor(value, n: int) -> list:
    return list(value) if isinstance(value, (ScalarList, TensorList)) else [value] * n


def _scalars(value, n: int):
    return list(value) if isinstance(value, ScalarList) else value


def _each(function: Callable, *values):
    """``function`` applied tensor by tensor where any value is a list (a formula's foreach fallback)."""
    n = next(len(v) for v in values if isinstance(v, (TensorList, ScalarList)))
    results = [function(*row) for row in zip(*(_per_tensor(v, n) for v in values))]
    return TensorList(results) if any(isinstance(r, Tensor) for r in results) else ScalarList(results)


# --- the functions a formula may call, for every kind of value ----------------------------


def _apply(name: str, x, tensor_op: Callable, foreach_op: str | None, number_op: Callable):
    if isinstance(x, Expr):
        return x.graph.node(name, x)
    if isinstance(x, TensorList):
        if foreach_op is None:
            return TensorList(tensor_op(t) for t in x)
        return TensorList(getattr(torch, foreach_op)(x))
    if isinstance(x, ScalarList):
        return ScalarList(number_op(s) for s in x)
    if isinstance(x, Tensor):
        return tensor_op(x)
    return number_op(x)


def sqrt(x):
    """``√x``."""
    return _apply("sqrt", x, torch.sqrt, "_foreach_sqrt", math.sqrt)


def exp(x):
    return _apply("exp", x, torch.exp, "_foreach_exp", math.exp)


def log(x):
    return _apply("log", x, torch.log, "_foreach_log", math.log)


def sign(x):
    """``sign(x)`` ∈ {−1, 0, 1} (0 for 0)."""
    return _apply("sign", x, torch.sign, "_foreach_sign", lambda v: float((v > 0) - (v < 0)))


def _pairwise(name: str, a, b, tensor_op: Callable, foreach_op: str, number_op: Callable):
    for x in (a, b):
        if isinstance(x, Expr):
            return x.graph.node(name, a, b)
    if isinstance(a, TensorList) or isinstance(b, TensorList):
        if isinstance(a, TensorList) and isinstance(b, TensorList):
            return TensorList(getattr(torch, foreach_op)(a, b))
        return _each(lambda x, y: _pairwise(name, x, y, tensor_op, foreach_op, number_op), a, b)
    if isinstance(a, ScalarList) or isinstance(b, ScalarList):
        n = len(a) if isinstance(a, ScalarList) else len(b)
        return ScalarList(number_op(x, y) for x, y in zip(_per_tensor(a, n), _per_tensor(b, n)))
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        like = a if isinstance(a, Tensor) and a.dim() else b if isinstance(b, Tensor) else a
        a, b = (x if isinstance(x, Tensor) else torch.as_tensor(x, dtype=like.dtype, device=like.device) for x in (a, b))
        return tensor_op(a, b)
    return number_op(a, b)


def maximum(a, b):
    """Elementwise ``max(a, b)``."""
    return _pairwise("max", a, b, torch.maximum, "_foreach_maximum", max)


def minimum(a, b):
    """Elementwise ``min(a, b)``."""
    return _pairwise("min", a, b, torch.minimum, "_foreach_minimum", min)


def clamp_min(x, low: float):
    """``max(x, low)``."""
    return maximum(x, low)


def where(condition, a, b):
    """``a`` where ``condition`` holds, else ``b`` (a per-element or a per-step condition)."""
    if any(isinstance(x, Expr) for x in (condition, a, b)):
        graph = next(x.graph for x in (condition, a, b) if isinstance(x, Expr))
        return graph.node("where", condition, a, b)
    if isinstance(condition, (bool, int)):
        return a if condition else b
    if isinstance(condition, Tensor):
        if not isinstance(a, Tensor) and not isinstance(b, Tensor):
            like = torch.get_default_dtype() if condition.dim() == 0 else torch.float32
            a, b = torch.as_tensor(a, dtype=like), torch.as_tensor(b, dtype=like)
        return torch.where(condition, a, b)
    n = len(condition)  # a ScalarList or TensorList: one condition per tensor
    picked = [where(c, x, y) for c, x, y in zip(condition, _per_tensor(a, n), _per_tensor(b, n))]
    if all(isinstance(p, Tensor) for p in picked):
        return TensorList(picked)
    if any(isinstance(p, Tensor) for p in picked):  # a scalar in one branch and a tensor in the other
        like = next(p for p in picked if isinstance(p, Tensor))
        return TensorList(p if isinstance(p, Tensor) else torch.full_like(like, p) for p in picked)
    return ScalarList(picked)


def fma(a, b, c):
    """``a·b + c`` rounded once (a fused multiply-add).

    On tensors with a number ``a`` this is ``torch.add(c, b, alpha=a)``, which torch computes as one
    fused multiply-add on the CPU; the kernels call ``fma``.  Where ``a`` is a tensor, the tensor path
    computes it in float64 and rounds once more (equal but for a double rounding, once in ~2²⁹)."""
    if any(isinstance(x, Expr) for x in (a, b, c)):
        graph = next(x.graph for x in (a, b, c) if isinstance(x, Expr))
        return graph.node("fma", a, b, c)
    if any(isinstance(x, (TensorList, ScalarList)) for x in (a, b, c)):
        if isinstance(b, TensorList) and isinstance(c, TensorList) and _is_number(a):
            return TensorList(torch._foreach_add(c, b, alpha=float(a)))
        return _each(fma, a, b, c)
    if isinstance(b, Tensor) and isinstance(c, Tensor) and _is_number(a):
        return torch.add(c, b, alpha=float(a))
    if any(isinstance(x, Tensor) for x in (a, b, c)):
        like = next(x for x in (b, c, a) if isinstance(x, Tensor))
        wide = [x.double() if isinstance(x, Tensor) else x for x in (a, b, c)]
        return (wide[0] * wide[1] + wide[2]).to(like.dtype)
    return a * b + c


def lerp(start, end, weight):
    """``start + weight·(end − start)``, as torch's ``lerp`` rounds it: one fused multiply-add,
    ``fma(w, end−start, start)`` for ``|w| < ½`` and ``fma(w−1, end−start, end)`` otherwise."""
    if any(isinstance(x, Expr) for x in (start, end, weight)):
        graph = next(x.graph for x in (start, end, weight) if isinstance(x, Expr))
        weight = graph.node("round", weight)  # torch takes the weight in the compute type: w − 1 is f32(w) − 1
        difference = end - start
        small = abs(weight) < 0.5
        return where(small, fma(weight, difference, start), fma(weight - 1.0, difference, end))
    if isinstance(start, TensorList) and isinstance(end, TensorList) and _is_number(weight):
        return TensorList(torch._foreach_lerp(start, end, float(weight)))
    if any(isinstance(x, (TensorList, ScalarList)) for x in (start, end, weight)):
        return _each(lerp, start, end, weight)
    if isinstance(start, Tensor) or isinstance(end, Tensor):
        like = start if isinstance(start, Tensor) else end
        start, end = (torch.as_tensor(x, dtype=like.dtype, device=like.device) if not isinstance(x, Tensor) else x
                      for x in (start, end))
        return torch.lerp(start, end, float(weight) if _is_number(weight) else weight)
    return start + weight * (end - start)


def rounded(x, like):
    """The per-tensor number ``x`` rounded to the type ``like`` (the parameter's value) is computed in: float32,
    or float64 for float64 parameters; where torch computes a scalar in a float32 tensor (a tensor lr)."""
    if isinstance(x, Expr) or isinstance(like, Expr):
        graph = next(v.graph for v in (x, like) if isinstance(v, Expr))
        return graph.node("round", x)
    if isinstance(like, TensorList):
        return ScalarList(rounded(v, t) for v, t in zip(_per_tensor(x, len(like)), like))
    if isinstance(x, ScalarList):
        return ScalarList(rounded(v, like) for v in x)
    return float(torch.tensor(float(x), dtype=like.dtype)) if like.dtype != torch.float64 else float(x)


def size(x, axis: int) -> Any:
    """The length of the last (``axis=-1``: a row's) or second-to-last (``axis=-2``: a column's) axis of ``x``,
    a per-tensor number (1 where ``x`` has fewer dims; a vector is one row).  Under FSDP2 it is the whole
    parameter's, not the shard's."""
    if axis not in (-1, -2):
        raise ValueError(f"size: axis must be -1 or -2, got {axis!r}")
    if isinstance(x, Expr):
        return x.graph.leaf("scalar", "size:" + ("j" if axis == -1 else "i"))
    if isinstance(x, TensorList):
        return ScalarList(size(t, axis) for t in x)
    return float(x.shape[axis]) if x.dim() >= -axis else 1.0


def _is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


# --- reductions ---------------------------------------------------------------------------------


def _over(x: Expr, axis) -> frozenset:
    """The axes of node ``x`` that ``axis`` (None: all; -1 and -2 as for a tensor) names."""
    present = _ordered(x.axes)
    if axis is None:
        return x.axes
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    try:
        return frozenset(present[a] for a in axes)
    except IndexError:
        raise NotTraceable(f"a reduction over axis {axis} of a value that varies along {len(present)} axes") from None


def _dims(axis) -> tuple[int, ...] | None:
    if axis is None:
        return None
    return (axis,) if isinstance(axis, int) else tuple(axis)


def total(x, axis=None, keepdim: bool = False):
    """The sum of ``x`` over ``axis`` (None: every element; ``-1``: the last, a row; ``-2``: a column),
    accumulated in float64."""
    if isinstance(x, Expr):
        return x.graph.reduce("sum", x, _over(x, axis))
    if isinstance(x, (TensorList, ScalarList)):
        return _each(lambda v: total(v, axis, keepdim), x)
    if not isinstance(x, Tensor):
        return x
    dims = _dims(axis)
    return x.sum(dtype=torch.float64) if dims is None else x.sum(dim=dims, keepdim=keepdim, dtype=torch.float64)


def mean(x, axis=None, keepdim: bool = False):
    """The mean of ``x`` over ``axis`` (see ``total``)."""
    if isinstance(x, Expr):
        over = _over(x, axis)
        count = x.graph.leaf("scalar", "size:" + _ordered(over))
        return x.graph.reduce("sum", x, over) / count
    if isinstance(x, (TensorList, ScalarList)):
        return _each(lambda v: mean(v, axis, keepdim), x)
    if not isinstance(x, Tensor):
        return x
    dims = _dims(axis)
    count = x.numel() if dims is None else math.prod(x.shape[d] for d in dims)
    return total(x, axis, keepdim) / count


def norm(x):
    """The Euclidean norm ``√Σx²`` of all of ``x`` (float64 accumulation)."""
    return sqrt(total(x * x))


def amax(x):
    """The largest element of ``x``."""
    if isinstance(x, Expr):
        return x.graph.reduce("amax", x, x.axes)
    if isinstance(x, (TensorList, ScalarList)):
        return _each(amax, x)
    if not isinstance(x, Tensor):
        return x
    return x.amax().double() if x.numel() else torch.tensor(-math.inf, dtype=torch.float64)


def per_row(v):
    """A row statistic (one value per row, shape ``[..., n]``) laid beside the rows of an ``n × m`` matrix."""
    if isinstance(v, Expr):
        if not v.axes <= ROWS:
            raise NotTraceable("per_row takes a value with one entry per row (a statistic over axis -1)")
        return v
    if isinstance(v, (TensorList, ScalarList)):
        return _each(per_row, v)
    return v.unsqueeze(-1) if isinstance(v, Tensor) else v


def per_col(v):
    """A column statistic (shape ``[..., m]``) laid beside the columns of an ``n × m`` matrix."""
    if isinstance(v, Expr):
        if not v.axes <= COLS:
            raise NotTraceable("per_col takes a value with one entry per column (a statistic over axis -2)")
        return v
    if isinstance(v, (TensorList, ScalarList)):
        return _each(per_col, v)
    return v.unsqueeze(-2) if isinstance(v, Tensor) else v
