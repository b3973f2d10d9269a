"""Checkpoints: exact resume in a fresh process, and checkpoints that do not fit are refused untouched."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

import descend

# Trains k steps, saves model + optimizer + schedulers (+ RNG) to a file, or loads that file and goes on.
SCRIPT = textwrap.dedent("""
    import sys, torch, descend
    from torch import nn
    mode, folder, first, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    make = {
        "SGD": lambda p: descend.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
        "Adagrad": lambda p: descend.Adagrad(p, lr=0.1),
        "RMSprop": lambda p: descend.RMSprop(p, centered=True, momentum=0.5),
        "Adadelta": lambda p: descend.Adadelta(p),
        "Adam": lambda p: descend.Adam(p, lr=0.01, amsgrad=True),
        "AdamW": lambda p: descend.AdamW(p, lr=0.01),
        "Adafactor": lambda p: descend.Adafactor(p, beta1=0.9),
        "SAM": lambda p: descend.SAM(p, descend.Adam, lr=0.01),
    }
    for name in make:
        path = f"{folder}/{name}.pt"
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
        optimizer = make[name](model.parameters())
        lr_schedule = None if name == "Adafactor" else descend.WarmupCosine(optimizer, 3, 20)
        momentum = descend.MomentumSchedule(optimizer, descend.linear_ramp(0.5, 0.9, 10)) if name in ("SGD", "Adam", "Adafactor") else None
        if mode == "resume":
            checkpoint = torch.load(path, weights_only=False)
            model.load_state_dict(checkpoint["model"]); optimizer.load_state_dict(checkpoint["optimizer"])
            if lr_schedule: lr_schedule.load_state_dict(checkpoint["lr"])
            if momentum: momentum.load_state_dict(checkpoint["momentum"])
            torch.set_rng_state(checkpoint["rng"])
        for step in range(first, first + steps):
            g = torch.Generator().manual_seed(step)
            x, y = torch.randn(16, 6, generator=g), torch.randn(16, 3, generator=g)
            def closure():
                optimizer.zero_grad()
                loss = ((model(x) - y) ** 2).mean()
                loss.backward()
                return loss
            optimizer.step(closure)
            for schedule in (lr_schedule, momentum):
                if schedule: schedule.step()
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(),
                    "lr": lr_schedule.state_dict() if lr_schedule else None,
                    "momentum": momentum.state_dict() if momentum else None}, path)
""")
NAMES = ["SGD", "Adagrad", "RMSprop", "Adadelta", "Adam", "AdamW", "Adafactor", "SAM"]


def run(script, mode, folder, first, steps):
    folder.mkdir(exist_ok=True)
    result = subprocess.run([sys.executable, str(script), mode, str(folder), str(first), str(steps)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """12 steps straight; 5 steps, save, and 7 more in a fresh process: three processes in all."""
    folder = tmp_path_factory.mktemp("resume")
    script = folder / "train.py"
    script.write_text(SCRIPT)
    run(script, "train", folder / "straight", 0, 12)
    run(script, "train", folder / "split", 0, 5)
    run(script, "resume", folder / "split", 5, 7)
    return folder


@pytest.mark.parametrize("name", NAMES)
def test_resume_in_a_fresh_process_is_bit_identical(checkpoints, name):
    a = torch.load(checkpoints / "straight" / f"{name}.pt", weights_only=False)
    b = torch.load(checkpoints / "split" / f"{name}.pt", weights_only=False)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def trained(optimizer_class, **kwargs):
    model = nn.Linear(4, 3)
    optimizer = optimizer_class(model.parameters(), **kwargs)
    model(torch.randn(8, 4)).pow(2).mean().backward()
    optimizer.step()
    return model, optimizer


def snapshot(optimizer):
    return {id(p): {k: v.clone() for k, v in s.items()} for p, s in optimizer.state.items()}, \
        [dict(g) for g in optimizer.param_groups]


@pytest.mark.parametrize("source, target, message", [
    (lambda: trained(descend.Adam), lambda: trained(descend.SGD, lr=0.1, momentum=0.9), "another optimizer"),
    (lambda: trained(descend.SGD, lr=0.1, momentum=0.9), lambda: trained(descend.Adafactor), "another optimizer"),
    (lambda: trained(descend.Adam), lambda: (lambda m: (m, descend.Adam([m.weight])))(nn.Linear(4, 3)),
     "parameters per group"),
])
def test_checkpoint_from_another_optimizer_or_model_is_refused_untouched(source, target, message):
    _, source_optimizer = source()
    _, optimizer = target()
    before_state, before_groups = snapshot(optimizer)
    with pytest.raises(ValueError, match=message):
        optimizer.load_state_dict(source_optimizer.state_dict())
    after_state, after_groups = snapshot(optimizer)
    assert before_groups == after_groups and before_state.keys() == after_state.keys()
    assert all(torch.equal(before_state[p][k], after_state[p][k]) for p in before_state for k in before_state[p])


def test_checkpoint_with_wrong_shapes_is_refused():
    _, source = trained(descend.Adam)
    model = nn.Linear(3, 4)  # same number of tensors, transposed shapes
    target = descend.Adam(model.parameters())
    with pytest.raises(ValueError, match=r"shape \(3, 4\), expected \(4, 3\)"):
        target.load_state_dict(source.state_dict())
    assert len(target.state) == 0


def test_adafactor_checkpoint_with_wrong_factored_shapes_is_refused():
    _, source = trained(descend.Adafactor)
    _, target = trained(descend.Adafactor)
    state = source.state_dict()
    state["state"][0]["exp_avg_sq_row"] = torch.zeros(7)
    with pytest.raises(ValueError, match="exp_avg_sq_row"):
        target.load_state_dict(state)
