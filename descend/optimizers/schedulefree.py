"""Schedule-free AdamW and SGD (Defazio et al. 2024, "The Road Less Scheduled"), as the ``schedulefree``
package has them (1.4.1): its signatures, defaults, param-group entries, state keys and numbers.

Two things set these classes apart from the other chains:

* **Per-group running numbers.**  Each step the group's counter ``k``, the warmed-up learning rate
  ``scheduled_lr``, the largest learning rate so far ``lr_max`` and the sum of averaging weights
  ``weight_sum`` advance on the host (``advance``), in the group itself, as schedulefree keeps them
  (so that its checkpoints load and continue, and ``scheduled_lr`` can be logged).  ``chain(group)`` reads
  them as numbers: the chain is a pure function of the group, and one kernel serves every step.  The
  group always holds the numbers of the latest step; a step that is skipped (``nonfinite="skip"``) or
  refused leaves them as they were.
* **Two views of the parameters.**  While training the parameters hold ``y`` (where gradients are taken),
  while evaluating ``x`` (the average: the model to evaluate and to save).  ``optimizer.train()`` and
  ``optimizer.eval()`` move them between the two with one elementwise step (``ScheduleFreeSwitch``) on
  the path the group's update takes (a generated C or Triton kernel, else the reference chain).  They are
  independent of ``model.train()`` / ``model.eval()``, which only set the modules' flags (dropout, batch
  norm) and never move a parameter: a loop calls both.  ``step()`` in eval mode raises, as in schedulefree.
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Any

import torch

from ..adapter.distributed import local
from ..adapter.optimizer import ChainOptimizer
from ..adapter.routing import kernel_reason, takes_foreach
from ..adapter.state import place
from ..backends import cpu, eager, triton
from ..backends.eager import Work
from ..plan.hyper import check_closed_interval, check_nonnegative, check_unit_interval, number
from ..plan.plan import compile
from ..plan.state import codec_for, fits, refit
from ..steps import Transform
from ..steps.schedulefree import (DecayAtY, ScaleByDebiasedInverseRms, ScheduleFreeSwitch, ScheduleFreeUpdate,
                                    SecondMoment)

RUNNING = ("k", "scheduled_lr", "lr_max", "weight_sum")  # the group entries a step advances


def averaging_weight(k: int, lr_max: float, r: float, weight_lr_power: float) -> float:
    """``w_k = k^r · lr_max^p``: the weight of step ``k``'s ``z`` in the average ``x``."""
    try:
        return float(k) ** r * lr_max ** weight_lr_power
    except OverflowError:
        raise ValueError(f"schedule-free: the averaging weight k^r·lr_max^p overflows (k={k}, r={r!r}, "
                         f"lr_max={lr_max!r}, weight_lr_power={weight_lr_power!r})") from None


def advance(values: dict[str, Any]) -> dict[str, Any]:
    """The group's running numbers after one more step (``values``: the group, numbers as floats)."""
    k = values["k"] + 1  # this step, counted from 1
    warmup = values["warmup_steps"]
    lr = values["lr"] * (k / warmup if k <= warmup else 1.0)  # linear warmup over warmup_steps steps
    lr_max = max(lr, values["lr_max"])
    weight_sum = values["weight_sum"] + averaging_weight(k, lr_max, values["r"], values["weight_lr_power"])
    return dict(k=k, scheduled_lr=lr, lr_max=lr_max, weight_sum=weight_sum)


def average(values: dict[str, Any]) -> float:
    """``c_k = w_k / Σ_{i≤k} w_i`` of the latest step (0 before any weight, as schedulefree)."""
    if not values["weight_sum"]:
        return 0.0
    weight = averaging_weight(values["k"], values["lr_max"], values["r"], values["weight_lr_power"])
    return weight / values["weight_sum"]


