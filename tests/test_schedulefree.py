"""Schedule-free AdamW and SGD: against the ``schedulefree`` package itself (1.4.1) and against an independent
reference written from the paper (Defazio et al. 2024), on every path, through train()/eval() switches and
checkpoints in both modes."""
from __future__ import annotations

import copy
import inspect
import math
from unittest import mock

import pytest
import torch
from torch import nn

import descend
from descend.adapter import fastpath
from descend.backends import cpu
from descend.plan.plan import compile
from conftest import make_params, nonconvex_loss

schedulefree = pytest.importorskip("schedulefree")

PEERS = {descend.AdamWScheduleFree: schedulefree.AdamWScheduleFree,
         descend.SGDScheduleFree: schedulefree.SGDScheduleFree}
CONFIGS = {
    "adamw": (descend.AdamWScheduleFree, dict(lr=0.01)),
    "adamw-decay-warmup-r": (descend.AdamWScheduleFree,
                             dict(lr=0.02, betas=(0.8, 0.99), weight_decay=0.1, warmup_steps=10, r=0.5)),
    "adamw-unweighted": (descend.AdamWScheduleFree, dict(lr=0.01, eps=1e-6, warmup_steps=3, weight_lr_power=0.0)),
    "sgd": (descend.SGDScheduleFree, dict(lr=0.1)),
    "sgd-decay-warmup-r": (descend.SGDScheduleFree,
                           dict(lr=0.2, momentum=0.7, weight_decay=0.01, warmup_steps=8, r=1.0, weight_lr_power=1.0)),
}
PATHS = {"reference": dict(fused=False, foreach=False), "foreach": dict(fused=False, foreach=True), "generated C": dict()}
RUNNING = ("k", "scheduled_lr", "lr_max", "weight_sum", "train_mode")
STEPS = 100


def snapshots(optimizer, params, steps=STEPS, switch_every=7, loss=nonconvex_loss):
    """Trains ``steps`` steps in train mode; every ``switch_every`` steps goes to eval mode and back. Yields the
    parameters after every step (``y``) and at every eval (``x``), then ``x`` at the end (``switch_every=None``:
    no switch before the end)."""
    optimizer.train()
    for step in range(steps):
        optimizer.zero_grad()
        loss(params).backward()
        optimizer.step()
        yield [p.detach().clone() for p in params]
        if switch_every is not None and step % switch_every == 3:
            optimizer.eval()
            yield [p.detach().clone() for p in params]
            optimizer.train()
    optimizer.eval()
    yield [p.detach().clone() for p in params]


def leaves(dtype=torch.float32):
    return [p.clone().to(dtype).requires_grad_() for p in make_params(torch.float64)]


def side_by_side(cls, kwargs, options, dtype=torch.float32, steps=STEPS):
    """Pairs of snapshots: descend's (with ``options``) and schedulefree's own loop (foreach=False)."""
    ours, theirs = leaves(dtype), leaves(dtype)
    mine, peer = cls(ours, **kwargs, **options), PEERS[cls](theirs, **kwargs, foreach=False)
    yield from zip(snapshots(mine, ours, steps), snapshots(peer, theirs, steps))
    assert {k: mine.param_groups[0][k] for k in RUNNING} == {k: peer.param_groups[0][k] for k in RUNNING}


def assert_float32_close(ours, theirs):
    """1e-6 relative: elementwise (with 1e-6 absolute for elements near 0) and over each tensor."""
    for o, t in zip(ours, theirs):
        torch.testing.assert_close(o, t, rtol=1e-6, atol=1e-6)
        assert (o - t).norm() <= 1e-6 * t.norm()


# --- the schedulefree package --------------------------------------------------------------------


