"""The learning-rate range test on a quadratic whose divergence point is known: 2/λ_max."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import descend

CURVATURE = torch.tensor([1.0, 4.0, 10.0])  # λ_max = 10: gradient descent diverges above 0.2


class Quadratic(nn.Module):
    def __init__(self):
        super().__init__()
        self.theta = nn.Parameter(torch.ones(3))

    def forward(self, x):
        return self.theta


def quadratic_loss(theta, target):
    return 0.5 * (CURVATURE * theta**2).sum()


BATCHES = [(torch.zeros(1), torch.zeros(1))]


def test_suggestion_lies_below_the_divergence_point_and_divergence_is_found_above_it():
    model = Quadratic()
    result = descend.lr_find(model, quadratic_loss, BATCHES, optimizer=descend.SGD, start=1e-4, end=10, steps=100)
    threshold = 2 / CURVATURE.max().item()
    assert result.suggestion < threshold
    assert result.diverged_at is not None and result.diverged_at >= threshold
    assert result.right[0] <= result.right[1] <= result.diverged_at and result.too_high is not None
    assert result.too_low[0] == result.lrs[0] and len(result.lrs) == len(result.smoothed) < 100


def test_model_and_an_existing_optimizer_are_restored():
    model = Quadratic()
    optimizer = descend.Adam(model.parameters(), lr=0.1)
    model(None).sum().backward()
    optimizer.step()
    params, state = model.theta.detach().clone(), {k: v.clone() for k, v in optimizer.state[model.theta].items()}
    descend.lr_find(model, quadratic_loss, BATCHES, optimizer=optimizer, steps=30)
    assert torch.equal(model.theta, params)
    assert all(torch.equal(optimizer.state[model.theta][k], v) for k, v in state.items())
    assert optimizer.param_groups[0]["lr"] == 0.1


def test_works_with_a_data_loader_and_plots():
    torch.manual_seed(0)
    x, y = torch.randn(256, 4), torch.randint(0, 3, (256,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=True)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    result = descend.lr_find(model, nn.functional.cross_entropy, loader, start=1e-5, end=10, steps=60)
    assert 1e-5 <= result.suggestion <= 10 and len(result.lrs) >= 10
    figure = result.plot()
    assert figure.axes[0].get_xscale() == "log"


def test_bad_input_raises_and_leaves_the_model_as_it_was():
    model = Quadratic()
    before = model.theta.detach().clone()
    with pytest.raises(ValueError, match="start < end"):
        descend.lr_find(model, quadratic_loss, BATCHES, start=1.0, end=1e-3)
    with pytest.raises(ValueError, match="no batches"):
        descend.lr_find(model, quadratic_loss, [])
    with pytest.raises(ValueError, match="not finite at the first step"):
        descend.lr_find(model, lambda out, target: out.sum() * float("nan"), BATCHES)
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        descend.lr_find(frozen, quadratic_loss, BATCHES)
    assert torch.equal(model.theta, before)
