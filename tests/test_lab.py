"""The lab: claims and verdicts, each experiment's measurement code on a tiny configuration, the runner
(seeds, workers, determinism) and the command end to end, including what --out may and may not replace."""
from __future__ import annotations

import ast
import json
import math
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from descend.__main__ import main
from descend.lab import CLAIMS, EXPERIMENTS, Claim, Context, core, discover, runner, style, tuning, verdicts
from descend.lab import claims as claims_module
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
    fields = dict(id="a-claim", source=f"{claims_module.LECTURE}, eq. (4.26)", statement="s", measurement="m",
                  criterion="effect > 1", threshold=1.0, direction=">", quote="paraphrase")
    return Claim(**{**fields, **changes})


SEEDS_FOLDER = next((folder for folder in (ROOT.parent / "shared" / "seeds", ROOT.parent.parent / "shared" / "seeds")
                     if folder.is_dir()), None)


LATEX = {r"\beta": "β", r"\alpha": "α", r"\theta": "θ", r"\epsilon": "ε", r"\varepsilon": "ε", r"\nabla": "∇",
         r"\gamma": "γ", r"\rho": "ρ", r"\mu": "μ"}


def plain(text: str) -> str:
    """The course's text with its markup and spacing removed, for finding a quotation in it."""
    for macro, letter in LATEX.items():
        text = text.replace(macro, letter)
    text = re.sub(r"[$*`]", "", text)
    return re.sub(r" ([,.;:])", r"\1", " ".join(text.replace("’", "'").split()))


# --- claims ---------------------------------------------------------------------------------------------------


def test_every_claim_cites_the_course_in_its_own_terms():
    assert len(EXPERIMENTS) >= 20
    for name, module in EXPERIMENTS.items():
        assert module.NAME == name and module.TITLE and callable(module.run) and module.CLAIMS
        for c in module.CLAIMS:
            assert "seed 0" not in c.source and ".txt" not in c.source, c.id
            assert any(doc in c.source for doc in claims_module.DOCUMENTS + (claims_module.BEYOND,)), c.id
            assert c.quote in ("verbatim", "paraphrase") and c.kind in ("experiment", "worked check"), c.id
            assert not c.beyond_course or claims_module.BEYOND in c.source, c.id
            assert c.beyond_course or not c.source.startswith(claims_module.BEYOND), c.id
            assert c.statement and c.measurement and c.criterion and c.direction in ("<", ">", "between")
    assert len(CLAIMS) == sum(len(m.CLAIMS) for m in EXPERIMENTS.values())  # ids are unique
    kinds = {c.kind for c in CLAIMS.values()}
    assert kinds == {"experiment", "worked check"}


@pytest.mark.skipif(SEEDS_FOLDER is None, reason="the course material (shared/seeds) is not beside the repository")
def test_verbatim_statements_are_the_course_s_words():
    course = plain(" ".join(path.read_text() for path in sorted(SEEDS_FOLDER.glob("*.txt"))))
    verbatim = [c for c in CLAIMS.values() if c.quote == "verbatim"]
    assert len(verbatim) >= 20
    for c in verbatim:
        parts = [part.strip().rstrip(".") for part in plain(c.statement).split("…") if part.strip()]
        position = 0
        for part in parts:  # "…" marks words left out: the parts appear in order
            position = course.find(part, position)
            assert position >= 0, f"{c.id}: {part!r} is not in the course's text"


def test_claims_reject_bad_definitions():
    with pytest.raises(ValueError, match="kebab"):
        claim(id="Not Kebab")
    with pytest.raises(ValueError, match="direction"):
        claim(direction=">=")
    with pytest.raises(ValueError, match="finite"):
        claim(threshold=math.nan)
    with pytest.raises(ValueError, match="between"):
        claim(direction="between", threshold=1.0)
    with pytest.raises(ValueError, match="quote"):
        claim(quote="exact")
    with pytest.raises(ValueError, match="course document"):
        claim(source="seed 002, eq. 4.26")
    with pytest.raises(ValueError, match="beyond the course"):
        claim(beyond_course=True)


# --- intervals and verdicts -----------------------------------------------------------------------------------