@pytest.mark.parametrize("cls", PEERS, ids=lambda c: c.__name__)
def test_signature_defaults_and_group_entries_are_schedulefrees(cls):
    ours, theirs = inspect.signature(cls.__init__).parameters, inspect.signature(PEERS[cls].__init__).parameters
    positional = [n for n, p in ours.items() if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert positional == list(theirs)  # the same names in the same order: positional calls mean the same
    for name in theirs:
        if name not in ("self", "params", "foreach"):
            assert ours[name].default == theirs[name].default, name
    assert ours["foreach"].default is None  # schedulefree's True would ask descend for the reference lists
    mine, peer = cls(leaves()), PEERS[cls](leaves())
    expected = {k: v for k, v in peer.param_groups[0].items() if k not in ("params", "foreach")}
    assert {k: mine.param_groups[0][k] for k in expected} == expected
    assert mine.param_groups[0]["train_mode"] is False  # as schedulefree: call optimizer.train() first


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", CONFIGS)
def test_every_path_gives_schedulefrees_numbers_over_100_steps_with_mode_switches(name, path):
    cls, kwargs = CONFIGS[name]
    count = 0
    for ours, theirs in side_by_side(cls, kwargs, PATHS[path]):
        count += 1
        if path == "generated C" and cls is descend.AdamWScheduleFree:
            assert_float32_close(ours, theirs)  # the kernel multiplies by 1/(1 − β₂ᵏ) where torch divides
        else:
            for o, t in zip(ours, theirs):  # schedulefree's torch operations in its order: the same bits
                assert torch.equal(o, t)
    assert count == STEPS + len(range(3, STEPS, 7)) + 1


def test_the_default_path_is_one_generated_kernel_for_every_step_and_for_the_switch():
    params = leaves()
    optimizer = descend.AdamWScheduleFree(params, lr=0.01, warmup_steps=5, weight_decay=0.1)
    assert optimizer.kernel_info()[0].path == "generated"
    plans, programs, calls = set(), set(), []
    real_update = cpu.update

    def counting(work):
        calls.append(type(work.chain[-1]).__name__)
        return real_update(work)

    real_remembered = fastpath.Bound.step

    def remembered(bound, grads, numbers):  # the same kernel calls, as the last full step made them
        calls.append("ScheduleFreeUpdate")
        return real_remembered(bound, grads, numbers)

    with mock.patch.object(cpu, "update", counting), mock.patch.object(fastpath.Bound, "step", remembered):
        for _ in snapshots(optimizer, params, steps=12):
            group = optimizer.param_groups[0]
            plans.add(id(compile(optimizer.chain(optimizer._numbers(group)))[0]))
            programs.add(len(cpu._programs))
    assert len(plans) == 1  # warmup and averaging weights change numbers only
    assert max(programs) - min(programs) <= 1  # after the first update, one more kernel: the switch's, once
    assert calls.count("ScheduleFreeUpdate") == 12 and calls.count("ScheduleFreeSwitch") == 2 * 2 + 1


@pytest.mark.parametrize("cls", PEERS, ids=lambda c: c.__name__)
def test_maximize_is_schedulefree_on_the_negated_gradient(cls):
    def negated(params):
        return -nonconvex_loss(params)

    ours, theirs = leaves(), leaves()
    mine, peer = cls(ours, lr=0.05, maximize=True), PEERS[cls](theirs, lr=0.05, foreach=False)
    for o, t in zip(snapshots(mine, ours, 30, loss=negated), snapshots(peer, theirs, 30)):
        assert_float32_close(o, t)


def test_a_tensor_lr_and_an_lr_scheduler_work_as_in_schedulefree():
    ours, theirs = leaves(), leaves()
    mine = descend.SGDScheduleFree(ours, lr=torch.tensor(0.1, dtype=torch.float64), fused=False)
    peer = schedulefree.SGDScheduleFree(theirs, lr=0.1, foreach=False)
    schedules = [torch.optim.lr_scheduler.StepLR(o, step_size=10, gamma=0.5) for o in (mine, peer)]
    for step, (o, t) in enumerate(zip(snapshots(mine, ours, 40), snapshots(peer, theirs, 40))):
        assert all(torch.equal(a, b) for a, b in zip(o, t))
        if mine.param_groups[0]["train_mode"]:
            for schedule in schedules:
                schedule.step()
    assert mine.param_groups[0]["lr_max"] == peer.param_groups[0]["lr_max"] == 0.1


# --- an independent reference, from the paper ------------------------------------------------------


def paper_reference(kind, kwargs, steps, params):
    """Defazio et al. 2024, Alg. 1 (and its AdamW form), in float64, keeping x and z and taking the gradient
    at y = (1 − β)z + βx: the parameters after each step (y) and the average at the end (x)."""
    lr, warmup = kwargs.get("lr"), kwargs.get("warmup_steps", 0)
    r, power, decay = kwargs.get("r", 0.0), kwargs.get("weight_lr_power", 2.0), kwargs.get("weight_decay", 0.0)
    beta1, beta2 = kwargs.get("betas", (0.9, 0.999)) if kind == "adamw" else (kwargs.get("momentum", 0.9), None)
    eps = kwargs.get("eps", 1e-8)
    x = [p.detach().clone() for p in params]
    z = [p.detach().clone() for p in params]
    v = [torch.zeros_like(p) for p in params]
    lr_max, weights, ys = -1.0, 0.0, []
    for k in range(1, steps + 1):
        y = [((1 - beta1) * zi + beta1 * xi).requires_grad_() for xi, zi in zip(x, z)]
        gradients = torch.autograd.grad(nonconvex_loss(y), y)
        gamma = lr * min(1.0, k / warmup) if warmup else lr
        lr_max = max(lr_max, gamma)
        weight = k**r * lr_max**power
        weights += weight
        c = weight / weights
        for i, (g, yi) in enumerate(zip(gradients, y)):
            if kind == "adamw":
                v[i] = beta2 * v[i] + (1 - beta2) * g * g
                g = g / ((v[i] / (1 - beta2**k)).sqrt() + eps)
            g = g + decay * yi.detach()
            z[i] = z[i] - gamma * g
            x[i] = (1 - c) * x[i] + c * z[i]
        ys.append([((1 - beta1) * zi + beta1 * xi) for xi, zi in zip(x, z)])
    return ys, x


@pytest.mark.parametrize("path", ["reference", "generated C"])
@pytest.mark.parametrize("name", CONFIGS)
def test_float64_follows_the_papers_x_y_z_sequences(name, path):
    cls, kwargs = CONFIGS[name]
    ys, x = paper_reference("adamw" if cls is descend.AdamWScheduleFree else "sgd", kwargs, STEPS,
                            make_params(torch.float64))
    params = leaves(torch.float64)
    optimizer = cls(params, **kwargs, **PATHS[path])
    trained = [s for s in snapshots(optimizer, params, switch_every=None)]
    for ours, expected in zip(trained[:-1], ys):
        for o, e in zip(ours, expected):
            torch.testing.assert_close(o, e, rtol=1e-10, atol=1e-12)
    for o, e in zip(trained[-1], x):
        torch.testing.assert_close(o, e, rtol=1e-10, atol=1e-12)


# --- train() and eval() ----------------------------------------------------------------------------


def test_step_in_eval_mode_raises_before_anything_happens_and_model_train_does_not_switch():
    model = nn.Linear(3, 2)
    optimizer = descend.AdamWScheduleFree(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    before = [p.detach().clone() for p in model.parameters()]
    closure = mock.Mock(return_value=0.0)
    model.train()  # the modules' flags only: the optimizer is still in eval mode (as it starts)
    with pytest.raises(RuntimeError, match=r"eval mode.*optimizer\.train\(\)"):
        optimizer.step(closure)
    closure.assert_not_called()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters())) and not optimizer.state
    assert optimizer.param_groups[0]["k"] == 0
    optimizer.train()
    for _ in range(2):  # after one step x = y = z (c₂ = 1): the second makes them differ
        optimizer.zero_grad()
        model(torch.ones(1, 3)).pow(2).sum().backward()
        optimizer.step()
    moved = [p.detach().clone() for p in model.parameters()]
    model.eval()  # moves nothing: only optimizer.eval() puts the parameters at x
    assert all(torch.equal(a, b) for a, b in zip(moved, model.parameters()))
    optimizer.eval()
    assert not all(torch.equal(a, b) for a, b in zip(moved, model.parameters()))
    with pytest.raises(RuntimeError, match="eval mode"):
        optimizer.step()


