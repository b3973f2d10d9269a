"""What a step is: a small dataclass that declares its state and writes its math once.

Four kinds, each a base class below:

* ``Elementwise``: ``formula(u, param, state, t)`` returns the new ``u``; each element's new value depends
  on that element alone.  Runs of such steps fuse into one generated kernel.
* ``Reduction``: an ``Elementwise`` step whose formula also reads per-tensor statistics: ``norm(u)``,
  ``total``, ``mean`` over all elements or over an axis (rows, columns), ``amax``.  The plan cuts the
  chain there into passes over the data (descend.plan.schedule); every path computes the same thing.
* ``GlobalReduction``: a formula that reads sums over every tensor of the optimizer (all groups, all
  ranks), e.g. the global gradient norm; ``contributions`` says what is summed.
* ``MatrixStep``: torch code on whole matrices (a stack of same-shape matrices at once), e.g. Muon's
  Newton–Schulz iteration; the elementwise steps before and after it fuse into kernels of their own.

A step declares the entries it keeps in ``state_specs(ndim)`` (descend.plan.state.StateSpec); its numeric
fields are its hyperparameters (one kernel serves every value), its booleans, strings and ``None`` its
structure (descend.plan.hyper).  Nothing about a step is discovered while it runs.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from ..plan.state import StateSpec

KINDS = ("elementwise", "reduction", "global", "matrix")


class Transform:
    """One named step ``u ← f(u, θ, state)``; subclasses are small dataclasses.

    ``output``: ``"update"`` (the formula returns the change ``u`` that ``θ ← θ + u`` applies at the end)
    or ``"param"`` (the last step of a chain returns the new parameter itself, where bit-parity with a
    reference needs its exact rounding).  ``scalar_state`` names per-tensor numbers kept in ``state``
    (0-dim tensors, e.g. NAdam's product of momentum coefficients), which ``prepare(state, t)`` updates once
    per tensor and step, before the formula, and which the formula reads as numbers; ``finish(state, t)``
    runs once per tensor after the update (ASGD's step size for the next step).  ``counts_steps``: the
    parameter keeps ``state["step"]`` even where no formula reads ``t`` (torch.optim's checkpoints of the
    optimizer hold one).
    """

    kind: ClassVar[str] = "elementwise"
    output: ClassVar[str] = "update"
    stateful: ClassVar[bool] = False  # shorthand: the step keeps one entry, like the parameter, under ``self.key``
    scalar_state: ClassVar[tuple[str, ...]] = ()
    counts_steps: ClassVar[bool] = False

    def state_specs(self, ndim: int) -> tuple[StateSpec, ...]:
        """The entries this step keeps for a parameter of ``ndim`` dims."""
        if self.stateful:
            return (StateSpec(self.key),)
        return ()

    def prepare(self, state: dict, t: float) -> None:
        """Per-tensor scalar work before ``formula`` (updates the ``scalar_state`` entries)."""

    def finish(self, state: dict, t: float) -> None:
        """Per-tensor scalar work after the update (updates the ``scalar_state`` entries the next step reads)."""


class Elementwise(Transform):
    """A step whose new value of each element depends on that element alone, written once as ``formula``.

    ``formula(u, param, state, t)`` returns the new ``u``; it reads ``state[key]`` and assigns
    ``state[key] = ...`` for the entries it updates (later steps of the same update read the assigned
    value), with ``t`` the step count.  It is plain arithmetic with the functions of ``descend.steps``
    (``sqrt``, ``where``, ``lerp``, ``fma`` ...), so the same code runs on tensors (the reference path), on
    lists of tensors (``_foreach_*`` ops) and on symbols (the generated kernels).
    """

    kind = "elementwise"

    def formula(self, u, param, state, t):
        raise NotImplementedError


class Reduction(Elementwise):
    """An ``Elementwise``-style step whose formula also reads statistics of whole tensors: ``norm``,
    ``total``, ``mean`` (over all elements, or ``axis=-1`` / ``-2`` for row / column statistics of the last
    two dims), ``amax``; ``per_row`` / ``per_col`` lay a row / column statistic beside the matrix.
    Under FSDP2 the statistics are of the whole parameter (the shards' partial sums are added up)."""

    kind = "reduction"


class GlobalReduction(Transform):
    """A step that reads sums over every tensor the optimizer updates (every group that has this step, and
    every rank), as ``torch.nn.utils.clip_grad_norm_`` does.

    ``contributions(u, param, state, t)`` returns ``{name: value}``: what each element adds to each sum
    (``u * u`` for a squared norm); ``formula(u, param, state, t, totals)`` then reads ``totals[name]`` as a
    number.  The sums are taken over the ``u`` this step receives, before any state is updated."""

    kind = "global"

    def contributions(self, u, param, state, t) -> dict[str, Any]:
        raise NotImplementedError

    def formula(self, u, param, state, t, totals):
        raise NotImplementedError


class MatrixStep(Transform):
    """Torch code on whole matrices: ``apply(u, param, state, t)`` takes a stack ``[k, n, m]`` of the ``u`` of
    ``k`` same-shape 2-D parameters (``param`` and ``state`` entries stacked alike) and returns the new
    stack.  ``u`` arrives in ``input_dtype`` (None: the compute dtype), rounded to nearest; the result is of
    ``output_dtype`` (None: ``input_dtype``).  ``reads_param_or_state = False`` says that ``apply`` reads ``u``
    alone: under FSDP2 each sharded matrix's ``u`` is then gathered to one owner rank and its result scattered
    back (otherwise every rank gathers the parameter, its gradient and its state)."""

    kind = "matrix"
    input_dtype: ClassVar[torch.dtype | None] = None
    output_dtype: ClassVar[torch.dtype | None] = None
    reads_param_or_state: ClassVar[bool] = True

    def apply(self, u: Tensor, param: Tensor, state: dict, t: Any) -> Tensor:
        raise NotImplementedError
