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
