"""Telemetry values against hand-computed ones for Adam, and its outputs."""
from __future__ import annotations

import csv
import math

import pytest
import torch

import descend

LR, B1, B2, EPS = 0.1, 0.9, 0.999, 1e-8


def test_adam_values_match_a_hand_computation():
    theta = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64))
    optimizer = descend.Adam([theta], lr=LR, betas=(B1, B2), eps=EPS)
    telemetry = descend.Telemetry(optimizer)
    grads = [torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64), torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)]
    m = v = torch.zeros(3, dtype=torch.float64)
    expected_theta = theta.detach().clone()
    for t, g in enumerate(grads, start=1):
        theta.grad = g.clone()
        optimizer.step()
        m, v = B1 * m + (1 - B1) * g, B2 * v + (1 - B2) * g * g
        m_hat, v_hat = m / (1 - B1**t), v / (1 - B2**t)
        update = -LR * m_hat / (v_hat.sqrt() + EPS)
        expected_theta = expected_theta + update
        effective = LR / (v_hat.sqrt() + EPS)
        row = telemetry.records[-1]
        assert row["step"] == t and row["group"] == 0 and row["lr"] == LR
        assert row["grad_norm"] == pytest.approx(g.norm().item(), rel=1e-12)
        assert row["update_norm"] == pytest.approx(update.norm().item(), rel=1e-9)
        assert row["param_norm"] == pytest.approx(expected_theta.norm().item(), rel=1e-12)
        assert row["update_ratio"] == pytest.approx(update.norm().item() / expected_theta.norm().item(), rel=1e-9)
        assert row["effective_lr_mean"] == pytest.approx(effective.mean().item(), rel=1e-9)
        assert row["effective_lr_std"] == pytest.approx(effective.std(correction=0).item(), rel=1e-9)
        assert row["snr_mean"] == pytest.approx((m_hat.abs() / (v_hat.sqrt() + EPS)).mean().item(), rel=1e-9)
        assert row["skipped_fraction"] == 0.0
    assert telemetry.records[0]["snr_mean"] == pytest.approx(1.0)  # first step: m̂ = g, √v̂ = |g|


def test_every_groups_csv_tensorboard_like_writer_and_close(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    optimizer = descend.SGD([{"params": model[0].parameters()}, {"params": model[1].parameters(), "lr": 0.01}],
                            lr=0.1, momentum=0.9)

    class Writer:
        def __init__(self):
            self.scalars = []

        def add_scalar(self, tag, value, step):
            self.scalars.append((tag, value, step))

    writer = Writer()
    with descend.Telemetry(optimizer, every=2, writer=writer, csv_path=tmp_path / "t.csv") as telemetry:
        for _ in range(6):
            optimizer.zero_grad()
            model(torch.randn(8, 4)).pow(2).mean().backward()
            optimizer.step()
    assert [(r["step"], r["group"]) for r in telemetry.records] == [(s, g) for s in (2, 4, 6) for g in (0, 1)]
    assert {r["effective_lr_mean"] for r in telemetry.records} == {0.1, 0.01}  # SGD: α everywhere
    assert ("descend/group1/lr", 0.01, 2) in writer.scalars
    rows = list(csv.DictReader(open(tmp_path / "t.csv")))
    assert len(rows) == 6 and float(rows[1]["lr"]) == 0.01
    optimizer.step()  # detached: nothing more is recorded
    assert len(telemetry.records) == 6
    assert telemetry.plot().axes


def test_skipped_steps_adafactor_and_sam():
    param = torch.nn.Parameter(torch.ones(4, 4))
    optimizer = descend.Adafactor([param], nonfinite="skip")
    telemetry = descend.Telemetry(optimizer)
    param.grad = torch.full((4, 4), float("nan"))
    optimizer.step()
    param.grad = torch.ones(4, 4)
    optimizer.step()
    assert [r["skipped_fraction"] for r in telemetry.records] == [1.0, 0.5]
    assert telemetry.records[0]["update_norm"] == 0.0 and "effective_lr_mean" not in telemetry.records[1]

    model = torch.nn.Linear(3, 1)
    sam = descend.SAM(model.parameters(), descend.SGD, lr=0.1)
    sam_telemetry = descend.Telemetry(sam)

    def closure():
        sam.zero_grad()
        loss = model(torch.ones(2, 3)).pow(2).mean()
        loss.backward()
        return loss

    sam.step(closure)
    assert len(sam_telemetry.records) == 1 and sam_telemetry.records[0]["update_norm"] > 0
    assert math.isfinite(sam_telemetry.records[0]["grad_norm"])


def test_bad_every():
    with pytest.raises(ValueError, match="every"):
        descend.Telemetry(descend.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1), every=0)


