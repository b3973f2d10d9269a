"""Users compose optimizers: subclasses that change chain(group), make_optimizer, and new steps of their
own; every path (the generated kernel, the reference chain, the multi-tensor chain) runs the chain as
written, and a formula changed at run time changes every path."""
from __future__ import annotations

import copy
import inspect
import pickle
from dataclasses import dataclass

import pytest
import torch

import descend
from descend import steps as transforms
from descend.steps import maximum, minimum, sign, where
from descend.plan.hyper import check_nonnegative
from descend.steps import (
    AddWeightDecay,
    BiasCorrection,
    EmaOfSquares,
    Momentum,
    ScaleByInverseRms,
    ScaleByLearningRate,
)
from conftest import make_params, nonconvex_loss

# "foreach": the multi-tensor reference chain (as in torch.optim, foreach=True alone means it, not the kernel)
PATHS = {"fused": dict(), "reference": dict(fused=False), "foreach": dict(fused=False, foreach=True)}
STEPS = 15


# --- the example -----------------------------------------------------------------------


class SGDWithExtraDecay(descend.SGD):
    def chain(self, group):
        return [AddWeightDecay(0.5)] + super().chain(group)


@pytest.mark.parametrize("flags", [dict(), dict(fused=False), dict(foreach=True), dict(fused=False, foreach=True)])
def test_a_subclass_that_prepends_a_step_gets_its_chain_on_every_path(flags):
    param = torch.nn.Parameter(torch.tensor([2.0]))
    param.grad = torch.tensor([1.0])
    optimizer = SGDWithExtraDecay([param], lr=0.1, weight_decay=0, **flags)
    optimizer.step()
    torch.testing.assert_close(param.detach(), torch.tensor([1.8]))  # 2 − 0.1·(1 + 0.5·2)
    fused = flags.get("fused") is not False  # foreach=True alone takes the generated (multi-tensor) kernels too
    assert optimizer.kernel_info()[0].path == ("generated" if fused else "reference")


# --- custom chains ------------------------------------------------------------------------------


class AdamPrependDecay(descend.Adam):
    def chain(self, group):
        return [AddWeightDecay(0.05)] + super().chain(group)


class AdamWithoutFirstBiasCorrection(descend.Adam):
    def chain(self, group):
        return [step for step in super().chain(group) if not isinstance(step, BiasCorrection)]


class RMSpropMomentumFirst(descend.RMSprop):
    """Momentum on the raw gradient, then divided by the RMS: the two steps of RMSprop swapped."""

    def chain(self, group):
        steps = super().chain(group)
        rms = next(i for i, step in enumerate(steps) if isinstance(step, ScaleByInverseRms))
        momentum = next(i for i, step in enumerate(steps) if isinstance(step, Momentum))
        steps[rms], steps[momentum] = steps[momentum], steps[rms]
        return steps


@dataclass
class ClipBySign(descend.Elementwise):
    """A user's step: ``u ← min(|u|, c)·sign(u)``, and a running count of clipped steps per element."""

    stateful = True
    threshold: float
    key: str = "clipped"

    def formula(self, u, param, state, t):
        state[self.key] = state[self.key] + where(abs(u) > self.threshold, 1.0, 0.0)
        return minimum(abs(u), self.threshold) * sign(u)


class SGDClipped(descend.SGD):
    def chain(self, group):
        return [ClipBySign(0.3)] + super().chain(group)


@dataclass
class AdaptiveFloor(descend.Elementwise):
    """A user's step with a per-step condition: ``u ← u / max(√s, floor)`` only after ``warmup`` steps."""

    floor: float
    warmup: float
    source: str = "square_avg"

    def formula(self, u, param, state, t):
        from descend.steps import sqrt

        return where(t > self.warmup, u / maximum(sqrt(state[self.source]), self.floor), u)


RMSWithFloor = descend.make_optimizer(
    "RMSWithFloor",
    lambda group: [EmaOfSquares(group["alpha"]), AdaptiveFloor(group["floor"], group["warmup"]),
                   ScaleByLearningRate(group["lr"])],
    defaults=dict(lr=0.01, alpha=0.9, floor=0.1, warmup=3),
)

