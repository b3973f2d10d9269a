"""The learning-rate range test, calibrated on problems whose answer is known.

Plain gradient descent on a quadratic with Hessian H diverges above 2/λ_max(H) (heavy ball with
momentum μ above 2(1+μ)/λ_max); on least squares ‖Xw + b − y‖²/n, H = 2[X 1]ᵀ[X 1]/n.  The range
test's suggestion must land in [limit/30, limit), and the divergence it reports at or above the limit.
"""
from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import descend
from descend.tools.lr_find import summarise

# most tests cycle a few batches on purpose; test_fewer_batches_than_steps_cycle_with_a_warning checks the warning
pytestmark = pytest.mark.filterwarnings("ignore:lr_find. the data holds")

CURVATURE = torch.tensor([1.0, 4.0, 10.0])  # λ_max = 10: gradient descent diverges above 0.2


class Quadratic(nn.Module):
    def __init__(self, size=3):
        super().__init__()
        self.theta = nn.Parameter(torch.ones(size))

    def forward(self, x):
        return self.theta


def quadratic_loss(theta, target):
    return 0.5 * (CURVATURE * theta**2).sum()


BATCHES = [(torch.zeros(1), torch.zeros(1))]


def least_squares(seed, scales, samples=512, noise=0.5):
    """(inputs, targets, the SGD limit 2/λ_max) of y = Xw + noise with column scales ``scales``."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, len(scales), generator=generator) * scales
    y = x @ torch.randn(len(scales), generator=generator) + noise * torch.randn(samples, generator=generator)
    design = torch.cat([x, torch.ones(samples, 1)], 1)  # the bias is a column of ones
    hessian = 2 * design.T @ design / samples
    return x, y[:, None], 2 / torch.linalg.eigvalsh(hessian.double()).max().item()


def issue_example(seed):
    """The issue's example: 512 samples, 8 features scaled 0.2 … 3.0, batches of 64."""
    x, y, limit = least_squares(seed, torch.linspace(0.2, 3.0, 8))
    return [(x[i:i + 64], y[i:i + 64]) for i in range(0, 512, 64)], limit


def find(batches, seed=0, **kwargs):
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the batches cycle: tested below
        return descend.lr_find(nn.Linear(batches[0][0].shape[1], 1), nn.functional.mse_loss, batches, **kwargs)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_issue_example_suggests_a_rate_in_the_steep_descent_below_divergence(seed):
    batches, limit = issue_example(seed)
    assert 0.1 < limit < 0.125  # 2/λ_max = 0.113 for seed 0, as in the issue
    result = find(batches, seed, optimizer=descend.SGD)
    assert 0.004 <= result.suggestion < 0.113
    assert limit / 30 <= result.suggestion < limit
    assert result.right[0] <= result.suggestion <= result.right[1]
    assert result.diverged_at >= limit


@pytest.mark.parametrize("kappa", [1, 100, 1e4])
def test_least_squares_suggestion_lies_in_limit_over_30_to_limit_over_seeds_batch_sizes_and_orders(kappa):
    scales = torch.logspace(0, 0.5 * math.log10(kappa), 8)  # Hessian eigenvalues spread over κ
    for seed in range(3):
        x, y, limit = least_squares(seed, scales)
        for batch_size in (16, 64):
            for shuffle in (False, True):
                loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle,
                                    generator=torch.Generator().manual_seed(seed))
                torch.manual_seed(seed)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    result = descend.lr_find(nn.Linear(8, 1), nn.functional.mse_loss, loader, optimizer=descend.SGD)
                case = f"κ={kappa} seed={seed} batch={batch_size} shuffle={shuffle}: {result.verdict}"
                assert limit / 30 <= result.suggestion < limit, case
                assert result.diverged_at is not None and result.diverged_at >= limit, case