def test_switching_twice_moves_once_and_parameters_without_z_stay():
    def run(switches):
        used, unused = torch.nn.Parameter(torch.ones(4)), torch.nn.Parameter(torch.full((3,), 2.0))
        optimizer = descend.SGDScheduleFree([used, unused], lr=0.5)
        for _ in range(switches):
            optimizer.train()  # before any step x = y = z: nothing to move
        assert torch.equal(used.detach(), torch.ones(4))
        for gradient in (1.0, -3.0):
            used.grad = torch.full((4,), gradient)
            optimizer.step()
        y = used.detach().clone()
        for _ in range(switches):
            optimizer.eval()
        x = used.detach().clone()
        for _ in range(switches):
            optimizer.train()
        assert torch.equal(unused.detach(), torch.full((3,), 2.0)) and unused not in optimizer.state
        return y, x, used.detach().clone()

    once, twice = run(1), run(2)
    assert all(torch.equal(a, b) for a, b in zip(once, twice))
    y, x, back = once
    assert not torch.equal(x, y)
    torch.testing.assert_close(back, y, rtol=1e-6, atol=1e-7)  # y → x → y, up to rounding


def test_a_group_added_while_training_starts_in_train_mode():
    optimizer = descend.SGDScheduleFree([torch.nn.Parameter(torch.ones(2))])
    optimizer.train()
    late = torch.nn.Parameter(torch.ones(3))
    optimizer.add_param_group({"params": [late], "lr": 0.1})
    assert optimizer.param_groups[1]["train_mode"] is True
    late.grad = torch.ones(3)
    optimizer.step()  # would raise if the new group were in eval mode