class ScheduleFree(ChainOptimizer):
    """What schedule-free AdamW and SGD share: the running numbers, ``train()`` / ``eval()``, and the
    refusal to step in eval mode.  A subclass says what ``β`` interpolates ``y`` (``interpolation``)."""

    def interpolation(self, values: dict[str, Any]) -> float:
        raise NotImplementedError

    def validate(self, group):
        owner = type(self).__name__
        for name in ("lr", "weight_decay", "r", "weight_lr_power"):
            check_nonnegative(owner, name, group[name])
        warmup = group["warmup_steps"]
        if isinstance(warmup, bool) or not isinstance(warmup, Real) or not (
                math.isfinite(warmup) and warmup >= 0 and float(warmup).is_integer()):
            raise ValueError(f"{owner}: warmup_steps must be a whole number >= 0, got {warmup!r}")

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """torch's ``add_param_group``; a group added after the first starts in the optimizer's mode."""
        if self.param_groups and isinstance(param_group, dict) and "train_mode" not in param_group:
            param_group["train_mode"] = self.param_groups[0]["train_mode"]
        super().add_param_group(param_group)

    # --- the step --------------------------------------------------------------------------------

    @torch._disable_dynamo
    @torch.no_grad()
    def step(self, closure=None):
        """One schedule-free step (``closure``: re-evaluates the model and returns the loss)."""
        if not all(group["train_mode"] for group in self.param_groups):
            raise RuntimeError(
                f"{type(self).__name__}: step() was called in eval mode. Call optimizer.train() before training "
                "and optimizer.eval() before evaluating or saving: model.train() and model.eval() do not "
                "move the parameters between the schedule-free sequences")
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        before = [{key: group[key] for key in RUNNING} for group in self.param_groups]
        advanced = [advance(self._numbers(group)) for group in self.param_groups]  # nothing changed if it raises
        for group, numbers in zip(self.param_groups, advanced):
            group.update(numbers)
        skipped = self.skipped_steps
        try:
            super().step()
        except FloatingPointError:
            raise  # nonfinite="raise": the step was applied (as torch.optim would), so it counts
        except BaseException:
            self._restore(before)
            raise
        if self.skipped_steps != skipped:  # nonfinite="skip": nothing changed, the numbers neither
            self._restore(before)
        return loss

    def _restore(self, before: list[dict[str, Any]]) -> None:
        for group, numbers in zip(self.param_groups, before):
            group.update(numbers)

    # --- train() / eval() ------------------------------------------------------------------------

    @torch.no_grad()
    def train(self) -> None:
        """Puts the parameters at ``y = lerp(x, z, 1 − β)``, where the next gradients are to be taken."""
        self._set_mode(True)

    @torch.no_grad()
    def eval(self) -> None:
        """Puts the parameters at ``x = lerp(y, z, 1 − 1/β)``, the average: evaluate and save there."""
        self._set_mode(False)

    def _set_mode(self, train: bool) -> None:
        for group in self.param_groups:
            if bool(group["train_mode"]) == train:
                continue
            beta = self.interpolation(self._numbers(group))
            self._move(group, ScheduleFreeSwitch.to_y(beta) if train else ScheduleFreeSwitch.to_x(beta))
            group["train_mode"] = train

    def _move(self, group: dict[str, Any], switch: ScheduleFreeSwitch) -> None:
        """``switch`` on each parameter of ``group`` that has a ``z`` (the others have taken no step yet, so
        their ``x``, ``y`` and ``z`` coincide), on the path a step of the group would take."""
        owner = type(self).__name__
        params = [p for p in group["params"] if "z" in self.state.get(p, ())]
        plan, numbers = compile([switch])
        buckets: dict[tuple, list] = {}
        for param in params:
            variant = plan.variant(param.dim())
            codec = codec_for(group.get("state_dtype"), param.dtype, local(param).numel())
            state, spec = self.state[param], variant.spec_of["z"]
            if not fits(spec, state["z"], place(param, spec), codec.of(spec)):  # after model.double(), a checkpoint
                state["z"] = refit(spec, state["z"], place(param, spec), codec.of(spec), owner)
            path = self._switch_path(group, variant, param, state["z"], codec)
            key = (path, id(variant), param.device, param.dtype, codec)
            buckets.setdefault(key, [variant, codec, []])[2].append(param)
        for (path, *_), (variant, codec, members) in buckets.items():
            states = [{"z": local(self.state[p]["z"])} for p in members]
            zs = [state["z"] for state in states]  # the kernels' gradient role: read, never written
            work = Work(plan, variant, [switch], numbers, [local(p) for p in members], zs, states, None, codec,
                        owner=owner)
            if path == "c":
                cpu.update(work)
            elif path == "triton":
                triton.update(work)
            else:
                eager.update(work, foreach=path == "foreach")

    @staticmethod
    def _switch_path(group, variant, param, z, codec) -> str:
        """The kernel a step of ``group`` would use for ``param``, where one can run the switch (z laid out
        like the parameter), else the reference chain; the switch never refuses (``fused=True`` included)."""
        if not (group["fused"] is False or (group["fused"] is None and group["foreach"])):
            backend, reason = kernel_reason(variant, param, z, codec)
            if reason is None:
                return backend
        return "foreach" if takes_foreach(group, param) else "one"

    # --- checkpoints -----------------------------------------------------------------------------

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """descend's ``load_state_dict``.  A checkpoint of the ``schedulefree`` package (it records no
        ``"optimizer"``) holds ``foreach=True``, its default implementation rather than a choice: the
        groups keep this optimizer's ``foreach`` and ``fused``, so its kernels still run."""
        foreign = isinstance(state_dict, dict) and "optimizer" not in state_dict
        flags = [(group["foreach"], group["fused"]) for group in self.param_groups]
        super().load_state_dict(state_dict)
        if foreign:
            for group, (foreach, fused) in zip(self.param_groups, flags):
                group["foreach"], group["fused"] = foreach, fused


