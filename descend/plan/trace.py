"""A chain traced into expression graphs: its steps' formulas run once on symbols.

The numbers of the steps become hyperparameter leaves (in the order ``descend.plan.hyper.walk`` reads
them), so one kernel serves every value; structure (booleans, keys, ``None``, ``param.ndim``) shapes the
graph.  A chain is cut at each ``MatrixStep`` into *segments*: the steps before it trace into one graph
whose output is the ``u`` handed to the matrix step, the steps after it into another that starts from the
matrix step's result.  The last segment outputs the new parameter (``θ + u``, or the last step's own value
when its ``output`` is ``"param"``) and every state entry written.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .formula import COLS, ELEMENT, ROWS, SCALAR, Expr, Graph, NotTraceable, topological
from .hyper import symbolic
from .state import StateSpec

AXES_OF_SHAPE = {"param": ELEMENT, "rows": ROWS, "cols": COLS, "scalar": SCALAR}
MATRIX_INPUT = "matrix_out"  # the role a segment after a matrix step reads its u from
MATRIX_OUTPUT = "matrix_in"  # the role a segment before a matrix step writes its u to


class UndeclaredState(NotTraceable):
    """A formula reads or writes a state entry no step of the chain declares: no path can run it."""


UNDECLARED = ("no step of the chain declares it in its state_specs ('param', 'grad' and 'step' are the optimizer's "
              "own and cannot name an entry)")


class TracedState(dict):
    """The parameter's state while a chain is traced: reading a key loads it (once), assigning stores it;
    later reads see the assigned value."""

    def __init__(self, graph: Graph, specs: dict[str, StateSpec], scalar_keys: Sequence[str]):
        super().__init__()
        self.graph, self.specs, self.scalar_keys = graph, specs, set(scalar_keys)
        self.stored: dict[str, Expr] = {}

    def __missing__(self, key: str) -> Expr:
        if key in self.scalar_keys:
            value = self.graph.leaf("scalar", f"state:{key}")
        elif key in self.specs:
            value = self.graph.leaf("load", key, AXES_OF_SHAPE[self.specs[key].shape])
        else:
            raise UndeclaredState(f"reads state {key!r}, but {UNDECLARED}")
        super().__setitem__(key, value)
        return value

    def __setitem__(self, key: str, value) -> None:
        if key in self.scalar_keys:
            raise NotTraceable(f"scalar state {key!r} is written in prepare(), not in formula()")
        if key not in self.specs:
            raise UndeclaredState(f"writes state {key!r}, but {UNDECLARED}")
        value = value if isinstance(value, Expr) else self.graph._wrap(value)
        expected = AXES_OF_SHAPE[self.specs[key].shape]
        if not value.axes <= expected:
            raise NotTraceable(f"state {key!r} ({self.specs[key].shape}) is assigned a value that varies along more "
                               "axes than it has")
        super().__setitem__(key, value)
        self.stored[key] = value


@dataclass
class Segment:
    """One traced run of formula steps (between matrix steps): a graph, and what its kernels write.

    ``outputs``: ``(role, node)`` for the new parameter (``"param"``) or the matrix step's input
    (``MATRIX_OUTPUT``), then each state entry written, sorted.  ``loads``: every tensor role read or
    written, the parameter and the gradient (or ``MATRIX_INPUT``) first.  ``globals``: the contributions
    of the chain's global reductions, ``(name, node)``, which a pass before the update sums."""

    graph: Graph
    outputs: list[tuple[str, Expr]]
    loads: list[str]
    axes: dict[str, frozenset]  # the axes of every tensor role
    scalars: list[str]  # prepared scalar state read, as "state:<key>" leaves
    globals: list[tuple[str, Expr]] = field(default_factory=list)

    @property
    def order(self) -> list[Expr]:
        return topological([e for _, e in self.outputs] + [e for _, e in self.globals])

    @property
    def first(self) -> str:
        """The role ``u`` starts from: the gradient, or a matrix step's result."""
        return self.loads[1]


