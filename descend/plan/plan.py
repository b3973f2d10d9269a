"""``compile(chain) → Plan``: what every path of an optimizer reads about its chain, decided once.

A ``Plan`` is made on the first sight of a chain's structure (the step types, their non-numeric settings,
``maximize``; descend.plan.hyper) and cached.  It names the chain's hyperparameters (``slots``), and per
number of parameter dims (a ``Variant``, made when first needed) it declares the state (``specs``), the
traced segments of the chain (descend.plan.trace) and the schedule of each one's passes
(descend.plan.schedule): everything the reference path, the C kernels and the Triton kernels need, so that
none of them looks at a step's attributes while it runs.  A chain that cannot be traced still has a plan;
its ``reason`` says why, and it runs on the reference path.
"""
from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from .formula import NotTraceable, topological
from .hyper import Opaque, describe
from .schedule import Schedule, schedule
from .state import StateSpec
from .trace import Segment, UndeclaredState, global_label, trace


@dataclass
class GlobalStage:
    """Global reductions whose totals the update reads, computed before it: ``labels`` names their steps
    (``trace.global_label``), ``parts`` each total (``"<label>:<name>"``; None where the chain is not traced:
    the reference path finds them), ``schedule`` computes every tensor's share (None likewise)."""

    labels: list[str]
    parts: list[str] | None
    schedule: Schedule | None


@dataclass
class Variant:
    """A plan for parameters of one number of dims."""

    ndim: int
    specs: tuple[StateSpec, ...]
    owners: tuple[int, ...]  # the index of the step that declares each spec
    scalar_keys: tuple[str, ...]
    pieces: list | None  # Segment and MatrixStep, in chain order; None when the chain cannot be traced
    schedules: list[Schedule | None]  # per piece (None for a matrix step)
    globals: list[GlobalStage]
    reads_t: bool  # whether a parameter keeps its step count (a formula reads t, or a step counts_steps)
    reads_ndim: bool
    reason: str | None  # why there is no trace

    @property
    def spec_of(self) -> dict[str, StateSpec]:
        return {spec.key: spec for spec in self.specs}

    @functools.cached_property
    def declared_keys(self) -> frozenset[str]:
        """Every state entry a formula may read or assign: the declared ones and the scalar state."""
        return frozenset(spec.key for spec in self.specs) | frozenset(self.scalar_keys)

    @property
    def segments(self) -> list[Segment]:
        return [piece for piece in self.pieces or () if isinstance(piece, Segment)]


@dataclass
class Plan:
    """A chain's structure, compiled: its steps, hyperparameters, and per-ndim variants."""

    key: tuple | None
    steps: tuple[str, ...]
    kinds: tuple[str, ...]
    slots: tuple[str, ...]  # the hyperparameters, in the order the kernels take them: "ScaleByLearningRate.lr"
    maximize: bool
    chain: Sequence  # the chain the plan was made from (its structure; its numbers are the first seen)
    opaque: str | None = None  # why the chain's settings cannot be read (then it is not cached)
    variants: dict[int, Variant] = field(default_factory=dict)
    ndim_matters: bool | None = None  # known after the first variant: whether the trace read param.ndim
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def has_globals(self) -> bool:
        return any(kind == "global" for kind in self.kinds)

    @property
    def has_matrix(self) -> bool:
        return any(kind == "matrix" for kind in self.kinds)

    def variant(self, ndim: int) -> Variant:
        """The plan for parameters of ``ndim`` dims (one shared by all where no formula reads the ndim)."""
        found = self.variants.get(ndim if self.ndim_matters is not False else -1)
        if found is not None:
            return found
        with self.lock:
            made = _variant(self, ndim)
            self.ndim_matters = made.reads_ndim if self.ndim_matters is None else self.ndim_matters or made.reads_ndim
            self.variants[ndim if self.ndim_matters else -1] = made
            return made


_plans: dict[tuple, Plan] = {}
_lock = threading.Lock()


def compile(chain: Sequence, maximize: bool = False) -> tuple[Plan, list[float]]:
    """The chain's ``Plan`` (cached by its structure) and its numbers, in the plan's slot order."""
    try:
        key, numbers, names = describe(chain, maximize)
    except Opaque as error:
        return _opaque_plan(chain, maximize, str(error)), []
    found = _plans.get(key)
    if found is None:
        with _lock:
            found = _plans.get(key)
            if found is None:
                found = _plans[key] = Plan(key, tuple(type(s).__name__ for s in chain),
                                           tuple(getattr(s, "kind", "elementwise") for s in chain), tuple(names),
                                           bool(maximize), tuple(chain))
    return found, numbers


