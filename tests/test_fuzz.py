"""Fuzzing: random optimizers, hyperparameters, shapes, dtypes and group layouts never crash or leave NaN."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import descend

unit = st.floats(0.0, 0.999)
positive_lr = st.floats(1e-5, 1.0)
OPTIMIZERS = {
    "SGD": (descend.SGD, st.fixed_dictionaries({
        "lr": positive_lr, "momentum": st.floats(0.0, 0.99), "dampening": st.floats(0.0, 1.0),
        "weight_decay": st.floats(0.0, 0.1), "maximize": st.booleans()})),
    "Adagrad": (descend.Adagrad, st.fixed_dictionaries({
        "lr": positive_lr, "lr_decay": st.floats(0.0, 0.1), "weight_decay": st.floats(0.0, 0.1),
        "initial_accumulator_value": st.floats(0.0, 1.0), "eps": st.floats(1e-10, 1e-3)})),
    "RMSprop": (descend.RMSprop, st.fixed_dictionaries({
        "lr": positive_lr, "alpha": unit, "eps": st.floats(1e-8, 1e-3), "momentum": st.floats(0.0, 0.99),
        "centered": st.booleans(), "weight_decay": st.floats(0.0, 0.1)})),
    "Adadelta": (descend.Adadelta, st.fixed_dictionaries({
        "lr": st.floats(1e-3, 2.0), "rho": unit, "eps": st.floats(1e-8, 1e-3), "weight_decay": st.floats(0.0, 0.1)})),
    "Adam": (descend.Adam, st.fixed_dictionaries({
        "lr": positive_lr, "betas": st.tuples(unit, unit), "eps": st.floats(1e-10, 1e-3),
        "weight_decay": st.floats(0.0, 0.1), "amsgrad": st.booleans(), "bias_correction": st.booleans(),
        "maximize": st.booleans()})),
    "AdamW": (descend.AdamW, st.fixed_dictionaries({
        "lr": positive_lr, "betas": st.tuples(unit, unit), "weight_decay": st.floats(0.0, 1.0),
        "amsgrad": st.booleans()})),
    "Adafactor": (descend.Adafactor, st.fixed_dictionaries({
        "beta1": st.none() | unit, "decay_rate": st.floats(-1.0, -0.1), "clip_threshold": st.floats(0.1, 10.0),
        "weight_decay": st.floats(0.0, 0.1), "scale_parameter": st.booleans(), "warmup_init": st.booleans()})),
}
SHAPES = [(), (0,), (3, 0), (1,), (7,), (4, 5), (1, 6), (2, 3, 4), "transposed", "channels_last"]


def make_param(kind, dtype, generator):
    if kind == "transposed":
        tensor = torch.randn(5, 4, generator=generator).t()
    elif kind == "channels_last":
        tensor = torch.randn(2, 3, 4, 5, generator=generator).to(memory_format=torch.channels_last)
    else:
        tensor = torch.randn(kind, generator=generator)
    return torch.nn.Parameter(tensor.to(dtype))


def finite(tensor: torch.Tensor) -> bool:
    return bool(torch.isfinite(tensor.float()).all())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(list(OPTIMIZERS)),
    data=st.data(),
    shapes=st.lists(st.sampled_from(SHAPES), min_size=1, max_size=5),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16]),
    groups=st.integers(1, 3),
    fused=st.sampled_from([None, False]),
    seed=st.integers(0, 2**16),
)
def test_random_configurations_never_crash_or_leave_nan(name, data, shapes, dtype, groups, fused, seed):
    cls, hyperparameters = OPTIMIZERS[name]
    kwargs = data.draw(hyperparameters)
    generator = torch.Generator().manual_seed(seed)
    params = [make_param(kind, dtype, generator) for kind in shapes]
    layout = [{"params": params[i::groups]} for i in range(groups) if params[i::groups]]
    if len(layout) > 1 and "lr" in kwargs:
        layout[-1]["lr"] = kwargs["lr"] / 2  # a per-group override
    optimizer = cls(layout, fused=fused, **kwargs)
    for _ in range(3):
        for p in params:
            p.grad = (torch.randn(p.shape, generator=generator) * 10 ** data.draw(st.integers(-3, 2))).to(dtype)
            if p.dim() >= 2:
                p.grad = p.grad.contiguous(memory_format=torch.channels_last) if p.dim() == 4 else p.grad
        optimizer.step()
    for p in params:
        assert p.dtype == dtype and finite(p), (name, kwargs, p.shape)
        for key, value in optimizer.state[p].items():
            assert finite(value), (name, kwargs, key, p.shape)


invalid = st.sampled_from([-1.0, -1e-9, math.nan, math.inf, -math.inf])


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(["SGD", "Adagrad", "RMSprop", "Adadelta", "Adam", "AdamW"]),
       argument=st.sampled_from(["lr", "eps", "weight_decay"]), value=invalid)
def test_invalid_values_raise_a_clear_error(name, argument, value):
    cls = getattr(descend, name)
    if name == "SGD" and argument == "eps":
        argument = "momentum"
    with pytest.raises(ValueError, match=argument):
        cls([torch.nn.Parameter(torch.ones(2))], **{argument: value})


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(["RMSprop", "Adadelta"]), rate=st.floats(1.0, 10.0) | st.floats(-10.0, -1e-6) | st.just(math.nan))
def test_decay_rates_outside_the_unit_interval_raise(name, rate):
    argument = "alpha" if name == "RMSprop" else "rho"
    with pytest.raises(ValueError, match=argument):
        getattr(descend, name)([torch.nn.Parameter(torch.ones(2))], **{argument: rate})


@pytest.mark.parametrize("fused", [None, False])
def test_centered_rmsprop_survives_rounding_below_zero(fused):
    """Found by the fuzzer: with alpha = 0, s − ḡ² is g² − g², which rounding (an FMA) can make negative."""
    param = torch.nn.Parameter(torch.randn(64, 64, generator=torch.Generator().manual_seed(0)))
    optimizer = descend.RMSprop([param], lr=1.0, alpha=0.0, centered=True, eps=1e-3, fused=fused)
    for step in range(3):
        param.grad = torch.randn(64, 64, generator=torch.Generator().manual_seed(step)) * 100
        optimizer.step()
    assert finite(param) and all(finite(v) for v in optimizer.state[param].values())