CUSTOM = {
    # name: (custom class, kwargs, the class it changes, or None)
    "prepend": (AdamPrependDecay, dict(lr=0.01), descend.Adam),
    "drop": (AdamWithoutFirstBiasCorrection, dict(lr=0.01), descend.Adam),
    "reorder": (RMSpropMomentumFirst, dict(lr=0.01, momentum=0.5), descend.RMSprop),
    "user-step": (SGDClipped, dict(lr=0.05, momentum=0.9, maximize=True), descend.SGD),
    "make_optimizer-user-step": (RMSWithFloor, dict(lr=0.02), None),
}


def trajectory(cls, kwargs, dtype, **path):
    params = [p.clone().requires_grad_() for p in make_params(dtype)]
    optimizer = cls(params, **kwargs, **path)
    for _ in range(STEPS):
        optimizer.zero_grad()
        nonconvex_loss(params).backward()
        optimizer.step()
    return [p.detach() for p in params], optimizer


@pytest.mark.parametrize("name", CUSTOM)
def test_custom_chains_give_the_same_numbers_on_every_path(name):
    cls, kwargs, original = CUSTOM[name]
    runs = {path: trajectory(cls, kwargs, torch.float64, **flags) for path, flags in PATHS.items()}
    assert runs["fused"][1].kernel_info()[0].path == "generated"
    want, _ = runs["reference"]
    for path in ("fused", "foreach"):
        for got, expected in zip(runs[path][0], want):
            torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    if original is not None:  # the change took effect
        unchanged, _ = trajectory(original, kwargs, torch.float64)
        assert any(not torch.allclose(a, b) for a, b in zip(want, unchanged))
    float32 = {path: trajectory(cls, kwargs, torch.float32, **flags)[0] for path, flags in PATHS.items()}
    for path in ("fused", "foreach"):
        for got, expected in zip(float32[path], float32["reference"]):
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_a_user_step_keeps_its_own_state_on_every_path():
    counts = []
    for flags in PATHS.values():
        _, optimizer = trajectory(SGDClipped, dict(lr=0.05, momentum=0.9), torch.float64, **flags)
        counts.append([optimizer.state[p]["clipped"] for p in optimizer.param_groups[0]["params"]])
    assert sum(float(c.sum()) for c in counts[0]) > 0  # some gradient elements were clipped
    for other in counts[1:]:
        for a, b in zip(counts[0], other):
            assert torch.equal(a, b)


# --- a built-in formula changed at run time changes every path that uses it ------------------------


def test_mutating_a_built_in_formula_changes_every_path(monkeypatch):
    before = {path: trajectory(descend.Adam, dict(lr=0.01), torch.float64, **flags)[0] for path, flags in PATHS.items()}

    def mutated(self, u, param, state, t):  # s ← γs + (1−γ)·4u²: a wrong second moment
        state[self.key] = self.decay * state[self.key] + (1.0 - self.decay) * (u * u) * 4.0
        return u

    monkeypatch.setattr(transforms.EmaOfSquares, "formula", mutated)
    after = {path: trajectory(descend.Adam, dict(lr=0.01), torch.float64, **flags)[0] for path, flags in PATHS.items()}
    for path in PATHS:
        for got, expected in zip(after[path], after["reference"]):
            torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
        assert any(not torch.allclose(a, b) for a, b in zip(after[path], before[path])), path


# --- make_optimizer ---------------------------------------------------------------------------------


def _plain_chain(group):
    return [Momentum(group["momentum"]), ScaleByLearningRate(group["lr"])]


def _check(group):
    check_nonnegative("HeavyBall", "lr", group["lr"])
    check_nonnegative("HeavyBall", "momentum", group["momentum"])


HeavyBall = descend.make_optimizer("HeavyBall", _plain_chain, dict(lr=0.1, momentum=0.9), _check)


