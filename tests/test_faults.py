"""Faults that must never cost a run: thread-count-dependent bits, slow imports, command-line mistakes,
and checkpoints or schedules from Hugging Face's Adafactor."""
from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch

import descend
from descend.__main__ import main

# --- fused Adafactor: the same bits for any number of threads ------------------------------

SHAPES = [(300, 257), (4, 5, 40, 200), (40000,), (40, 1030), (7, 3), (64, 16, 3, 3)]


def adafactor_run(threads: int, fused: bool | None = True):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(0)
        params = [torch.randn(shape, generator=g).requires_grad_() for shape in SHAPES]
        optimizer = descend.Adafactor(params, fused=fused, beta1=0.9, weight_decay=0.01)
        for _ in range(3):
            for p in params:
                p.grad = torch.randn(p.shape, generator=g)
            optimizer.step()
        return [p.detach().clone() for p in params]
    finally:
        torch.set_num_threads(previous)


@pytest.mark.skipif(not descend.backends.cpu.available(), reason="no C compiler: no fused kernels")
def test_fused_adafactor_gives_the_same_bits_for_any_thread_count():
    one = adafactor_run(1)
    for threads in (2, 3, 8):
        assert all(torch.equal(a, b) for a, b in zip(one, adafactor_run(threads))), f"{threads} threads"
    for a, b in zip(one, adafactor_run(1, fused=False)):  # and still the reference chain's numbers
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# --- import time: nothing heavy is imported eagerly -----------------------------------------


