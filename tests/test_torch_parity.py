"""descend.X against torch.optim.X wherever the two algorithms coincide, in float32."""
from __future__ import annotations

import io

import pytest
import torch

import descend
from conftest import make_params, nonconvex_loss, run_optimizer

STEPS = 25

CASES = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, weight_decay=0.1, maximize=True)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, weight_decay=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("Adagrad", dict(lr=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.1, initial_accumulator_value=0.1)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, centered=True)),
    ("RMSprop", dict(lr=0.01, momentum=0.9, weight_decay=0.1)),
    ("RMSprop", dict(lr=0.01, centered=True, momentum=0.5, alpha=0.9, maximize=True)),
    ("Adadelta", dict()),
    ("Adadelta", dict(lr=0.5, rho=0.95, weight_decay=0.1)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("Adam", dict(lr=0.01, weight_decay=0.1, betas=(0.8, 0.99))),
    ("Adam", dict(lr=0.01, maximize=True)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, weight_decay=0.3, amsgrad=True)),
]


IDS = [f"{name}-{i}" for i, (name, _) in enumerate(CASES)]


@pytest.mark.parametrize("name, kwargs", CASES, ids=IDS)
def test_float64_trajectory_equals_torch_optim(name, kwargs):
    """Same algorithm: 25 steps on a nonconvex problem agree to float64 rounding."""
    start = make_params(torch.float64)
    got, _ = run_optimizer(getattr(descend, name), start, STEPS, **kwargs)
    want, _ = run_optimizer(getattr(torch.optim, name), start, STEPS, foreach=False, **kwargs)
    for g, w, s in zip(got, want, start):
        assert not torch.equal(w, s)
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name, kwargs", CASES, ids=IDS)
def test_float32_every_step_matches_torch_optim(name, kwargs):
    """In float32 each step agrees to ~1e-6; the parameters are re-synced after each step so that
    rounding differences are not amplified along the trajectory (each optimizer keeps its own state)."""
    start = make_params(torch.float32)
    ours = [p.clone().requires_grad_() for p in start]
    theirs = [p.clone().requires_grad_() for p in start]
    our_optimizer = getattr(descend, name)(ours, **kwargs)
    their_optimizer = getattr(torch.optim, name)(theirs, foreach=False, **kwargs)
    for _ in range(STEPS):
        for params, optimizer in ((ours, our_optimizer), (theirs, their_optimizer)):
            optimizer.zero_grad()
            nonconvex_loss(params).backward()
            optimizer.step()
        for g, w in zip(ours, theirs):
            torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-6)
            with torch.no_grad():
                g.copy_(w)


@pytest.mark.parametrize("name, kwargs", [("Adam", dict(lr=0.01, amsgrad=True)), ("SGD", dict(lr=0.05, momentum=0.9)),
                                          ("RMSprop", dict(lr=0.01, centered=True, momentum=0.5)), ("Adadelta", {}),
                                          ("Adagrad", dict(lr=0.1))])
def test_torch_checkpoint_resumes_in_descend(name, kwargs):
    """A torch.optim state_dict loads into the descend class and training continues identically."""
    start = make_params(torch.float32)
    params_torch = [p.clone().requires_grad_() for p in start]
    torch_optimizer = getattr(torch.optim, name)(params_torch, foreach=False, **kwargs)
    def train(optimizer, params, steps):
        for _ in range(steps):
            optimizer.zero_grad()
            nonconvex_loss(params).backward()
            optimizer.step()

    train(torch_optimizer, params_torch, 10)
    params_descend = [p.detach().clone().requires_grad_() for p in params_torch]
    descend_optimizer = getattr(descend, name)(params_descend, **kwargs)
    checkpoint = io.BytesIO()
    torch.save(torch_optimizer.state_dict(), checkpoint)
    checkpoint.seek(0)
    descend_optimizer.load_state_dict(torch.load(checkpoint))
    train(torch_optimizer, params_torch, 10)
    train(descend_optimizer, params_descend, 10)
    for g, w in zip(params_descend, params_torch):
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-6)
