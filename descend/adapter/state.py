"""A parameter's optimizer state as its plan declares it: made when missing, converted when it does not fit,
and the step counter.

Before every update each declared entry is checked against its declaration (descend.plan.state.fits): a
parameter moved to float64, a ``state_dtype`` edited mid-run, a checkpoint of another dtype or layout,
``channels_last``; an entry that does not fit is converted (``refit``), so no path ever reads state it was
not made for.  Looking up a parameter's state never creates it: a parameter whose chain keeps nothing (SGD
without momentum) has no entry in ``optimizer.state``, as in torch.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from ..backends import build
from ..plan.plan import Variant
from ..plan.state import Codec, fit
from ..steps.base import Transform
from .distributed import local


class Place(NamedTuple):
    """Where a row or column statistic of a parameter lives: the whole parameter's shape (under FSDP2 too: it is
    kept whole on every rank), on the parameter's device."""

    shape: torch.Size
    device: torch.device


def place(param: Tensor, spec) -> Tensor | Place:
    """What an entry of ``spec`` is laid out like: the parameter itself (a DTensor under FSDP2, as in torch),
    or, for a vector or a number, the whole parameter's shape on its device."""
    if spec.shape == "param":
        return param
    return Place(param.shape, local(param).device)


def keeps_steps(variant: Variant, codec: Codec) -> bool:
    """Whether a parameter keeps ``state["step"]``: its formulas read ``t``, or its state is rounded
    stochastically (the random bits depend on the step, so that they differ from step to step)."""
    return variant.reads_t or codec.stochastic


def prepare(optimizer, params: Sequence[Tensor], variant: Variant, chain: Sequence, codec: Codec,
            owner: str) -> tuple[list[dict], list[float] | None]:
    """The state of each parameter (made and fitted to ``variant``'s declaration), and its step count after
    this step's increment (None where no counter is kept); each step's ``prepare`` has run."""
    counting = keeps_steps(variant, codec)
    specs, owners = variant.specs, variant.owners
    table = optimizer.state
    states = []
    for param in params:
        state = table.get(param)
        if state is None:
            if not specs and not counting:
                states.append({})
                continue
            state = table[param] = {}
        for spec, index in zip(specs, owners):
            fit(spec, chain[index], state, place(param, spec), codec, owner)
        if counting and "step" not in state:
            state["step"] = torch.tensor(0.0)
        states.append(state)
    steps = count_steps(states) if counting else None
    if variant.scalar_keys and steps is not None:
        preparing = [step for step in chain if getattr(step, "scalar_state", ())]
        for state, t in zip(states, steps):
            for step in preparing:
                step.prepare(state, t)
    elif variant.scalar_keys:
        preparing = [step for step in chain if getattr(step, "scalar_state", ())]
        for state in states:
            for step in preparing:
                step.prepare(state, 0.0)
    return states, steps


def finish(work) -> None:
    """Each step's ``finish`` for every tensor of ``work``, once its update is done (per-tensor numbers the next
    step reads: ASGD's step size and averaging weight)."""
    steps = finishing(work.chain)
    for i, state in enumerate(work.states if steps else ()):
        for step in steps:
            step.finish(state, work.t(i))


def finishing(chain) -> list:
    """The steps of ``chain`` that have a ``finish``."""
    return [step for step in chain if getattr(type(step), "finish", Transform.finish) is not Transform.finish]


def count_steps(states: Sequence[dict]) -> list[float]:
    """``t ← t + 1`` for each parameter's step counter (a float32 tensor, as torch keeps it); the new values."""
    counters = [state["step"] for state in states]
    library = build.support() if not build.disabled() else None
    if library is not None and all(c.dtype == torch.float32 and c.is_cpu and c.dim() == 0 for c in counters):
        values = build.doubles([0.0] * len(counters))
        library.count_steps(len(counters), build.pointers(counters), values)
        return list(values)
    torch._foreach_add_(counters, 1.0)  # e.g. counters from a torch.optim fused/capturable run
    return torch.stack([c.double().cpu().reshape(()) for c in counters]).tolist()


def normalise_step(state: dict) -> None:
    """A step counter as descend keeps it, a float32 tensor: checkpoints of torch < 1.12 (and other
    libraries) hold a Python number or an int64 tensor."""
    step = state.get("step")
    if step is None:
        return
    if not isinstance(step, Tensor):
        state["step"] = torch.tensor(float(step), dtype=torch.float32)
    elif step.dtype != torch.float32:
        state["step"] = step.to(torch.float32)
