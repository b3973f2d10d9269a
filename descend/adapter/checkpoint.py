"""``state_dict`` and ``load_state_dict``: torch.optim's checkpoints, checked against the declared state.

A checkpoint records the optimizer that wrote it (``"optimizer"``), so that another optimizer's is refused
before anything changes; one written by torch.optim records none, and is refused when its param groups
hold a hyperparameter that only other torch classes take (SGD's ``dampening`` loaded into Adam) or lack
one every torch checkpoint of this class holds.  A state entry is accepted when this optimizer keeps it
under some setting of its hyperparameters (a run that switched ``amsgrad`` off, ramped momentum to 0 or set
Adafactor's ``beta1`` to None resumes): every entry of a checkpoint that records this optimizer's class
(it wrote them), and for a torch.optim checkpoint the entries the class lists in ``state_keys``.  Entries
are loaded as its declaration says (dtype, device, layout): torch's own casting to the
parameter's dtype would lose the bits of a 16-bit parameter's float32 state.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor

from ..plan.plan import compile
from ..plan.blockwise import scale_key
from ..plan.state import check_state_dtype, codec_for, fits_state, refit_state
from .distributed import is_dtensor, local
from .options import LONGSTANDING_HYPERPARAMETERS, flags_as_bools, torch_hyperparameter_names
from .state import normalise_step, place

AS_KEPT = object()  # state_dict(): the state as the optimizer keeps it


class Checkpoints:
    """The ``state_dict`` / ``load_state_dict`` of a ``ChainOptimizer`` (a mixin)."""

    # entries another optimizer class may keep under some setting, beside those of the chains in use;
    # a class lists every entry any of its settings keeps (SGD: momentum_buffer)
    state_keys: frozenset[str] = frozenset()
    ignored_state_keys: frozenset[str] = frozenset()  # entries other libraries keep that a checkpoint may hold

    @classmethod
    def checkpoint_kind(cls) -> str:
        """The name a checkpoint records: the class that defines the update (``chain``), so that
        ``AdamW``'s checkpoints load into ``Adam`` and back, as torch's do."""
        return "descend." + next(c.__name__ for c in cls.__mro__ if "chain" in vars(c))

    def state_dict(self, *, state_dtype: Any = AS_KEPT) -> dict[str, Any]:
        """torch's ``state_dict``, with the class that wrote it (``"optimizer"``) and ``skipped_steps``
        added before the user's post-hooks run; parameters without state are left out, as in torch.
        ``state_dtype``: the state converted to that storage, and the groups' ``state_dtype`` set to it
        (``state_dtype=None`` from 8-bit state: float32 entries, a checkpoint torch.optim's class loads)."""
        post_hooks, self._optimizer_state_dict_post_hooks = self._optimizer_state_dict_post_hooks, OrderedDict()
        try:
            state_dict = super().state_dict()
        finally:
            self._optimizer_state_dict_post_hooks = post_hooks
        state_dict["state"] = {key: value for key, value in state_dict["state"].items()
                               if not (isinstance(value, dict) and not value)}
        if state_dtype is not AS_KEPT:
            self._converted(state_dict, state_dtype)
        state_dict["optimizer"] = self.checkpoint_kind()
        state_dict["skipped_steps"] = self.skipped_steps
        for hook in post_hooks.values():
            result = hook(self, state_dict)
            if result is not None:
                state_dict = result
        return state_dict

    def _converted(self, state_dict: dict[str, Any], state_dtype: Any) -> None:
        """``state_dict``'s entries stored as ``state_dtype`` says (fresh tensors), its groups set to it."""
        owner = type(self).__name__
        check_state_dtype(f"{owner}.state_dict", state_dtype)
        states = state_dict["state"]
        for group, saved_group in zip(self.param_groups, state_dict["param_groups"]):
            saved_group["state_dtype"] = state_dtype
            for saved, param in zip(saved_group["params"], group["params"]):
                entries = states.get(saved)
                if not isinstance(entries, dict):
                    continue
                codec = codec_for(state_dtype, param.dtype, local(param).numel())
                converted = dict(entries)
                for key, spec in self._declared(group, param).items():
                    if isinstance(entries.get(key), Tensor):
                        converted.pop(scale_key(key), None)
                        converted.update(refit_state(spec, entries, place(param, spec), codec, owner))
                states[saved] = converted

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's ``load_state_dict``, after checking that the checkpoint fits this optimizer (a
        ``ValueError`` leaves the current state untouched).  The user's pre-hooks run first, the post-hooks
        last, after descend's own fix-ups."""
        state_dict = state_dict.copy()
        for hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = hook(self, state_dict)
            if result is not None:
                state_dict = result
        state_dict = dict(state_dict)
        skipped_steps = state_dict.pop("skipped_steps", 0)
        kind = state_dict.pop("optimizer", None)
        self._check_kind(kind, state_dict)
        state_dict = self._without_empty_entries(state_dict)
        self._check_state_dict(state_dict, written_by_this_class=kind is not None)
        hooks = self._optimizer_load_state_dict_pre_hooks, self._optimizer_load_state_dict_post_hooks
        self._optimizer_load_state_dict_pre_hooks = self._optimizer_load_state_dict_post_hooks = OrderedDict()
        try:
            super().load_state_dict(state_dict)
        finally:
            self._optimizer_load_state_dict_pre_hooks, self._optimizer_load_state_dict_post_hooks = hooks
        self._as_declared(state_dict)
        for group in self.param_groups:  # a checkpoint from torch.optim lacks descend-only options
            for name, default in self.defaults.items():
                group.setdefault(name, default)
            group.update(flags_as_bools(type(self), {k: v for k, v in group.items() if k != "params"}))
        self.skipped_steps = skipped_steps
        for hook in hooks[1].values():
            hook(self)

    @staticmethod
    def _without_empty_entries(state_dict: dict[str, Any]) -> dict[str, Any]:
        """Entries that hold None (torch < 2.0 wrote ``{"momentum_buffer": None}`` for SGD) mean "not made
        yet", as in torch; they are left out, and the first step makes them."""
        states = state_dict.get("state", {})
        if not any(isinstance(e, dict) and any(v is None for v in e.values()) for e in states.values()):
            return state_dict
        cleaned = {key: ({k: v for k, v in entries.items() if v is not None} if isinstance(entries, dict) else entries)
                   for key, entries in states.items()}
        return {**state_dict, "state": cleaned}

    def _check_kind(self, kind: str | None, state_dict: dict[str, Any]) -> None:
        owner = type(self).__name__
        if kind is not None:
            if kind != self.checkpoint_kind():
                raise ValueError(
                    f"{owner}.load_state_dict: the checkpoint is from another optimizer ({kind}, not "
                    f"{self.checkpoint_kind()})")
            return
        foreign = torch_hyperparameter_names() - set(self.defaults)
        essential = LONGSTANDING_HYPERPARAMETERS & set(self.defaults)
        for group in state_dict.get("param_groups", []):
            others = sorted(foreign & set(group))
            if others:
                raise ValueError(
                    f"{owner}.load_state_dict: the checkpoint's param groups hold {others}, which {owner} does "
                    "not take; is the checkpoint from another optimizer?")
            missing = sorted(essential - set(group))
            if missing:
                raise ValueError(
                    f"{owner}.load_state_dict: the checkpoint's param groups lack {missing}, which every "
                    f"torch.optim checkpoint of {owner} holds; is the checkpoint from another optimizer?")

    def _declared(self, group: dict[str, Any], param: Tensor) -> dict[str, Any]:
        """The declared state of ``param`` under ``group``'s settings: key -> StateSpec."""
        values = self._numbers(group)
        plan, _ = compile(self.full_chain(values), values.get("maximize", False))
        return plan.variant(param.dim()).spec_of

    def _check_state_dict(self, state_dict: dict[str, Any], written_by_this_class: bool) -> None:
        owner = type(self).__name__
        groups, saved_groups = self.param_groups, state_dict.get("param_groups", [])
        if len(groups) != len(saved_groups) or any(
                len(g["params"]) != len(s["params"]) for g, s in zip(groups, saved_groups)):
            raise ValueError(
                f"{owner}.load_state_dict: the checkpoint has {[len(s['params']) for s in saved_groups]} parameters "
                f"per group, this optimizer {[len(g['params']) for g in groups]}")
        params = {saved: p for g, s in zip(groups, saved_groups) for saved, p in zip(s["params"], g["params"])}
        group_of = {saved: {**self.defaults, **flags_as_bools(type(self), s)} for s in saved_groups
                    for saved in s["params"]}
        for saved, entries in state_dict.get("state", {}).items():
            if not isinstance(saved, int) or not isinstance(entries, dict):
                continue  # not a parameter's state (a hook's entry): torch.optim carries it over as it is
            if saved not in params:
                raise ValueError(f"{owner}.load_state_dict: the checkpoint has state for unknown parameter {saved!r}")
            param = params[saved]
            declared = self._declared(group_of[saved], param)
            known = set(declared) | set(self.state_keys) | {"step"} | set(self.ignored_state_keys)
            unknown = set(entries) - known
            if unknown and not written_by_this_class:
                raise ValueError(
                    f"{owner}.load_state_dict: state {sorted(unknown)} of parameter {saved!r} is not kept by {owner} "
                    "under any setting; is the checkpoint from another optimizer?")
            for key, value in entries.items():
                spec = declared.get(key)
                if spec is None or not isinstance(value, Tensor):
                    continue
                expected = spec.shape_for(param.shape)
                if value.shape != expected and not (spec.shape == "scalar" and value.numel() == 1):
                    raise ValueError(
                        f"{owner}.load_state_dict: state {key!r} of parameter {saved!r} has shape "
                        f"{tuple(value.shape)}, expected {tuple(expected)} for a parameter of shape "
                        f"{tuple(param.shape)}")

    def _as_declared(self, state_dict: dict[str, Any]) -> None:
        """Every loaded entry as its declaration says, taken from the checkpoint's own tensor (torch's load
        cast it to the parameter's dtype); entries of other libraries dropped; step counters as floats."""
        saved_state = state_dict.get("state", {})
        for group, saved_group in zip(self.param_groups, state_dict.get("param_groups", [])):
            for saved, param in zip(saved_group["params"], group["params"]):
                state = self.state.get(param)
                if not isinstance(state, dict):
                    continue
                for key in self.ignored_state_keys & state.keys():
                    del state[key]
                normalise_step(state)
                entries = saved_state.get(saved)
                if not isinstance(entries, dict):
                    continue
                declared = self._declared(group, param)
                codec = codec_for(group.get("state_dtype"), param.dtype, local(param).numel())
                companions = set()
                for key, spec in declared.items():
                    value = entries.get(key)
                    if not isinstance(value, Tensor):
                        continue
                    target = place(param, spec)
                    companions.add(scale_key(key))
                    if is_dtensor(param) or is_dtensor(value):  # FSDP2's state: torch loaded it shard by shard
                        source, codes = dict(state), value.dtype == torch.uint8
                        if codes:  # the codes as saved (torch's load made them floats), copied with their scales
                            source[key], source[scale_key(key)] = value, entries.get(scale_key(key))
                        if codes or not fits_state(spec, source, target, codec):
                            state.pop(scale_key(key), None)
                            state.update(refit_state(spec, source, target, codec, type(self).__name__))
                    else:  # fresh copies of the checkpoint's own tensors (8-bit codes: with their scales), as declared
                        state.pop(scale_key(key), None)
                        state.update(refit_state(spec, entries, target, codec, type(self).__name__))
                for key, value in entries.items():  # kept under another setting (amsgrad on): as it was saved
                    loaded = state.get(key)
                    if key not in declared and key not in companions and key != "step" and isinstance(value, Tensor) \
                            and isinstance(loaded, Tensor) and loaded.dtype != value.dtype and not is_dtensor(loaded):
                        state[key] = value.detach().to(device=loaded.device, copy=True)
        for state in self.state.values():  # entries of parameters the groups do not name (a hook's)
            if isinstance(state, dict):
                normalise_step(state)


__all__ = ["Checkpoints"]
