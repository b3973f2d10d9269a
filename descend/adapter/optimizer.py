"""``ChainOptimizer``: a ``torch.optim.Optimizer`` that runs a chain of named steps.

A subclass says which steps make up its update (``chain``) and which hyperparameter values are valid
(``validate``); everything torch users rely on comes from ``torch.optim.Optimizer`` itself: param groups,
``state_dict`` / ``load_state_dict``, step hooks, ``zero_grad``, and lr schedulers.  A step compiles each
group's chain into a plan (once per structure: descend.plan), routes each parameter to a path
(descend.adapter.routing), makes and fits its state (descend.adapter.state), and runs the backends
(descend.backends: the reference chain, the generated C and Triton kernels).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..backends import cpu, eager, triton
from ..backends.eager import Work
from ..plan.hyper import check_positive
from ..plan.plan import Plan, Variant, compile
from ..plan.state import Codec, check_state_dtype, codec_for
from ..steps.base import Transform
from ..steps.clip import ClipByGlobalNorm
from .checkpoint import Checkpoints
from .distributed import agreed, all_ranks, is_dtensor, local, sharded_group, shards_of, sum_over_ranks, \
    sum_shares_over_ranks, zero_redundancy_group
from .fastpath import Bound, bindable, options_of
from .finite import all_finite, check_nonfinite_policy, locally_finite
from .options import boolean_options, flags_as_bools, group_numbers
from . import sparse
from .routing import Bucket, route
from .routing import warn_once as warn_reference
from .state import finish, normalise_step, prepare

CLIP_TOTAL = "ClipByGlobalNorm#0:squares"  # the total of max_grad_norm's step: the squared gradient norm


@dataclass(frozen=True)
class KernelInfo:
    """How one param group's update runs (``ChainOptimizer.kernel_info``).

    ``path`` is ``"generated"`` (C kernels printed from the chain's formulas: ``passes`` sweeps over the
    data) or ``"reference"`` (the chain's steps one after another in torch; ``reason`` says why).  It holds
    for the group's dense CPU parameters of its first parameter's dtype and number of dims.  ``slots`` names
    the hyperparameters the kernels take at run time (``"ScaleByLearningRate.lr"``), ``values`` their
    current values; ``c_source(dtype)`` is the generated C."""

    steps: tuple[str, ...]
    kinds: tuple[str, ...]
    path: str
    reason: str | None
    slots: tuple[str, ...] = ()
    values: tuple[float, ...] = ()
    passes: int = 0
    variant: Variant | None = field(default=None, repr=False, compare=False)
    state_dtype: Any = field(default=None, repr=False)

    def c_source(self, dtype: torch.dtype = torch.float32) -> str:
        if self.variant is None or self.variant.pieces is None:
            raise ValueError(f"this group runs on the {self.path} path: no generated kernel ({self.reason})")
        return cpu.c_source(self.variant, dtype, codec_for(self.state_dtype, dtype))

    def __str__(self) -> str:
        if self.path == "generated":
            where = "a generated C kernel" + (f" ({self.passes} passes over the data)" if self.passes > 1 else "")
        else:
            where = "the reference path"
        because = f" ({self.reason})" if self.reason else ""
        return f"[{', '.join(self.steps)}] runs on {where}{because}"


def _norm_dtype(params: list[Tensor]) -> torch.dtype:
    """The dtype of ``last_grad_norm``: float64 where a clipped parameter is, else float32 (torch's
    ``clip_grad_norm_`` returns the gradients' dtype)."""
    return torch.float64 if any(p.dtype == torch.float64 for p in params) else torch.float32


class ChainOptimizer(Checkpoints, torch.optim.Optimizer):
    """Base class: ``θ ← θ + u`` with ``u`` the gradient passed through ``chain(group)``.

    ``nonfinite`` says what a step does when a gradient holds NaN or ±inf: ``"raise"`` (default) takes the
    step as torch.optim would and then raises ``FloatingPointError``, so a diverged run stops at the step it
    diverged (the kernels notice the value while reading the gradient for the update: it costs nothing);
    ``"skip"`` checks first (one more read of the gradients), leaves every parameter and all optimizer state
    untouched, and counts the step in ``skipped_steps``; ``"ignore"`` lets the values flow into parameters
    and state silently, as torch.optim does.

    ``max_grad_norm`` (per group, keyword-only): when set, the gradients are clipped as
    ``torch.nn.utils.clip_grad_norm_(params, max_grad_norm)`` would clip them, over every group and rank, in
    the step itself; ``last_grad_norm`` holds the norm before clipping (NaN on a skipped step).  ``fused``, ``foreach``: see
    ``descend.adapter.routing``.  ``state_dtype``: how state is stored (``None``: float32 for 16-bit
    parameters, else their own dtype; ``torch.bfloat16`` with stochastic rounding; ``torch.float16``;
    ``"8bit"``: codes and per-block scales, descend.plan.blockwise).  All paths give the same numbers up to rounding.

    ``sparse_gradients`` (a class attribute): True for a class that takes sparse COO gradients only, as
    torch.optim.SparseAdam: it updates the rows each gradient names (descend.adapter.sparse); every other
    class refuses them.  ``matrices_only``: True for a class that takes 2-D parameters only (Muon).
    """

    sparse_gradients: ClassVar[bool] = False
    matrices_only: ClassVar[bool] = False

    def __init__(self, params: Iterable, defaults: dict[str, Any], nonfinite: str = "raise", fused: bool | None = None,
                 foreach: bool | None = None, state_dtype: Any = None, max_grad_norm: float | None = None):
        check_nonfinite_policy(type(self).__name__, nonfinite)
        self.nonfinite = nonfinite
        self.skipped_steps = 0
        self.last_grad_norm: Tensor | None = None
        self._agreement_group = zero_redundancy_group()
        self._bound: dict[int, Bound] = {}  # group id -> its remembered kernel calls (descend.adapter.fastpath)
        super().__init__(params, {**flags_as_bools(type(self), defaults), "fused": fused, "foreach": foreach,
                                  "state_dtype": state_dtype, "max_grad_norm": max_grad_norm})

    # subclasses -----------------------------------------------------------------------------

    def chain(self, group: dict[str, Any]) -> list[Transform]:
        """The steps that turn a gradient into the change of a parameter in ``group``."""
        raise NotImplementedError

    def validate(self, group: dict[str, Any]) -> None:
        """Raises ``ValueError`` / ``TypeError`` for a hyperparameter out of its range."""

    def _numbers(self, group: dict[str, Any]) -> dict[str, Any]:
        """``group`` with its numbers as the chains take them (see ``options.group_numbers``)."""
        return group_numbers(self, group)

    def full_chain(self, group: dict[str, Any]) -> list[Transform]:
        """``chain(group)``, after the gradient clipping ``max_grad_norm`` asks for."""
        steps = list(self.chain(group))
        if group.get("max_grad_norm") is not None:
            return [ClipByGlobalNorm(group["max_grad_norm"])] + steps
        return steps

    # torch.optim.Optimizer ------------------------------------------------------------------

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """torch's ``add_param_group``, then descend's checks; a group that fails them is taken out again
        before the error propagates, so a caller that catches it is left with the groups it had."""
        super().add_param_group(param_group)
        try:
            self._check_group(self.param_groups[-1])
        except Exception:
            self.param_groups.pop()
            raise

    def _check_group(self, group: dict[str, Any]) -> None:
        owner = type(self).__name__
        group.update(flags_as_bools(type(self), {k: v for k, v in group.items() if k != "params"}))
        for flag in ("fused", "foreach"):
            if group[flag] not in (None, True, False):
                raise ValueError(f"{owner}: {flag} must be None, True or False, got {group[flag]!r}")
        if group["fused"] and group["foreach"]:  # torch's wording first: code may match on it
            raise ValueError(f"{owner}: `fused` and `foreach` cannot be `True` together; pick one")
        check_state_dtype(owner, group.setdefault("state_dtype", None))
        if self.sparse_gradients and isinstance(group["state_dtype"], str) and group["state_dtype"] == "8bit":
            raise ValueError(f"{owner}: state_dtype='8bit' is not for sparse gradients: they update single rows, "
                             "and 8-bit state is stored by blocks of 256 elements")
        if group.setdefault("max_grad_norm", None) is not None:
            check_positive(owner, "max_grad_norm", group["max_grad_norm"])
        if group.get("differentiable"):
            raise NotImplementedError(
                f"{owner}: differentiable=True is not supported: descend updates parameters in place under "
                "torch.no_grad(), so no gradient flows through a step; use torch.optim for differentiable steps")
        if group.get("capturable"):
            raise NotImplementedError(
                f"{owner}: capturable=True is not supported: descend's step reads its step counters on the host, "
                "so it cannot be captured in a CUDA graph; use torch.optim with capturable=True for that")
        self.validate(group)

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "nonfinite": self.nonfinite, "skipped_steps": self.skipped_steps}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # torch's load_state_dict calls this with the state and the groups only: what it does not carry stays
        for name, default in (("nonfinite", "raise"), ("skipped_steps", 0), ("_agreement_group", None),
                              ("last_grad_norm", None)):
            state.setdefault(name, self.__dict__.get(name, default))
        state["_bound"] = {}  # new groups or state: nothing remembered holds
        super().__setstate__(state)
        if "differentiable" not in boolean_options(type(self)):  # torch adds it to every optimizer's defaults
            self.defaults.pop("differentiable", None)
        for group in self.param_groups:  # pickled before these options existed
            for name, default in self.defaults.items():
                group.setdefault(name, default)
            for name in ("fused", "foreach", "state_dtype", "max_grad_norm"):
                group.setdefault(name, None)
        for value in self.state.values():
            if isinstance(value, dict):
                normalise_step(value)

    # the step --------------------------------------------------------------------------------

    # Under torch.compile the step runs eagerly (a graph break): tracing the per-parameter chain hit
    # Dynamo bugs that made compiled SGD with momentum silently wrong; the kernels are C calls anyway.
    # (torch._disable_dynamo is torch.compiler.disable that imports Dynamo on the first call, not here.)
    @torch._disable_dynamo
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        owner = type(self).__name__
        planned, remembered = [], []
        for group in self.param_groups:
            values = self._numbers(group)  # a tensor lr as a number; a value that is no number named
            chain = self.full_chain(values)
            plan, numbers = compile(chain, values.get("maximize", False))
            bound = self._bound.pop(id(group), None)
            grads = bound.current(self, group, plan, options_of(group)) if bound is not None else None
            if grads is not None:  # the steady state: the calls of the last step, re-checked
                remembered.append((bound, grads, numbers))
                continue
            params = [p for p in group["params"] if p.grad is not None]
            buckets = route(owner, group, plan, params, self.sparse_gradients) if params else []
            planned.append((group, chain, plan, numbers, buckets))
        gradients = [p.grad for *_, buckets in planned for bucket in buckets for p in bucket.params]
        gradients += [g for _, grads, _ in remembered for g in grads]
        if self.nonfinite == "skip" and not self._ranks_agree(all_finite(gradients)):
            self.skipped_steps += 1
            for bound, _, _ in remembered:
                self._bound[id(bound.group)] = bound
            if any("ClipByGlobalNorm" in plan.steps for _, _, plan, _, _ in planned):
                self.last_grad_norm = torch.tensor(math.nan, dtype=_norm_dtype(
                    [p for _, _, plan, _, buckets in planned if plan.has_globals for b in buckets for p in b.params]))
            return loss
        works = [(group, plan, bucket, self._work(bucket, chain, plan, numbers, owner))
                 for group, chain, plan, numbers, buckets in planned for bucket in buckets]
        self._global_totals([(bucket, work) for _, _, bucket, work in works],
                            any(plan.has_globals for _, _, plan, _, _ in planned))
        finite, flags = True, []
        for bound, grads, numbers in remembered:
            finite = bound.step(grads, numbers) and finite
            self._bound[id(bound.group)] = bound
        for _, _, bucket, work in works:
            if bucket.path == "c":
                finite = cpu.update(work) and finite
            elif bucket.path == "triton":
                flags.append(triton.update(work))
            else:
                if self.nonfinite == "raise":
                    finite = locally_finite(work.grads) and finite
                eager.update(work, foreach=bucket.path == "foreach")
            if bucket.sparse:
                sparse.scatter(work)
            finish(work)
        self._remember(works)
        if self.nonfinite == "raise":
            finite = finite and not any(bool(flag.item()) for flag in flags)  # the only host sync, to raise
            if not self._ranks_agree(agreed(finite, gradients)):
                raise FloatingPointError(
                    f"{owner}: a gradient held NaN or inf; the step was applied, as torch.optim would apply it, so "
                    "parameters and state may now hold them too. Pass nonfinite='skip' to skip such steps without "
                    "changing anything (counted in .skipped_steps), or nonfinite='ignore' to go on.")
        return loss

    def _remember(self, works) -> None:
        """Keeps the calls of each group that ran on C kernels alone, for the next steps (``fastpath``)."""
        by_group: dict[int, list] = {}
        for group, plan, bucket, work in works:
            by_group.setdefault(id(group), [group, plan, [], []])
            by_group[id(group)][2].append(bucket)
            by_group[id(group)][3].append(work)
        for group, plan, buckets, group_works in by_group.values():
            if bindable(buckets, group_works):
                self._bound[id(group)] = Bound(self, group, plan, options_of(group), group_works)

    def _work(self, bucket: Bucket, chain, plan: Plan, numbers: list[float], owner: str) -> Work:
        states, steps = prepare(self, bucket.params, bucket.variant, chain, bucket.codec, owner)
        params, grads, shards, dtensors, origin = bucket.params, [p.grad for p in bucket.params], None, None, None
        if any(is_dtensor(p) for p in params):  # this rank's shards (the kernels and the chain update them)
            shards = [shards_of(p, owner) for p in params]
            dtensors = [p if s is not None else None for p, s in zip(params, shards)]
            origin = states
            params, grads = [local(p) for p in params], [local(g) for g in grads]
            states = [{key: local(value) if isinstance(value, Tensor) else value for key, value in state.items()}
                      for state in states]
        work = Work(plan, bucket.variant, chain, numbers, params, grads, states, steps, bucket.codec, shards=shards,
                    owner=owner, dtensors=dtensors, origin=origin)
        return sparse.gather(work) if bucket.sparse else work

    def _global_totals(self, works: list[tuple[Bucket, Work]], wanted: bool) -> None:
        """The totals every global reduction reads (the gradient norm of ``max_grad_norm``), stage by stage:
        every tensor's share, added group by group, then across ranks where each holds part of the
        parameters (ZeRO) or of each parameter (FSDP2).  ``wanted``: whether any group's chain has a global
        reduction; under ZeRO every rank's optimizer has the same groups, so every rank takes part in the
        sums then, also one whose share of the parameters has no gradient."""
        totals: dict[str, float] = {}
        zero = self._agreement_group is not None and wanted
        stage = 0
        while True:
            more = any(stage < len(work.variant.globals) for _, work in works)
            mine, sharded = {}, {}
            for bucket, work in works:
                if stage >= len(work.variant.globals):
                    continue
                work.totals = totals
                shares = cpu.contributions(work, stage) if bucket.path == "c" else eager.contributions(work, stage)
                target = sharded if work.shards is not None and any(s is not None for s in work.shards) else mine
                for part, value in shares.items():
                    target[part] = target.get(part, 0.0) + value
            if sharded:
                group = sharded_group([p for bucket, _ in works for p in bucket.params])
                sharded = dict(zip(sharded, sum_over_ranks(list(sharded.values()), group)))
            if zero:
                more, mine = sum_shares_over_ranks(more, mine, self._agreement_group)
            if not more:
                break
            for part in set(mine) | set(sharded):
                totals[part] = mine.get(part, 0.0) + sharded.get(part, 0.0)
            stage += 1
        for _, work in works:
            work.totals = totals
        if CLIP_TOTAL in totals:
            dtype = _norm_dtype([p for _, work in works if work.variant.globals for p in work.params])
            self.last_grad_norm = torch.tensor(math.sqrt(totals[CLIP_TOTAL]) if totals[CLIP_TOTAL] >= 0 else math.nan,
                                               dtype=dtype)

    def _ranks_agree(self, flag: bool) -> bool:
        """``flag`` and-ed over the ranks of a ``ZeroRedundancyOptimizer``, where each rank's optimizer
        holds only its share of the parameters (and so sees only its share of a NaN)."""
        if self._agreement_group is None:
            return flag
        return all_ranks(flag, self._agreement_group)

    def kernel_info(self) -> list[KernelInfo]:
        """For each param group: its chain's steps and the path its update takes (see ``KernelInfo``)."""
        infos = []
        for group in self.param_groups:
            values = self._numbers(group)
            chain = self.full_chain(values)
            plan, numbers = compile(chain, values.get("maximize", False))
            first = group["params"][0] if group["params"] else None
            ndim = first.dim() if first is not None else 1
            dtype = first.dtype if first is not None and first.dtype in cpu.DTYPES else torch.float32
            variant = plan.variant(ndim)
            codec = codec_for(group.get("state_dtype"), dtype)
            reason = self._reference_reason(group, variant, dtype, codec)
            if variant.pieces is None and reason and reason.startswith("its chain"):
                warn_reference(type(self).__name__, reason)
            passes = cpu.passes(variant, dtype, codec) if variant.pieces else 0
            infos.append(KernelInfo(plan.steps, plan.kinds, "reference" if reason else "generated", reason,
                                    plan.slots, tuple(numbers), passes, variant, group.get("state_dtype")))
        return infos

    @staticmethod
    def _reference_reason(group: dict[str, Any], variant: Variant, dtype: torch.dtype, codec: Codec) -> str | None:
        if group["fused"] is False:
            return "fused=False"
        if variant.pieces is None:
            return f"its chain cannot be generated: {variant.reason}"
        if not cpu.available():
            return f"the C kernels are unavailable ({cpu.build.error})"
        try:
            cpu.ready(variant, dtype, codec)
        except cpu.KernelUnavailable as error:
            return f"its generated kernel could not be built: {error}"
        return None