def step_with(optimizer, param, value):
    param.grad = torch.full_like(param, value)
    optimizer.step()


def test_skipped_fraction_is_the_share_of_the_steps_telemetry_saw_when_the_optimizer_skipped_before():
    """An optimizer that skipped steps before Telemetry came (or a resumed one: ``skipped_steps`` travels
    with its checkpoint) counts its lifetime skips; Telemetry reports the share of the steps it saw."""
    param = torch.nn.Parameter(torch.ones(3))
    resumed = descend.SGD([param], lr=0.1, nonfinite="skip")
    for _ in range(2):
        step_with(resumed, param, float("nan"))
    assert resumed.skipped_steps == 2
    telemetry = descend.Telemetry(resumed)
    for value in (1.0, float("nan"), 1.0, 1.0):
        step_with(resumed, param, value)
    assert [r["skipped_fraction"] for r in telemetry.records] == [0.0, 0.5, 1 / 3, 0.25]
    sparse = descend.Telemetry(resumed, every=2)  # steps that are not recorded still count
    for value in (float("nan"), 1.0, 1.0, 1.0):
        step_with(resumed, param, value)
    assert [(r["step"], r["skipped_fraction"]) for r in sparse.records] == [(2, 0.5), (4, 0.25)]


def test_a_tensor_lr_is_recorded_and_written_as_a_float(tmp_path):
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = descend.Adam([param], lr=torch.tensor(0.0123))
    scalars = []

    class Writer:
        def add_scalar(self, tag, value, step):
            scalars.append((tag, value))

    with descend.Telemetry(optimizer, writer=Writer(), csv_path=tmp_path / "t.csv") as telemetry:
        step_with(optimizer, param, 1.0)
    lr = telemetry.records[0]["lr"]
    assert type(lr) is float and lr == float(torch.tensor(0.0123))
    assert all(type(value) is float for tag, value in scalars if tag.endswith("/lr"))
    with open(tmp_path / "t.csv") as written:
        row = next(csv.DictReader(written))
    assert float(row["lr"]) == lr  # every digit, not "tensor(0.0123)"


@pytest.mark.parametrize("make", [lambda p: descend.SGD(p, lr=0.05), lambda p: torch.optim.SGD(p, lr=0.05),
                                  lambda p: descend.SAM(p, descend.SGD, lr=0.05)],
                         ids=["descend.SGD", "torch.optim.SGD", "SAM over SGD"])
def test_plain_sgd_records_its_effective_lr_alpha(make):
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = make([param])
    telemetry = descend.Telemetry(optimizer)

    def closure():
        optimizer.zero_grad()
        param.sum().backward()
        return param.sum()

    optimizer.step(closure)
    assert not optimizer.state.get(param)  # no state to read α from
    assert telemetry.records[0]["effective_lr_mean"] == 0.05 and telemetry.records[0]["effective_lr_std"] == 0.0


def test_a_skipped_first_step_of_an_adaptive_method_records_no_effective_lr():
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = descend.Adam([param], lr=0.1, nonfinite="skip")
    telemetry = descend.Telemetry(optimizer)
    step_with(optimizer, param, float("nan"))  # no state yet: α/(√v̂+ε) is not α
    assert "effective_lr_mean" not in telemetry.records[0]