def test_difference_uses_the_student_t_interval():
    """n = 3, mean 2, s = 1: the interval is 2 ± t₀.₉₇₅,₂/√3 = 2 ± 2.484."""
    entry = verdicts.aggregate(claim(threshold=-0.6), [1.0, 2.0, 3.0])
    assert entry["mean"] == pytest.approx(2.0) and entry["n"] == 3 and entry["interval_method"] == "t"
    assert entry["interval"] == pytest.approx([2 - 2.4841, 2 + 2.4841], abs=1e-3) and entry["ci"] == entry["interval"]
    assert entry["verdict"] == "held"  # the whole interval [−0.48, 4.48] is above −0.6
    assert verdicts.aggregate(claim(threshold=0.0), [1.0, 2.0, 3.0])["verdict"] == "inconclusive"
    assert verdicts.aggregate(claim(threshold=5.0), [1.0, 2.0, 3.0])["verdict"] == "did not hold"
    assert verdicts.aggregate(claim(threshold=5.0, direction="<"), [1.0, 2.0, 3.0])["verdict"] == "held"


def test_a_fraction_s_interval_stays_inside_zero_and_one():
    """The issue's case: fractions near 1 gave a t-interval up to 1.01."""
    values = [1.0, 0.99, 1.0, 0.97, 1.0, 1.0, 0.995, 1.0, 0.98, 1.0]
    entry = verdicts.aggregate(claim(scale="fraction", threshold=0.95), values)
    low, high = entry["interval"]
    assert entry["interval_method"] == "bootstrap" and 0.97 <= low <= entry["mean"] <= high <= 1.0
    assert entry["verdict"] == "held"
    assert verdicts.aggregate(claim(scale="fraction", threshold=0.5), [0.0] * 5)["interval"] == [0.0, 0.0]


def test_a_ratio_s_interval_is_positive_and_centred_on_the_geometric_mean():
    values = [0.5, 20.0, 300.0, 2.0]  # spans decades: a t-interval of the values would go below 0
    entry = verdicts.aggregate(claim(scale="ratio"), values)
    assert entry["interval_method"] == "t-log" and entry["center"] == "geometric mean"
    assert entry["estimate"] == pytest.approx(math.prod(values) ** 0.25)
    assert 0 < entry["interval"][0] < entry["estimate"] < entry["interval"][1]
    assert entry["verdict"] == "inconclusive"  # the wide log-scale interval reaches below 1


def test_seed_proportions_use_clopper_pearson():
    entry = verdicts.aggregate(claim(scale="seed fraction", threshold=0.5), [1.0] * 10)
    assert entry["interval_method"] == "clopper-pearson" and entry["estimate"] == 1.0
    assert entry["interval"] == pytest.approx([0.6915, 1.0], abs=1e-4) and entry["verdict"] == "held"
    none = verdicts.aggregate(claim(scale="seed fraction", threshold=0.5), [0.0] * 10)
    assert none["interval"] == pytest.approx([0.0, 0.3085], abs=1e-4) and none["verdict"] == "did not hold"


def test_an_infinite_effect_gives_the_median_with_its_order_statistics_interval():
    values = [2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, math.inf]
    entry = verdicts.aggregate(claim(scale="ratio"), values)
    assert entry["interval_method"] == "order statistics (median)" and entry["estimate"] == 6.5
    assert entry["interval"] == [3.0, 10.0] and entry["verdict"] == "held"  # x₍₂₎ and x₍₉₎ of 10
    undefined = verdicts.aggregate(claim(), [1.0, math.nan, 3.0])
    assert undefined["verdict"] == "inconclusive" and "NaN" in undefined["reason"] and undefined["interval"] is None


def test_between_is_an_equivalence_margin():
    similar = claim(direction="between", threshold=(0.8, 1.25), scale="ratio")
    assert verdicts.aggregate(similar, [0.95, 1.0, 1.05, 1.02])["verdict"] == "held"
    assert verdicts.aggregate(similar, [2.0, 2.1, 1.9, 2.05])["verdict"] == "did not hold"
    assert verdicts.aggregate(similar, [0.5, 1.0, 2.0, 1.2])["verdict"] == "inconclusive"


