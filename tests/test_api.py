"""torch.optim conventions, for every optimizer: groups, closures, checkpoints, dtypes, schedulers, bad input."""
from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

import descend

# name: (class, kwargs); every optimizer and the variants whose state differs
OPTIMIZERS = {
    "SGD": (descend.SGD, dict(lr=0.05)),
    "SGD-momentum": (descend.SGD, dict(lr=0.05, momentum=0.9, weight_decay=0.01)),
    "SGD-lookahead-nesterov": (descend.SGD, dict(lr=0.05, momentum=0.9, dampening=0.9, nesterov=True)),
    "Adagrad": (descend.Adagrad, dict(lr=0.1, lr_decay=0.01)),
    "RMSprop": (descend.RMSprop, dict(lr=0.01, centered=True, momentum=0.5)),
    "Adadelta": (descend.Adadelta, dict(weight_decay=0.01)),
    "Adam": (descend.Adam, dict(lr=0.01, amsgrad=True)),
    "Adam-uncorrected": (descend.Adam, dict(lr=0.01, bias_correction=False)),
    "AdamW": (descend.AdamW, dict(lr=0.01)),
    "Adafactor": (descend.Adafactor, dict(beta1=0.9, weight_decay=0.01)),
    "Adafactor-lr": (descend.Adafactor, dict(lr=0.01, relative_step=False)),
    "SAM-SGD": (descend.SAM, dict(base_optimizer=descend.SGD, lr=0.05, momentum=0.9)),
    "SAM-Adam": (descend.SAM, dict(base_optimizer=descend.Adam, lr=0.01, adaptive=True, rho=0.5)),
}
WITH_LR = [name for name, (_, kwargs) in OPTIMIZERS.items() if kwargs.get("relative_step", True) is not True
           or OPTIMIZERS[name][0] is not descend.Adafactor]


def make_model(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).to(dtype)


def batch(step, dtype=torch.float32):
    g = torch.Generator().manual_seed(100 + step)
    return torch.randn(16, 5, generator=g).to(dtype), torch.randn(16, 3, generator=g).to(dtype)


def train(model, optimizer, steps, first_step=0, scheduler=None, dtype=torch.float32):
    for step in range(first_step, first_step + steps):
        x, y = batch(step, dtype)

        def closure():
            optimizer.zero_grad()
            loss = ((model(x) - y) ** 2).mean()
            loss.backward()
            return loss

        optimizer.step(closure)
        if scheduler is not None:
            scheduler.step()


def snapshot(model):
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_resume_from_checkpoint_is_bit_identical(name):
    cls, kwargs = OPTIMIZERS[name]
    with_scheduler = name in WITH_LR

    def make():
        model = make_model()
        optimizer = cls(model.parameters(), **kwargs)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5) if with_scheduler else None
        return model, optimizer, scheduler

    model, optimizer, scheduler = make()
    train(model, optimizer, 14, scheduler=scheduler)
    uninterrupted = snapshot(model)

    model, optimizer, scheduler = make()
    train(model, optimizer, 6, scheduler=scheduler)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler else None}, buffer)
    del model, optimizer, scheduler
    buffer.seek(0)
    checkpoint = torch.load(buffer)
    model, optimizer, scheduler = make()
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    if scheduler:
        scheduler.load_state_dict(checkpoint["scheduler"])
    train(model, optimizer, 8, first_step=6, scheduler=scheduler)
    for resumed, straight in zip(snapshot(model), uninterrupted):
        assert torch.equal(resumed, straight)


@pytest.mark.parametrize("name", WITH_LR)
def test_param_groups_keep_their_own_hyperparameters(name):
    """Two groups (lr 0.02 and 0.005): after a step, each layer equals a single-group run at its group's lr."""
    cls, kwargs = OPTIMIZERS[name]
    grouped = make_model()
    optimizer = cls([{"params": grouped[0].parameters(), "lr": 0.02}, {"params": grouped[2].parameters(), "lr": 0.005}],
                    **kwargs)
    train(grouped, optimizer, 1)
    assert [group["lr"] for group in optimizer.param_groups] == [0.02, 0.005]
    for lr, layer, other in ((0.02, 0, 2), (0.005, 2, 0)):
        single = make_model()
        train(single, cls(single.parameters(), **dict(kwargs, lr=lr)), 1)
        assert all(torch.equal(a, b) for a, b in zip(grouped[layer].parameters(), single[layer].parameters()))
        assert not any(torch.equal(a, b) for a, b in zip(grouped[other].parameters(), single[other].parameters()))


