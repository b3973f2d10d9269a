"""What a step's code reads besides its fields: module variables, closure cells, class attributes.

A formula is traced once per plan, so every value it reads is baked into the kernel, and a kernel is only
right for as long as those values stay what they were.  A step's fields are read by descend.plan.hyper
(numbers become run-time arguments).  This module finds the other values a step's code reads, from its
bytecode: the globals (and ``module.attribute`` chains) and closure cells its defining methods load, the
class attributes they read through ``self``, and the same in the helpers they call (methods on ``self``
and functions of the user's own modules, which count by identity: rebinding one re-traces).  The
functions, classes and modules of libraries (torch, numpy, math, descend) count as code, not values.

What descend promises for such a value (``descend.plan.hyper.describe``):

* a number, or structure (``None``, a bool, a string, a dtype; tuples, lists and dataclasses of them),
  is part of the plan's key, so a changed value re-traces the chain: the kernel always computes with the
  current value.  Each distinct value is a kernel of its own, so after ``MAX_VALUES`` distinct values of
  one step class the chain runs on the reference path, with a warning: a number that changes as training
  goes belongs in a field, where one kernel serves every value;
* anything else (a settings object, a dict, a tensor of many elements) cannot be read safely: the chain
  runs on the reference path, with a warning naming it.
"""
from __future__ import annotations

import builtins
import dis
import threading
import types
from collections.abc import Callable
from typing import Any

# the methods whose code runs while a chain is traced, or that declares its state
ROOTS = ("formula", "prepare", "contributions", "apply", "state_specs")
MAX_VALUES = 8  # distinct values of what one step class reads from outside, before it leaves the kernels
LIBRARIES = frozenset({"descend", "torch", "numpy", "math", "cmath", "builtins", "functools", "operator", "dataclasses",
                       "typing", "collections", "abc", "enum", "numbers", "itertools", "warnings"})

Read = tuple[str, Callable[[], Any]]  # what a message calls it ("SCALE in module my_steps"), and how to read it
MISSING = object()  # what a read gives for a name not bound (yet)
_reads: dict[type, tuple[Read, ...]] = {}
_lock = threading.Lock()


def reads(kind: type) -> tuple[Read, ...]:
    """The values the code of step class ``kind`` reads besides its instance's fields (cached per class)."""
    found = _reads.get(kind)
    if found is None:
        with _lock:
            found = _reads.get(kind)
            if found is None:
                found = _reads[kind] = tuple(_Scan(kind).run())
    return found


def _library(module_name: str | None) -> bool:
    return (module_name or "builtins").split(".")[0] in LIBRARIES


def is_code(value: Any) -> bool:
    """Functions, classes, modules and library callables: what a formula calls, not a value it computes with."""
    if isinstance(value, (types.ModuleType, type, types.FunctionType, types.BuiltinFunctionType, types.MethodType,
                          types.MethodWrapperType, types.WrapperDescriptorType, types.MethodDescriptorType,
                          staticmethod, classmethod, property)):
        return True
    return callable(value) and _library(type(value).__module__)