def test_make_optimizer_makes_a_torch_optim_class():
    assert issubclass(HeavyBall, torch.optim.Optimizer) and HeavyBall.__name__ == "HeavyBall"
    assert list(inspect.signature(HeavyBall).parameters) == [
        "params", "lr", "momentum", "maximize", "nonfinite", "fused", "foreach", "state_dtype", "max_grad_norm"]
    param = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
    optimizer = HeavyBall([param], 0.5, momentum=0.0)  # positional in the order of the defaults
    assert optimizer.param_groups[0]["lr"] == 0.5
    param.grad = torch.tensor([1.0, 2.0])
    optimizer.step()
    torch.testing.assert_close(param.detach(), torch.tensor([0.5, -2.0]))
    assert "step" not in optimizer.state[param]


def test_make_optimizer_equals_the_built_in_class_it_restates():
    kwargs = dict(lr=0.05, momentum=0.9)
    ours, _ = trajectory(HeavyBall, kwargs, torch.float64)
    builtin, _ = trajectory(descend.SGD, kwargs, torch.float64)
    for a, b in zip(ours, builtin):
        assert torch.equal(a, b)


def test_make_optimizer_validates_and_checks_its_arguments():
    param = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match="HeavyBall: lr must be"):
        HeavyBall(param, lr=-1.0)
    with pytest.raises(ValueError, match="HeavyBall: momentum must be"):
        HeavyBall(param).add_param_group(dict(params=[torch.nn.Parameter(torch.zeros(1))], momentum=-0.5))
    with pytest.raises(TypeError, match="HeavyBall: .*unexpected keyword argument 'betas'"):
        HeavyBall(param, betas=(0.9, 0.99))
    with pytest.raises(ValueError, match="fused"):
        descend.make_optimizer("Bad", _plain_chain, dict(lr=0.1, fused=True))
    with pytest.raises(ValueError, match="identifier"):
        descend.make_optimizer("not a name", _plain_chain, dict(lr=0.1))


def test_make_optimizer_classes_checkpoint_resume_and_pickle():
    start = make_params(torch.float32)
    straight = [p.clone().requires_grad_() for p in start]
    resumed = [p.clone().requires_grad_() for p in start]
    straight_optimizer, first_optimizer = HeavyBall(straight, lr=0.05), HeavyBall(resumed, lr=0.05)

    def train(optimizer, params, steps):
        for _ in range(steps):
            optimizer.zero_grad()
            nonconvex_loss(params).backward()
            optimizer.step()

    train(straight_optimizer, straight, 10)
    train(first_optimizer, resumed, 5)
    second_optimizer = HeavyBall(resumed, lr=0.05)
    second_optimizer.load_state_dict(copy.deepcopy(first_optimizer.state_dict()))
    train(second_optimizer, resumed, 5)
    for a, b in zip(straight, resumed):
        assert torch.equal(a, b)
    assert type(pickle.loads(pickle.dumps(second_optimizer))) is HeavyBall


# --- kernel_info --------------------------------------------------------------------------------------


@dataclass
class UsesClamp(descend.Elementwise):
    """A formula with a torch op the generator does not know: it runs, on the reference path."""

    def formula(self, u, param, state, t):
        return torch.clamp(u, -1.0, 1.0)


def test_kernel_info_says_which_path_each_group_takes():
    param = torch.nn.Parameter(torch.zeros(3))
    assert str(descend.Adam([param]).kernel_info()[0]) == (
        "[EmaOfSquares, Momentum, BiasCorrection, ScaleByInverseRms, ScaleByLearningRate] runs on a generated C kernel")
    assert descend.Adam([param], fused=False).kernel_info()[0].reason == "fused=False"
    assert descend.Adafactor([param]).kernel_info()[0].path == "generated"
    assert "int update_f64(" in descend.Lion([param]).kernel_info()[0].c_source(torch.float64)
    Clamped = descend.make_optimizer("Clamped", lambda g: [UsesClamp(), ScaleByLearningRate(g["lr"])], dict(lr=0.1))
    with pytest.warns(RuntimeWarning, match="UsesClamp"):
        info = Clamped([param]).kernel_info()[0]
    assert info.path == "reference" and "UsesClamp" in info.reason
    with pytest.raises(ValueError, match="no generated kernel"):
        info.c_source()
    param.grad = torch.tensor([3.0, -0.5, 0.0])
    Clamped([param]).step()
    torch.testing.assert_close(param.detach(), torch.tensor([-0.1, 0.05, 0.0]))
