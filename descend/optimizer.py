"""``ChainOptimizer``: a ``torch.optim.Optimizer`` that runs a chain of named steps.

A subclass says which steps make up its update (``chain``) and which
hyperparameter values are valid (``validate``); everything torch users rely on
comes from ``torch.optim.Optimizer`` itself: param groups, ``state_dict`` /
``load_state_dict``, step hooks, ``zero_grad``, and lr schedulers.
"""
from __future__ import annotations

import functools
import inspect
import math
import sys
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from numbers import Real
from typing import Any

import torch
from torch import Tensor

from . import codegen, codegen_triton, native
from .steps import Shards, StepContext, Transform

NONFINITE_POLICIES = ("raise", "skip", "ignore")
try:  # the devices where torch's _foreach_* ops have fast (multi-tensor) kernels
    from torch.utils._foreach_utils import _get_foreach_kernels_supported_devices

    FOREACH_DEVICES = frozenset(_get_foreach_kernels_supported_devices())
except ImportError:
    FOREACH_DEVICES = frozenset({"cuda"})
_warned_chains: set[str] = set()
SIXTEEN_BIT = (torch.bfloat16, torch.float16)
STATE_DTYPES = (None, torch.float32, torch.float64, torch.bfloat16)


@dataclass(frozen=True)
class Route:
    """How a group's chain can run fused: ``kind`` "hand" (the class's ``fused_step``), "generated" (a kernel
    printed from ``trace``), or None (the reference chain; ``reason`` says why)."""

    kind: str | None
    trace: Any
    reason: str | None
    hyper: list[float] | None = None  # the generated kernel's hyperparameter values, in its order


@dataclass(frozen=True)
class KernelInfo:
    """How one param group's update runs (``ChainOptimizer.kernel_info``).

    ``path`` is ``"generated"`` (one C kernel printed from the chain's formulas), ``"hand"`` (the class's
    hand-written ``fused_step``) or ``"reference"`` (the chain's steps one after another in torch; ``reason``
    says why).  It holds for the group's dense CPU parameters; others (CUDA, non-contiguous) take the
    reference path whatever the route.  ``c_source(dtype)`` is the generated kernel's C source."""

    steps: tuple[str, ...]
    path: str
    reason: str | None
    trace: Any = field(default=None, repr=False, compare=False)
    state_dtype: torch.dtype | None = field(default=None, repr=False)

    def c_source(self, dtype: torch.dtype = torch.float32) -> str:
        if self.trace is None:
            raise ValueError(f"this group runs on the {self.path} path: no generated kernel ({self.reason})")
        state_dtype = self.state_dtype or (torch.float32 if dtype in SIXTEEN_BIT else dtype)
        return codegen.c_source(self.trace, dtype, state_dtype)

    def __str__(self) -> str:
        where = {"generated": "a generated C kernel", "hand": "a hand-written kernel"}.get(self.path, "the reference path")
        because = f" ({self.reason})" if self.reason else ""
        return f"[{', '.join(self.steps)}] runs on {where}{because}"


_kernels: dict[tuple, Any] = {}


def generated_kernel(trace, param_dtype: torch.dtype, state_dtype: torch.dtype):
    """The compiled C kernel of ``trace`` for these dtypes (cached); None when it cannot be built."""
    key = (id(trace), param_dtype, state_dtype)
    if key not in _kernels:
        function = native.chain_kernel(codegen.c_source(trace, param_dtype, state_dtype),
                                       codegen.kernel_name(trace, param_dtype, state_dtype))
        _kernels[key] = (trace, function)  # the trace is kept alive, so its id stays its own
    return _kernels[key][1]


# a multi-tensor chunk holds up to max(largest parameter, this many elements): few launches for many
# small tensors, temporaries no larger than one parameter's for big ones
CHUNK_ELEMENTS = 1 << 20


def _dtensor_class() -> type | None:
    """``DTensor`` once something (FSDP2, the user) has imported ``torch.distributed.tensor``; until then no
    tensor can be one, and descend does not import it itself (it adds half a second to ``import descend``)."""
    module = sys.modules.get("torch.distributed.tensor")
    return getattr(module, "DTensor", None)


def is_dtensor(tensor: Tensor) -> bool:
    dtensor = _dtensor_class()
    return dtensor is not None and isinstance(tensor, dtensor)


def sharding_possible() -> bool:
    """DTensor parameters need an initialised process group: without one, no per-tensor checks are needed."""
    return _dtensor_class() is not None and torch.distributed.is_available() and torch.distributed.is_initialized()


def local(tensor: Tensor) -> Tensor:
    """This rank's shard of a DTensor (FSDP2's parameters), or the tensor itself."""
    return tensor.to_local() if is_dtensor(tensor) else tensor


def shards_of(param: Tensor, owner: str) -> Shards | None:
    """How a DTensor parameter is split: None when this rank holds all of it."""
    if not is_dtensor(param):
        return None
    from torch.distributed.tensor import Replicate, Shard

    placements = param.placements
    if all(isinstance(p, Replicate) for p in placements):
        return None
    if len(placements) != 1 or not isinstance(placements[0], Shard):
        raise NotImplementedError(
            f"{owner}: parameters sharded as {placements} are not supported; a 1-D mesh with Shard(dim) "
            "(FSDP2's fully_shard) or Replicate is"
        )
    return Shards(placements[0].dim % param.dim(), param.shape, param.device_mesh.get_group())


# --- hyperparameter checks: each names the argument and the range it must lie in ----------


def _as_float(owner: str, name: str, value: Any) -> float:
    if isinstance(value, Tensor):
        if value.numel() != 1:  # torch's wording, which code may match on
            raise ValueError(f"{owner}: Tensor {name} must be 1-element, got shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{owner}: {name} must be a real number, got {value!r}")
    return float(value)


