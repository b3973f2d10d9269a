"""Hyperparameters: which settings of a chain's steps are numbers (run-time arguments of one kernel) and
which are structure (what a kernel is specialised on), and the range checks every optimizer uses.

A step is a dataclass.  Its fields are read through ``dataclasses.fields`` (slots and frozen dataclasses
alike): a number (``float``, ``int``, a numpy scalar, a one-element tensor) is a hyperparameter; so is
every number inside a tuple, a list or a nested dataclass (``betas: tuple``).  ``None``, booleans,
strings, dtypes and enums are structure.  Anything else (a settings object, a callable) cannot be read
safely (a number hidden in it would be baked into a kernel): such a step runs on the reference path.
Attributes an instance holds beside its fields (set in ``__post_init__``) are read the same way.  What a
step's code reads from outside the instance (module variables, closures, class attributes) is part of the
structure by value: see descend.plan.external.
"""
from __future__ import annotations

import dataclasses
import enum
import math
from numbers import Real
from typing import Any

import torch
from torch import Tensor

from . import external

NUMBER = "#"  # what a number contributes to a chain's structure: its position, never its value


class Opaque(Exception):
    """A step's field holds something descend cannot read as numbers and structure."""


def is_number(value: Any) -> bool:
    """A real number of any kind: Python, numpy, or a one-element real tensor."""
    if type(value) is float or type(value) is int:
        return True
    if isinstance(value, Tensor):
        return value.numel() == 1 and not value.is_complex() and value.dtype != torch.bool
    return isinstance(value, Real) and not isinstance(value, (bool, enum.Enum))


def as_float(value: Any) -> float:
    return float(value.item()) if isinstance(value, Tensor) else float(value)


_STRUCTURE = (type(None), bool, str, torch.dtype, enum.Enum)


def walk(value: Any, path: str, numbers: list[float], names: list[str]):
    """``value``'s structure (hashable), appending its numbers and their names (``path``) in order."""
    if is_number(value):
        numbers.append(as_float(value))
        names.append(path)
        return NUMBER
    if isinstance(value, _STRUCTURE):
        return ("=", value)
    if isinstance(value, (tuple, list)):
        return (type(value), tuple(walk(item, f"{path}[{i}]", numbers, names) for i, item in enumerate(value)))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value), tuple((name, walk(getattr(value, name), f"{path}.{name}", numbers, names))
                                   for name in settings_of(value)))
    raise Opaque(f"{path} holds {_kind_of(value)}, which is neither a number nor structure")


def _by_value(value: Any):
    """A hashable key of what ``value`` holds: numbers and structure by value, code (a function, a class) by
    identity (the key keeps it alive, so its id is never another's)."""
    if value is external.MISSING:
        return "missing"
    if is_number(value):
        return as_float(value)
    if isinstance(value, _STRUCTURE):
        return ("=", value)
    if isinstance(value, (tuple, list)):
        return (type(value), tuple(_by_value(item) for item in value))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value), tuple((name, _by_value(getattr(value, name))) for name in settings_of(value)))
    if external.is_code(value):
        try:
            hash(value)
        except TypeError:
            raise Opaque(f"an unhashable {type(value).__qualname__}") from None
        return ("code", value)
    raise Opaque(_kind_of(value))


def _kind_of(value: Any) -> str:
    """What a value is, for a message that stays the same from step to step (no address in it: descend warns
    once per reason)."""
    if isinstance(value, Tensor):
        return f"a tensor of {value.numel()} elements"
    return f"a value of type {type(value).__qualname__}"


# the methods whose code defines a step: redefining one at run time makes a new plan
DEFINING = ("formula", "prepare", "contributions", "apply", "state_specs")


def describe(chain, maximize: bool) -> tuple[tuple, list[float], list[str]]:
    """The chain's structure (the cache key of its plan), its numbers and their names
    (``"ScaleByLearningRate.lr"``), in one walk over the steps' fields.  Raises ``Opaque``."""
    numbers: list[float] = []
    names: list[str] = []
    key: list = [bool(maximize)]
    for step in chain:
        kind = type(step)
        if not dataclasses.is_dataclass(step):
            raise Opaque(f"{kind.__name__} is not a dataclass, so its settings cannot be read; decorate it with "
                         "@dataclass")
        settings = tuple((name, walk(getattr(step, name), f"{kind.__name__}.{name}", numbers, names))
                         for name in settings_of(step))
        key.append((kind, tuple(getattr(kind, name, None) for name in DEFINING), settings, _outside(kind)))
    return tuple(key), numbers, _unique(names)


def settings_of(step) -> tuple[str, ...]:
    """The names of what a dataclass instance holds: its fields, then any attribute its ``__dict__`` holds
    beside them (set in ``__post_init__``), which its formula may read as well."""
    kind = type(step)
    names = _field_names.get(kind)
    if names is None:
        names = _field_names[kind] = tuple(f.name for f in dataclasses.fields(step))
    extra = getattr(step, "__dict__", None)
    if extra and len(extra) > len(names):
        return names + tuple(sorted(set(extra) - set(names)))
    return names


