from __future__ import annotations

import io

import pytest
import torch
from torch import nn

import descend


def quadratic_setup():
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    return model, x, y


def test_step_without_closure_explains_what_to_do():
    model, _, _ = quadratic_setup()
    optimizer = descend.SAM(model.parameters(), descend.SGD, lr=0.1)
    with pytest.raises(ValueError, match="closure"):
        optimizer.step()


def test_second_step_restores_the_exact_parameters_before_the_base_step():
    model, x, y = quadratic_setup()
    optimizer = descend.SAM(model.parameters(), descend.SGD, lr=0.0, rho=0.5)
    before = [p.detach().clone() for p in model.parameters()]
    nn.functional.mse_loss(model(x), y).backward()
    optimizer.first_step(zero_grad=True)
    moved = [p.detach().clone() for p in model.parameters()]
    perturbation = torch.cat([(m - b).flatten() for m, b in zip(moved, before)])
    assert perturbation.norm().item() == pytest.approx(0.5, rel=1e-5)
    nn.functional.mse_loss(model(x), y).backward()
    optimizer.second_step()
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))


def test_shares_param_groups_and_state_with_the_base_optimizer():
    model, x, y = quadratic_setup()
    optimizer = descend.SAM(model.parameters(), descend.Adam, lr=0.01, betas=(0.8, 0.9))
    assert optimizer.param_groups is optimizer.base_optimizer.param_groups
    assert optimizer.param_groups[0]["betas"] == (0.8, 0.9) and optimizer.param_groups[0]["rho"] == 0.05
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    loss = optimizer.step(closure)
    scheduler.step()
    assert isinstance(loss, torch.Tensor)
    assert optimizer.base_optimizer.param_groups[0]["lr"] == 0.005
    assert set(optimizer.state_dict()["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}


def test_works_over_a_torch_optim_base():
    model, x, y = quadratic_setup()
    optimizer = descend.SAM(model.parameters(), torch.optim.SGD, lr=0.1, momentum=0.9)
    losses = []
    for _ in range(20):
        def closure():
            optimizer.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            return loss

        losses.append(optimizer.step(closure).item())
    assert losses[-1] < 0.8 * losses[0]


def test_add_param_group_reaches_the_base_optimizer():
    model, _, _ = quadratic_setup()
    optimizer = descend.SAM([model.weight], descend.SGD, lr=0.1)
    optimizer.add_param_group({"params": [model.bias], "rho": 0.2})
    assert len(optimizer.base_optimizer.param_groups) == 2
    assert optimizer.param_groups[1]["rho"] == 0.2 and optimizer.param_groups[1]["lr"] == 0.1


def nan_closure(model, sam, nan_at):
    """A closure whose gradient is NaN on the passes numbered in ``nan_at`` (0: at θ, 1: at θ + ε̂)."""
    calls = []

    def closure():
        sam.zero_grad()
        loss = model(torch.ones(2, 3)).pow(2).mean()
        if len(calls) % 2 in nan_at:
            loss = loss * float("nan")
        calls.append(1)
        loss.backward()
        return loss

    return closure


def test_sams_own_skipped_steps_travel_with_its_checkpoint():
    model = torch.nn.Linear(3, 1)
    sam = descend.SAM(model.parameters(), descend.SGD, lr=0.1, nonfinite="skip")
    sam.step(nan_closure(model, sam, nan_at={0}))  # skipped by SAM itself, before perturbing
    sam.step(nan_closure(model, sam, nan_at={1}))  # skipped by the base step
    assert (sam._own_skipped_steps, sam.base_optimizer.skipped_steps) == (1, 1)
    buffer = io.BytesIO()
    torch.save(sam.state_dict(), buffer)
    buffer.seek(0)
    resumed = descend.SAM(model.parameters(), descend.SGD, lr=0.1, nonfinite="skip")
    resumed.load_state_dict(torch.load(buffer))
    assert resumed.skipped_steps == 2 and (resumed._own_skipped_steps, resumed.base_optimizer.skipped_steps) == (1, 1)
    assert resumed.state_dict() == sam.state_dict()

    old = {k: v for k, v in sam.state_dict().items() if k != "sam"}  # written before SAM saved its own count
    resumed.load_state_dict(old)
    assert resumed.skipped_steps == 1 and resumed._own_skipped_steps == 0
    base = descend.SGD(model.parameters(), lr=0.1)
    base.load_state_dict(sam.state_dict())  # the base optimizer alone takes SAM's checkpoint
    assert base.skipped_steps == 1
    with pytest.raises(ValueError, match="SAM: the checkpoint's SAM skipped_steps must be a whole number >= 0"):
        resumed.load_state_dict({**sam.state_dict(), "sam": {"skipped_steps": -1}})
    assert resumed.skipped_steps == 1  # nothing changed