def test_every_verdict_but_held_has_a_one_line_reason_and_seeds_needed_is_counted():
    for values, threshold in (([1.0, 2.0, 3.0], 5.0), ([1.0, 2.0, 3.0], 0.0), ([2.0], 1.0)):
        entry = verdicts.aggregate(claim(threshold=threshold), values)
        assert entry["verdict"] != "held" and entry["reason"] and "\n" not in entry["reason"]
    steady = verdicts.aggregate(claim(threshold=0.0), [5.0, 5.1, 4.9, 5.0, 5.2])
    assert steady["verdict"] == "held" and steady["seeds_needed"] == 2
    late = verdicts.aggregate(claim(threshold=0.0), [0.1, 3.0, 2.0, 2.5, 2.2, 2.4, 2.3, 2.6])
    assert late["verdict"] == "held" and 2 < late["seeds_needed"] <= 8
    assert verdicts.aggregate(claim(threshold=0.0), [1.0, -1.0, 1.0])["seeds_needed"] is None


def test_deterministic_claims_run_once_and_are_decided_by_their_value():
    entry = verdicts.aggregate(claim(deterministic=True), [0.5])
    assert entry["verdict"] == "did not hold" and entry["n"] == 1 and entry["interval"] == [0.5, 0.5]
    assert entry["interval_method"] == "deterministic" and entry["seeds_needed"] == 1 and entry["reason"]
    module = types.SimpleNamespace(CLAIMS=[claim(deterministic=True)])
    assert runner.seed_count(module, full=True, seeds=7) == 1
    mixed = types.SimpleNamespace(CLAIMS=[claim(deterministic=True), claim(id="other")])
    assert runner.seed_count(mixed, full=False, seeds=None) == 10 and runner.seed_count(mixed, True, None) == 20
    assert runner.seed_count(mixed, full=False, seeds=4) == 4


def test_a_best_setting_at_a_grid_edge_makes_the_comparison_inconclusive():
    record = tuning.search(tuning.one_at_a_time(lambda lr: -lr), [tuning.lr_axis(0.1, 0.3, 1.0)], "−lr",
                           extensions=2)
    assert record["at_edge"] and record["edges"] == ["lr"] and record["grid"]["lr"] == [0.1, 0.3, 1.0, 3.0, 10.0]
    entry = verdicts.aggregate(claim(compares=("SGD",)), [5.0, 5.0, 5.1], {"SGD": record})
    assert entry["verdict"] == "inconclusive (grid edge)" and "SGD's best lr 10 is at the top" in entry["reason"]
    inside = tuning.search(tuning.one_at_a_time(lambda lr: (math.log10(lr) - 0.5) ** 2), [tuning.lr_axis(0.1, 0.3)],
                           "distance")
    assert not inside["at_edge"] and inside["best"] == {"lr": 3.0} and inside["grid"]["lr"][-1] == 10.0
    assert verdicts.aggregate(claim(compares=("SGD",)), [5.0, 5.0, 5.1], {"SGD": inside})["verdict"] == "held"