# --- checkpoints ------------------------------------------------------------------------------------


def run_steps(optimizer, params, steps):
    for _ in range(steps):
        optimizer.zero_grad()
        nonconvex_loss(params).backward()
        optimizer.step()


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name", ["adamw-decay-warmup-r", "sgd-decay-warmup-r"])
def test_a_checkpoint_in_either_mode_resumes_bit_for_bit(name, mode):
    cls, kwargs = CONFIGS[name]
    straight, resumed = leaves(), leaves()
    first = cls(straight, **kwargs)
    first.train()
    run_steps(first, straight, 15)
    getattr(first, mode)()
    saved = copy.deepcopy((first.state_dict(), [p.detach() for p in straight]))
    first.train()
    run_steps(first, straight, 15)
    first.eval()
    with torch.no_grad():
        for p, value in zip(resumed, saved[1]):
            p.copy_(value)
    second = cls(resumed, **kwargs)
    second.load_state_dict(saved[0])
    assert second.param_groups[0]["train_mode"] is (mode == "train")
    second.train()
    run_steps(second, resumed, 15)
    second.eval()
    assert all(torch.equal(a, b) for a, b in zip(straight, resumed))
    assert {k: first.param_groups[0][k] for k in RUNNING} == {k: second.param_groups[0][k] for k in RUNNING}


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("cls", PEERS, ids=lambda c: c.__name__)
def test_schedulefrees_checkpoints_load_and_continue_and_ours_load_into_schedulefree(cls, mode):
    kwargs = dict(lr=0.05, weight_decay=0.01, warmup_steps=4)
    theirs = leaves()
    peer = PEERS[cls](theirs, **kwargs)  # its default foreach=True, written into the checkpoint
    peer.train()
    run_steps(peer, theirs, 10)
    getattr(peer, mode)()
    ours = [p.detach().clone().requires_grad_() for p in theirs]
    mine = cls(ours, **kwargs, fused=False)
    mine.load_state_dict(copy.deepcopy(peer.state_dict()))  # deep: torch's load keeps the tensors it is given
    group = mine.param_groups[0]  # its own path flags, the checkpoint's mode
    assert (group["foreach"], group["fused"], group["train_mode"]) == (None, False, mode == "train")
    assert set(mine.state[ours[0]]) == set(peer.state[theirs[0]])
    for optimizer, params in ((peer, theirs), (mine, ours)):
        optimizer.train()
        run_steps(optimizer, params, 10)
        optimizer.eval()
    assert_float32_close(ours, theirs)  # schedulefree's foreach path rounds a few operations differently
    back = [p.detach().clone().requires_grad_() for p in ours]
    again = PEERS[cls](back, **kwargs, foreach=False)
    again.load_state_dict(copy.deepcopy(mine.state_dict()))
    for optimizer, params in ((again, back), (mine, ours)):
        optimizer.train()
        run_steps(optimizer, params, 10)
        optimizer.eval()
    assert all(torch.equal(a, b) for a, b in zip(back, ours))


def test_a_default_optimizer_keeps_its_kernel_after_loading_a_schedulefree_checkpoint():
    peer = schedulefree.AdamWScheduleFree(leaves())
    mine = descend.AdamWScheduleFree(leaves())
    mine.load_state_dict(peer.state_dict())
    assert mine.param_groups[0]["foreach"] is None and mine.kernel_info()[0].path == "generated"


def test_another_optimizers_checkpoint_is_refused():
    adamw = descend.AdamW(leaves())
    with pytest.raises(ValueError, match="another optimizer"):
        descend.AdamWScheduleFree(leaves()).load_state_dict(adamw.state_dict())
    with pytest.raises(ValueError):
        descend.SGDScheduleFree(leaves()).load_state_dict(torch.optim.AdamW(leaves()).state_dict())


# --- the non-finite policy, bad values, 16-bit parameters ----------------------------------------------


def test_a_skipped_step_changes_nothing_and_a_raised_one_counts():
    params = leaves()
    optimizer = descend.AdamWScheduleFree(params, nonfinite="skip", warmup_steps=3)
    optimizer.train()
    run_steps(optimizer, params, 2)
    before = copy.deepcopy((optimizer.state_dict(), [p.detach() for p in params]))
    for p in params:
        p.grad = torch.full_like(p, math.nan)
    optimizer.step()
    assert optimizer.skipped_steps == 1 and optimizer.param_groups[0]["k"] == 2
    after = optimizer.state_dict()
    assert {k: after["param_groups"][0][k] for k in RUNNING} == {k: before[0]["param_groups"][0][k] for k in RUNNING}
    assert all(torch.equal(a, b) for a, b in zip(params, before[1]))
    optimizer.nonfinite = "raise"
    with pytest.raises(FloatingPointError):
        optimizer.step()
    assert optimizer.param_groups[0]["k"] == 3  # applied (as torch.optim would), so counted


