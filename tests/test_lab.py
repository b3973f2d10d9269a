"""The lab: each experiment's measurement code on a tiny configuration, and the command end to end."""
from __future__ import annotations

import html
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from descend.__main__ import main
from descend.lab import EXPERIMENTS, Context, core
from descend.lab.experiments import (
    adafactor_memory,
    condition_number,
    convex_hull,
    landscapes,
    learning_rate,
    nesterov,
    sam_flatness,
)


def test_every_experiment_declares_a_claim_and_a_runner():
    assert len(EXPERIMENTS) == 14
    for name, module in EXPERIMENTS.items():
        assert module.NAME == name and module.TITLE and len(module.CLAIM) > 40 and callable(module.run)


@pytest.mark.parametrize("function", [landscapes.quadratic, landscapes.rosenbrock, landscapes.beale, landscapes.saddle])
def test_closed_form_landscape_gradients_match_autograd(function):
    for point in ([-1.2, 1.0], [3.0, 0.5], [0.3, -2.0]):
        theta = torch.tensor(point, dtype=torch.float64, requires_grad=True)
        function(theta[0], theta[1]).backward()
        torch.testing.assert_close(torch.tensor(landscapes.GRADIENTS[function](*point), dtype=torch.float64),
                                   theta.grad)


def test_landscape_scoring():
    path = np.array([[0.0, 0.0], [0.5, 0.5], [0.995, 1.0], [1.0, 1.0]])
    assert landscapes.score(path, (1.0, 1.0)) == (2, 0.0)
    assert landscapes.score(np.array([[1.0, 1e-3], [0.5, 0.5], [0.1, 2.0]]), None) == (2, 2.0)


def test_measured_divergence_threshold_is_two_over_lambda_max():
    assert learning_rate.divergence_threshold(steps=100, tolerance=1e-3) == pytest.approx(0.2, abs=2e-3)


def test_condition_number_step_counts_scale_as_theory():
    gd = [condition_number.steps_to_converge(k, False, 100_000) for k in (10, 100, 1000)]
    hb = [condition_number.steps_to_converge(k, True, 100_000) for k in (10, 100, 1000)]
    assert core.fitted_slope([10, 100, 1000], gd) == pytest.approx(1.0, abs=0.1)
    assert core.fitted_slope([10, 100, 1000], hb) == pytest.approx(0.5, abs=0.15)


def test_nesterov_three_ways_agree():
    exact = nesterov.exact(100)
    lookahead = nesterov.with_descend(100, lr=nesterov.LR, dampening=nesterov.BETA)
    reformulated = nesterov.with_descend(100, lr=nesterov.LR * (1 - nesterov.BETA))
    assert np.abs(exact - lookahead).max() < 1e-12 and np.abs(exact - reformulated).max() < 1e-12
    assert np.abs(exact[-1] - exact[0]).max() > 0.01


def test_power_iteration_finds_the_top_hessian_eigenvalue():
    """Cross-entropy of a 2-class linear model at W = 0: H = (diag(p) − ppᵀ) ⊗ mean(xxᵀ), p = (½, ½).
    With samples x = e₁, 2e₂, 3e₃ the top eigenvalue is ½ · 9/3 = 1.5."""
    model = torch.nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        model.weight.zero_()
    x, y = torch.diag(torch.tensor([1.0, 2.0, 3.0])), torch.zeros(3, dtype=torch.long)
    top = sam_flatness.top_hessian_eigenvalue(model, x, y, 100, torch.Generator().manual_seed(0))
    assert top == pytest.approx(1.5, rel=1e-3)


def test_initialization_measurements_on_a_tiny_network():
    from descend.lab.experiments import initialization

    torch.manual_seed(0)
    x = torch.randn(256, 64)
    he = initialization.build(initialization.INITS["√(2/n)"])
    stds = [a.std().item() for a in initialization.hidden_activations(he, x)]
    assert len(stds) == initialization.DEPTH and 0.5 < stds[-1] / stds[0] < 2
    constant = initialization.build(initialization.INITS["constant 0.05"])
    last = initialization.hidden_activations(constant, x)[-1]
    assert torch.equal(last, last[:, :1].expand_as(last))  # every unit identical


def test_dropout_keeps_the_expected_activation():
    from descend.lab.experiments import dropout

    ratios = [r for r in (torch.nn.Dropout(p).train()(torch.ones(200_000)).mean().item() for p in dropout.RATES)]
    assert all(abs(r - 1) < 0.01 for r in ratios)


