"""Each optimizer against its independent textbook reference, 40 steps in float64."""
from __future__ import annotations

import pytest
import torch

import descend
from conftest import make_params, nonconvex_loss, run_optimizer
import reference as ref

STEPS = 40

CASES = {
    # name: (descend class, descend kwargs, reference step, reference hyperparameters)
    "sgd": (descend.SGD, dict(lr=0.05), ref.sgd_step, dict(lr=0.05)),
    "sgd-weight-decay": (descend.SGD, dict(lr=0.05, weight_decay=0.1), ref.sgd_step, dict(lr=0.05, weight_decay=0.1)),
    "momentum-velocity-form": (
        descend.SGD, dict(lr=0.05, momentum=0.9), ref.velocity_momentum_step, dict(lr=0.05, mu=0.9)),
    "momentum-ema-form": (
        descend.SGD, dict(lr=0.05, momentum=0.9, dampening=0.9), ref.ema_momentum_step, dict(lr=0.05, beta=0.9)),
    "nesterov-reformulated": (
        descend.SGD, dict(lr=0.05, momentum=0.9, nesterov=True), ref.nesterov_reformulated_step, dict(lr=0.05, mu=0.9)),
    "nesterov-lookahead": (
        descend.SGD, dict(lr=0.05, momentum=0.8, dampening=0.8, nesterov=True), ref.nesterov_lookahead_step,
        dict(lr=0.05, beta=0.8)),
    "adagrad": (descend.Adagrad, dict(lr=0.1), ref.adagrad_step, dict(lr=0.1)),
    "adagrad-decay-initial": (
        descend.Adagrad, dict(lr=0.1, lr_decay=0.05, initial_accumulator_value=0.2, eps=1e-6), ref.adagrad_step,
        dict(lr=0.1, lr_decay=0.05, initial=0.2, eps=1e-6)),
    "rmsprop": (descend.RMSprop, dict(lr=0.01, alpha=0.9), ref.rmsprop_step, dict(lr=0.01, gamma=0.9)),
    "rmsprop-centered-momentum": (
        descend.RMSprop, dict(lr=0.01, alpha=0.9, centered=True, momentum=0.5), ref.rmsprop_step,
        dict(lr=0.01, gamma=0.9, centered=True, momentum=0.5)),
    "adadelta": (descend.Adadelta, dict(lr=1.0, rho=0.9), ref.adadelta_step, dict(lr=1.0, rho=0.9)),
    "adam": (descend.Adam, dict(lr=0.01), ref.adam_step, dict(lr=0.01)),
    "adam-no-bias-correction": (
        descend.Adam, dict(lr=0.01, bias_correction=False), ref.adam_step, dict(lr=0.01, bias_correction=False)),
    "adam-l2": (descend.Adam, dict(lr=0.01, weight_decay=0.1), ref.adam_step, dict(lr=0.01, l2=0.1)),
    "adam-amsgrad": (descend.Adam, dict(lr=0.01, amsgrad=True), ref.adam_step, dict(lr=0.01, amsgrad=True)),
    "adamw-decoupled": (descend.AdamW, dict(lr=0.01, weight_decay=0.1), ref.adam_step, dict(lr=0.01, decoupled=0.1)),
    "adafactor-relative-step": (descend.Adafactor, dict(), ref.adafactor_step, dict()),
    "adafactor-lr-beta1-decay": (
        descend.Adafactor, dict(lr=0.05, relative_step=False, beta1=0.9, weight_decay=0.1, clip_threshold=0.5),
        ref.adafactor_step, dict(lr=0.05, beta1=0.9, weight_decay=0.1, d=0.5)),
    "adafactor-unscaled-warmup": (
        descend.Adafactor, dict(scale_parameter=False, warmup_init=True, eps=(1e-20, 1e-3), decay_rate=-0.5),
        ref.adafactor_step, dict(scale_parameter=False, warmup_init=True, eps1=1e-20, decay_rate=-0.5)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_matches_textbook_reference(name):
    optimizer_class, kwargs, step_fn, hyper = CASES[name]
    start = make_params(torch.float64)
    got, _ = run_optimizer(optimizer_class, start, STEPS, **kwargs)
    want = ref.run_reference(step_fn, start, nonconvex_loss, STEPS, **hyper)
    for g, w, s in zip(got, want, start):
        assert not torch.equal(w, s), "the reference did not move: the comparison would prove nothing"
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_adafactor_unfactored_and_factored_states_are_both_exercised():
    _, optimizer = run_optimizer(descend.Adafactor, make_params(), 2)
    keys = [set(optimizer.state[p]) for p in optimizer.param_groups[0]["params"]]
    assert {"exp_avg_sq_row", "exp_avg_sq_col"} <= keys[0] and "exp_avg_sq" not in keys[0]
    assert "exp_avg_sq" in keys[1] and "exp_avg_sq" in keys[4]
    assert optimizer.state[optimizer.param_groups[0]["params"][3]]["exp_avg_sq_row"].shape == (2, 3)


@pytest.mark.parametrize("adaptive", [False, True])
@pytest.mark.parametrize(
    "base, base_kwargs, step_fn, hyper",
    [
        (descend.SGD, dict(lr=0.05), ref.sgd_step, dict(lr=0.05)),
        (descend.Adam, dict(lr=0.01), ref.adam_step, dict(lr=0.01)),
    ],
)
def test_sam_matches_reference(adaptive, base, base_kwargs, step_fn, hyper):
    start = make_params(torch.float64)
    params = [p.clone().requires_grad_() for p in start]
    optimizer = descend.SAM(params, base, rho=0.1, adaptive=adaptive, **base_kwargs)

    def closure():
        optimizer.zero_grad()
        loss = nonconvex_loss(params)
        loss.backward()
        return loss

    for _ in range(STEPS):
        optimizer.step(closure)
    want = ref.run_sam_reference(step_fn, start, nonconvex_loss, STEPS, rho=0.1, adaptive=adaptive, **hyper)
    plain = ref.run_reference(step_fn, start, nonconvex_loss, STEPS, **hyper)
    for g, w, p in zip(params, want, plain):
        torch.testing.assert_close(g.detach(), w, rtol=1e-10, atol=1e-12)
    assert any(not torch.allclose(w, p) for w, p in zip(want, plain)), "SAM must differ from its base optimizer"