def test_import_descend_does_not_import_dynamo_or_dtensor():
    """``torch.distributed.tensor`` and ``torch._dynamo`` add 0.5-3 s to an import; descend needs them only
    when the user's own code has loaded them (FSDP2, torch.compile)."""
    code = ("import sys, torch; before = set(sys.modules); import descend; "
            "print(sorted(m for m in set(sys.modules) - before "
            "if m.startswith(('torch.distributed.tensor', 'torch._dynamo', 'matplotlib', 'transformers'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


# --- the command line: one-line errors, exit status 2 -------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["train", "--lr", "0"], "--lr must be a number > 0"),
    (["train", "--lr", "nan"], "--lr must be a number > 0"),
    (["train", "--batch-size", "0"], "--batch-size must be at least 1"),
    (["train", "--steps", "-5"], "--steps must be at least 1"),
    (["compare", "--epochs", "0"], "--epochs must be at least 1"),
    (["lab", "--seed", "abc"], "argument --seed: invalid int value: 'abc' (`descend lab --help` lists the options)"),
    (["train", "--optimizer", "lion"], "argument --optimizer: invalid choice: 'lion'"),
    (["sail"], "argument command: invalid choice: 'sail'"),
    (["lab", "--seed", "-1"], "--seed -1: a seed is a whole number in [0, 4294967295]"),
    (["lab", "--seed", str(2**64)], f"--seed {2**64}: a seed is a whole number in [0, 4294967295]"),
    (["lab", "--only", "nesterov,gradient-noise", "--seed", "4294967294"],
     ("--seed 4294967294 with 10 seeds uses the seeds 4294967294 … 4294967303; a seed is a whole number in "
      "[0, 4294967295]")),
    (["lab", "--seed", "4294967290", "--seeds", "7"], "--seed 4294967290 with 7 seeds uses the seeds"),
    (["train", "--seed", "-1"], "--seed -1: a seed is a whole number in [0, 4294967295]"),
    (["train", "--seed", "99999999999999999999"], "--seed 99999999999999999999: a seed is a whole number in"),
    (["compare", "--seeds", "0,-1"], "--seeds -1: a seed is a whole number in [0, 4294967295]"),
    (["compare", "--seeds", str(2**64)], f"--seeds {2**64}: a seed is a whole number in [0, 4294967295]"),
    (["compare", "--seeds", "0,one"], "--seeds '0,one': 'one' is not a whole number"),
    (["compare", "--seeds", ","], "--seeds ',' names no seed"),
    (["compare", "--optimizers", ","], "--optimizers ',' names no optimizer; choose from sgd, "),
    (["compare", "--task", ","], "--task ',' names no task; the tasks are digits-mlp, mnist1d-cnn"),
])
def test_cli_numbers_no_run_can_use_are_one_line_errors(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # were a check missing, the run would write its report here, not into the repository
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_every_subcommand_checks_its_seeds_with_the_one_rule():
    from descend.__main__ import CommandError, check_seeds

    for first, count in ((0, 1), (4294967295, 1), (4294967293, 3)):  # the ends of the range
        check_seeds("--seed", first, count)
    for first, count in ((-1, 1), (2**32, 1), (True, 1), (0.5, 1), (4294967294, 3)):
        with pytest.raises(CommandError, match="a seed is a whole number in"):
            check_seeds("--seed", first, count)


def test_cli_compare_out_that_is_a_file_is_a_one_line_error(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("keep me")
    assert main(["compare", "--out", str(target), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "exists and is not a folder" in err and err.count("\n") == 1
    assert target.read_text() == "keep me"


def test_cli_train_lr_is_used_as_given():
    from descend.tools.train import make_optimizer

    param = torch.nn.Parameter(torch.zeros(2))
    assert make_optimizer("adam", [param], lr=0.25).param_groups[0]["lr"] == 0.25
    assert make_optimizer("adam", [param]).param_groups[0]["lr"] == 1e-3


# --- Hugging Face's Adafactor: schedule and checkpoints ---------------------------------------


def hf_like_params():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(6, 5, generator=g).requires_grad_(), torch.randn(5, generator=g).requires_grad_()]


def hf_train(optimizer, params, steps=4, first=0, scheduler=None):
    for step in range(first, first + steps):
        g = torch.Generator().manual_seed(step)
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return [p.detach().clone() for p in params]


def test_relative_step_ignores_the_groups_lr_as_hugging_face_does():
    """``AdafactorSchedule`` writes 0.0 (then the reported step size) into ``lr``: with relative_step=True
    the step size is computed regardless, so training does not freeze."""
    params, reference_params = hf_like_params(), hf_like_params()
    optimizer = descend.Adafactor(params)
    reference = hf_train(descend.Adafactor(reference_params), reference_params)
    optimizer.param_groups[0]["lr"] = 0.0
    assert all(torch.equal(a, b) for a, b in zip(hf_train(optimizer, params), reference))


def test_get_lr_reports_the_step_size_as_hugging_face_does():
    params = hf_like_params()
    optimizer = descend.Adafactor(params)
    group = optimizer.param_groups[0]
    assert optimizer._get_lr(group, optimizer.state[params[0]]) == 0.0  # before the first step
    hf_train(optimizer, params, steps=4)
    rms = params[0].detach().double().square().mean().sqrt().item()
    assert optimizer._get_lr(group, optimizer.state[params[0]]) == pytest.approx(min(1e-2, 4 ** -0.5) * max(1e-3, rms))


def hf_checkpoint(optimizer):
    """What Hugging Face's Adafactor saves: descend's state with ``step`` a Python int and an ``RMS`` entry."""
    saved = copy.deepcopy(optimizer.state_dict())  # torch's state_dict holds the live per-parameter dicts
    saved.pop("optimizer"), saved.pop("skipped_steps")
    for state in saved["state"].values():
        state["step"] = int(state["step"].item())
        state["RMS"] = torch.tensor(0.5)
    return saved


def test_a_hugging_face_style_checkpoint_loads_and_continues():
    params = hf_like_params()
    optimizer = descend.Adafactor(params, beta1=0.9)
    hf_train(optimizer, params)
    twin_params = [p.detach().clone().requires_grad_() for p in params]
    twin = descend.Adafactor(twin_params, beta1=0.9)
    twin.load_state_dict(hf_checkpoint(optimizer))
    assert "RMS" not in twin.state[twin_params[0]]
    want = hf_train(optimizer, params, first=4)
    assert all(torch.equal(a, b) for a, b in zip(hf_train(twin, twin_params, first=4), want))


def test_with_transformers_schedule_and_checkpoint():
    transformers_optimization = pytest.importorskip("transformers.optimization",
                                                    reason="transformers is not installed")
    HFAdafactor, AdafactorSchedule = transformers_optimization.Adafactor, transformers_optimization.AdafactorSchedule
    theirs_params, ours_params = hf_like_params(), hf_like_params()
    theirs = HFAdafactor(theirs_params, lr=None, relative_step=True, scale_parameter=True, warmup_init=False)
    ours = descend.Adafactor(ours_params)
    their_schedule, our_schedule = AdafactorSchedule(theirs), AdafactorSchedule(ours)
    got = hf_train(ours, ours_params, scheduler=our_schedule)
    want = hf_train(theirs, theirs_params, scheduler=their_schedule)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert our_schedule.get_last_lr()[0] == pytest.approx(float(their_schedule.get_last_lr()[0]), rel=0.05)
    resumed_params = [p.detach().clone().requires_grad_() for p in theirs_params]
    resumed = descend.Adafactor(resumed_params)
    resumed.load_state_dict(copy.deepcopy(theirs.state_dict()))  # with HF's RMS entry and integer steps
    want = hf_train(theirs, theirs_params, first=4)
    for a, b in zip(hf_train(resumed, resumed_params, first=4), want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
