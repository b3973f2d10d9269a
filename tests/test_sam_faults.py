"""SAM never leaves θ perturbed, survives copies, and gives what its users ask for: BatchNorm frozen in the
second pass, and mixed precision with GradScaler under the default ``nonfinite``."""
from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from torch import nn

import descend


def setup(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 1))
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    return model, x, y


def closure_for(model, optimizer, x, y):
    def closure():
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss
    return closure


def params_of(model):
    return [p.detach().clone() for p in model.parameters()]


def test_an_error_in_the_second_pass_leaves_theta_where_it_was():
    model, x, y = setup()
    optimizer = descend.SAM(model.parameters(), descend.SGD, lr=0.1, rho=0.5)
    before = params_of(model)
    calls = []

    def closure():
        calls.append(1)
        if len(calls) == 2:
            raise torch.OutOfMemoryError("pretend the perturbed forward ran out of memory")
        return closure_for(model, optimizer, x, y)()

    with pytest.raises(torch.OutOfMemoryError):
        optimizer.step(closure)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    optimizer.step(closure_for(model, optimizer, x, y))  # and the next step is an ordinary one
    assert not all(torch.equal(p, b) for p, b in zip(model.parameters(), before))


def saved_and_loaded(thing):
    buffer = io.BytesIO()
    torch.save(thing, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


@pytest.mark.parametrize("copy_of", [copy.deepcopy, lambda thing: pickle.loads(pickle.dumps(thing)), saved_and_loaded],
                         ids=["deepcopy", "pickle", "torch.save"])
def test_a_copy_keeps_its_base_optimizer_and_steps_like_the_original(copy_of):
    model, x, y = setup()
    optimizer = descend.SAM(model.parameters(), descend.Adam, lr=0.01, rho=0.1)
    optimizer.step(closure_for(model, optimizer, x, y))
    twin_model, twin = copy_of((model, optimizer))  # one copy: the twin optimizer holds the twin's parameters
    assert isinstance(twin.base_optimizer, descend.Adam)
    assert twin.param_groups is twin.base_optimizer.param_groups and twin.state is twin.base_optimizer.state
    assert twin.param_groups[0]["params"][0] is next(twin_model.parameters())
    for _ in range(2):
        optimizer.step(closure_for(model, optimizer, x, y))
        twin.step(closure_for(twin_model, twin, x, y))
    for a, b in zip(model.parameters(), twin_model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_frozen_batchnorm_stats_keeps_the_running_statistics_of_the_second_pass_out():
    model, x, y = setup()
    optimizer = descend.SAM(model.parameters(), descend.SGD, lr=0.1)
    norm = model[1]
    reference = copy.deepcopy(norm)
    reference(model[0](x))  # one update of the running statistics, at θ, with this batch
    optimizer.step(closure_for(model, optimizer, x, y),
                   second_pass=lambda: descend.frozen_batchnorm_stats(model))
    assert norm.num_batches_tracked.item() == 1
    torch.testing.assert_close(norm.running_mean, reference.running_mean)
    torch.testing.assert_close(norm.running_var, reference.running_var)
    assert norm.track_running_stats  # restored after the block

    unfrozen_model, _, _ = setup()
    unfrozen = descend.SAM(unfrozen_model.parameters(), descend.SGD, lr=0.1)
    unfrozen.step(closure_for(unfrozen_model, unfrozen, x, y))
    assert unfrozen_model[1].num_batches_tracked.item() == 2  # what the helper prevents


def scaled_run(model, optimizer, scaler, batches):
    for x, y in batches:
        optimizer.scaled_step(lambda: nn.functional.mse_loss(model(x), y), scaler)
        scaler.update()


def test_gradscaler_recipe_matches_plain_sam_when_nothing_overflows():
    model, x, y = setup()
    plain_model = copy.deepcopy(model)
    optimizer = descend.SAM(model.parameters(), descend.SGD, lr=0.1, momentum=0.9)
    plain = descend.SAM(plain_model.parameters(), descend.SGD, lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    batches = [(x, y)] * 3
    scaled_run(model, optimizer, scaler, batches)
    for bx, by in batches:
        plain.step(closure_for(plain_model, plain, bx, by))
    for a, b in zip(model.parameters(), plain_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("overflow_in", ["first", "second"])
def test_gradscaler_recipe_skips_an_overflowing_step_under_the_default_nonfinite(overflow_in):
    model, x, y = setup()
    optimizer = descend.SAM(model.parameters(), descend.SGD, lr=0.1)  # nonfinite="raise", the default
    assert optimizer.nonfinite == "raise"
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    before = params_of(model)
    calls = []

    def closure():
        calls.append(1)
        loss = nn.functional.mse_loss(model(x), y)
        overflow = len(calls) == (1 if overflow_in == "first" else 2)
        return loss * float("inf") if overflow else loss

    optimizer.scaled_step(closure, scaler)
    scaler.update()
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert scaler.get_scale() < 2.0**10  # the scaler backed off
    scaled_run(model, optimizer, scaler, [(x, y)])  # and training goes on
    assert not all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
