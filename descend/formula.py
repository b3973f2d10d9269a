"""Elementwise step formulas: written once, evaluated three ways.

A step such as ``s ← βs + (1−β)u²`` is written as plain Python arithmetic in its ``formula`` method
(see ``descend.steps.Elementwise``) with the functions below (``sqrt``, ``maximum``, ``where`` ...).
The same code then runs on

* ``torch.Tensor`` values: the reference path, one parameter at a time;
* ``TensorList`` values: the reference path on lists of parameters, with torch's ``_foreach_*`` ops;
* ``Expr`` values: a trace, a small expression graph from which ``descend.codegen`` prints one fused C
  (OpenMP) or Triton kernel for a whole chain.

A formula may branch in Python on its structural settings (booleans, ``None``, state keys), never on a
hyperparameter's value or a tensor's: under tracing those are symbols, and ``bool()`` of a symbol raises
``NotTraceable`` (the chain then runs on the reference path).  Per-step conditions are written with
``where(condition, a, b)``.
"""
from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor


class NotTraceable(TypeError):
    """A formula did something a kernel cannot express (Python control flow on a symbol, an unknown op)."""


# --- the expression graph ------------------------------------------------------------------


class Expr:
    """A node of a traced formula: ``op`` applied to ``args`` (other nodes, or a leaf's name / value).

    Leaves: ``load`` (a tensor role: ``"param"``, ``"grad"`` or a state key), ``hyper`` (the index of a
    hyperparameter, a double passed per call), ``scalar`` (a per-tensor double: ``"t"`` or a prepared
    scalar), ``const`` (a number).  A node that loads no tensor is *scalar*: the kernels compute it once
    per tensor, in double precision, before the loop over elements.
    """

    __slots__ = ("graph", "op", "args", "scalar", "__weakref__")
    __array_priority__ = 1000  # numpy scalars defer to our operators

    def __init__(self, graph: Graph, op: str, args: tuple, scalar: bool):
        self.graph, self.op, self.args, self.scalar = graph, op, args, scalar

    def __repr__(self) -> str:
        return f"Expr({self.op}, {self.args})"

    def __bool__(self):
        raise NotTraceable("a formula branches in Python on a traced value; use descend.formula.where(...)")

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
    def __pow__(self, other): return self.graph.node("pow", self, other)
    def __rpow__(self, other): return self.graph.node("pow", other, self)
    def __neg__(self): return self.graph.node("neg", self)
    def __abs__(self): return self.graph.node("abs", self)
    def __gt__(self, other): return self.graph.node("gt", self, other)
    def __lt__(self, other): return self.graph.node("gt", other, self)
    def __ge__(self, other): return self.graph.node("ge", self, other)
    def __le__(self, other): return self.graph.node("ge", other, self)


# op -> (number of args, whether it may take a vector operand)
OPS = {
    "add": 2, "sub": 2, "mul": 2, "div": 2, "pow": 2, "neg": 1, "abs": 1, "sqrt": 1, "exp": 1, "log": 1,
    "sign": 1, "max": 2, "min": 2, "gt": 2, "ge": 2, "where": 3,
}


class Graph:
    """The nodes of one trace, hash-consed (the same op on the same operands is one node)."""

    def __init__(self):
        self.nodes: dict[tuple, Expr] = {}
        self.hypers: list[tuple[int, str, float]] = []  # (step index, field, value at trace time)

    def leaf(self, op: str, name: Any) -> Expr:
        key = (op, name)
        if key not in self.nodes:
            self.nodes[key] = Expr(self, op, (name,), op != "load")
        return self.nodes[key]

    def const(self, value: float) -> Expr:
        return self.leaf("const", float(value))

    def node(self, op: str, *args: Any) -> Expr:
        operands = tuple(a if isinstance(a, Expr) else self._wrap(a) for a in args)
        if op == "pow" and not all(a.scalar for a in operands):
            raise NotTraceable("** takes scalars only (write u*u for a square)")
        folded = _fold(op, operands)
        if folded is not None:
            return self.const(folded) if not isinstance(folded, Expr) else folded
        key = (op, *(id(a) for a in operands))
        if key not in self.nodes:
            self.nodes[key] = Expr(self, op, operands, all(a.scalar for a in operands))
        return self.nodes[key]

    def _wrap(self, value: Any) -> Expr:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise NotTraceable(f"a formula used {type(value).__name__} {value!r} where a number belongs")
        return self.const(value)