def _schedule_free_defaults(**values) -> dict[str, Any]:
    """The hyperparameters and schedulefree's running entries, as it puts them in every group."""
    return dict(values, k=0, train_mode=False, weight_sum=0.0, lr_max=-1.0, scheduled_lr=0.0)


class AdamWScheduleFree(ScheduleFree):
    r"""Schedule-free AdamW (Defazio et al. 2024), as ``schedulefree.AdamWScheduleFree``.

    With ``k`` the group's step count, ``γ_k = lr·min(1, k/warmup_steps)`` and ``g_k`` the gradient at ``y``:

    .. math::
        v_k &\leftarrow \beta_2 v_{k-1} + (1-\beta_2)\,g_k^2, \qquad v_0 = 0 \\
        \hat g_k &\leftarrow g_k / (\sqrt{v_k / (1-\beta_2^k)} + \epsilon) + \lambda y_k \\
        z_{k+1} &\leftarrow z_k - \gamma_k \hat g_k, \qquad z_1 = \theta_0 \\
        c_{k+1} &= w_k / \textstyle\sum_{i\le k} w_i, \qquad w_k = k^r\,(\max_{i\le k}\gamma_i)^{p} \\
        x_{k+1} &\leftarrow (1-c_{k+1})\,x_k + c_{k+1} z_{k+1} \\
        y_{k+1} &= (1-\beta_1)\,z_{k+1} + \beta_1 x_{k+1}

    (``p`` = ``weight_lr_power``).  The parameters hold ``y`` after ``optimizer.train()`` and ``x`` after
    ``optimizer.eval()``; the update is written in ``y`` alone, ``y ← lerp(y, z, c) + γ(β₁(1−c) − 1)ĝ``, and
    the state is ``z`` and ``exp_avg_sq`` (``v``).  The weight decay ``λ`` is taken at ``y``, as schedulefree
    does.  The chain is ``[SecondMoment, ScaleByDebiasedInverseRms, DecayAtY?, ScheduleFreeUpdate]``.

    ``foreach`` keeps its place in schedulefree's signature; its default here is ``None`` (the generated
    kernel where one runs), not schedulefree's ``True`` (which in descend, as in torch.optim, asks for the
    reference chain on lists).
    """

    state_keys = frozenset({"z", "exp_avg_sq"})

    def __init__(
        self,
        params,
        lr: float = 0.0025,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        r: float = 0.0,
        weight_lr_power: float = 2.0,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        fused: bool | None = None,
        nonfinite: str = "raise",
        state_dtype: torch.dtype | None = None,
        max_grad_norm: float | None = None,
    ):
        defaults = _schedule_free_defaults(lr=lr, betas=betas, eps=eps, r=r, warmup_steps=warmup_steps,
                                           weight_lr_power=weight_lr_power, weight_decay=weight_decay,
                                           maximize=maximize)
        super().__init__(params, defaults, nonfinite, fused, foreach, state_dtype, max_grad_norm)

    def validate(self, group):
        super().validate(group)
        owner = type(self).__name__
        check_nonnegative(owner, "eps", group["eps"])
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"{owner}: betas must be a pair (beta1, beta2), got {betas!r}")
        check_closed_interval(owner, "betas[0]", betas[0], 0.0, 1.0)
        if number(owner, "betas[0]", betas[0]) == 0.0:  # eval() divides by it: x = lerp(y, z, 1 − 1/β₁)
            raise ValueError(f"{owner}: betas[0] must lie in (0, 1], got {betas[0]!r}")
        check_unit_interval(owner, "betas[1]", betas[1])

    def interpolation(self, values):
        return values["betas"][0]

    def chain(self, group):
        beta1, beta2 = group["betas"]
        steps: list[Transform] = [
            SecondMoment(beta2),
            ScaleByDebiasedInverseRms(group["eps"], 1.0 - beta2 ** group["k"]),
        ]
        if group["weight_decay"]:
            steps.append(DecayAtY(group["weight_decay"]))
        return steps + [ScheduleFreeUpdate(group["scheduled_lr"], beta1, average(group))]


