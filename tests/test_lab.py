"""The lab: claims and verdicts, each experiment's measurement code on a tiny configuration, the runner
(seeds, workers, determinism) and the command end to end, including what --out may and may not replace."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from descend.__main__ import main
from descend.lab import CLAIMS, EXPERIMENTS, Claim, Context, core, discover, runner, style
from descend.lab.experiments import (
    adafactor_memory,
    condition_number,
    convex_hull,
    landscapes,
    learning_rate,
    nesterov,
    sam_flatness,
)

ROOT = Path(__file__).resolve().parent.parent


def claim(**changes) -> Claim:
    fields = dict(id="a-claim", source="seed 002, eq. 4.26", statement="s", measurement="m", criterion="effect > 1",
                  threshold=1.0, direction=">")
    return Claim(**{**fields, **changes})


# --- claims and verdicts --------------------------------------------------------------------------------------


def test_every_experiment_declares_its_claims_with_a_source_in_the_seed_files():
    assert len(EXPERIMENTS) >= 13
    for name, module in EXPERIMENTS.items():
        assert module.NAME == name and module.TITLE and callable(module.run) and module.CLAIMS
        for c in module.CLAIMS:
            assert "seed 00" in c.source, c.id
            assert c.statement and c.measurement and c.criterion and c.direction in "<>"
    assert len(CLAIMS) == sum(len(m.CLAIMS) for m in EXPERIMENTS.values())  # ids are unique


def test_claims_reject_bad_definitions():
    with pytest.raises(ValueError, match="kebab"):
        claim(id="Not Kebab")
    with pytest.raises(ValueError, match="direction"):
        claim(direction=">=")
    with pytest.raises(ValueError, match="finite"):
        claim(threshold=math.nan)


def test_verdict_uses_the_whole_student_t_interval():
    """n = 3, mean 2, s = 1: the interval is 2 ± t₀.₉₇₅,₂/√3 = 2 ± 2.484."""
    entry = runner.aggregate(claim(threshold=-0.6), [1.0, 2.0, 3.0])
    assert entry["mean"] == pytest.approx(2.0) and entry["n"] == 3
    assert entry["ci"] == pytest.approx([2 - 2.4841, 2 + 2.4841], abs=1e-3)
    assert entry["verdict"] == "held"  # the whole interval [−0.48, 4.48] is above −0.6
    assert runner.aggregate(claim(threshold=0.0), [1.0, 2.0, 3.0])["verdict"] == "inconclusive"
    assert runner.aggregate(claim(threshold=5.0), [1.0, 2.0, 3.0])["verdict"] == "did not hold"
    assert runner.aggregate(claim(threshold=5.0, direction="<"), [1.0, 2.0, 3.0])["verdict"] == "held"
    assert runner.aggregate(claim(threshold=-0.6, direction="<"), [1.0, 2.0, 3.0])["verdict"] == "did not hold"


def test_identical_effects_give_a_zero_width_interval_and_one_seed_is_inconclusive():
    assert runner.aggregate(claim(), [2.0, 2.0, 2.0])["verdict"] == "held"
    single = runner.aggregate(claim(), [2.0])
    assert single["verdict"] == "inconclusive" and single["ci"] is None and "one seed" in single["note"]


def test_deterministic_claims_run_once_and_are_decided_by_their_value():
    entry = runner.aggregate(claim(deterministic=True), [0.5])
    assert entry == {**entry, "verdict": "did not hold", "ci": None, "n": 1, "deterministic": True}
    module = types.SimpleNamespace(CLAIMS=[claim(deterministic=True)])
    assert runner.seed_count(module, full=True, seeds=7) == 1
    mixed = types.SimpleNamespace(CLAIMS=[claim(deterministic=True), claim(id="other")])
    assert runner.seed_count(mixed, full=False, seeds=None) == 3 and runner.seed_count(mixed, True, None) == 10
    assert runner.seed_count(mixed, full=False, seeds=4) == 4


def test_non_finite_effects_are_decided_seed_by_seed():
    assert runner.aggregate(claim(), [math.inf, 3.0])["verdict"] == "held"
    assert runner.aggregate(claim(), [math.nan, 3.0])["verdict"] == "inconclusive"


def test_discovery_orders_modules_and_refuses_shared_claim_ids(tmp_path, monkeypatch):
    package = tmp_path / "fake_experiments"
    package.mkdir()
    (package / "__init__.py").write_text("")
    template = ("from descend.lab.claims import Claim\nNAME = {name!r}\nORDER = {order}\nTITLE = 't'\n"
                "CLAIMS = [Claim(id={cid!r}, source='seed 000', statement='s', measurement='m', criterion='c', "
                "threshold=0.0, direction='>')]\ndef run(ctx): pass\n")
    (package / "b.py").write_text(template.format(name="bee", order=1, cid="one"))
    (package / "a.py").write_text(template.format(name="ay", order=2, cid="two"))
    (package / "helper.py").write_text("X = 1\n")  # not an experiment: ignored
    monkeypatch.syspath_prepend(str(tmp_path))
    import fake_experiments

    assert list(discover(fake_experiments)) == ["bee", "ay"]
    (package / "c.py").write_text(template.format(name="sea", order=3, cid="one"))
    with pytest.raises(RuntimeError, match="claim id 'one'"):
        discover(fake_experiments)


def test_one_colour_per_optimizer_whatever_the_spelling():
    assert style.color("SGD-Nesterov") == style.color("Nesterov") == Context.color("nesterov")
    assert style.color("momentum") == style.color("SGD+momentum")
    known = [style.color(name) for name in style.KNOWN]
    assert len(set(known)) == len(known)
    assert style.color("β₂=0.99") == style.color("β₂=0.99") and style.color("x").startswith("#")


# --- measurement code -----------------------------------------------------------------------------------------


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


@pytest.mark.parametrize("name", ["Adam", "SGD+momentum", "Adadelta"])
def test_all_learning_rates_in_one_tensor_follow_the_same_paths_as_one_group_each(name):
    """The row trick (θᵢ = αᵢφᵢ, lr 1) must reproduce separate runs at each αᵢ."""
    optimizer_class, kwargs, base = landscapes.OPTIMIZERS[name]
    rates = [base * s for s in landscapes.LR_SCALES]
    rows, groups = (build(optimizer_class, kwargs, (1.0, 1.5), rates) for build in (landscapes._rows,
                                                                                  landscapes._groups))
    for _ in range(30):
        for optimizer, theta, set_gradient in (rows, groups):
            points = theta()
            set_gradient(np.stack(landscapes.quadratic_gradient(points[:, 0], points[:, 1]), axis=1))
            optimizer.step()
    np.testing.assert_allclose(rows[1](), groups[1](), rtol=1e-9, atol=1e-12)


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


def test_convex_hull_membership_and_adafactor_shapes():
    from scipy.spatial import Delaunay

    triangle = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert (Delaunay(triangle).find_simplex(np.array([[0.2, 0.2], [1.0, 1.0]])) >= 0).tolist() == [True, False]
    shapes = adafactor_memory.transformer_shapes(8, 2, 10)
    assert shapes[0] == (10, 8) and len(shapes) == 1 + 2 * 16 and convex_hull.NAME == "convex-hull"


@pytest.mark.parametrize("name", ["nesterov", "convex-hull", "condition-number"])
def test_fast_experiments_measure_every_claim_and_caption_every_figure(tmp_path, name):
    context = Context(figure_dir=tmp_path, progress=False, name=name)
    result = EXPERIMENTS[name].run(context)
    assert set(result.effects) == {c.id for c in EXPERIMENTS[name].CLAIMS}
    assert all(isinstance(v, float) for v in result.effects.values()) and result.summary
    assert context.figures and all((tmp_path / f).stat().st_size > 1000 for f in context.figures)
    assert all(len(context.captions[f]) > 20 for f in context.figures)
    quiet = Context(figure_dir=tmp_path / "none", progress=False, name=name, figures_wanted=False)
    (tmp_path / "none").mkdir()
    assert EXPERIMENTS[name].run(quiet).effects == result.effects and not list((tmp_path / "none").iterdir())


# --- the command ----------------------------------------------------------------------------------------------


def lab(*arguments: str) -> int:
    return main(["lab", "--no-progress", *arguments])


def test_lab_command_end_to_end(tmp_path, capsys):
    out = tmp_path / "report"
    assert lab("--only", "nesterov,adafactor-memory", "--out", str(out), "--seed", "3", "--workers", "1") == 0
    report = json.loads((out / "results.json").read_text())
    assert list(report["experiments"]) == ["nesterov", "adafactor-memory"]
    assert report["settings"] == {"seed": 3, "mode": "quick", "device": "cpu"}
    assert sum(report["counts"].values()) == len(report["claims"]) == 2
    for entry in report["claims"].values():
        assert entry["deterministic"] and entry["n"] == 1 and entry["verdict"] == "held" and entry["seeds"] == [3]
    page = (out / "index.html").read_text()
    assert "held</div>" in page and "did not hold</div>" in page and "inconclusive</div>" in page
    for experiment in report["experiments"].values():
        for figure in experiment["figures"]:
            assert (out / figure["file"]).exists() and figure["caption"]
    assert json.loads((out / runner.MARKER).read_text())["files"] == sorted(p.name for p in out.iterdir()
                                                                           if p.name != runner.MARKER)
    assert "2 held, 0 did not hold, 0 inconclusive" in capsys.readouterr().out
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".report")]  # no scratch folder left


def test_same_seed_gives_the_same_results_with_one_or_two_workers(tmp_path):
    reports = []
    for workers in ("1", "2"):
        out = tmp_path / f"report-{workers}"
        assert lab("--only", "convex-hull", "--seeds", "2", "--seed", "5", "--out", str(out),
                   "--workers", workers) == 0
        reports.append(json.loads((out / "results.json").read_text()))
    for report in reports:
        assert report["claims"]["sgd-stays-inside-convex-hull"]["seeds"] == [5, 6]
        del report["meta"]  # timings, date, worker count
    assert reports[0] == reports[1]
    effects = reports[0]["claims"]["sgd-stays-inside-convex-hull"]["effects"]
    assert len(effects) == 2 and effects[0] != effects[1]  # the seeds differ


def test_rerun_replaces_a_previous_report(tmp_path):
    out = tmp_path / "report"
    assert lab("--only", "adafactor-memory", "--out", str(out), "--workers", "1") == 0
    assert lab("--only", "nesterov", "--out", str(out), "--workers", "1") == 0
    assert list(json.loads((out / "results.json").read_text())["experiments"]) == ["nesterov"]
    assert not list(out.glob("adafactor-memory-*"))  # the old report's files went with it


def test_a_file_descend_did_not_write_stops_the_replacement(tmp_path, capsys):
    out = tmp_path / "report"
    assert lab("--only", "nesterov", "--out", str(out), "--workers", "1") == 0
    (out / "notes.txt").write_text("mine")
    assert lab("--only", "nesterov", "--out", str(out), "--workers", "1") == 2
    assert "notes.txt" in capsys.readouterr().err and (out / "notes.txt").read_text() == "mine"


def run_cli(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "descend", "lab", "--no-progress", *arguments], cwd=cwd,
                          capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(ROOT), "PATH": ""})


def test_out_dot_in_a_repository_is_refused_and_nothing_is_deleted(tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (tmp_path / "code.py").write_text("print(1)\n")
    result = run_cli("--out", ".", "--only", "nesterov", cwd=tmp_path)
    assert result.returncode == 2 and "not empty" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert (tmp_path / ".git" / "HEAD").read_text() == "ref: refs/heads/main\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".git", "code.py"]


def test_an_empty_folder_becomes_a_report(tmp_path):
    (tmp_path / "empty").mkdir()
    assert lab("--out", str(tmp_path / "empty"), "--only", "nesterov", "--workers", "1") == 0
    assert (tmp_path / "empty" / "index.html").exists() and (tmp_path / "empty" / runner.MARKER).exists()


@pytest.mark.parametrize("arguments, message", [
    (["--only", "nope"], "unknown experiment or claim nope"),
    (["--only", ","], "names no experiment"),
    (["--full", "--only", ""], "names no experiment"),
    (["--seeds", "0"], "--seeds 0"),
    (["--workers", "0"], "--workers 0"),
    (["--device", "cuda"], "no CUDA GPU"),
    (["--out", "/proc/descend-report"], "cannot write the report"),
])
def test_bad_input_is_one_line_and_exit_status_2(arguments, message, capsys):
    if "cuda" in arguments and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert lab(*arguments) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and "\n" not in error and "Traceback" not in error


def test_a_claim_id_selects_its_experiment(tmp_path):
    out = tmp_path / "report"
    assert lab("--only", "nesterov-forms-agree-after-change-of-variable", "--out", str(out), "--workers", "1") == 0
    assert list(json.loads((out / "results.json").read_text())["experiments"]) == ["nesterov"]


def test_interrupted_run_leaves_no_report(tmp_path, monkeypatch):
    def interrupt(context):
        raise KeyboardInterrupt

    monkeypatch.setattr(EXPERIMENTS["nesterov"], "run", interrupt)
    out = tmp_path / "report"
    assert lab("--only", "nesterov", "--out", str(out), "--workers", "1") == 130
    assert not out.exists() and not list(tmp_path.iterdir())


def test_list_names_every_experiment_and_claim(capsys):
    assert main(["lab", "--list"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in EXPERIMENTS) and all(claim_id in listing for claim_id in CLAIMS)


def test_fitted_slope():
    assert core.fitted_slope([1, 10, 100], [3, 30, 300]) == pytest.approx(1.0)
    assert core.fitted_slope([1, 4, 16], [8, 4, 2]) == pytest.approx(-0.5)
    assert math.isfinite(core.fitted_slope([1, 2], [1, 1]))