_FOLD: dict[str, Callable] = {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul, "div": operator.truediv, "pow": operator.pow,
    "neg": operator.neg, "abs": abs, "sqrt": math.sqrt, "max": max, "min": min,
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


# --- the functions a formula may call, for every kind of value ----------------------------


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
    def __abs__(self): return TensorList(torch._foreach_abs(self))

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


class ScalarList(list):
    """One float per tensor of a ``TensorList`` (the step count ``t``, a bias correction ...)."""

    def _map(self, other, op, reverse=False):
        others = _per_tensor(other, len(self))
        if isinstance(other, TensorList):
            return NotImplemented
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
    def __abs__(self): return ScalarList(abs(s) for s in self)
    def __gt__(self, o): return self._map(o, operator.gt)
    def __lt__(self, o): return self._map(o, operator.lt)
    def __ge__(self, o): return self._map(o, operator.ge)
    def __le__(self, o): return self._map(o, operator.le)


def _per_tensor(value, n: int) -> list:
    return list(value) if isinstance(value, (ScalarList, TensorList)) else [value] * n


def _scalars(value, n: int):
    return list(value) if isinstance(value, ScalarList) else value


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
    for x, y in ((a, b), (b, a)):
        if isinstance(x, Expr):
            return x.graph.node(name, a, b)
    if isinstance(a, TensorList) or isinstance(b, TensorList):
        if isinstance(a, TensorList) and isinstance(b, TensorList):
            return TensorList(getattr(torch, foreach_op)(a, b))
        tensors, other = (a, b) if isinstance(a, TensorList) else (b, a)
        return TensorList(tensor_op(t, torch.as_tensor(o, dtype=t.dtype, device=t.device) if not isinstance(o, Tensor)
                                    else o) for t, o in zip(tensors, _per_tensor(other, len(tensors))))
    if isinstance(a, ScalarList) or isinstance(b, ScalarList):
        n = len(a) if isinstance(a, ScalarList) else len(b)
        return ScalarList(number_op(x, y) for x, y in zip(_per_tensor(a, n), _per_tensor(b, n)))
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        like = a if isinstance(a, Tensor) else b
        a, b = (x if isinstance(x, Tensor) else torch.as_tensor(x, dtype=like.dtype, device=like.device) for x in (a, b))
        return tensor_op(a, b)
    return number_op(a, b)


def maximum(a, b):
    """Elementwise ``max(a, b)``."""
    return _pairwise("max", a, b, torch.maximum, "_foreach_maximum", max)


def minimum(a, b):
    """Elementwise ``min(a, b)``."""
    return _pairwise("min", a, b, torch.minimum, "_foreach_minimum", min)


def where(condition, a, b):
    """``a`` where ``condition`` holds, else ``b`` (a per-element or a per-step condition)."""
    if any(isinstance(x, Expr) for x in (condition, a, b)):
        graph = next(x.graph for x in (condition, a, b) if isinstance(x, Expr))
        return graph.node("where", condition, a, b)
    if isinstance(condition, (bool, int)):
        return a if condition else b
    if isinstance(condition, Tensor):
        return torch.where(condition, a, b)
    n = len(condition)  # a ScalarList or TensorList: one condition per tensor
    picked = [where(c, x, y) for c, x, y in zip(condition, _per_tensor(a, n), _per_tensor(b, n))]
    if all(isinstance(p, Tensor) for p in picked):
        return TensorList(picked)
    if any(isinstance(p, Tensor) for p in picked):  # a scalar in one branch and a tensor in the other
        like = next(p for p in picked if isinstance(p, Tensor))
        return TensorList(p if isinstance(p, Tensor) else torch.full_like(like, p) for p in picked)
    return ScalarList(picked)


def clamp_min(x, low: float):
    """``max(x, low)``."""
    return maximum(x, low)


# --- a traced chain ------------------------------------------------------------------------


class TracedState(dict):
    """The parameter's state while a chain is traced: reading a key loads it (once), assigning stores it."""

    def __init__(self, graph: Graph, scalar_keys: Sequence[str]):
        super().__init__()
        self.graph, self.scalar_keys = graph, set(scalar_keys)
        self.stored: dict[str, Expr] = {}

    def __missing__(self, key: str) -> Expr:
        value = self.graph.leaf("scalar", f"state:{key}") if key in self.scalar_keys else self.graph.leaf("load", key)
        super().__setitem__(key, value)
        return value

    def __setitem__(self, key: str, value) -> None:
        if key in self.scalar_keys:
            raise NotTraceable(f"scalar state {key!r} is written in prepare(), not in formula()")
        value = value if isinstance(value, Expr) else self.graph._wrap(value)
        super().__setitem__(key, value)
        self.stored[key] = value


class Trace:
    """A chain traced into one graph: what it loads, what it stores, and the hyperparameters it reads."""

    def __init__(self, graph: Graph, update: Expr, stored: dict[str, Expr], scalars: list[str]):
        self.graph, self.update, self.stored, self.scalars = graph, update, stored, scalars
        # the outputs: the new parameter, then each state entry written, in a fixed order
        self.outputs: list[tuple[str, Expr]] = [("param", update)] + sorted(stored.items())
        self.order = _topological(e for _, e in self.outputs)
        self.loads = sorted({e.args[0] for e in self.order if e.op == "load"} | {"param", "grad"},
                            key=lambda name: (name not in ("param", "grad"), name != "param", name))
        self.hyper_count = len(graph.hypers)


def _topological(roots) -> list[Expr]:
    seen: set[int] = set()
    order: list[Expr] = []

    def visit(expr: Expr):
        stack = [(expr, False)]
        while stack:
            node, done = stack.pop()
            if done:
                order.append(node)
                continue
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.append((node, True))
            if node.op not in ("load", "hyper", "scalar", "const"):
                stack.extend((arg, False) for arg in reversed(node.args) if id(arg) not in seen)

    for root in roots:
        visit(root)
    return order