def _opaque_plan(chain, maximize, reason) -> Plan:
    return Plan(None, tuple(type(s).__name__ for s in chain), tuple(getattr(s, "kind", "elementwise") for s in chain),
                (), bool(maximize), tuple(chain), opaque=reason)


def _specs(chain, ndim: int) -> tuple[tuple[StateSpec, ...], tuple[int, ...]]:
    specs: dict[str, tuple[StateSpec, int]] = {}
    for index, step in enumerate(chain):
        try:  # a reserved name ("grad", "param", "step") is refused here, on the first step, before any update
            declared = tuple(step.state_specs(ndim))
            for key in getattr(step, "scalar_state", ()):
                StateSpec(key, shape="scalar")
        except ValueError as error:
            raise ValueError(f"{type(step).__name__} cannot keep its state: {error}") from None
        for spec in declared:
            if spec.key in specs and specs[spec.key][0] != spec:
                raise ValueError(f"{type(step).__name__} declares state {spec.key!r} as {spec}, but "
                                 f"{type(chain[specs[spec.key][1]]).__name__} declares it as {specs[spec.key][0]}")
            specs.setdefault(spec.key, (spec, index))
    return tuple(s for s, _ in specs.values()), tuple(i for _, i in specs.values())


def _variant(plan: Plan, ndim: int) -> Variant:
    chain = plan.chain
    specs, owners = _specs(chain, ndim)
    scalar_keys = tuple(key for step in chain for key in getattr(step, "scalar_state", ()))
    untraced_globals = [GlobalStage([global_label(chain, i)], None, None) for i, step in enumerate(chain)
                        if getattr(step, "kind", "") == "global"]
    common = dict(ndim=ndim, specs=specs, owners=owners, scalar_keys=scalar_keys)
    if plan.opaque is not None:
        return Variant(**common, pieces=None, schedules=[], globals=untraced_globals, reads_t=True, reads_ndim=True,
                       reason=plan.opaque)
    try:
        pieces, reads_ndim = trace(chain, plan.maximize, ndim, {s.key: s for s in specs}, len(plan.slots))
        segments = [piece for piece in pieces if isinstance(piece, Segment)]
        if any(segment.globals for segment in segments[1:]):
            raise NotTraceable("a GlobalReduction after a MatrixStep is not supported")
        schedules = [schedule(piece.outputs, role_axes=piece.axes) if isinstance(piece, Segment) else None
                     for piece in pieces]
        stages = _global_stages(segments[0]) if segments else []
    except UndeclaredState as error:  # refused on the first step, before anything is updated
        raise ValueError(str(error)) from None
    except NotTraceable as error:
        return Variant(**common, pieces=None, schedules=[], globals=untraced_globals, reads_t=True, reads_ndim=True,
                       reason=str(error))
    reads_t = any(node.op == "scalar" and node.args[0] == "t" for segment in segments for node in segment.order) \
        or any(getattr(step, "counts_steps", False) for step in chain)  # a counter kept for torch's checkpoints
    return Variant(**common, pieces=pieces, schedules=schedules, globals=stages, reads_t=reads_t,
                   reads_ndim=reads_ndim, reason=None)


def _global_stages(segment: Segment) -> list[GlobalStage]:
    """The global reductions in the order their totals can be had: one whose contribution reads another's
    total comes in a later stage."""
    stage_of: dict[str, int] = {}
    for name, node in segment.globals:
        reads = [leaf.args[0].split(":", 1)[1] for leaf in topological([node])
                 if leaf.op == "scalar" and leaf.args[0].startswith("global:")]
        stage_of[name] = 1 + max((stage_of[r] for r in reads), default=-1)
    stages = []
    for stage in range(1 + max(stage_of.values(), default=-1)):
        parts = [(name, node) for name, node in segment.globals if stage_of[name] == stage]
        graph = parts[0][1].graph
        sums = [graph.reduce("sum", node, node.axes) for _, node in parts]
        labels = sorted({name.split(":", 1)[0] for name, _ in parts})
        stages.append(GlobalStage(labels, [name for name, _ in parts], schedule([], sums, segment.axes)))
    return stages


def clear() -> None:
    """Forgets every plan (tests)."""
    _plans.clear()
