"""Which pass over the data computes what: the schedule of one traced segment.

An elementwise chain is one pass: every element is read once, computed, and written once.  A statistic of
a whole tensor (``norm(u)``, a row mean) is known only after a pass over it, so a node that reads one can be
computed only in a later pass.  The schedule alternates *between-phases* ``B₀, B₁, …`` (work on per-tensor
numbers and on row / column / per-matrix vectors, into small temporaries) and *passes* ``P₀, P₁, …`` (a sweep
over the elements):

    B₀  P₀  B₁  P₁  …  B_F  P_F

A node is *ready* at phase k when everything it reads is: leaves at 0; an element-wide reduction one
phase after its operand (it is accumulated during the pass of its operand's phase); any other node at the
latest of its operands.  A pass recomputes the elementwise prefix it needs instead of storing it: the
kernels write state and the parameter only in the final pass ``P_F``, so a pass before it only reads; except
that state whose new value an earlier pass can compute, and which is stored without rounding, may be written
by that pass and loaded by the later ones (``schedule(..., early=...)``: LAMB's moments are written in the
pass that takes the norms, and the update pass reads them instead of the gradient).
Element nodes are computed in the passes; scalar nodes that read only leaves in each pass's per-tensor
prologue (as a single-pass kernel does); every other non-element node in a between-phase, into a
temporary.  Vector state (Adafactor's row and column statistics) is written from its temporary at the end.

With ``tails`` (the C kernels, which walk a factored tensor row by row), a row's own reductions are known
as soon as the pass has walked the row: what reads only them, per row or per element of that row, is
computed in the same pass, in a second walk over the row (the pass's *tail*) while the row is in the
cache, instead of in a later pass.  Readiness then counts *sweeps*: sweep 2k is pass k's walk, 2k+1 its
tail.  And a sum of a product is regrouped where that makes it ready earlier (descend.plan.distribute):
Adafactor's ``Σu²`` (``u = g·a_i·c_j·s``) becomes ``s²·Σ_j c_j²·Σ_i g²a_i²``, whose column sums the first
pass's tail accumulates, so that its clipping needs no pass of its own.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from . import distribute
from .formula import ELEMENT, REDUCTIONS, ROWS, SCALAR, Expr, operands, topological


@dataclass
class Pass:
    """A sweep over the elements: ``elements`` computed per element (in order), ``reductions`` accumulated,
    ``stores`` written (the final pass only), ``prologue`` the leaf-only scalars computed per tensor;
    ``row_nodes`` the per-row values computed at the end of each row (from its reductions), and ``tail`` the
    second walk over the row that reads them (a Pass itself), where the schedule has them."""

    index: int
    elements: list[Expr] = field(default_factory=list)
    reductions: list[Expr] = field(default_factory=list)
    stores: list[tuple[str, Expr]] = field(default_factory=list)
    prologue: list[Expr] = field(default_factory=list)
    operands: list[Expr] = field(default_factory=list)  # every non-element value the pass reads
    reloads: dict[int, str] = field(default_factory=dict)  # id(node) -> the role an earlier pass stored it in
    row_nodes: list[Expr] = field(default_factory=list)
    tail: Pass | None = None


@dataclass
class Between:
    """Work on per-tensor numbers and vectors, in order, into temporaries."""

    index: int
    nodes: list[Expr] = field(default_factory=list)


@dataclass
class Schedule:
    """The phases of one segment's program, in order; ``temporaries`` are the nodes held between phases
    (reduction results and every non-element node a between-phase computes); ``vector_stores`` the state
    written from a temporary at the end; ``results`` per-tensor values the program returns."""

    phases: list
    temporaries: list[Expr]
    vector_stores: list[tuple[str, Expr]]
    results: list[Expr]
    factored: bool  # whether any node varies along rows or columns (the kernels then walk row by row)
    order: list[Expr] = field(default_factory=list)  # every node, operands first (regrouped sums included)

    @property
    def passes(self) -> list[Pass]:
        return [phase for phase in self.phases if isinstance(phase, Pass)]


def is_element(node: Expr) -> bool:
    return node.axes == ELEMENT


def _element_reduction(node: Expr) -> bool:
    return node.op in REDUCTIONS and is_element(node.args[0])


def readiness(roots: Sequence[Expr], tails: bool = False) -> dict[int, int]:
    """``ready[id(node)]``, the sweep that can compute it (``// 2``: its pass or between-phase), for every node
    the roots depend on."""
    ready: dict[int, int] = {}
    for node in topological(roots):
        if node.op in ("load", "hyper", "scalar", "const"):
            ready[id(node)] = 0
        elif _element_reduction(node):
            at = ready[id(node.args[0])]
            row_local = tails and at % 2 == 0 and node.axes == ROWS  # a row's sum, known when its walk ends
            ready[id(node)] = at + 1 if row_local else at // 2 * 2 + 2
        else:
            at = max(ready[id(a)] for a in operands(node))
            # in a tail only rows and their elements: a statistic of all rows waits for the next between-phase
            ready[id(node)] = at + 1 if at % 2 and not is_element(node) and node.axes != ROWS else at
    return ready


def _regroup(stores, results):
    """``stores`` and ``results`` with every sum of a product that regrouping makes ready earlier regrouped."""
    roots = [node for _, node in stores] + list(results)
    ready = readiness(roots, tails=True)
    replaced: dict[int, Expr] = {}
    for node in topological(roots):
        best = ready[id(node)]
        for order in distribute.ORDERS:
            candidate = distribute.regrouped(node, order)
            at = readiness([candidate], tails=True)[id(candidate)] if candidate is not None else best
            if at < best:
                replaced[id(node)], best = candidate, at
    if not replaced:
        return stores, results
    new = distribute.substitute(roots, replaced)
    return [(role, new[id(node)]) for role, node in stores], [new[id(node)] for node in results]


def _split_matrix_sums(roots: Sequence[Expr]) -> None:
    """A sum of elements over a matrix's rows and columns at once becomes the sum over ``i`` of row sums (the
    kernels accumulate row sums in a pass; the rest is vector work)."""
    for node in topological(roots):
        if node.op == "sum" and is_element(node.args[0]) and node.axes and set(node.args[1]) == {"i", "j"}:
            graph = node.graph
            rows = graph.reduce("sum", node.args[0], frozenset("j"))
            node.args = (rows, "i")


def _reads_shape(node: Expr) -> bool:
    """A size leaf other than the element count (``size(x, -1)``, a row's length): the kernels then see the
    tensor as a stack of matrices, not as one flat row."""
    return node.op == "scalar" and node.args[0].startswith("size:") and set(node.args[0][5:]) not in (set(), set("bij"))


def schedule(stores: Sequence[tuple[str, Expr]], results: Sequence[Expr] = (), role_axes: dict | None = None,
             early: frozenset = frozenset(), tails: bool = False) -> Schedule:
    """The schedule that writes ``stores`` (``(role, node)``: the parameter, state entries; ``role_axes``
    tells which roles are vectors) and computes ``results`` (per-tensor scalars, e.g. a global reduction's
    contributions).

    ``early`` names state roles that may be written in the first pass that can compute their new value,
    when that pass sweeps the data anyway (it accumulates a reduction) and no later pass reads their old
    value: the later passes then load the new value instead of recomputing it (and read no input it needed).
    The caller names only roles stored exactly as computed (no rounding), so the numbers do not change.

    ``tails``: passes may walk each row twice (see the module's docstring), and sums are regrouped where that
    makes them ready earlier."""
    roots = [node for _, node in stores] + list(results)
    _split_matrix_sums(roots)
    if tails:
        stores, results = _regroup(stores, results)
        roots = [node for _, node in stores] + list(results)
    ready = readiness(roots, tails)
    element_stores = [(role, node) for role, node in stores if (role_axes or {}).get(role, ELEMENT) == ELEMENT]
    final = max([ready[id(node)] for _, node in element_stores], default=-1)
    found = _phases(stores, results, role_axes, ready, {})
    sweeps = sorted(k for k, step in found[0].items() if step.reductions)
    stored_at = {}  # id(node) -> (role, the pass that stores it)
    for role, node in element_stores:
        if role in early and node.op != "load" and ready[id(node)] < final:
            sweep = next((k for k in sweeps if ready[id(node)] <= k < final), None)
            if sweep is not None:
                stored_at[id(node)] = (role, sweep)
    loads = [node for node in topological(roots) if node.op == "load"]
    while stored_at:  # drop a role whose old value a later pass still reads, until none does
        found = _phases(stores, results, role_axes, ready, stored_at)
        needed = found[1]
        stale = [key for key, (role, k) in stored_at.items()
                 if any(node.args[0] == role and id(node) in needed[later]
                        for later in range(k + 1, len(needed)) for node in loads)]
        if not stale:
            break
        for key in stale:
            del stored_at[key]
    if not stored_at:
        found = _phases(stores, results, role_axes, ready, {})
    return found[2]


def _phases(stores, results, role_axes, ready, stored_at):
    """The passes (by index), what each pass computes per element (ids), and the ``Schedule``; a node in
    ``stored_at`` is stored by the pass it names and loaded, not computed, by the passes after it."""
    roots = [node for _, node in stores] + list(results)
    order = topological(roots)
    role_axes = role_axes or {}
    element_stores = [(role, node) for role, node in stores if role_axes.get(role, ELEMENT) == ELEMENT]
    vector_stores = [(role, node) for role, node in stores if role_axes.get(role, ELEMENT) != ELEMENT]
    final = max([ready[id(node)] for _, node in element_stores], default=-1)
    last_between = max([ready[id(node)] for node in roots], default=0)
    sweep_count = max(final + 1, last_between + 1) // 2 * 2 + 2  # whole passes, each a walk and a tail

    # what each sweep must compute: walk back from the roots, sweep by sweep (2k: pass k's walk, 2k+1: its tail)
    passes = {k: Pass(k // 2) for k in range(sweep_count)}
    betweens = {k: Between(k // 2) for k in range(sweep_count)}  # (odd k: the row nodes of pass k // 2)
    element_needed: dict[int, set[int]] = {k: set() for k in range(sweep_count)}
    reloaded: dict[int, dict[int, str]] = {k: {} for k in range(sweep_count)}
    temporaries: dict[int, Expr] = {}
    scheduled: set[int] = set()

    def prologue_scalar(node: Expr) -> bool:
        """A per-tensor number that reads leaves only: each pass computes it in its prologue."""
        return node.scalar and ready[id(node)] == 0 and node.op not in ("load",) and not any(
            a.op in REDUCTIONS for a in topological([node]))

    def need_element(node: Expr, k: int) -> None:
        """``node`` (and what it reads) computed inside pass ``k``."""
        stack = [node]
        while stack:
            item = stack.pop()
            if id(item) in element_needed[k]:
                continue
            element_needed[k].add(id(item))
            if id(item) in stored_at and stored_at[id(item)][1] < k:  # stored by an earlier pass: loaded
                reloaded[k][id(item)] = stored_at[id(item)][0]
            elif is_element(item):
                if item.op != "load":
                    stack.extend(operands(item))
            elif prologue_scalar(item):
                stack.extend(operands(item))
            else:
                need_value(item)

    def need_value(node: Expr) -> None:
        """A non-element ``node``: a leaf, a prologue scalar, or a temporary made in a between-phase."""
        if id(node) in scheduled:
            return
        scheduled.add(id(node))
        if node.op in ("hyper", "scalar", "const", "load"):  # a leaf, or vector state read where it is used
            return
        if _element_reduction(node):
            temporaries[id(node)] = node
            passes[ready[id(node.args[0])]].reductions.append(node)
            need_element(node.args[0], ready[id(node.args[0])])
            return
        if prologue_scalar(node):
            for operand in operands(node):
                need_value(operand)
            return  # computed in the prologue of each pass (and inline in each between-phase) that reads it
        temporaries[id(node)] = node
        betweens[ready[id(node)]].nodes.append(node)
        for operand in operands(node):
            need_value(operand)

    for role, node in element_stores:
        where = stored_at.get(id(node), (role, final))[1]
        passes[where].stores.append((role, node))
        need_element(node, where)
    for _, node in vector_stores:
        need_value(node)
    for node in results:
        need_value(node)

    def finished(k: int) -> Pass:
        step = passes[k]
        step.elements = [n for n in order if id(n) in element_needed[k] and is_element(n)]
        step.prologue = [n for n in order if id(n) in element_needed[k] and n.scalar
                         and id(n) not in temporaries and n.op not in ("hyper", "scalar", "const", "load")]
        step.operands = [n for n in order if id(n) in element_needed[k] and not is_element(n)]
        step.reductions = [n for n in order if n in step.reductions]
        step.reloads = reloaded[k]
        return step

    phases: list = []
    for k in range(0, sweep_count, 2):
        between = betweens[k]
        between.nodes = [n for n in order if n in between.nodes]
        if between.nodes:
            phases.append(between)
        step, tail = passes[k], passes[k + 1]
        row_nodes = [n for n in order if n in betweens[k + 1].nodes]
        if step.reductions or step.stores or tail.reductions or tail.stores:
            finished(k).row_nodes = row_nodes
            step.tail = finished(k + 1) if tail.reductions or tail.stores else None
            phases.append(step)
    temps = [n for n in order if id(n) in temporaries]
    factored = any(not is_element(n) and n.axes != SCALAR for n in order) or any(_reads_shape(n) for n in order)
    return passes, element_needed, Schedule(phases, temps, vector_stores, list(results), factored, order)