def test_adam_paper_measures_and_picks_the_best_rate(tmp_path, monkeypatch):
    from descend.lab.experiments import adam_paper

    monkeypatch.setattr(adam_paper, "STEPS", {"quick": 15, "full": 15})
    monkeypatch.setattr(adam_paper, "OPTIMIZERS", {name: adam_paper.OPTIMIZERS[name] for name in ("Adam", "AdaGrad")})
    result = adam_paper.run(Context(figure_dir=tmp_path, progress=False, name="adam-paper"))
    for task in result.numbers["tasks"].values():
        assert set(task) == {"Adam", "AdaGrad"}
        assert all(v["lr"] in adam_paper.OPTIMIZERS[n][2] and math.isfinite(v["final_training_cost"])
                   for n, v in task.items())
    assert min(result.numbers["adam_over_best"].values()) >= 1.0 and isinstance(result.held, bool)


def test_convex_hull_membership_and_adafactor_shapes():
    from scipy.spatial import Delaunay

    triangle = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert (Delaunay(triangle).find_simplex(np.array([[0.2, 0.2], [1.0, 1.0]])) >= 0).tolist() == [True, False]
    shapes = adafactor_memory.transformer_shapes(8, 2, 10)
    assert shapes[0] == (10, 8) and len(shapes) == 1 + 2 * 16 and convex_hull.NAME == "convex-hull"


@pytest.mark.parametrize("name", ["nesterov", "gradient-noise", "adafactor-memory", "convex-hull", "bias-correction",
                                  "adagrad-vs-rmsprop", "weight-decay"])
def test_fast_experiments_run_and_decide(tmp_path, name):
    context = Context(figure_dir=tmp_path, progress=False, name=name)
    result = EXPERIMENTS[name].run(context)
    assert isinstance(result.held, bool) and result.summary and result.numbers
    assert context.figures and all((tmp_path / f).stat().st_size > 1000 for f in context.figures)


def test_lab_command_end_to_end(tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["lab", "--only", "nesterov,adafactor-memory", "--out", str(out), "--no-progress", "--seed", "3"]) == 0
    report = json.loads((out / "results.json").read_text())
    assert list(report["experiments"]) == ["nesterov", "adafactor-memory"]
    assert report["meta"]["seed"] == 3 and report["meta"]["total_seconds"] > 0
    page = (out / "index.html").read_text()
    for name, experiment in report["experiments"].items():
        assert html.escape(experiment["title"]) in page and isinstance(experiment["held"], bool)
        for figure in experiment["figures"]:
            assert (out / figure).exists() and figure in page
    assert "claims held" in capsys.readouterr().out
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".report")]  # no scratch folder left


def test_rerun_replaces_the_report(tmp_path):
    out = tmp_path / "report"
    main(["lab", "--only", "adafactor-memory", "--out", str(out), "--no-progress"])
    (out / "stale.txt").write_text("old")
    main(["lab", "--only", "nesterov", "--out", str(out), "--no-progress"])
    assert not (out / "stale.txt").exists() and list(json.loads((out / "results.json").read_text())["experiments"]) == [
        "nesterov"]


@pytest.mark.parametrize("arguments, message", [
    (["--only", "nope"], "unknown experiment nope"),
    (["--device", "cuda"], "no CUDA GPU"),
    (["--out", "/proc/descend-report"], "cannot write the report"),
])
def test_bad_input_is_one_line_and_exit_status_2(arguments, message, capsys):
    if "cuda" in arguments and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["lab", *arguments, "--no-progress"]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and "\n" not in error and "Traceback" not in error


def test_interrupted_run_leaves_no_report(tmp_path, monkeypatch):
    def interrupt(context):
        raise KeyboardInterrupt

    monkeypatch.setattr(EXPERIMENTS["nesterov"], "run", interrupt)
    out = tmp_path / "report"
    assert main(["lab", "--only", "nesterov", "--out", str(out), "--no-progress"]) == 130
    assert not out.exists() and not list(tmp_path.iterdir())


def test_list_and_module_entry_point():
    result = subprocess.run([sys.executable, "-m", "descend", "lab", "--list"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and len(result.stdout.strip().splitlines()) == 14
    assert "landscapes" in result.stdout


def test_fitted_slope():
    assert core.fitted_slope([1, 10, 100], [3, 30, 300]) == pytest.approx(1.0)
    assert core.fitted_slope([1, 4, 16], [8, 4, 2]) == pytest.approx(-0.5)
    assert math.isfinite(core.fitted_slope([1, 2], [1, 1]))