class SGDScheduleFree(ScheduleFree):
    r"""Schedule-free SGD (Defazio et al. 2024), as ``schedulefree.SGDScheduleFree``.

    With ``k`` the group's step count, ``γ_k = lr·min(1, k/warmup_steps)``, ``β`` = ``momentum`` and
    ``g_k`` the gradient at ``y``:

    .. math::
        \hat g_k &\leftarrow g_k + \lambda y_k \\
        z_{k+1} &\leftarrow z_k - \gamma_k \hat g_k, \qquad z_1 = \theta_0 \\
        c_{k+1} &= w_k / \textstyle\sum_{i\le k} w_i, \qquad w_k = k^r\,(\max_{i\le k}\gamma_i)^{p} \\
        x_{k+1} &\leftarrow (1-c_{k+1})\,x_k + c_{k+1} z_{k+1} \\
        y_{k+1} &= (1-\beta)\,z_{k+1} + \beta x_{k+1}

    ``β → 0`` is plain SGD on ``z`` (evaluated at the average), ``β → 1`` Polyak–Ruppert averaging; the
    default 0.9 interpolates.  The parameters hold ``y`` after ``optimizer.train()`` and ``x`` after
    ``optimizer.eval()``; the state is ``z``.  The chain is ``[DecayAtY?, ScheduleFreeUpdate]``.
    ``foreach``: as in ``AdamWScheduleFree``.
    """

    state_keys = frozenset({"z"})

    def __init__(
        self,
        params,
        lr: float = 1.0,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        r: float = 0.0,
        weight_lr_power: float = 2,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        fused: bool | None = None,
        nonfinite: str = "raise",
        state_dtype: torch.dtype | None = None,
        max_grad_norm: float | None = None,
    ):
        defaults = _schedule_free_defaults(lr=lr, momentum=momentum, r=r, warmup_steps=warmup_steps,
                                           weight_lr_power=weight_lr_power, weight_decay=weight_decay,
                                           maximize=maximize)
        super().__init__(params, defaults, nonfinite, fused, foreach, state_dtype, max_grad_norm)

    def validate(self, group):
        super().validate(group)
        owner = type(self).__name__
        momentum = number(owner, "momentum", group["momentum"])
        if not 0.0 < momentum < 1.0:
            raise ValueError(f"{owner}: momentum must lie in (0, 1) (between 0 and 1 exclusive), got "
                             f"{group['momentum']!r}")

    def interpolation(self, values):
        return values["momentum"]

    def chain(self, group):
        steps: list[Transform] = [DecayAtY(group["weight_decay"])] if group["weight_decay"] else []
        return steps + [ScheduleFreeUpdate(group["scheduled_lr"], group["momentum"], average(group))]


__all__ = ["AdamWScheduleFree", "SGDScheduleFree", "ScheduleFree"]