@pytest.mark.parametrize("cls, bad", [
    (descend.SGDScheduleFree, dict(momentum=0.0)), (descend.SGDScheduleFree, dict(momentum=1.0)),
    (descend.SGDScheduleFree, dict(lr=-1.0)), (descend.SGDScheduleFree, dict(weight_decay=-0.1)),
    (descend.AdamWScheduleFree, dict(betas=(0.0, 0.999))), (descend.AdamWScheduleFree, dict(betas=(0.9, 1.0))),
    (descend.AdamWScheduleFree, dict(eps=-1e-8)), (descend.AdamWScheduleFree, dict(warmup_steps=2.5)),
    (descend.AdamWScheduleFree, dict(warmup_steps=-1)), (descend.AdamWScheduleFree, dict(r=-1.0)),
    (descend.AdamWScheduleFree, dict(weight_lr_power=math.inf)),
])
def test_bad_hyperparameters_are_value_errors_naming_them(cls, bad):
    name = next(iter(bad))
    with pytest.raises(ValueError, match=name):
        cls(leaves(), **bad)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_16_bit_parameters_keep_z_in_float32_and_follow_the_float32_run(dtype):
    low, full = leaves(dtype), leaves(torch.float32)
    for low_x, full_x in zip(snapshots(descend.AdamWScheduleFree(low, lr=0.01), low, 30),
                             snapshots(descend.AdamWScheduleFree(full, lr=0.01), full, 30)):
        for a, b in zip(low_x, full_x):
            torch.testing.assert_close(a.float(), b, rtol=0.05, atol=0.02)


# --- the Triton kernel, in the interpreter -------------------------------------------------------------


@pytest.fixture
def interpreted(monkeypatch):
    pytest.importorskip("triton", reason="triton is not installed (pip install descend[gpu])")
    from descend.backends import triton as codegen_triton

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(codegen_triton, "DEVICE_TYPES", frozenset({"cpu", "cuda"}))
    monkeypatch.setattr(codegen_triton, "BLOCK", 16)
    monkeypatch.setattr(codegen_triton, "CHUNK", 32)
    assert codegen_triton.interpreting()
    calls = []
    real = codegen_triton.update
    monkeypatch.setattr(codegen_triton, "update",
                        lambda work: calls.append(type(work.chain[-1]).__name__) or real(work))
    return calls


@pytest.mark.parametrize("name", ["adamw-decay-warmup-r", "sgd-decay-warmup-r"])
def test_the_triton_kernel_gives_schedulefrees_numbers_over_100_steps_with_mode_switches(name, interpreted):
    cls, kwargs = CONFIGS[name]
    for ours, theirs in side_by_side(cls, kwargs, {}):
        assert_float32_close(ours, theirs)
    assert interpreted.count("ScheduleFreeUpdate") == STEPS
    assert interpreted.count("ScheduleFreeSwitch") == 2 * len(range(3, STEPS, 7)) + 1  # the first train()
    # finds no z yet: nothing to move


def test_max_grad_norm_is_schedulefree_on_clipped_gradients_and_bfloat16_state_runs():
    ours, theirs = leaves(), leaves()
    mine = descend.AdamWScheduleFree(ours, lr=0.01, max_grad_norm=0.1, fused=False)
    peer = schedulefree.AdamWScheduleFree(theirs, lr=0.01, foreach=False)
    mine.train(), peer.train()
    for _ in range(20):
        for optimizer, params in ((mine, ours), (peer, theirs)):
            optimizer.zero_grad()
            nonconvex_loss(params).backward()
            if optimizer is peer:
                torch.nn.utils.clip_grad_norm_(params, 0.1)
            optimizer.step()
    assert_float32_close(ours, theirs)
    assert mine.last_grad_norm > 0.1  # the clipping did something
    small = leaves()
    optimizer = descend.AdamWScheduleFree(small, lr=0.01, state_dtype=torch.bfloat16)
    for snapshot in snapshots(optimizer, small, 20):
        assert all(torch.isfinite(p).all() for p in snapshot)
    assert optimizer.state[small[0]]["z"].dtype == torch.bfloat16
