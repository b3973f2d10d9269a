"""torch.optim's conventions for an optimizer's arguments: flags given as None, the keyword arguments every
torch.optim class takes, and a group's values as the chains take them."""
from __future__ import annotations

import functools
import inspect
from numbers import Real
from typing import Any

import torch

from ..plan.hyper import as_number

NONFINITE_POLICIES = ("raise", "skip", "ignore")
DESCEND_OPTIONS = ("fused", "foreach", "state_dtype", "max_grad_norm")  # per-group options every class takes

# hyperparameters that define an algorithm and that every torch version has written into its checkpoints (the
# flags foreach, fused, capturable, differentiable, maximize came later): a torch checkpoint without one is not
# of a class that takes it (a torch RAdam checkpoint loaded into Adam lacks amsgrad)
LONGSTANDING_HYPERPARAMETERS = frozenset({
    "momentum", "dampening", "nesterov", "lr_decay", "initial_accumulator_value", "alpha", "centered", "rho",
    "amsgrad", "momentum_decay", "lambd", "t0", "etas", "step_sizes",
    "weight_decay",  # all but SparseAdam, Rprop, LBFGS: their checkpoints lack it (SparseAdam's state is RAdam's)
})


@functools.cache
def boolean_options(cls: type) -> frozenset[str]:
    """The keyword arguments of ``cls`` that default to True or False (None given for one means False)."""
    return frozenset(name for name, parameter in inspect.signature(cls.__init__).parameters.items()
                     if isinstance(parameter.default, bool))


@functools.cache
def numeric_options(cls: type) -> dict[str, Any]:
    """The keyword arguments of ``cls`` that take numbers (or pairs of numbers, or None), with their defaults;
    an argument that defaults to None and is annotated as a string (Muon's ``adjust_lr_fn``) is a setting."""
    return {name: parameter.default for name, parameter in inspect.signature(cls.__init__).parameters.items()
            if name not in DESCEND_OPTIONS and not isinstance(parameter.default, bool) and (
                (parameter.default is None and "str" not in str(parameter.annotation))
                or isinstance(parameter.default, (Real, tuple)))}


def flags_as_bools(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    flags = boolean_options(cls)
    return {name: False if value is None and name in flags else value for name, value in values.items()}


@functools.cache
def torch_hyperparameter_names() -> frozenset[str]:
    """Every keyword argument of torch.optim's optimizer classes."""
    names = set()
    for value in vars(torch.optim).values():
        if isinstance(value, type) and issubclass(value, torch.optim.Optimizer):
            names |= set(inspect.signature(value.__init__).parameters)
    return frozenset(names - {"self", "params", "defaults", "args", "kwargs"})


_PLAIN = (float, int)  # numbers that need no conversion (bool is a subclass of int, not of these types)


def group_numbers(optimizer, group: dict[str, Any], cls: type | None = None) -> dict[str, Any]:
    """``group`` with its numeric hyperparameters (those of ``cls``'s signature, by default the optimizer's
    class) as Python numbers (a tensor or numpy lr becomes a float), as the chains take them; a value edited
    into something that is no number is a ``TypeError`` that names it (``param_groups[0]['lr']``)."""
    values = dict(group)
    owner = type(optimizer).__name__
    for name, default in numeric_options(cls or type(optimizer)).items():
        value = values.get(name)
        if type(default) is tuple:  # the usual cases, checked first: a step is short
            if type(value) is tuple and len(value) == len(default) and all(type(v) in _PLAIN for v in value):
                continue
        elif type(value) in _PLAIN:
            continue
        if name in values:
            try:
                values[name] = as_number(owner, name, values[name], default)
            except TypeError as error:
                index = next((i for i, g in enumerate(optimizer.param_groups) if g is group), None)
                where = f" param_groups[{index}][{name!r}]" if index is not None else f" the checkpoint's {name!r}"
                raise TypeError(str(error).replace(f" {name}", where, 1)) from None
    return values