def test_tuning_grids_grow_at_an_edge_and_stop_at_an_admissible_bound():
    assert [tuning.half_decade(x, up) for x, up in ((0.03, True), (0.1, False), (1.0, True))] == [0.1, 0.03, 3.0]
    assert tuning.log_grid(1e-3, 1.0) == (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
    momentum = tuning.momentum_axis(0.5, 0.9)
    assert momentum.beyond(0.9, True) == 0.97 and momentum.beyond(0.5, False) == 0.0 and momentum.beyond(0.0, False) is None
    # the best is μ = 0 (no momentum): a bound, not an edge; the lr optimum 0.1 lies inside
    record = tuning.search(tuning.one_at_a_time(lambda lr, momentum: momentum + (math.log10(lr) + 1) ** 2),
                           [tuning.lr_axis(0.01, 0.1, 1.0), momentum], "x")
    assert record["best"] == {"lr": 0.1, "momentum": 0.0} and record["at_bound"] == ["momentum"]
    assert not record["at_edge"] and 0.0 in record["grid"]["momentum"]
    decay = tuning.search(tuning.one_at_a_time(lambda weight_decay: weight_decay), [tuning.Axis("weight_decay",
                          (1e-3, 1e-2), kind="log0")], "x")
    assert decay["best"] == {"weight_decay": 0.0} and decay["at_bound"] == ["weight_decay"] and not decay["at_edge"]
    flat = tuning.search(tuning.one_at_a_time(lambda lr: 2.302585), [tuning.lr_axis(0.01, 0.1, 1.0)], "x")
    assert flat["flat"] and not flat["at_edge"] and flat["best"] == {"lr": 0.1} and flat["grid"]["lr"] == [0.01, 0.1, 1.0]
    diverged = tuning.search(tuning.one_at_a_time(lambda lr: math.nan if lr > 0.2 else 1 / lr), [tuning.lr_axis(0.1, 1.0)],
                             "x")
    assert diverged["best"] == {"lr": 0.1} or diverged["at_edge"]  # NaN counts as diverged, never as best
    assert all(row["score"] == math.inf for row in diverged["scores"] if row["lr"] > 0.2)


# --- the package ----------------------------------------------------------------------------------------------


def test_no_import_cycle_in_the_lab():
    """Every import between descend.lab's own modules (at the top or inside a function) points one way."""
    folder = ROOT / "descend" / "lab"
    edges = {}
    for path in folder.glob("*.py"):
        name = path.stem
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                targets |= {node.module} if node.module else {alias.name for alias in node.names}
        edges[name] = {t.split(".")[0] for t in targets if (folder / f"{t.split('.')[0]}.py").exists()}
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for target in edges.get(node, ()):
            assert state.get(target) != 1, f"import cycle: {' → '.join(path + [target])}"
            if state.get(target) is None:
                visit(target, path + [target])
        state[node] = 2

    for node in edges:
        if node not in state:
            visit(node, [node])
    assert "runner" not in edges["core"] and "report" not in edges["core"]


TEMPLATE = re.compile(r"\{[A-Za-z_][A-Za-z0-9_.]*(\[[^\]]*\])?(![rsa])?(:[^{}\s'\"]*)?\}")
MEASURING = ["experiments/*.py", "core.py", "runner.py", "claims.py", "verdicts.py", "tuning.py", "data.py"]


def test_no_string_is_an_f_string_that_lost_its_f():
    """A literal "{SPARSE_RATE}" in a text is a template leftover (the bug the issue found: a plain string between
    f-strings). The literal parts of f-strings count too: Python keeps a plain part's braces as they are."""
    for path in sorted(p for pattern in MEASURING for p in (ROOT / "descend" / "lab").glob(pattern)):
        source = path.read_text()
        tree = ast.parse(source)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                leftover = TEMPLATE.search(node.value)
                assert leftover is None or _formatted(tree, node), f"{path.name}:{node.lineno}: {leftover.group()}"


INTERNAL_NAME = re.compile(r"\bseed[ _-]?0\d\d\b")  # the course material's file names, not a citation


def _docstrings(tree) -> set[int]:
    return {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and node.body
            and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}


def test_no_text_the_reader_sees_names_a_course_file():
    """Claim ids, summaries, captions, figure titles and legends cite the course by its documents ("the assignment's
    answer", "lecture notes, Fig. 4.1"), never by the lab's file names ("seed 000"); docstrings may."""
    assert not [c for c in CLAIMS if INTERNAL_NAME.search(c)]
    for path in sorted(p for pattern in MEASURING for p in (ROOT / "descend" / "lab").glob(pattern)):
        tree = ast.parse(path.read_text())
        skip = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
                assert not INTERNAL_NAME.search(node.value), f"{path.name}:{node.lineno}: {node.value!r}"


def test_the_internal_name_check_finds_a_legend_but_not_a_docstring():
    tree = ast.parse('"""As seed 002 writes it."""\nlabel = "g/(1-β) (seed 000\'s answer)"\n')
    found = [node for node in ast.walk(tree) if isinstance(node, ast.Constant) and id(node) not in _docstrings(tree)
             and INTERNAL_NAME.search(node.value)]
    assert [node.lineno for node in found] == [2]


def test_the_leftover_check_finds_the_bug_the_issue_reported():
    source = 'SPARSE_RATE = 0.01\ntext = (f"{1:.3f} and " "Random sparse gradients (rate {SPARSE_RATE}): " f"{2}")\n'
    tree = ast.parse(source)
    found = [node for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)
             and TEMPLATE.search(node.value) and not _formatted(tree, node)]
    assert len(found) == 1


def _formatted(tree, constant) -> bool:
    """Whether the string is a template on purpose: the receiver of .format(...), or a ``*_format=`` argument (tqdm's
    bar_format)."""
    return any(isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format"
               and constant in ast.walk(node.func.value) for node in ast.walk(tree)) or any(
        isinstance(node, ast.keyword) and (node.arg or "").endswith("format") and node.value is constant
        for node in ast.walk(tree))


