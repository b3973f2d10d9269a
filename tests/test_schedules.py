from __future__ import annotations

import math

import pytest
import torch

import descend
from descend.optimizers.schedules import inverse_sqrt_factor, warmup_cosine_factor


def test_warmup_cosine_values():
    assert warmup_cosine_factor(0, 4, 12) == 0.25
    assert warmup_cosine_factor(3, 4, 12) == 1.0
    assert warmup_cosine_factor(4, 4, 12) == 1.0
    assert math.isclose(warmup_cosine_factor(8, 4, 12), 0.5)
    assert math.isclose(warmup_cosine_factor(12, 4, 12, min_factor=0.2), 0.2)


def test_inverse_sqrt_values():
    assert [inverse_sqrt_factor(t) for t in (0, 3, 99)] == [1.0, 0.5, 0.1]
    assert inverse_sqrt_factor(1, warmup_steps=4) == 0.5
    assert inverse_sqrt_factor(3, warmup_steps=4) == 1.0
    assert inverse_sqrt_factor(15, warmup_steps=4) == 0.5


def test_lr_schedule_sets_the_group_lr():
    param = torch.nn.Parameter(torch.zeros(2))
    optimizer = descend.SGD([param], lr=0.4)
    scheduler = descend.WarmupCosine(optimizer, warmup_steps=2, total_steps=6)
    lrs = []
    for _ in range(7):
        lrs.append(optimizer.param_groups[0]["lr"])
        param.grad = torch.ones(2)
        optimizer.step()
        scheduler.step()
    assert lrs[:3] == [0.2, 0.4, 0.4] and lrs[-1] == pytest.approx(0.0)
    assert param[0].item() == pytest.approx(-sum(lrs))


@pytest.mark.parametrize("cls, kwargs, read", [
    (descend.SGD, dict(lr=0.1, momentum=0.5), lambda g: g["momentum"]),
    (descend.RMSprop, dict(momentum=0.5), lambda g: g["momentum"]),
    (descend.Adam, dict(), lambda g: g["betas"][0]),
    (descend.AdamW, dict(betas=(0.5, 0.98)), lambda g: g["betas"][0]),
    (descend.Adafactor, dict(beta1=0.5), lambda g: g["beta1"]),
])
def test_momentum_schedule_ramps_momentum(cls, kwargs, read):
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = cls([param], **kwargs)
    schedule = descend.MomentumSchedule(optimizer, descend.linear_ramp(0.5, 0.99, 10))
    seen = []
    for _ in range(12):
        seen.append(read(optimizer.param_groups[0]))
        param.grad = torch.ones(3)
        optimizer.step()
        schedule.step()
    assert seen[0] == 0.5 and seen[5] == pytest.approx(0.745) and seen[-1] == pytest.approx(0.99)
    assert schedule.get_last_momentum() == [pytest.approx(0.99)]
    if "betas" in optimizer.param_groups[0]:
        assert optimizer.param_groups[0]["betas"][1] == kwargs.get("betas", (0.9, 0.999))[1]


def test_momentum_schedule_changes_the_update_and_resumes():
    def run(steps, resume_at=None):
        param = torch.nn.Parameter(torch.ones(1))
        optimizer = descend.SGD([param], lr=0.1, momentum=0.0)
        schedule = descend.MomentumSchedule(optimizer, lambda t: min(0.9, 0.1 * t))
        for t in range(steps):
            if t == resume_at:
                saved = (optimizer.state_dict(), schedule.state_dict())
                optimizer = descend.SGD([param], lr=0.1, momentum=0.0)
                optimizer.load_state_dict(saved[0])
                schedule = descend.MomentumSchedule(optimizer, lambda t: min(0.9, 0.1 * t))
                schedule.load_state_dict(saved[1])
            param.grad = torch.ones(1)
            optimizer.step()
            schedule.step()
        return param.item()

    # momentum starts at 0 (plain SGD, no buffer) and grows: the buffer starts at zero at step 2,
    # b = 0.1·0 + g, then at step 3 b = 0.2·b + g
    assert run(1) == pytest.approx(0.9)
    assert run(2) == pytest.approx(0.8)
    assert run(3) == pytest.approx(0.8 - 0.1 * (0.2 * 1 + 1))
    assert run(10) == run(10, resume_at=4)


def test_momentum_schedule_refuses_optimizers_without_momentum_and_bad_values():
    param = torch.nn.Parameter(torch.ones(1))
    with pytest.raises(ValueError, match="no momentum"):
        descend.MomentumSchedule(descend.Adagrad([param]), lambda t: 0.9)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        descend.MomentumSchedule(descend.Adam([param]), lambda t: 1.5)


def test_schedule_arguments_are_checked():
    optimizer = descend.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1)
    with pytest.raises(ValueError, match="warmup_steps"):
        descend.WarmupCosine(optimizer, warmup_steps=10, total_steps=5)
    with pytest.raises(ValueError, match="min_factor"):
        descend.WarmupCosine(optimizer, warmup_steps=1, total_steps=5, min_factor=2.0)
    with pytest.raises(ValueError, match="warmup_steps"):
        descend.InverseSqrt(optimizer, warmup_steps=-1)
    with pytest.raises(ValueError, match="steps"):
        descend.linear_ramp(0.5, 0.9, 0)
