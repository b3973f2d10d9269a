"""Property: whatever happens to the model between steps, a step never crashes and the default path (the
fused kernel where it runs) agrees with the reference chain (``fused=False``) or both raise an error.

Hypothesis draws an optimizer and torch's hyperparameters from tests/contract_registry.py (those that take
parameters of any shape: the world has a conv kernel, a matrix and a bias), and a sequence of
changes: steps, a parameter frozen (no gradient), a param group added, a checkpoint saved and loaded, and the
changes that move the parameters under the kernels: a dtype change (``model.double()``), a layout change
(channels_last <-> contiguous) and a resize (``p.data = bigger``).  Those last ones could crash the process
before the fused path checked its state against the parameter, so they run in a child process.
"""
from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contract_registry import PAIRS, as_gradient

SAFE = ["step", "step", "freeze", "add_group", "checkpoint"]
MOVING = ["double", "float", "channels_last", "contiguous", "resize"]


class World:
    """A small model's parameters and an optimizer over them; ``apply`` makes one change."""

    def __init__(self, cls, kwargs, options):
        g = torch.Generator().manual_seed(0)
        self.params = [torch.randn(4, 3, 3, 3, generator=g).requires_grad_(),  # a conv kernel
                       torch.randn(5, 4, generator=g).requires_grad_(),
                       torch.randn(5, generator=g).requires_grad_()]
        self.spare = torch.randn(3, 2, generator=g).requires_grad_()
        self.frozen: set[int] = set()
        self.optimizer = cls(self.params, **copy.deepcopy(kwargs), **options)
        self.step_number = 0

    def apply(self, change):
        with torch.no_grad():
            if change == "step":
                g = torch.Generator().manual_seed(1000 + self.step_number)
                self.step_number += 1
                for i, p in enumerate(self.params):
                    grad = torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype)
                    p.grad = None if i in self.frozen else as_gradient(
                        self.optimizer, grad.contiguous(memory_format=_format_of(p)))
                self.optimizer.step()
            elif change == "freeze":
                self.frozen.add(self.step_number % len(self.params))
            elif change == "add_group" and self.spare is not None:
                self.params.append(self.spare)
                self.optimizer.add_param_group({"params": [self.spare]})
                self.spare = None
            elif change == "checkpoint":
                self.optimizer.load_state_dict(copy.deepcopy(self.optimizer.state_dict()))
            elif change in ("double", "float"):
                for p in self.params:
                    p.data = p.data.to(torch.float64 if change == "double" else torch.float32)
                    p.grad = None
            elif change in ("channels_last", "contiguous"):
                kernel = self.params[0]
                fmt = torch.channels_last if change == "channels_last" else torch.contiguous_format
                kernel.data = kernel.data.contiguous(memory_format=fmt)
                kernel.grad = None
            elif change == "resize":
                bias = self.params[2]
                bias.data = torch.cat([bias.data, bias.data[:2]])
                bias.grad = None


def _format_of(p):
    return torch.channels_last if p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) \
        and not p.is_contiguous() else torch.contiguous_format


def check_sequence(pair, kwargs, changes):
    default, reference = World(pair.ours, kwargs, {}), World(pair.ours, kwargs, dict(fused=False))
    for change in changes:
        errors = []
        for world in (default, reference):
            try:
                world.apply(change)
                errors.append(None)
            except (RuntimeError, ValueError, TypeError) as error:  # a clear error is allowed, not a crash
                errors.append(error)
        assert (errors[0] is None) == (errors[1] is None), f"after {change}: default {errors[0]!r}, " \
                                                           f"reference {errors[1]!r}"
        if errors[0] is not None:
            return
        for a, b in zip(default.params, reference.params):
            assert a.dtype == b.dtype and a.shape == b.shape
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=lambda m: f"after {changes}: {m}")


def inputs():
    return st.sampled_from([(pair, kwargs) for pair in PAIRS if not pair.matrices_only for _, kwargs in pair.inputs()
                            if not any(isinstance(v, torch.Tensor) for v in kwargs.values())])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=inputs(), changes=st.lists(st.sampled_from(SAFE), min_size=1, max_size=8))
def test_steps_freezing_new_groups_and_checkpoints_agree_with_the_reference(case, changes):
    pair, kwargs = case
    check_sequence(pair, kwargs, ["step", *changes, "step"])


@pytest.mark.skipif(os.environ.get("DESCEND_MODEL_CHANGES_CHILD") != "1", reason="runs in the child process only")
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=inputs(), changes=st.lists(st.sampled_from(SAFE + MOVING), min_size=1, max_size=8))
def test_moving_parameters_in_child(case, changes):
    pair, kwargs = case
    check_sequence(pair, kwargs, ["step", *changes, "step"])


def test_dtype_layout_and_size_changes_never_crash_and_agree_with_the_reference():
    """In a child process: a crash (SIGSEGV, SIGBUS, heap corruption) fails this test instead of the run."""
    child = subprocess.run(
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", __file__, "-k", "moving_parameters_in_child"],
        env={**os.environ, "DESCEND_MODEL_CHANGES_CHILD": "1"}, capture_output=True, text=True, timeout=600,
    )
    assert child.returncode == 0, f"exit status {child.returncode}\n{child.stdout[-3000:]}\n{child.stderr[-2000:]}"