_field_names: dict[type, tuple[str, ...]] = {}


def _outside(kind: type) -> tuple:
    """What ``kind``'s code reads from outside the instance (descend.plan.external), by value: a number or
    structure there is baked into the kernel, so its value is part of the plan's key."""
    reads = external.reads(kind)
    if not reads:
        return ()
    values = []
    for label, read in reads:
        value = read()
        try:
            values.append((label, _by_value(value)))
        except Opaque:
            raise Opaque(f"{kind.__name__} reads {label}, which holds {_kind_of(value)}: neither "
                         "a number nor structure, so a kernel would keep the value it had when traced; pass it as a "
                         "field of the step") from None
    values = tuple(values)
    if external.too_many_values(kind, values):
        labels = ", ".join(label for label, _ in reads)
        raise Opaque(f"{kind.__name__} reads {labels}, whose value has changed more than "
                     f"{external.MAX_VALUES} times (each value is a kernel of its own); a number that changes belongs "
                     "in a field of the step, where one kernel serves every value")
    return values


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out


def symbolic(value: Any, leaves):
    """``value`` with every number replaced by the next of ``leaves`` (an iterator of symbols), in the
    order ``walk`` reads them."""
    if is_number(value):
        return next(leaves)
    if isinstance(value, _STRUCTURE):
        return value
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a NamedTuple
        return type(value)(*(symbolic(item, leaves) for item in value))
    if isinstance(value, (tuple, list)):
        return type(value)(symbolic(item, leaves) for item in value)
    copy = _copy(value)
    for name in settings_of(value):
        object.__setattr__(copy, name, symbolic(getattr(value, name), leaves))
    return copy


def _copy(instance):
    """A shallow copy of a dataclass instance (slots, frozen and plain ones), without calling ``__init__``."""
    copy = object.__new__(type(instance))
    for f in dataclasses.fields(instance):
        object.__setattr__(copy, f.name, getattr(instance, f.name))
    if hasattr(instance, "__dict__"):
        for name, value in vars(instance).items():
            if not hasattr(copy, name):
                object.__setattr__(copy, name, value)
    return copy


# --- checks: each names the argument and the range it must lie in --------------------------------


def number(owner: str, name: str, value: Any) -> float:
    if isinstance(value, Tensor):
        if value.numel() != 1:  # torch's wording, which code may match on
            raise ValueError(f"{owner}: Tensor {name} must be 1-element, got shape {tuple(value.shape)}")
        value = value.item()
    if not is_number(value):
        raise TypeError(f"{owner}: {name} must be a real number, got {value!r}")
    return float(value)


def check_nonnegative(owner: str, name: str, value: Any) -> None:
    value_ = number(owner, name, value)
    if not (math.isfinite(value_) and value_ >= 0.0):
        raise ValueError(f"{owner}: {name} must be a finite number >= 0, got {value!r}")


def check_positive(owner: str, name: str, value: Any) -> None:
    value_ = number(owner, name, value)
    if not (math.isfinite(value_) and value_ > 0.0):
        raise ValueError(f"{owner}: {name} must be a finite number > 0, got {value!r}")


def check_unit_interval(owner: str, name: str, value: Any) -> None:
    """A decay rate: ``0 <= value < 1``."""
    value_ = number(owner, name, value)
    if not (0.0 <= value_ < 1.0):
        raise ValueError(f"{owner}: {name} must lie in [0, 1), got {value!r}")


def check_closed_interval(owner: str, name: str, value: Any, low: float, high: float) -> None:
    value_ = number(owner, name, value)
    if not (low <= value_ <= high):
        raise ValueError(f"{owner}: {name} must lie in [{low:g}, {high:g}], got {value!r}")


def check_betas(owner: str, betas: Any, closed: bool = False) -> None:
    """A pair ``(β₁, β₂)`` of decay rates, each in [0, 1) (or [0, 1] with ``closed``)."""
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"{owner}: betas must be a pair (beta1, beta2), got {betas!r}")
    for index, beta in enumerate(betas):
        if closed:
            check_closed_interval(owner, f"betas[{index}]", beta, 0.0, 1.0)
        else:
            check_unit_interval(owner, f"betas[{index}]", beta)


def as_number(owner: str, where: str, value: Any, like: Any) -> Any:
    """A group's hyperparameter as the chains take it, shaped as its default ``like``: a one-element tensor
    or numpy scalar becomes a float, a pair (betas) entry by entry, None stays None where the default is
    None.  Anything else is a ``TypeError`` naming ``where`` (a value edited after construction)."""
    if isinstance(like, (tuple, list)):
        if isinstance(value, (tuple, list)) and len(value) == len(like):
            return type(value)(as_number(owner, f"{where}[{i}]", v, d) for i, (v, d) in enumerate(zip(value, like)))
        raise TypeError(f"{owner}: {where} must be a tuple of {len(like)} real numbers, got {value!r}")
    if value is None and like is None:
        return value
    if type(value) is float or type(value) is int:
        return value
    if is_number(value):
        return as_float(value)
    raise TypeError(f"{owner}: {where} must be a real number (or a 1-element tensor), got {value!r}")