def as_number(owner: str, where: str, value: Any, like: Any) -> Any:
    """A hyperparameter as the kernels and the reference chain take it, shaped as its default ``like``: a
    1-element tensor (an lr kept as a tensor, shape [], [1] or [1, 1]) becomes a float, a pair (betas)
    is converted entry by entry, None stays None where the default is None.  Anything else is a
    ``TypeError`` naming ``where`` (the value was edited after construction: ``validate`` saw the old one)."""
    if isinstance(like, (tuple, list)):
        if isinstance(value, (tuple, list)) and len(value) == len(like):
            return type(value)(as_number(owner, f"{where}[{i}]", v, d) for i, (v, d) in enumerate(zip(value, like)))
        raise TypeError(f"{owner}: {where} must be a tuple of {len(like)} real numbers, got {value!r}")
    if value is None and like is None:
        return value
    elif isinstance(value, Tensor) and value.numel() == 1 and not value.is_complex():
        return value.item()
    elif isinstance(value, Real) and not isinstance(value, bool):
        return value
    raise TypeError(f"{owner}: {where} must be a real number (or a 1-element tensor), got {value!r}")


def check_nonnegative(owner: str, name: str, value: Any) -> None:
    number = _as_float(owner, name, value)
    if not (math.isfinite(number) and number >= 0.0):
        raise ValueError(f"{owner}: {name} must be a finite number >= 0, got {value!r}")


def check_positive(owner: str, name: str, value: Any) -> None:
    number = _as_float(owner, name, value)
    if not (math.isfinite(number) and number > 0.0):
        raise ValueError(f"{owner}: {name} must be a finite number > 0, got {value!r}")


def check_unit_interval(owner: str, name: str, value: Any) -> None:
    """A decay rate: ``0 <= value < 1``."""
    number = _as_float(owner, name, value)
    if not (0.0 <= number < 1.0):
        raise ValueError(f"{owner}: {name} must lie in [0, 1), got {value!r}")


def check_closed_interval(owner: str, name: str, value: Any, low: float, high: float) -> None:
    number = _as_float(owner, name, value)
    if not (low <= number <= high):
        raise ValueError(f"{owner}: {name} must lie in [{low:g}, {high:g}], got {value!r}")


def check_nonfinite_policy(owner: str, policy: Any) -> None:
    if policy not in NONFINITE_POLICIES:
        raise ValueError(f"{owner}: nonfinite must be one of {NONFINITE_POLICIES}, got {policy!r}")


def all_finite(tensors: Sequence[Tensor]) -> bool:
    """True when no tensor holds a NaN or an infinity (one pass; one host sync for the rest).

    For DTensors (sharded parameters) each rank checks its shard and the ranks agree on the answer
    (see ``agreed``), so that they all take, or all skip, the step.
    """
    return agreed(_locally_finite([local(t) for t in tensors]), tensors)


def agreed(flag: bool, tensors: Sequence[Tensor]) -> bool:
    """``flag`` and-ed over the ranks when ``tensors`` include DTensors, whose shards differ per rank;
    ``flag`` itself otherwise."""
    sharded = [t for t in tensors if is_dtensor(t)] if sharding_possible() else []
    if not sharded:
        return flag
    import torch.distributed as dist

    value = torch.tensor([1 if flag else 0], dtype=torch.int32)
    dist.all_reduce(value, op=dist.ReduceOp.MIN, group=sharded[0].device_mesh.get_group())
    return bool(value.item())


def gradients_pass(owner: str, policy: str, gradients: Sequence[Tensor], advice: str) -> bool:
    """The ``nonfinite`` policy checked before a step: True to go on, False to skip; ``"raise"``
    raises ``FloatingPointError`` (with ``advice``) before anything has changed."""
    if policy == "ignore" or all_finite(gradients):
        return True
    if policy == "raise":
        raise FloatingPointError(f"{owner}: a gradient holds NaN or inf; nothing was updated. {advice}")
    return False


def _locally_finite(tensors: Sequence[Tensor]) -> bool:
    by_dtype: dict[torch.dtype, list[Tensor]] = {}
    others = []
    have_kernels = native.library() is not None
    for tensor in tensors:
        if have_kernels and native.readable(tensor):
            by_dtype.setdefault(tensor.dtype, []).append(tensor)
        elif tensor.numel():
            others.append(tensor)
    if not all(native.all_finite(group) for group in by_dtype.values()):
        return False
    flags = [torch.isfinite(tensor).all() for tensor in others]
    return bool(torch.stack([flag.cpu() for flag in flags]).all()) if flags else True


@functools.cache
def _boolean_options(cls: type) -> frozenset[str]:
    """The keyword arguments of ``cls`` that default to True or False (None given for one means False)."""
    return frozenset(name for name, parameter in inspect.signature(cls.__init__).parameters.items()
                     if isinstance(parameter.default, bool))


_PLAIN = (float, int)  # numbers that need no conversion (bool is a subclass of int, not of these types)


@functools.cache
def _numeric_options(cls: type) -> dict[str, Any]:
    """The keyword arguments of ``cls`` that take numbers (or pairs of numbers, or None), with their defaults."""
    return {name: parameter.default for name, parameter in inspect.signature(cls.__init__).parameters.items()
            if name not in ("fused", "foreach", "state_dtype") and not isinstance(parameter.default, bool) and (
                parameter.default is None or isinstance(parameter.default, (Real, tuple)))}