class _Scan:
    """One walk over the bytecode of a step class's defining methods and the helpers they call."""

    def __init__(self, kind: type):
        self.kind = kind
        self.fields = {f.name for f in getattr(kind, "__dataclass_fields__", {}).values()}
        self.seen: set[int] = set()
        self.found: dict[str, Read] = {}

    def run(self) -> list[Read]:
        for name in ROOTS:
            method = getattr(self.kind, name, None)
            if isinstance(method, types.FunctionType):
                self.function(method, method_of_self=True)
        return list(self.found.values())

    def function(self, function: types.FunctionType, method_of_self: bool) -> None:
        if id(function.__code__) in self.seen:
            return
        self.seen.add(id(function.__code__))
        cells = dict(zip(function.__code__.co_freevars, function.__closure__ or ()))
        self.code(function.__code__, function.__globals__, cells, method_of_self)

    def code(self, code: types.CodeType, namespace: dict, cells: dict, method_of_self: bool) -> None:
        instructions = list(dis.get_instructions(code))
        self_name = code.co_varnames[0] if method_of_self and code.co_argcount else None
        module = namespace.get("__name__", "?")
        for index, instruction in enumerate(instructions):
            attributes = _attribute_chain(instructions, index + 1)
            if instruction.opname in ("LOAD_GLOBAL", "LOAD_NAME"):
                name = instruction.argval
                if name not in namespace and hasattr(builtins, name):
                    continue  # len, float, ...
                self.value(f"{name} in module {module}", _global_reader(namespace, name), attributes)
            elif instruction.opname in ("LOAD_DEREF", "LOAD_CLASSDEREF") and instruction.argval in cells:
                cell = cells[instruction.argval]
                self.value(f"{instruction.argval} (a closure variable of {code.co_qualname})", _cell_reader(cell),
                           attributes)
            elif instruction.opname == "LOAD_FAST" and instruction.argval == self_name and attributes:
                self.attribute_of_self(attributes[0])
        for constant in code.co_consts:  # nested functions, lambdas, comprehensions
            if isinstance(constant, types.CodeType):
                self.code(constant, namespace, {}, method_of_self=False)

    def attribute_of_self(self, name: str) -> None:
        if name in self.fields:
            return  # a field: descend.plan.hyper reads it
        value = getattr(self.kind, name, MISSING)
        if isinstance(value, property):
            value = value.fget
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if isinstance(value, types.FunctionType):
            self.function(value, method_of_self=True)
        elif value is not MISSING and not is_code(value):
            kind = self.kind
            owner = next(k for k in kind.__mro__ if name in vars(k))
            if _library(owner.__module__):
                return  # descend's own class settings (kind, stateful, ...): part of the step's type

            self.found.setdefault(f"class attribute {kind.__name__}.{name}",
                                  (f"class attribute {kind.__name__}.{name}", lambda: getattr(kind, name, None)))

    def value(self, label: str, reader: Callable[[], Any], attributes: list[str]) -> None:
        """A global or a cell: code is followed (a module or a user's class through its attributes, a user's
        function into its body), anything else is a read."""
        current = reader()
        while attributes and (isinstance(current, types.ModuleType) or (
                isinstance(current, type) and not _library(current.__module__))):  # config.scale, Config.scale
            name, attributes = attributes[0], attributes[1:]
            label, reader = f"{current.__name__}.{name}", _attribute_reader(current, name)
            current = reader()
        if current is MISSING and attributes:
            return  # an attribute of a name not bound yet: read when the formula runs
        if isinstance(current, types.FunctionType) and not _library(current.__module__):
            self.function(current, method_of_self=False)  # and a read: rebinding it changes the formula
        elif is_code(current):
            return
        self.found.setdefault(label, (label, reader))


def _attribute_chain(instructions, start: int) -> list[str]:
    names = []
    for instruction in instructions[start:]:
        if instruction.opname not in ("LOAD_ATTR", "LOAD_METHOD"):
            break
        names.append(instruction.argval)
    return names


def _global_reader(namespace: dict, name: str) -> Callable[[], Any]:
    return lambda: namespace.get(name, MISSING)


def _cell_reader(cell) -> Callable[[], Any]:
    def read():
        try:
            return cell.cell_contents
        except ValueError:  # not bound yet
            return MISSING
    return read


def _attribute_reader(module: types.ModuleType, name: str) -> Callable[[], Any]:
    return lambda: getattr(module, name, MISSING)


_distinct: dict[type, set] = {}


def too_many_values(kind: type, values: tuple) -> bool:
    """Records ``values`` (what ``kind``'s code read from outside, as a hashable key) and says whether the
    class has now been traced with more than ``MAX_VALUES`` distinct ones."""
    seen = _distinct.setdefault(kind, set())
    if values not in seen and len(seen) >= MAX_VALUES:
        return True
    seen.add(values)
    return False