@pytest.mark.parametrize("name", [n for n in OPTIMIZERS if not n.startswith("SAM")])
def test_step_with_and_without_closure_agree(name):
    cls, kwargs = OPTIMIZERS[name]
    with_closure, without = make_model(), make_model()
    opt_closure, opt_plain = cls(with_closure.parameters(), **kwargs), cls(without.parameters(), **kwargs)
    x, y = batch(0)
    for _ in range(3):
        def closure():
            opt_closure.zero_grad()
            loss = ((with_closure(x) - y) ** 2).mean()
            loss.backward()
            return loss

        returned = opt_closure.step(closure)
        opt_plain.zero_grad()
        loss = ((without(x) - y) ** 2).mean()
        loss.backward()
        assert opt_plain.step() is None
        assert torch.equal(returned.detach(), loss.detach())
    assert all(torch.equal(a, b) for a, b in zip(with_closure.parameters(), without.parameters()))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_parameters_without_gradient_are_skipped(name):
    cls, kwargs = OPTIMIZERS[name]
    model = make_model()
    unused = nn.Parameter(torch.ones(3, 3))
    optimizer = cls(list(model.parameters()) + [unused], **kwargs)
    train(model, optimizer, 3)
    assert unused.grad is None
    assert torch.equal(unused, torch.ones(3, 3))
    assert len(optimizer.state[unused]) == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_dtypes_train_with_state_in_the_parameter_dtype_or_float32_for_16_bit(name, dtype):
    cls, kwargs = OPTIMIZERS[name]
    model = make_model(dtype)
    before = snapshot(model)
    optimizer = cls(model.parameters(), **kwargs)
    train(model, optimizer, 4, dtype=dtype)
    after = snapshot(model)
    assert all(p.dtype == dtype and torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(before, after))
    state_dtype = torch.float32 if dtype == torch.bfloat16 else dtype  # 16-bit moments would lose their bits
    for state in optimizer.state.values():
        for key, value in state.items():
            if key != "step":
                assert value.dtype == state_dtype, key


@pytest.mark.parametrize("name", WITH_LR)
def test_torch_lr_schedulers_drive_the_learning_rate(name):
    """A scheduler that sets lr = 0 from some step on must freeze the parameters (except decoupled decay × 0)."""
    cls, kwargs = OPTIMIZERS[name]
    model = make_model()
    optimizer = cls(model.parameters(), **kwargs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 if step < 2 else 0.0)
    train(model, optimizer, 2, scheduler=scheduler)
    frozen = snapshot(model)
    train(model, optimizer, 3, first_step=2, scheduler=scheduler)
    assert all(torch.equal(a, b) for a, b in zip(frozen, snapshot(model)))
    assert optimizer.param_groups[0]["lr"] == 0.0