@pytest.mark.parametrize("curvature", [[1.0, 4.0, 10.0], [1.0, 10.0, 100.0], [1e-3, 1e-1, 10.0]])
def test_full_batch_quadratic(curvature):
    curvature = torch.tensor(curvature)
    limit = 2 / curvature.max().item()
    model = Quadratic()
    result = descend.lr_find(model, lambda theta, _: 0.5 * (curvature * theta**2).sum(), BATCHES,
                             optimizer=descend.SGD, start=1e-4, end=10, steps=100)
    assert limit / 30 <= result.suggestion < limit
    assert result.diverged_at is not None and result.diverged_at >= limit
    assert result.right[0] <= result.right[1] <= result.diverged_at and result.too_high is not None
    assert result.too_low[0] == result.lrs[0] and len(result.lrs) == len(result.smoothed) < 100


def fixed_lr_loss(batches, optimizer, lr, steps=100, **kwargs):
    """The mean loss over all batches after ``steps`` steps at a fixed ``lr`` (inf when it diverged)."""
    torch.manual_seed(0)
    model = nn.Linear(8, 1)
    opt = optimizer(model.parameters(), lr=lr, nonfinite="skip", **kwargs)
    for step in range(steps):
        x, y = batches[step % len(batches)]
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    with torch.no_grad():
        loss = sum(nn.functional.mse_loss(model(x), y).item() for x, y in batches) / len(batches)
    return loss if math.isfinite(loss) else math.inf


@pytest.mark.parametrize("optimizer, kwargs", [(descend.SGD, {}), (descend.SGD, dict(momentum=0.9)),
                                               (descend.Adam, {})], ids=["sgd", "momentum", "adam"])
def test_training_at_the_suggestion_is_within_1_5x_of_the_best_fixed_rate(optimizer, kwargs):
    batches, _ = issue_example(0)
    result = find(batches, optimizer=optimizer, **kwargs)
    assert result.right[0] <= result.suggestion <= result.right[1]
    assert result.diverged_at is None or result.suggestion < result.diverged_at
    best = min(fixed_lr_loss(batches, optimizer, 10 ** (k / 3), **kwargs) for k in range(-12, 3))
    assert fixed_lr_loss(batches, optimizer, result.suggestion, **kwargs) <= 1.5 * best


def known_curve(decades):
    """A log loss falling linearly by ``decades`` decades between lr 1e-4 and 1e-2, rising after it."""
    lrs = [10 ** (-6 + 6 * i / 99) for i in range(100)]
    fall = [min(1, max(0, (math.log10(lr) + 4) / 2)) for lr in lrs]
    logs = [math.log(10) * (1 - decades * f + 3 * max(0, math.log10(lr) + 2)) for f, lr in zip(fall, lrs)]
    return summarise(lrs, [math.exp(v) for v in logs], None, smoothing=0.0, skip_start=0, skip_end=0)


def test_rules_on_a_known_curve():
    result = known_curve(decades=1)
    assert result.suggestion == pytest.approx(1e-3, rel=0.15)  # halfway down in log loss
    assert result.suggestions["minimum"] == pytest.approx(1e-3, rel=0.15)  # the minimum is at 1e-2
    assert result.suggestions["valley"] == pytest.approx(1e-3 * 10 ** 0.1, rel=0.15)  # mid of 10% … 100% fallen
    assert 1e-4 < result.suggestions["steepest"] < 1e-2
    assert result.right == (pytest.approx(1.0e-4 * 10 ** 0.2, rel=0.15), pytest.approx(1e-2, rel=0.15))
    assert result.drop == pytest.approx(math.log(10), rel=0.01) and result.noise < 1e-9


def test_halfway_counts_a_drop_of_at_most_30x():
    # a minimum 10⁴ below the plateau (a noiseless quadratic): halfway means fallen √30×, not 100×
    assert known_curve(decades=4).suggestion == pytest.approx(1e-4 * 10 ** (math.log10(30) / 4), rel=0.2)