def _flags_as_bools(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    flags = _boolean_options(cls)
    return {name: False if value is None and name in flags else value for name, value in values.items()}


# hyperparameters that define an algorithm and that every torch version has written into its checkpoints (the
# flags foreach, fused, capturable, differentiable, maximize came later): a torch checkpoint without one is not
# of a class that takes it (a torch RAdam checkpoint loaded into Adam lacks amsgrad)
LONGSTANDING_HYPERPARAMETERS = frozenset({
    "momentum", "dampening", "nesterov", "lr_decay", "initial_accumulator_value", "alpha", "centered", "rho",
    "amsgrad", "momentum_decay",
})


@functools.cache
def _torch_hyperparameter_names() -> frozenset[str]:
    """Every keyword argument of torch.optim's optimizer classes."""
    names = set()
    for value in vars(torch.optim).values():
        if isinstance(value, type) and issubclass(value, torch.optim.Optimizer):
            names |= set(inspect.signature(value.__init__).parameters)
    return frozenset(names - {"self", "params", "defaults", "args", "kwargs"})


def _zero_redundancy_group() -> Any:
    """The process group of the ``ZeroRedundancyOptimizer`` building this optimizer, if one is.

    ZeRO gives each rank's optimizer only that rank's share of the parameters, so the ranks must agree
    on whether a gradient was finite (see ``ChainOptimizer.step``); ZeRO builds its local optimizer in
    its own methods, so the caller's frames tell.
    """
    module = sys.modules.get("torch.distributed.optim.zero_redundancy_optimizer")
    if module is None:
        return None
    frame = sys._getframe(1)
    for _ in range(8):
        frame = frame.f_back
        if frame is None:
            return None
        caller = frame.f_locals.get("self")
        if isinstance(caller, module.ZeroRedundancyOptimizer):
            return caller.process_group
    return None


def fused_refusal(owner: str, param: Tensor, route: Route | None = None) -> str:
    """Why ``fused=True`` cannot update ``param``; it begins with torch.optim's words for the same refusal,
    so that code matching on them keeps working, then says what descend's kernel of ``route`` takes."""
    sharded = sharding_possible() and is_dtensor(param)
    hand = route is not None and route.kind == "hand"
    dtypes = "float32/float64" if hand else "float32/float64/bfloat16/float16"
    gpu = "" if hand else (
        " (CUDA parameters need triton: pip install 'descend[gpu]')" if not codegen_triton.available() else
        f" (the Triton kernel for CUDA failed: {codegen_triton.error})" if codegen_triton.error else
        " (or dense CUDA ones, for the Triton kernel)")
    return (
        f"{owner}: `fused=True` requires all the params to be floating point Tensors of supported devices: "
        f"['cpu', 'cuda'] but {param.dtype} and {param.device.type} (descend's fused=True needs dense CPU "
        f"{dtypes} parameters and gradients of the same dtype and layout (and, for a sharded parameter, an "
        f"elementwise optimizer); got a {param.dtype} {'sharded ' if sharded else ''}parameter on {param.device} "
        f"(contiguous: {local(param).is_contiguous()}){gpu})"
    )


class ChainOptimizer(torch.optim.Optimizer):
    """Base class: ``θ ← θ + u`` with ``u`` the gradient passed through ``chain(group)``.

    ``nonfinite`` says what a step does when a gradient holds NaN or ±inf:
    ``"raise"`` (default) takes the step as torch.optim would and then raises
    ``FloatingPointError``, so a diverged run stops at the step it diverged; the
    fused kernels notice the value while reading the gradient for the update, so
    this costs nothing.  ``"skip"`` checks first (one more read of the gradients),
    leaves every parameter and all optimizer state untouched, and counts the step
    in ``skipped_steps``: the choice for a run that should survive a bad batch.
    ``"ignore"`` lets the values flow into parameters and state silently, as
    torch.optim does.

    ``fused`` picks the implementation per param group: ``None`` (default) runs
    the chain's generated kernel, C for the group's dense CPU parameters and
    Triton (``descend.codegen_triton``, where triton is installed) for dense
    CUDA ones, and the reference chain for the rest (non-dense, other devices
    or dtypes); ``False`` always runs the reference chain;
    ``True`` insists on the kernel and raises where it cannot run.
    ``foreach`` picks how the reference chain runs: ``True`` on lists of
    parameters with torch's ``_foreach_*`` ops (one launch per op for a whole
    list on CUDA), ``False`` one parameter at a time, ``None`` (default) as
    torch.optim does: lists on CUDA, one at a time on the CPU.  All
    paths give the same numbers up to rounding (the tests hold them to 1e-6 in
    float32).
    """

    counts_steps = True  # keep ``state["step"]`` (t) per parameter; False where no formula uses t
    ignored_state_keys: frozenset[str] = frozenset()  # entries other libraries keep that a checkpoint may hold
    elementwise = True  # each element's update depends on that element alone: shards update independently

    def __init__(
        self,
        params: Iterable,
        defaults: dict[str, Any],
        nonfinite: str = "raise",
        fused: bool | None = None,
        foreach: bool | None = None,
        state_dtype: torch.dtype | None = None,
    ):
        check_nonfinite_policy(type(self).__name__, nonfinite)
        self.nonfinite = nonfinite
        self.skipped_steps = 0
        self._agreement_group = _zero_redundancy_group()
        super().__init__(params, {**_flags_as_bools(type(self), defaults), "fused": fused, "foreach": foreach,
                                  "state_dtype": state_dtype})

    # subclasses -----------------------------------------------------------------------------

    def chain(self, group: dict[str, Any]) -> list[Transform]:
        """The steps that turn a gradient into the change of a parameter in ``group``."""
        raise NotImplementedError

    def validate(self, group: dict[str, Any]) -> None:
        """Raises ``ValueError`` / ``TypeError`` for a hyperparameter out of its range."""

    def kernel_chain(self, group: dict[str, Any]) -> list[Transform] | None:
        """The chain a hand-written kernel (``fused_step``) computes, for a class that has one; the kernel
        runs only where ``chain(group)`` equals it, so a subclass that changes its chain gets that chain."""
        return None

    def fused_step(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], states: list[dict], steps: Any
    ) -> bool:
        """A hand-written kernel for a chain that is not elementwise (Adafactor): the whole ``kernel_chain``
        in one call for ``params`` (one dtype, contiguous, on the CPU) and their ``grads``.

        ``states`` are initialised and ``steps`` (``t`` of each parameter, a C double array) already
        counted.  Returns False when a gradient held NaN or inf (noticed while reading it for the update,
        which is applied regardless).  Elementwise chains need none: their kernels are generated.
        """
        raise NotImplementedError

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
        group.update(_flags_as_bools(type(self), {k: v for k, v in group.items() if k != "params"}))
        for flag in ("fused", "foreach"):
            if group[flag] not in (None, True, False):
                raise ValueError(f"{owner}: {flag} must be None, True or False, got {group[flag]!r}")
        if group["fused"] and group["foreach"]:  # torch's wording first: code may match on it
            raise ValueError(f"{owner}: `fused` and `foreach` cannot be `True` together; pick one")
        if group.setdefault("state_dtype", None) not in STATE_DTYPES:
            raise ValueError(f"{owner}: state_dtype must be None, torch.float32, torch.float64 or torch.bfloat16, "
                             f"got {group['state_dtype']!r}")
        if group.get("differentiable"):
            raise NotImplementedError(
                f"{owner}: differentiable=True is not supported: descend updates parameters in place under "
                "torch.no_grad(), so no gradient flows through a step; use torch.optim for differentiable steps"
            )
        if group.get("capturable"):
            raise NotImplementedError(
                f"{owner}: capturable=True is not supported: descend's step reads its step counters on the host, "
                "so it cannot be captured in a CUDA graph; use torch.optim with capturable=True for that"
            )
        self.validate(group)

    def _numbers(self, group: dict[str, Any]) -> dict[str, Any]:
        """``group`` with its numeric hyperparameters as Python numbers (a tensor lr becomes a float), as
        the kernels and the reference chain take them; a value edited into something that is no number is
        a ``TypeError`` that names it."""
        values = dict(group)
        for name, default in _numeric_options(type(self)).items():
            value = values.get(name)
            if type(default) is tuple:  # the usual cases, checked first: a step is short
                if type(value) is tuple and len(value) == len(default) and all(type(v) in _PLAIN for v in value):
                    continue
            elif type(value) in _PLAIN:
                continue
            if name in values:
                try:
                    values[name] = as_number(type(self).__name__, name, values[name], default)
                except TypeError as error:
                    index = next(i for i, g in enumerate(self.param_groups) if g is group)
                    raise TypeError(str(error).replace(f" {name}", f" param_groups[{index}][{name!r}]", 1)) from None
        return values

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "nonfinite": self.nonfinite, "skipped_steps": self.skipped_steps}

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = {"nonfinite": "raise", "skipped_steps": 0, "_agreement_group": None, **state}
        super().__setstate__(state)
        for group in self.param_groups:  # pickled before these options existed
            for name, default in self.defaults.items():
                group.setdefault(name, default)
            group.setdefault("fused", None)
            group.setdefault("foreach", None)
            group.setdefault("state_dtype", None)
        for value in self.state.values():
            if isinstance(value, dict):
                self._normalise_step(value)

    @classmethod
    def checkpoint_kind(cls) -> str:
        """The name a checkpoint records: the class that defines the update (``chain``), so that
        ``AdamW``'s checkpoints load into ``Adam`` and back, as torch's do."""
        return "descend." + next(c.__name__ for c in cls.__mro__ if "chain" in vars(c))

    def state_dict(self) -> dict[str, Any]:
        """torch's ``state_dict``, with the class that wrote it (``"optimizer"``) and ``skipped_steps``
        added before the user's post-hooks run; parameters without state are left out, as in torch."""
        post_hooks, self._optimizer_state_dict_post_hooks = self._optimizer_state_dict_post_hooks, OrderedDict()
        try:
            state_dict = super().state_dict()
        finally:
            self._optimizer_state_dict_post_hooks = post_hooks
        state_dict["state"] = {key: value for key, value in state_dict["state"].items()
                               if not (isinstance(value, dict) and not value)}
        state_dict["optimizer"] = self.checkpoint_kind()
        state_dict["skipped_steps"] = self.skipped_steps
        for hook in post_hooks.values():
            result = hook(self, state_dict)
            if result is not None:
                state_dict = result
        return state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's ``load_state_dict``, after checking that the checkpoint fits this optimizer.

        A checkpoint from another optimizer class (recorded in the checkpoint, or for one written by
        torch.optim, told by hyperparameters that only another class has), or with state tensors whose
        shapes do not match the parameters, raises ``ValueError`` and leaves the current state untouched.
        The user's pre-hooks run first, the post-hooks last, after descend's own fix-ups.
        """
        state_dict = state_dict.copy()
        for hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = hook(self, state_dict)
            if result is not None:
                state_dict = result
        state_dict = dict(state_dict)
        skipped_steps = state_dict.pop("skipped_steps", 0)
        self._check_kind(state_dict.pop("optimizer", None), state_dict)
        self._check_state_dict(state_dict)
        hooks = self._optimizer_load_state_dict_pre_hooks, self._optimizer_load_state_dict_post_hooks
        self._optimizer_load_state_dict_pre_hooks = self._optimizer_load_state_dict_post_hooks = OrderedDict()
        try:
            super().load_state_dict(state_dict)
        finally:
            self._optimizer_load_state_dict_pre_hooks, self._optimizer_load_state_dict_post_hooks = hooks
        self._keep_state_precision(state_dict)
        for state in self.state.values():
            if not isinstance(state, dict):  # e.g. a flag a hook keeps in optimizer.state
                continue
            for key in self.ignored_state_keys & state.keys():
                del state[key]
            self._normalise_step(state)
            for key, value in state.items():  # the fused kernels need state laid out like its parameter
                if isinstance(value, Tensor) and key != "step" and not value.is_contiguous():
                    state[key] = value.contiguous()
        for group in self.param_groups:  # a checkpoint from torch.optim lacks descend-only options
            for name, default in self.defaults.items():
                group.setdefault(name, default)
            group.update(_flags_as_bools(type(self), {k: v for k, v in group.items() if k != "params"}))
        self.skipped_steps = skipped_steps
        for hook in hooks[1].values():
            hook(self)

    def _normalise_step(self, state: dict) -> None:
        """A step counter as descend keeps it, a float32 tensor: checkpoints of torch < 1.12 (and other
        libraries) hold a Python number or an int64 tensor."""
        step = state.get("step")
        if not self.counts_steps or step is None:
            return
        if not isinstance(step, Tensor):
            state["step"] = torch.tensor(float(step), dtype=torch.float32)
        elif step.dtype != torch.float32:
            state["step"] = step.to(torch.float32)

    def _check_kind(self, kind: str | None, state_dict: dict[str, Any]) -> None:
        """Refuses a checkpoint of another optimizer: by the class it records, or, for a checkpoint
        without one (torch.optim's), by a hyperparameter in its groups that torch.optim's classes take
        and this one does not (SGD's ``dampening`` in a checkpoint loaded into Adam)."""
        owner = type(self).__name__
        if kind is not None:
            if kind != self.checkpoint_kind():
                raise ValueError(
                    f"{owner}.load_state_dict: the checkpoint is from another optimizer ({kind}, not {self.checkpoint_kind()})"
                )
            return
        foreign = _torch_hyperparameter_names() - set(self.defaults)
        essential = LONGSTANDING_HYPERPARAMETERS & set(self.defaults)
        for group in state_dict.get("param_groups", []):
            others = sorted(foreign & set(group))
            if others:
                raise ValueError(
                    f"{owner}.load_state_dict: the checkpoint's param groups hold {others}, which {owner} does "
                    "not take; is the checkpoint from another optimizer?"
                )
            missing = sorted(essential - set(group))
            if missing:
                raise ValueError(
                    f"{owner}.load_state_dict: the checkpoint's param groups lack {missing}, which every "
                    f"torch.optim checkpoint of {owner} holds; is the checkpoint from another optimizer?"
                )

    def _keep_state_precision(self, state_dict: dict[str, Any]) -> None:
        """torch's ``load_state_dict`` casts every state tensor to its parameter's dtype; a 16-bit parameter's
        float32 state (see ``_state_dtype``) is taken again from the checkpoint, so that no bit is lost."""
        for group, saved_group in zip(self.param_groups, state_dict.get("param_groups", [])):
            for saved, param in zip(saved_group["params"], group["params"]):
                entries = state_dict.get("state", {}).get(saved)
                if not isinstance(entries, dict) or param not in self.state:
                    continue
                dtype = self._state_dtype(group, param.dtype)
                for key, value in entries.items():
                    if (key != "step" and isinstance(value, Tensor) and value.is_floating_point()
                            and value.dtype == dtype != param.dtype):
                        self.state[param][key] = value.to(device=local(param).device, copy=True)

    def _check_state_dict(self, state_dict: dict[str, Any]) -> None:
        owner = type(self).__name__
        groups, saved_groups = self.param_groups, state_dict.get("param_groups", [])
        if len(groups) != len(saved_groups) or any(
            len(g["params"]) != len(s["params"]) for g, s in zip(groups, saved_groups)
        ):
            raise ValueError(
                f"{owner}.load_state_dict: the checkpoint has {[len(s['params']) for s in saved_groups]} parameters "
                f"per group, this optimizer {[len(g['params']) for g in groups]}"
            )
        params = {saved: p for g, s in zip(groups, saved_groups) for saved, p in zip(s["params"], g["params"])}
        # the hyperparameters in force after loading are the checkpoint's
        chains = [self.chain({**self.defaults, **s}) for s in saved_groups]
        chain_of = {saved: chain for chain, s in zip(chains, saved_groups) for saved in s["params"]}
        for saved, entries in state_dict.get("state", {}).items():
            if not isinstance(saved, int) or not isinstance(entries, dict):
                continue  # not a parameter's state (a hook's entry): torch.optim carries it over as it is
            if saved not in params:
                raise ValueError(f"{owner}.load_state_dict: the checkpoint has state for unknown parameter {saved!r}")
            param = params[saved]
            shape = param.shape if self.elementwise else local(param).shape
            shape_only = torch.empty(shape, dtype=param.dtype, device="meta")
            expected: dict[str, torch.Size] = {}
            for transform in chain_of[saved]:
                if transform.stateful:
                    expected.update({key: value.shape for key, value in transform.init(shape_only).items()})
            unknown = set(entries) - set(expected) - {"step"} - self.ignored_state_keys
            if unknown:
                raise ValueError(
                    f"{owner}.load_state_dict: state {sorted(unknown)} of parameter {saved!r} is not kept by {owner} "
                    f"with these hyperparameters; is the checkpoint from another optimizer?"
                )
            for key, value in entries.items():
                if key in expected and isinstance(value, Tensor) and value.shape != expected[key]:
                    raise ValueError(
                        f"{owner}.load_state_dict: state {key!r} of parameter {saved!r} has shape "
                        f"{tuple(value.shape)}, expected {tuple(expected[key])} for a parameter of shape "
                        f"{tuple(param.shape)}"
                    )

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
        plan = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            group = self._numbers(group)  # a tensor lr as a number; a value that is no number named
            chain = self.chain(group)
            route = self._route(group, chain)
            plan.append((group, chain, route, *self._fusable(group, route, params)))
        gradients = [] if self.nonfinite == "ignore" else [
            p.grad for *_, by_dtype, rest in plan for params in (*by_dtype.values(), rest) for p in params]
        if self.nonfinite == "skip" and not self._ranks_agree(all_finite(gradients)):
            self.skipped_steps += 1
            return loss
        finite = True
        for group, chain, route, by_dtype, rest in plan:
            for params in by_dtype.values():
                finite = self._fused_update(params, group, chain, route) and finite
            if rest and self.nonfinite == "raise":
                finite = _locally_finite([local(p.grad) for p in rest]) and finite
            many, one_at_a_time = [], []
            for param in rest:
                (many if self._takes_foreach(group, param) else one_at_a_time).append(param)
            for param in one_at_a_time:
                self._update(param, group, chain)
            self._update_many(many, group, chain)
        if self.nonfinite == "raise" and not self._ranks_agree(agreed(finite, gradients)):
            raise FloatingPointError(
                f"{type(self).__name__}: a gradient held NaN or inf; the step was applied, as torch.optim would "
                "apply it, so parameters and state may now hold them too. Pass nonfinite='skip' to skip such "
                "steps without changing anything (counted in .skipped_steps), or nonfinite='ignore' to go on."
            )
        return loss

    def _ranks_agree(self, flag: bool) -> bool:
        """``flag`` and-ed over the ranks of a ``ZeroRedundancyOptimizer``, where each rank's optimizer
        holds only its share of the parameters (and so sees only its share of a NaN)."""
        if self._agreement_group is None:
            return flag
        import torch.distributed as dist

        value = torch.tensor([1 if flag else 0], dtype=torch.int32)
        dist.all_reduce(value, op=dist.ReduceOp.MIN, group=self._agreement_group)
        return bool(value.item())

    def kernel_info(self) -> list[KernelInfo]:
        """For each param group: its chain's steps and the path its update takes (see ``KernelInfo``)."""
        infos = []
        for group in self.param_groups:
            chain = self.chain(group)
            route = self._route(group, chain)
            infos.append(KernelInfo(tuple(type(step).__name__ for step in chain), route.kind or "reference",
                                    route.reason, route.trace, group.get("state_dtype")))
        return infos

    def _route(self, group: dict[str, Any], chain: list[Transform]) -> Route:
        """Which kernel can run ``chain`` for this group: the hand-written ``fused_step`` where the chain is
        the one it declares, else one generated from the chain's formulas; ``Route.reason`` says why not."""
        if group["fused"] is False or (group["fused"] is None and group["foreach"]):
            return Route(None, None, "fused=False" if group["fused"] is False else "foreach=True (as in torch.optim)")
        cpu_kernels = not native.disabled() and native.library() is not None
        if not cpu_kernels and (native.disabled() or not codegen_triton.available()):
            return Route(None, None, native.error or "the fused kernels are unavailable")
        if cpu_kernels and type(self).fused_step is not ChainOptimizer.fused_step and chain == self.kernel_chain(group):
            return Route("hand", None, None)
        found, hyper = codegen.lookup(chain, group.get("maximize", False))
        if found.trace is None:
            reason = f"its chain cannot be generated: {found.reason}"
            if group["fused"] is None and reason not in _warned_chains:
                _warned_chains.add(reason)
                warnings.warn(f"{type(self).__name__}: {reason}; it runs on the reference path", RuntimeWarning,
                              stacklevel=4)
            return Route(None, None, reason)
        return Route("generated", found.trace, None, hyper)

    @staticmethod
    def _state_keys(chain: list[Transform]) -> tuple[str, ...]:
        return codegen.state_keys(chain)

    def _fusable(self, group: dict[str, Any], route: Route, params: list[Tensor]
                 ) -> tuple[dict[tuple, list[Tensor]], list]:
        """Splits ``params`` into those the kernel of ``route`` takes (by device and dtype) and the rest,
        which the reference chain updates; raises for a gradient no path takes (sparse, complex), and, with
        ``fused=True``, for a parameter the kernel cannot take."""
        rest = params
        by_dtype: dict[tuple, list[Tensor]] = {}
        if route.kind is not None and params:
            rest = []
            check_shards = sharding_possible()
            built: dict[tuple, bool] = {}  # whether the kernel for a (device, dtype) could be had
            plain = route.kind == "generated" and not check_shards
            strided, cpu_dtypes = torch.strided, native.CHAIN_DTYPES
            for p in params:
                grad = p.grad
                if (plain and p.is_cpu and grad.layout is strided and grad.dtype is p.dtype and p.dtype in cpu_dtypes
                        and p.is_contiguous() and grad.is_contiguous()):  # the usual case, decided in few calls
                    if (p.device, p.dtype) not in built:
                        self._kernel_takes(group, route, p, grad, built)
                    fusable = built[(p.device, p.dtype)]
                elif check_shards and is_dtensor(p):
                    fusable = self.elementwise and self._kernel_takes(group, route, local(p), local(p.grad), built)
                else:
                    fusable = self._kernel_takes(group, route, p, grad, built)
                if fusable:
                    by_dtype.setdefault((p.device, p.dtype), []).append(p)
                else:
                    rest.append(p)
        owner = type(self).__name__
        for p in rest:
            if p.grad.layout != torch.strided:
                raise TypeError(f"{owner} does not support sparse gradients; use torch.optim.SparseAdam")
            if p.grad.is_complex() or p.is_complex():
                raise TypeError(f"{owner} does not support complex parameters; pass torch.view_as_real(p)")
        if group["fused"] and rest:
            if route.kind is None:
                raise RuntimeError(f"{owner}: `fused=True` but {route.reason}")
            raise RuntimeError(fused_refusal(owner, rest[0], route))
        return by_dtype, rest

    def _kernel_takes(self, group: dict[str, Any], route: Route, param: Tensor, grad: Tensor | None,
                      built: dict[tuple, bool]) -> bool:
        """Whether the kernel of ``route`` can update ``param``: the generated Triton kernel on a GPU (see
        ``codegen_triton.takes``), the generated C kernel or the class's ``fused_step`` on the CPU; False
        where the kernel fails to build (``native.error`` / ``codegen_triton.error`` say why).  ``built``
        remembers that per device and dtype, for the other parameters of the same call."""
        if route.kind == "hand":
            return native.can_fuse(param, grad)
        on_gpu = (not param.is_cpu or codegen_triton.interpreting()) and codegen_triton.takes(param, grad)
        if not on_gpu and not native.can_fuse_chain(param, grad):
            return False
        if on_gpu and self._state_dtype(group, param.dtype) == torch.bfloat16:
            return False  # stochastic rounding into bfloat16 state is in the C kernel and the reference only
        key = (param.device, param.dtype)
        if key not in built:
            state_dtype = self._state_dtype(group, param.dtype)
            built[key] = (codegen_triton.kernel(route.trace, param.dtype, state_dtype, param.device) if on_gpu
                          else generated_kernel(route.trace, param.dtype, state_dtype)) is not None
        return built[key]

    def _initialise(self, param: Tensor, state: dict, stateful: list[Transform], group: dict[str, Any]) -> None:
        """Creates the step counter and the chain's missing state entries (first step, or a step added later).

        Elementwise state is shaped like the parameter (a DTensor under FSDP2, as in torch.optim), in the
        group's state dtype (see ``_state_dtype``); Adafactor's row/column statistics follow this rank's rows.
        """
        if self.counts_steps and "step" not in state:
            state["step"] = torch.tensor(0.0)
        template = param.detach() if self.elementwise else local(param).detach()
        dtype = self._state_dtype(group, param.dtype)
        if template.dtype != dtype:
            template = torch.empty_like(template, dtype=dtype)
        for transform in stateful:
            transform.ensure_state(template, state)

    def _initialise_all(self, params: list[Tensor], states: list[dict], chain: list[Transform],
                        group: dict[str, Any]) -> None:
        """``_initialise`` where a state lacks an entry; the check costs a set comparison per parameter."""
        stateful = [transform for transform in chain if transform.stateful]
        needed: dict[torch.Size, set[str]] = {}  # the state keys a parameter of this shape keeps
        for param, state in zip(params, states):
            keys = needed.get(param.shape)
            if keys is None:
                keys = needed[param.shape] = {key for t in stateful for key in t.state_keys(param)}
                keys |= {"step"} if self.counts_steps else set()
            if not state.keys() >= keys:
                self._initialise(param, state, stateful, group)

    def _fused_update(self, params: list[Tensor], group: dict[str, Any], chain: list[Transform], route: Route
                      ) -> bool:
        """One kernel call for ``params``; False when a gradient held NaN or inf (the step is applied)."""
        states = [self.state[p] for p in params]
        self._initialise_all(params, states, chain, group)
        if route.kind == "hand":
            self._conform_state(params, states, chain, group)
            table = None
        else:  # the check costs a Python loop over every entry: done again only when some tensor moved
            checked = self.__dict__.setdefault("_conformed", {})
            key = (id(params[0]), params[0].device, params[0].dtype)  # the group's first parameter names the call
            table = self._pointer_table(params, [p.grad for p in params], states, route.trace)
            if checked.get(key) != self._fingerprint(params, table, route.trace):
                self._conform_state(params, states, chain, group)
                table = self._pointer_table(params, [p.grad for p in params], states, route.trace)
                checked[key] = self._fingerprint(params, table, route.trace)
        steps = self._count_steps(states) if self.counts_steps else None
        shards, grads = params, [p.grad for p in params]
        if sharding_possible() and any(is_dtensor(p) for p in params):  # the kernels update this rank's shards
            shards, grads = [local(p) for p in params], [local(g) for g in grads]
            states = [{key: local(value) for key, value in state.items()} for state in states]
            table = None
        if route.kind == "hand":
            finite = self.fused_step(group, shards, grads, states, steps)
        else:
            finite = self._generated_step(route, chain, group, shards, grads, states, steps, table)
        torch.autograd.graph.increment_version(shards)
        return bool(finite)

    @staticmethod
    def _pointer_table(params: list[Tensor], grads: list[Tensor], states: list[dict], trace):
        """The data addresses a generated kernel takes: for each parameter, one per role of ``trace.loads``
        (parameter, gradient, state entries), as one C array."""
        width = len(trace.loads)
        addresses = [0] * (width * len(params))
        addresses[0::width] = [param.data_ptr() for param in params]
        addresses[1::width] = [grad.data_ptr() for grad in grads]
        for column, role in enumerate(trace.loads[2:], 2):  # the state entries, after "param" and "grad"
            addresses[column::width] = [state[role].data_ptr() for state in states]
        return native.int64s(addresses)

    @staticmethod
    def _fingerprint(params: list[Tensor], table, trace) -> tuple:
        """The addresses, sizes and strides of the parameters and the state a kernel will touch: equal on two
        steps only if no parameter or state tensor was replaced, converted or resized in between (the
        gradients' addresses, which change every step, are left out)."""
        addresses = table[:]
        addresses[1::len(trace.loads)] = native.pointers([None] * len(params))
        return (bytes(addresses), bytes(native.sizes(params)), tuple(param.stride() for param in params),
                params[0].dtype)

    def _generated_step(self, route, chain, group, params, grads, states, steps, table=None) -> bool:
        """The chain's generated kernel over ``params`` (one device and dtype): C on the CPU (see
        ``descend.codegen``), Triton on a GPU (see ``descend.codegen_triton``)."""
        trace = route.trace
        if steps is None:  # a chain that reads no t: zeros, made once per length
            zeros = self.__dict__.setdefault("_zero_steps", {})
            steps = zeros.get(len(params)) or zeros.setdefault(len(params), native.doubles([0.0] * len(params)))
        prepared = self._prepared_scalars(trace, chain, states, steps)
        if codegen_triton.takes(params[0], grads[0]):
            found = codegen_triton.triton_step(trace, params, grads, states, steps, prepared, route.hyper)
            return self.nonfinite != "raise" or not found.item()  # the only host sync, and only to raise
        function = generated_kernel(trace, params[0].dtype, self._state_dtype(group, params[0].dtype))
        scalars = None if prepared is None else native.doubles([value for values in prepared for value in values])
        if table is None:
            table = self._pointer_table(params, grads, states, trace)
        return function(len(params), table, native.sizes(params), steps, scalars, native.doubles(route.hyper),
                        native.threads())

    @staticmethod
    def _prepared_scalars(trace, chain, states, steps) -> list[list[float]] | None:
        """``prepare`` run for each tensor; the values of ``trace.scalars`` per tensor (None: there are none)."""
        if not trace.scalars:
            return None
        preparing = [step for step in chain if getattr(step, "scalar_state", ())]
        values = []
        for state, t in zip(states, steps):
            for step in preparing:
                step.prepare(state, t)
            values.append([float(state[key]) for key in trace.scalars])
        return values

    @staticmethod
    def _state_dtype(group: dict[str, Any], param_dtype: torch.dtype) -> torch.dtype:
        """The dtype of a parameter's state: ``state_dtype`` when the group sets one, float32 for 16-bit
        parameters (their moments would lose most of their bits in 16), else the parameter's own."""
        chosen = group.get("state_dtype")
        if chosen is not None:
            return chosen
        return torch.float32 if param_dtype in SIXTEEN_BIT else param_dtype

    def _conform_state(self, params: list[Tensor], states: list[dict], chain: list[Transform],
                       group: dict[str, Any]) -> None:
        """Before a kernel touches them: every state entry has the parameter's layout and the group's state
        dtype (converted where not: after ``model.double()``, a checkpoint, ``channels_last``), and its
        expected shape (a parameter resized after its state was made raises ``RuntimeError``)."""
        for param, state in zip(params, states):
            dtype = self._state_dtype(group, param.dtype)
            for key, value in state.items():
                if key == "step" or not isinstance(value, Tensor):
                    continue
                expected = self._expected_state(param, key, chain)
                if expected is None:
                    continue
                shape = expected[0]
                if value.shape != shape:
                    raise RuntimeError(
                        f"{type(self).__name__}: state {key!r} of a parameter of shape {tuple(param.shape)} has "
                        f"shape {tuple(value.shape)}; the parameter was resized after its optimizer state was made "
                        "(re-create the optimizer, or delete optimizer.state[param])")
                like_param = shape == param.shape
                if value.dtype != dtype or value.device != param.device or (
                        like_param and value.stride() != param.stride()) or (
                        not like_param and not value.is_contiguous()):
                    fixed = torch.empty_like(param, dtype=dtype) if like_param else torch.empty(
                        shape, dtype=dtype, device=param.device)
                    state[key] = fixed.copy_(value)

    def _expected_state(self, param: Tensor, key: str, chain: list[Transform]):
        """``(shape,)`` of state entry ``key`` of ``param`` under ``chain``; None for an entry the chain does
        not keep (a scalar, or left over)."""
        cache = self.__dict__.setdefault("_expected_cache", {})
        signature = (param.shape, key, tuple(type(step) for step in chain))
        if signature not in cache:
            meta = torch.empty(param.shape, device="meta")
            found = None
            for step in chain:
                if step.stateful and key in step.state_keys(meta) and key not in getattr(step, "scalar_state", ()):
                    found = (step.init(meta)[key].shape,)
            cache[signature] = found
        return cache[signature]

    @staticmethod
    def _takes_foreach(group: dict[str, Any], param: Tensor) -> bool:
        """Whether the reference chain runs ``param`` on the multi-tensor path: ``foreach=None`` picks it
        where torch has fast ``_foreach_*`` kernels (CUDA), as torch.optim does; on the CPU one tensor at
        a time is faster.  Sharded (DTensor) parameters always go one at a time."""
        if sharding_possible() and is_dtensor(param):
            return False
        if group["foreach"] is None:
            return param.device.type in FOREACH_DEVICES
        return group["foreach"]

    def _count_steps(self, states: list[dict]) -> Sequence[float]:
        """``t ← t + 1`` for each parameter's step counter; the new values, as a C double array."""
        step_tensors = [state["step"] for state in states]
        if native.library() is not None and all(t.dtype == torch.float32 and t.is_cpu for t in step_tensors):
            return native.count_steps(step_tensors)
        torch._foreach_add_(step_tensors, 1.0)  # e.g. counters from a torch.optim fused/capturable run
        return native.doubles(torch.stack([t.double().cpu() for t in step_tensors]).tolist())

    def _update_many(self, params: list[Tensor], group: dict[str, Any], chain: list[Transform]) -> None:
        """The reference chain for a list of parameters at once, with torch's ``_foreach_*`` ops (one
        kernel launch per op for a whole list on CUDA; see ``Transform.many``).  Lists go by device and
        dtype, in chunks of at most ``max(largest parameter, CHUNK_ELEMENTS)`` elements, so that the
        temporaries of big models stay as small as on the per-parameter path."""
        if not params:
            return
        self._initialise_all(params, [self.state[param] for param in params], chain, group)
        by_kind: dict[tuple, list[Tensor]] = {}
        for param in params:
            by_kind.setdefault((param.device, param.dtype), []).append(param)
        largest = max(CHUNK_ELEMENTS, *(param.numel() for param in params))
        for same_kind in by_kind.values():
            chunk, size = [], 0
            for param in same_kind + [None]:
                if param is None or (chunk and size + param.numel() > largest):
                    self._update_chunk(chunk, group, chain)
                    chunk, size = [], 0
                if param is not None:
                    chunk.append(param)
                    size += param.numel()

    def _update_chunk(self, params: list[Tensor], group: dict[str, Any], chain: list[Transform]) -> None:
        states = [self.state[param] for param in params]
        steps = self._count_steps(states) if self.counts_steps else [0] * len(params)
        work = [(p, s, int(t)) for p, s, t in zip(params, states, steps) if p.numel()]  # as in _update
        if not work:
            return
        params, states, ctxs = [p for p, _, _ in work], [s for _, s, _ in work], [StepContext(t) for _, _, t in work]
        grads, values = [param.grad for param in params], params
        if params[0].dtype in SIXTEEN_BIT:  # computed in float32, rounded once when added to the parameter
            grads, values = [g.float() for g in grads], [p.float() for p in params]
        us = torch._foreach_neg(grads) if group.get("maximize", False) else torch._foreach_mul(grads, 1.0)
        for transform in chain:
            us = transform.many(us, values, states, ctxs)
        torch._foreach_add_(params, us)

    def _update(self, param: Tensor, group: dict[str, Any], chain: list[Transform]) -> None:
        """The reference chain for one parameter; a sharded one is updated shard by shard, with the
        steps that reduce over the whole parameter summing across ranks (see ``Shards``)."""
        state = self.state[param]
        shards = shards_of(param, type(self).__name__)
        self._initialise(param, state, [transform for transform in chain if transform.stateful], group)
        step = 0
        if self.counts_steps:
            state["step"] += 1
            step = int(state["step"].item())
        if param.numel() == 0:
            return  # nothing to update (and a mean over no elements would put NaN into state)
        ctx = StepContext(step=step, shards=shards)
        shard, grad = local(param), local(param.grad)
        local_state = {key: local(value) for key, value in state.items()} if is_dtensor(param) else state
        value = shard
        if shard.dtype in SIXTEEN_BIT:  # computed in float32, rounded once when added to the parameter
            grad, value = grad.float(), shard.float()
        u = grad.neg() if group.get("maximize", False) else grad.clone()
        for transform in chain:
            u = transform(u, value, local_state, ctx)
        shard.add_(u)