def trace(chain: Sequence, maximize: bool, ndim: int, specs: dict[str, StateSpec], hyper_count: int
          ) -> tuple[list, bool]:
    """``chain`` as a list of ``Segment`` and ``MatrixStep`` (in chain order), and whether a formula read
    ``param.ndim``; raises ``NotTraceable`` naming the step that cannot be traced."""
    from ..steps.base import GlobalReduction, MatrixStep

    pieces: list = []
    scalar_keys = [key for step in chain for key in getattr(step, "scalar_state", ())]
    reads_ndim = False
    slot = 0  # the index of the first hyperparameter of the next step
    graph = state = u = param = t = None
    global_parts: list[tuple[str, Expr]] = []

    def open_segment(first: str):
        nonlocal graph, state, u, param, t, global_parts
        graph = Graph(ndim)
        state = TracedState(graph, specs, scalar_keys)
        u = graph.leaf("load", first, ELEMENT)
        if maximize and first == "grad":
            u = -u
        param = graph.leaf("load", "param", ELEMENT)
        t = graph.leaf("scalar", "t")
        global_parts = []

    def close_segment(output_role: str, value: Expr, first: str):
        nonlocal reads_ndim
        pieces.append(_segment(state, output_role, value, first, global_parts))
        reads_ndim = reads_ndim or graph.reads_ndim

    first = "grad"
    open_segment(first)
    last = len(chain) - 1
    for index, step in enumerate(chain):
        name = type(step).__name__
        count = _count_numbers(step)
        leaves = iter([graph.leaf("hyper", slot + k) for k in range(count)])
        slot += count
        if isinstance(step, MatrixStep):
            close_segment(MATRIX_OUTPUT, u, first)
            pieces.append(step)
            first = MATRIX_INPUT
            open_segment(first)
            continue
        symbolic_step = symbolic(step, leaves)
        try:
            if isinstance(step, GlobalReduction):
                totals = {}
                label = global_label(chain, index)
                for part, value in symbolic_step.contributions(u, param, state, t).items():
                    global_parts.append((f"{label}:{part}", value if isinstance(value, Expr) else graph._wrap(value)))
                    totals[part] = graph.leaf("scalar", f"global:{label}:{part}")
                u = symbolic_step.formula(u, param, state, t, totals)
            else:
                u = symbolic_step.formula(u, param, state, t)
        except NotTraceable as error:
            raise type(error)(f"{name}: {error}") from None
        except Exception as error:  # an op the tracer does not know, a tensor method on a symbol, ...
            raise NotTraceable(f"{name}: {type(error).__name__}: {error}") from None
        if not isinstance(u, Expr):
            u = graph._wrap(u)
        if getattr(step, "output", "update") == "param" and index != last:
            raise NotTraceable(f"{name} returns the new parameter (output='param'), so it must be the chain's last step")
    if slot != hyper_count:
        raise NotTraceable(f"the chain has {hyper_count} numbers but its steps read {slot}")
    final = u if chain and getattr(chain[-1], "output", "update") == "param" else param + u
    close_segment("param", final, first)
    return pieces, reads_ndim


def global_label(chain: Sequence, index: int) -> str:
    """The name under which the totals of the global reduction ``chain[index]`` are shared by every group:
    its class and its occurrence among the chain's steps of that class (``ClipByGlobalNorm#0``)."""
    kind = type(chain[index])
    return f"{kind.__name__}#{sum(type(step) is kind for step in chain[:index])}"


def _count_numbers(step) -> int:
    from .hyper import walk

    numbers: list[float] = []
    walk(step, "", numbers, [])
    return len(numbers)


def _segment(state: TracedState, output_role: str, value: Expr, first: str, global_parts) -> Segment:
    graph = state.graph
    outputs = [(output_role, value)] + sorted(state.stored.items())
    nodes = topological([e for _, e in outputs] + [e for _, e in global_parts])
    roles = {e.args[0]: e.axes for e in nodes if e.op == "load"} | {"param": ELEMENT, first: ELEMENT}
    for role, _ in outputs:
        roles[role] = AXES_OF_SHAPE[state.specs[role].shape] if role in state.specs else ELEMENT
    loads = ["param", first] + sorted(r for r in roles if r not in ("param", first))
    scalars = sorted({e.args[0] for e in nodes if e.op == "scalar" and e.args[0].startswith("state:")})
    return Segment(graph, outputs, loads, {r: roles[r] for r in loads}, scalars, list(global_parts))
