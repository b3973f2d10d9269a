from __future__ import annotations

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
