"""Sums of products, regrouped so that a factor known late multiplies a partial sum, not every element.

``Σ_ij x_ij·a_i·c_j`` (``a`` per row, ``c`` per column) is ``Σ_j c_j·(Σ_i x_ij·a_i)``: summed over ``i`` first,
only the factors that vary along ``i`` stay inside; ``c`` multiplies the column sums afterwards.  When ``c``
is known only after a pass over the data (a column statistic) and the rest earlier (Adafactor's clipping
``RMS(u)`` of ``u = g·a_i·c_j·s``), the regrouped sum is accumulated in a pass that sweeps the data anyway,
and the pass that only summed ``u²`` goes.  The schedule (descend.plan.schedule) keeps a regrouping only
where it makes a sum ready earlier.  The order of additions changes (the sum of the same products, grouped
otherwise): the result equals the plain sum to rounding, and is the same bits on every run.
"""
from __future__ import annotations

from collections.abc import Sequence

from .formula import ELEMENT, Expr, operands, topological

ORDERS = ("ijb", "jib")  # the axes summed one at a time, innermost first


def factors(node: Expr) -> list[Expr]:
    """The factors of a product ``node`` (itself if it is no product)."""
    if node.op == "mul":
        return factors(node.args[0]) + factors(node.args[1])
    return [node]


def product(items: Sequence[Expr]) -> Expr:
    """The product of ``items``: the element factors', times the other factors' (one number per row, column,
    matrix or tensor, multiplied together there, once, not per element); a square (every factor twice) as the
    square of its root, as the formula squares ``u`` (``g²·a²`` would underflow float32 where ``g·a`` does not)."""
    counts: dict[int, int] = {}
    for item in items:
        counts[id(item)] = counts.get(id(item), 0) + 1
    if len(items) > 1 and all(count % 2 == 0 for count in counts.values()):
        root, taken = [], {}
        for item in items:
            taken[id(item)] = taken.get(id(item), 0) + 1
            if taken[id(item)] <= counts[id(item)] // 2:
                root.append(item)
        half = product(root)
        return half.graph.node("mul", half, half)
    groups = [_chain([item for item in items if item.axes == ELEMENT]),
              _chain([item for item in items if item.axes != ELEMENT])]
    return _chain([group for group in groups if group is not None])


def _chain(items: Sequence[Expr]) -> Expr | None:
    if not items:
        return None
    result = items[0]
    for item in items[1:]:
        result = result.graph.node("mul", result, item)
    return result


def regrouped(node: Expr, order: str) -> Expr | None:
    """``node``, a sum of a product of elements over some axes, summed one axis at a time in ``order``, each
    sum over only the factors that vary along its axis; None where no factor can leave a sum."""
    if node.op != "sum" or node.args[0].axes != ELEMENT:
        return None
    items = factors(node.args[0])
    if all(item.axes == ELEMENT for item in items):
        return None
    graph = node.graph
    for axis in (a for a in order if a in node.args[1]):
        inside = [item for item in items if axis in item.axes]
        if not inside:
            return None
        outside = [item for item in items if axis not in item.axes]
        items = outside + [graph.reduce("sum", product(inside), frozenset(axis))]
    return product(items)


def substitute(roots: Sequence[Expr], replaced: dict[int, Expr]) -> dict[int, Expr]:
    """Every node of ``roots`` rebuilt with ``replaced`` (id -> new node) in place: id -> its new node."""
    new: dict[int, Expr] = {}
    for node in topological(roots):
        if id(node) in replaced:
            new[id(node)] = replaced[id(node)]
            continue
        args = operands(node)
        if not any(new[id(a)] is not a for a in args):
            new[id(node)] = node
        elif node.op in ("sum", "amax"):
            new[id(node)] = node.graph.reduce(node.op, new[id(args[0])], frozenset(node.args[1]))
        else:
            new[id(node)] = node.graph.node(node.op, *(new[id(a)] for a in args))
    return new