def test_every_experiment_with_comparisons_tunes_them():
    for module in EXPERIMENTS.values():
        compared = {label for c in module.CLAIMS for label in c.compares}
        if compared and not any(c.deterministic for c in module.CLAIMS if c.compares):
            assert hasattr(module, "tune"), f"{module.NAME} compares {sorted(compared)} without a tune()"


def test_discovery_orders_modules_and_refuses_shared_claim_ids(tmp_path, monkeypatch):
    package = tmp_path / "fake_experiments"
    package.mkdir()
    (package / "__init__.py").write_text("")
    template = ("from descend.lab.claims import LECTURE, Claim\nNAME = {name!r}\nORDER = {order}\nTITLE = 't'\n"
                "CLAIMS = [Claim(id={cid!r}, source=LECTURE, statement='s', measurement='m', criterion='c', "
                "threshold=0.0, direction='>', quote='paraphrase')]\ndef run(ctx): pass\n")
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
    assert landscapes.score(path, ((1.0, 1.0),)) == (2, 0.0)
    assert landscapes.score(np.array([[0.3, 1e-3], [0.0, -0.5], [0.0, -0.999]]), ((0.0, 1.0), (0.0, -1.0))) == (2, 
                                                                                                           pytest.approx(1e-3))


@pytest.mark.parametrize("name", ["Adam", "SGD+momentum", "Adadelta"])
def test_all_learning_rates_in_one_tensor_follow_the_same_paths_as_one_group_each(name):
    """The row trick (θᵢ = αᵢφᵢ, lr 1) must reproduce separate runs at each αᵢ."""
    optimizer_class, kwargs, grid, _ = landscapes.OPTIMIZERS[name]
    rates = list(grid[:5])
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


def legend_colours(figure) -> dict[str, set[str]]:
    """What each legend entry of a figure names (style.key: "Adam (lr 0.1)" is "adam") -> the colours it wears."""
    from matplotlib import colors

    worn: dict[str, set[str]] = {}
    for axis in figure.axes:
        legend = axis.get_legend()
        for handle, text in zip(legend.legend_handles if legend else [], legend.get_texts() if legend else []):
            colour = handle.get_facecolor() if hasattr(handle, "get_facecolor") and not hasattr(handle, "get_color") \
                else handle.get_color()
            worn.setdefault(style.key(text.get_text()), set()).add(colors.to_hex(colour))
    return worn


def one_meaning_per_colour(figure) -> None:
    worn = legend_colours(figure)
    owners: dict[str, str] = {}
    for meaning, colours in worn.items():
        assert len(colours) == 1, (meaning, colours)
        other = owners.setdefault(next(iter(colours)), meaning)
        assert other == meaning, f"{other!r} and {meaning!r} share {next(iter(colours))}"


def drawn(monkeypatch, tmp_path, name, draw, **context_fields):
    saved = []
    context = Context(figure_dir=tmp_path, progress=False, name=name, **context_fields)
    monkeypatch.setattr(context, "save", lambda figure, stem, caption="", **_: saved.append(figure))
    draw(context)
    return saved


def test_the_dropout_figure_gives_each_bar_and_curve_its_own_colour(tmp_path, monkeypatch):
    """Four meanings side by side (scaled, mask only, no dropout, dropout p): four colours. The report had the two
    test-loss curves and the mask-only bars in one purple."""
    from matplotlib import pyplot as plt

    from descend.lab.experiments import dropout

    runs = {p: {"curve": [1.0, 0.5], "train_loss": 0.03, "test_loss": 0.25} for p in (0.0, 0.2)}
    [figure] = drawn(monkeypatch, tmp_path, "dropout", lambda ctx: dropout.draw(
        ctx, {p: 1.0 for p in dropout.RATES}, {p: 1 - p for p in dropout.RATES}, runs, 50))
    one_meaning_per_colour(figure)
    assert len(legend_colours(figure)) == 4
    plt.close(figure)