class Frozen(nn.Module):
    """A frozen linear model with one trainable parameter whose gradient is always zero."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(8, 1).requires_grad_(False)
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.linear(x) + 0 * self.unused


def test_a_flat_loss_gives_no_suggestion_and_says_so():
    frozen = Frozen()
    batches, _ = issue_example(0)
    for data in (batches[:1], batches):  # one batch: a constant loss; eight: a loss that only wobbles
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = descend.lr_find(frozen, nn.functional.mse_loss, data, optimizer=descend.SGD)
        assert result.suggestion is None and result.right is None
        assert "no suggestion" in result.verdict and ("flat" in result.verdict or "noisy" in result.verdict)
        assert all(value is None for value in result.suggestions.values())
        assert "no suggestion" in result.to_markdown()
        result.plot()


def test_a_test_that_diverges_at_once_gives_no_suggestion():
    result = descend.lr_find(Quadratic(), quadratic_loss, BATCHES, optimizer=descend.SGD, start=1.0, end=1e3)
    assert result.suggestion is None and result.diverged_at is not None and "diverged after" in result.verdict
    assert "start lower" in result.to_markdown()


def test_pure_noise_gives_no_suggestion():
    generator = torch.Generator().manual_seed(0)
    lrs = [10 ** (-7 + 8 * i / 99) for i in range(100)]
    losses = [math.exp(0.3 * torch.randn(1, generator=generator).item()) for _ in lrs]
    result = summarise(lrs, losses, None, smoothing=0.6, skip_start=10, skip_end=3)
    assert result.suggestion is None and "no suggestion" in result.verdict


def test_fewer_batches_than_steps_cycle_with_a_warning():
    batches, _ = issue_example(0)
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="8 batches, fewer than the 100 steps"):
        result = descend.lr_find(nn.Linear(8, 1), nn.functional.mse_loss, batches, optimizer=descend.SGD)
    assert len(result.lrs) > 8
    with pytest.warns(UserWarning, match="ran out after 8 of 100 steps"):
        descend.lr_find(nn.Linear(8, 1), nn.functional.mse_loss, iter(batches), optimizer=descend.SGD)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # enough batches: no warning
        descend.lr_find(nn.Linear(8, 1), nn.functional.mse_loss, batches * 13, optimizer=descend.SGD)


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


def test_model_and_optimizer_are_restored_when_the_loss_fails_midway():
    model = Quadratic()
    optimizer = descend.SGD(model.parameters(), lr=0.1, momentum=0.9)
    params = model.theta.detach().clone()
    calls = []

    def failing(theta, target):
        calls.append(1)
        if len(calls) == 20:
            raise RuntimeError("boom")
        return quadratic_loss(theta, target)

    with pytest.raises(RuntimeError, match="boom"):
        descend.lr_find(model, failing, BATCHES, optimizer=optimizer)
    assert torch.equal(model.theta, params) and not optimizer.state and optimizer.param_groups[0]["lr"] == 0.1


def test_works_with_a_data_loader_plots_and_prints():
    torch.manual_seed(0)
    x, y = torch.randn(256, 4), torch.randint(0, 3, (256,))
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    with pytest.warns(UserWarning, match="cycling"):
        result = descend.lr_find(model, nn.functional.cross_entropy, loader, start=1e-5, end=10, steps=60)
    assert 1e-5 <= result.suggestion <= 10 and len(result.lrs) >= 10
    axis = result.plot().axes[0]
    assert axis.get_xscale() == "log" and len(axis.lines) >= 3  # raw, smoothed, the suggestion
    labels = [text.get_text() for text in axis.get_legend().get_texts()]
    assert {"loss (raw)", "smoothed loss", "right"} <= set(labels)
    assert any(label.startswith("suggestion") for label in labels)
    table = result.to_markdown()
    assert table.startswith("| quantity | value |") and f"{result.suggestion:.3g}" in table


def test_the_plot_marks_the_divergence_point():
    batches, _ = issue_example(0)
    result = find(batches, optimizer=descend.SGD)
    labels = [text.get_text() for text in result.plot().axes[0].get_legend().get_texts()]
    assert f"diverged at {result.diverged_at:.2g}" in labels and "too high" in labels


def test_bad_input_raises_and_leaves_the_model_as_it_was():
    model = Quadratic()
    before = model.theta.detach().clone()
    with pytest.raises(ValueError, match="start < end"):
        descend.lr_find(model, quadratic_loss, BATCHES, start=1.0, end=1e-3)
    with pytest.raises(ValueError, match="no batches"):
        descend.lr_find(model, quadratic_loss, [])
    with pytest.raises(ValueError, match="not finite at the first step"):
        descend.lr_find(model, lambda out, target: out.sum() * float("nan"), BATCHES)
    with pytest.raises(ValueError, match="method must be one of"):
        descend.lr_find(model, quadratic_loss, BATCHES, method="fastest")
    with pytest.raises(ValueError, match="skip_start"):
        descend.lr_find(model, quadratic_loss, BATCHES, skip_start=60, skip_end=40)
    with pytest.raises(ValueError, match="diverge_factor"):
        descend.lr_find(model, quadratic_loss, BATCHES, diverge_factor=1.0)
    with pytest.raises(ValueError, match="smoothing"):
        descend.lr_find(model, quadratic_loss, BATCHES, smoothing=1.0)
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        descend.lr_find(frozen, quadratic_loss, BATCHES)
    assert torch.equal(model.theta, before)


def test_a_loss_that_goes_negative_is_read_as_it_is():
    # the issue's example with the loss shifted down by 1, so that it ends below zero
    batches, _ = issue_example(0)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = descend.lr_find(nn.Linear(8, 1), lambda out, y: nn.functional.mse_loss(out, y) - 1.0, batches,
                                 optimizer=descend.SGD)
    assert min(result.losses) < 0 and result.suggestion is not None
    assert result.right[0] <= result.suggestion <= result.right[1] < result.diverged_at
    assert 0.004 <= result.suggestion < 0.113
    result.plot()


def test_the_gradients_are_left_as_they_were():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1))
    first, second = model
    first.weight.grad = torch.full_like(first.weight, 0.5)  # a tensor: the same tensor, the same values
    kept = first.weight.grad
    assert all(p.grad is None for p in (first.bias, second.weight, second.bias))
    data = [(torch.randn(8, 3), torch.randn(8, 1))]
    descend.lr_find(model, nn.functional.mse_loss, data, optimizer=descend.SGD, steps=20)
    assert first.weight.grad is kept and torch.equal(kept, torch.full_like(first.weight, 0.5))
    assert all(p.grad is None for p in (first.bias, second.weight, second.bias))

    def failing(output, target):
        if failing.calls == 10:
            raise RuntimeError("boom")
        failing.calls += 1
        return nn.functional.mse_loss(output, target)

    failing.calls = 0
    with pytest.raises(RuntimeError, match="boom"):
        descend.lr_find(model, failing, data, optimizer=descend.SGD, steps=20)
    assert first.weight.grad is kept and torch.equal(kept, torch.full_like(first.weight, 0.5))
    assert all(p.grad is None for p in (first.bias, second.weight, second.bias))


def test_training_after_lr_find_is_the_training_without_it():
    def train(with_lr_find):
        torch.manual_seed(0)
        model = nn.Linear(3, 1)
        data = [(torch.randn(16, 3), torch.randn(16, 1))]
        if with_lr_find:
            descend.lr_find(model, nn.functional.mse_loss, data, optimizer=descend.SGD, steps=20)
        optimizer = descend.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for _ in range(3):
            nn.functional.mse_loss(model(data[0][0]), data[0][1]).backward()  # backward, step, zero_grad
            optimizer.step()
            optimizer.zero_grad()
        return [p.detach().clone() for p in model.parameters()]

    assert all(torch.equal(a, b) for a, b in zip(train(True), train(False)))