@pytest.mark.parametrize("scheduler_factory", [
    lambda opt: torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=10),
    lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10),
    lambda opt: torch.optim.lr_scheduler.SequentialLR(opt, [torch.optim.lr_scheduler.LinearLR(opt, 0.1, total_iters=3),
                                                            torch.optim.lr_scheduler.ExponentialLR(opt, 0.9)], [3]),
    lambda opt: descend.WarmupCosine(opt, warmup_steps=3, total_steps=10),
    lambda opt: descend.InverseSqrt(opt, warmup_steps=2),
], ids=["OneCycleLR", "CosineAnnealingLR", "SequentialLR", "WarmupCosine", "InverseSqrt"])
@pytest.mark.parametrize("name", ["SGD-momentum", "Adam", "AdamW", "RMSprop", "SAM-SGD"])
def test_schedulers_run_unchanged(name, scheduler_factory):
    cls, kwargs = OPTIMIZERS[name]
    model = make_model()
    optimizer = cls(model.parameters(), **kwargs)
    scheduler = scheduler_factory(optimizer)
    seen = []
    for step in range(10):
        train(model, optimizer, 1, first_step=step, scheduler=scheduler)
        seen.append(optimizer.param_groups[0]["lr"])
    assert len(set(seen)) > 3
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("name", [n for n in OPTIMIZERS if not n.startswith("SAM")] + ["SAM-Adam"])
def test_maximize_equals_minimizing_the_negative(name):
    cls, kwargs = OPTIMIZERS[name]
    up, down = make_model(), make_model()
    opt_up, opt_down = cls(up.parameters(), maximize=True, **kwargs), cls(down.parameters(), **kwargs)
    for step in range(4):
        x, y = batch(step)
        for model, optimizer, sign in ((up, opt_up, -1.0), (down, opt_down, 1.0)):
            def closure():
                optimizer.zero_grad()
                objective = sign * ((model(x) - y) ** 2).mean()
                objective.backward()
                return objective

            optimizer.step(closure)
    for a, b in zip(up.parameters(), down.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


# --- bad input ---------------------------------------------------------------------------

P = [nn.Parameter(torch.ones(2))]
NAN = float("nan")
BAD = [
    (descend.SGD, dict(lr=-0.1), ValueError, "lr"),
    (descend.SGD, dict(lr=NAN), ValueError, "lr"),
    (descend.SGD, dict(lr="fast"), TypeError, "lr"),
    (descend.SGD, dict(lr=0.1, momentum=-0.5), ValueError, "momentum"),
    (descend.SGD, dict(lr=0.1, nesterov=True), ValueError, "nesterov"),
    (descend.SGD, dict(lr=0.1, momentum=0.9, dampening=1.5), ValueError, "dampening"),
    (descend.SGD, dict(lr=0.1, weight_decay=-1e-4), ValueError, "weight_decay"),
    (descend.Adagrad, dict(eps=-1.0), ValueError, "eps"),
    (descend.Adagrad, dict(lr_decay=NAN), ValueError, "lr_decay"),
    (descend.RMSprop, dict(alpha=1.0), ValueError, "alpha"),
    (descend.RMSprop, dict(alpha=-0.1), ValueError, "alpha"),
    (descend.RMSprop, dict(momentum=-1), ValueError, "momentum"),
    (descend.Adadelta, dict(rho=1.0), ValueError, "rho"),
    (descend.Adadelta, dict(rho=NAN), ValueError, "rho"),
    (descend.Adam, dict(betas=(0.9, 1.0)), ValueError, "betas[1]"),
    (descend.Adam, dict(betas=(-0.1, 0.999)), ValueError, "betas[0]"),
    (descend.Adam, dict(betas=0.9), ValueError, "betas"),
    (descend.Adam, dict(eps=NAN), ValueError, "eps"),
    (descend.AdamW, dict(weight_decay=-0.01), ValueError, "weight_decay"),
    (descend.Adafactor, dict(lr=0.01), ValueError, "relative_step"),
    (descend.Adafactor, dict(relative_step=False), ValueError, "lr"),
    (descend.Adafactor, dict(lr=0.01, relative_step=False, warmup_init=True), ValueError, "warmup_init"),
    (descend.Adafactor, dict(beta1=1.0), ValueError, "beta1"),
    (descend.Adafactor, dict(clip_threshold=0.0), ValueError, "clip_threshold"),
    (descend.Adafactor, dict(decay_rate=0.5), ValueError, "decay_rate"),
    (descend.Adafactor, dict(eps=(1e-30, -1.0)), ValueError, "eps[1]"),
    (descend.Adam, dict(nonfinite="sometimes"), ValueError, "nonfinite"),
    (descend.SAM, dict(base_optimizer=descend.SGD, rho=-0.05, lr=0.1), ValueError, "rho"),
    (descend.SAM, dict(base_optimizer=descend.SGD(P, lr=0.1), lr=0.1), TypeError, "base_optimizer"),
    (descend.SAM, dict(base_optimizer="SGD", lr=0.1), TypeError, "base_optimizer"),
    (descend.SAM, dict(base_optimizer=descend.SGD, lr=-1.0), ValueError, "lr"),
]


@pytest.mark.parametrize("cls, kwargs, error, argument", BAD, ids=[f"{c.__name__}-{a}-{i}" for i, (c, _, _, a) in
                                                                   enumerate(BAD)])
def test_bad_hyperparameters_raise_at_once_naming_the_argument(cls, kwargs, error, argument):
    with pytest.raises(error, match=argument.replace("[", r"\[").replace("]", r"\]")):
        cls(P, **kwargs)


def test_bad_value_in_a_param_group_raises():
    with pytest.raises(ValueError, match="lr"):
        descend.Adam([{"params": P, "lr": -1.0}])
    optimizer = descend.Adam(P)
    with pytest.raises(ValueError, match="betas"):
        optimizer.add_param_group({"params": [nn.Parameter(torch.ones(1))], "betas": (0.9, 2.0)})


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_empty_parameter_list_raises(name):
    cls, kwargs = OPTIMIZERS[name]
    with pytest.raises(ValueError, match="empty"):
        cls([], **kwargs)


@pytest.mark.parametrize("name", [n for n in OPTIMIZERS if not n.startswith("SAM")])
def test_sparse_gradients_are_refused(name):
    cls, kwargs = OPTIMIZERS[name]
    embedding = nn.Embedding(10, 3, sparse=True)
    optimizer = cls(embedding.parameters(), **kwargs)
    embedding(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(TypeError, match="sparse"):
        optimizer.step()


# --- non-finite gradients ----------------------------------------------------------------


def _poisoned_step(optimizer, model, value):
    x, y = batch(0)
    optimizer.zero_grad()
    ((model(x) - y) ** 2).mean().backward()
    model[0].weight.grad[0, 0] = value


def _bits(tensors):
    """Tensors as raw bits, so that NaN == NaN in a comparison."""
    return [t.detach().clone().view(torch.int32 if t.dtype == torch.float32 else torch.int64) for t in tensors]


@pytest.mark.parametrize("fused", [None, False], ids=["fused", "reference"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("name", [n for n in OPTIMIZERS if not n.startswith("SAM")])
def test_nonfinite_gradient_raises_by_default_after_the_step_torch_would_take(name, value, fused):
    cls, kwargs = OPTIMIZERS[name]
    runs = {}
    for policy in ("raise", "ignore"):
        model = make_model()
        optimizer = cls(model.parameters(), fused=fused, **({} if policy == "raise" else dict(nonfinite="ignore")),
                        **kwargs)
        train(model, optimizer, 2)
        _poisoned_step(optimizer, model, value)
        if policy == "raise":
            with pytest.raises(FloatingPointError, match="nonfinite='skip'"):
                optimizer.step()
        else:
            optimizer.step()
        state = [v for s in optimizer.state.values() for _, v in sorted(s.items()) if v.is_floating_point()]
        runs[policy] = _bits([*model.parameters(), *state])
        assert not torch.isfinite(model[0].weight[0, 0])  # the step was applied
    assert len(runs["raise"]) == len(runs["ignore"])
    assert all(torch.equal(a, b) for a, b in zip(runs["raise"], runs["ignore"]))


@pytest.mark.parametrize("fused", [None, False], ids=["fused", "reference"])
@pytest.mark.parametrize("name", ["SGD", "Adam", "Adafactor"])
def test_nonfinite_gradient_is_noticed_in_any_parameter(name, fused):
    cls, kwargs = OPTIMIZERS[name]
    for position in range(4):  # each parameter in turn, at its last element
        model = make_model()
        optimizer = cls(model.parameters(), fused=fused, **kwargs)
        train(model, optimizer, 1)
        _poisoned_step(optimizer, model, 0.0)
        list(model.parameters())[position].grad.view(-1)[-1] = float("-inf")
        with pytest.raises(FloatingPointError):
            optimizer.step()


@pytest.mark.parametrize("name", [n for n in OPTIMIZERS if not n.startswith("SAM")])
def test_nonfinite_skip_leaves_everything_untouched_and_counts(name):
    cls, kwargs = OPTIMIZERS[name]
    model, reference = make_model(), make_model()
    optimizer = cls(model.parameters(), nonfinite="skip", **kwargs)
    reference_optimizer = cls(reference.parameters(), **kwargs)
    train(model, optimizer, 2)
    _poisoned_step(optimizer, model, float("nan"))
    optimizer.step()
    assert optimizer.skipped_steps == 1
    train(model, optimizer, 2, first_step=2)
    train(reference, reference_optimizer, 2)
    train(reference, reference_optimizer, 2, first_step=2)
    assert all(torch.equal(a, b) for a, b in zip(snapshot(model), snapshot(reference)))
    assert optimizer.state_dict()["skipped_steps"] == 1


def test_nonfinite_ignore_lets_nan_through_as_torch_does():
    model = make_model()
    optimizer = descend.Adam(model.parameters(), nonfinite="ignore")
    _poisoned_step(optimizer, model, float("nan"))
    optimizer.step()
    assert torch.isnan(model[0].weight[0, 0])


def test_nonfinite_policy_survives_pickling():
    import pickle

    optimizer = descend.SGD(P, lr=0.1, nonfinite="skip")
    assert pickle.loads(pickle.dumps(optimizer)).nonfinite == "skip"


def test_sam_skips_on_nonfinite_first_gradient():
    model = make_model()
    optimizer = descend.SAM(model.parameters(), descend.SGD, lr=0.1, nonfinite="skip")
    before = snapshot(model)
    _poisoned_step(optimizer, model, float("inf"))
    optimizer.first_step(zero_grad=True)
    x, y = batch(0)
    ((model(x) - y) ** 2).mean().backward()
    optimizer.second_step()
    assert optimizer.skipped_steps == 1
    assert all(torch.equal(a, b) for a, b in zip(before, snapshot(model)))
    with pytest.raises(FloatingPointError):
        strict = descend.SAM(model.parameters(), descend.SGD, lr=0.1)
        _poisoned_step(strict, model, float("nan"))
        strict.first_step()


def test_amp_grad_scaler_works_unchanged():
    model = make_model()
    optimizer = descend.Adam(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    before = snapshot(model)
    for step in range(3):
        x, y = batch(step)
        optimizer.zero_grad()
        scaler.scale(((model(x) - y) ** 2).mean()).backward()
        if step == 1:
            model[0].weight.grad[0, 0] = float("inf")  # the scaler sees it and skips this step
        scaler.step(optimizer)
        scaler.update()
    assert scaler.get_scale() < 2.0**10
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, snapshot(model)))
    assert math.isclose(optimizer.state[model[0].weight]["step"].item(), 2.0)