def test_the_initialization_figure_gives_the_tanh_network_its_own_colour(tmp_path, monkeypatch):
    """The report drew √(2/n) with ReLU and 1/√n with tanh in one tan colour in the same panel."""
    from matplotlib import pyplot as plt

    from descend.lab.experiments import initialization as init

    stds = {**{name: [1.0] * init.DEPTH for name in init.INITS}, "1/√n, tanh": [1.0] * init.DEPTH}
    grads = {name: [1.0] * (init.DEPTH + 1) for name in init.INITS}
    tuned = {name: {"best": {"lr": 0.1}} for name in init.INITS}
    [figure] = drawn(monkeypatch, tmp_path, "initialization", lambda ctx: init.draw(
        ctx, stds, grads, {name: [1.0, 0.5] for name in init.INITS}), tuned=tuned)
    one_meaning_per_colour(figure)
    assert len(legend_colours(figure)) == len(init.INITS) + 1
    plt.close(figure)


# --- the command ----------------------------------------------------------------------------------------------


def lab(*arguments: str) -> int:
    return main(["lab", "--no-progress", *arguments])


def test_lab_command_end_to_end(tmp_path, capsys):
    out = tmp_path / "report"
    assert lab("--only", "nesterov,adafactor-memory", "--out", str(out), "--seed", "3", "--workers", "1") == 0
    report = json.loads((out / "results.json").read_text())
    assert list(report["experiments"]) == ["nesterov", "adafactor-memory"]
    assert report["settings"] == {"seed": 3, "mode": "quick", "device": "cpu", "tuning_seed": runner.TUNING_SEED}
    assert sum(report["counts"].values()) == len(report["claims"]) == 4
    for entry in report["claims"].values():
        assert entry["deterministic"] and entry["n"] == 1 and entry["verdict"] == "held" and entry["seeds"] == [3]
    page = (out / "index.html").read_text()
    assert "held</div>" in page and "did not hold</div>" in page and "inconclusive</div>" in page
    for experiment in report["experiments"].values():
        for figure in experiment["figures"]:
            assert (out / figure["file"]).exists() and figure["caption"]
    assert json.loads((out / runner.MARKER).read_text())["files"] == sorted(p.name for p in out.iterdir()
                                                                           if p.name != runner.MARKER)
    assert "4 held, 0 did not hold, 0 inconclusive" in capsys.readouterr().out
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".report")]  # no scratch folder left


def test_results_record_kind_interval_reason_tuning_and_figures(tmp_path):
    """A small lab (a tuned experiment with a seed proportion, a deterministic one, a fraction): every field the
    report reads, in range, with a reason and a figure wherever the verdict is not "held"."""
    out = tmp_path / "report"
    assert lab("--only", "learning-rate,nesterov,convex-hull", "--seeds", "3", "--out", str(out), "--workers", "2") == 0
    report = json.loads((out / "results.json").read_text())
    assert set(report["counts"]) == set(verdicts.VERDICTS)
    assert sum(sum(by.values()) for by in report["counts_by_kind"].values()) == len(report["claims"])
    for claim_id, entry in report["claims"].items():
        declared = CLAIMS[claim_id]
        assert entry["kind"] == declared.kind and entry["quote"] == declared.quote and entry["source"] == declared.source
        assert entry["verdict"] in verdicts.VERDICTS and entry["n"] == (1 if declared.deterministic else 3)
        low, high = (float(v) for v in entry["range"])
        assert entry["interval"] is not None and entry["ci"] == entry["interval"] and entry["interval_method"]
        assert low <= float(entry["interval"][0]) <= float(entry["interval"][1]) <= high, claim_id
        assert entry["reason"] and "\n" not in entry["reason"]
        assert entry["figures"] and all((out / f).exists() for f in entry["figures"]), claim_id
        assert set(entry["tuning"]) == set(declared.compares)
        for record in entry["tuning"].values():
            assert set(record) >= {"grid", "best", "at_edge"} and record["best"]["lr"] in record["grid"]["lr"]
            assert record["at_edge"] == bool(record["edges"])
    assert report["claims"]["lr-too-high-diverges"]["interval_method"] == "clopper-pearson"
    assert report["claims"]["sgd-stays-inside-convex-hull"]["interval_method"] == "bootstrap"
    texts = [json.dumps(report["claims"]), json.dumps(report["experiments"]), (out / "index.html").read_text()]
    assert not any(TEMPLATE.search(text.replace("{}", "")) for text in texts[:2])


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
