"""The report without a browser: how numbers, intervals and reasons are written, the claims' new fields with
their fallbacks, rebuilding index.html from results.json, and the playground setups beside the landscape figures
(the page accepts each and retraces the figure's paths)."""
from __future__ import annotations

import copy
import html
import json
import math
from pathlib import Path

import numpy as np
import pytest

from descend.__main__ import main
from descend.lab import report as report_module
from descend.lab.report import derived_reason, effect_text, interval_of, number_text, reason_of, rebuild, tuning_table
from descend.playground import api
from descend.playground.links import ADDRESS, decode_setup, encode_setup, setup_from_url, setup_url


@pytest.mark.parametrize("value, text", [
    (0, "0"), (0.0, "0"), (1e-6, "1e-6"), (2.5e-7, "2.5e-7"), (3.31e-4, "3.31e-4"), (0.00099999, "0.001"),
    (0.0123, "0.0123"), (1.1, "1.1"), (545.0, "545"), (12345.6, "12300"), (99999, "1e5"), (123456, "1.23e5"),
    (1.2e10, "1.2e10"), (-4e-4, "-4e-4"), (-0.5, "-0.5"), (9.02e-16, "9.02e-16"),
    (float("nan"), "nan"), (float("inf"), "inf"), (float("-inf"), "−inf"), ("nan", "nan"), ("inf", "inf"),
    (None, "—"), ("not a number", "not a number"),
])
def test_numbers_are_written_short_and_never_as_zeros(value, text):
    assert number_text(value) == text


def claim(**fields):
    base = {"statement": "s", "source": "seed 004", "measurement": "m", "criterion": "ratio > 1", "threshold": 1.0,
            "direction": ">", "effects": [1.2, 1.4, 1.3], "mean": 1.3, "ci": [1.05, 1.55], "n": 3,
            "deterministic": False, "verdict": "held", "note": ""}
    base.update(fields)
    return base


def test_the_lab_evidence_fields_read_as_meant():
    from descend.lab.report import interval_method, seeds_text

    # a deterministic run recorded as the interval [v, v]: one exact value, not an interval
    exact = claim(deterministic=True, interval=[3.55, 3.55], ci=[3.55, 3.55], interval_method="deterministic",
                  mean=3.55, n=1, effects=[3.55])
    assert interval_of(exact) is None and effect_text(exact) == "3.55" and seeds_text(exact) == "1 (exact)"
    ratio = claim(interval=[1.31, 1.73], interval_method="t-log", center="geometric mean", n=10, seeds_needed=3)
    assert interval_method(ratio) == "95% t interval of the log, over seeds" and seeds_text(ratio) == "10 (3 needed)"
    assert interval_method(claim(interval_method="order statistics (median)")) == "order statistics (median)"
    assert seeds_text(claim(n=10, seeds_needed=10)) == "10" and seeds_text(claim(n=10, seeds_needed=None)) == "10"
    fine = tuning_table({"quadratic: SGD": {"grid": {"lr": [round(0.01 * 10 ** (i / 8), 4) for i in range(17)]},
                                            "best": {"lr": 0.422}, "at_edge": True, "edges": ["lr"], "flat": False,
                                            "at_bound": [], "scores": [{"lr": 0.01, "score": 76.3}]}})
    assert "lr ∈ 17 values from 0.01 to 1" in fine and "⚠ lr at grid edge" in fine


def test_the_interval_is_read_from_interval_or_else_from_ci():
    assert interval_of(claim()) == [1.05, 1.55] and effect_text(claim()) == "1.3 [1.05, 1.55]"
    newer = claim(interval=[0.9, 1.7], interval_method="bootstrap, 95%")
    assert interval_of(newer) == [0.9, 1.7] and effect_text(newer) == "1.3 [0.9, 1.7]"
    exact = claim(deterministic=True, ci=None, mean=1.1, effects=[1.1], n=1)
    assert interval_of(exact) is None and effect_text(exact) == "1.1"


@pytest.mark.parametrize("fields, reason", [
    ({}, "whole interval [1.05, 1.55] above 1"),
    (dict(ci=[0.2, 0.8], verdict="did not hold"), "whole interval [0.2, 0.8] below 1: the wrong side"),
    (dict(ci=[0.8, 1.2], verdict="inconclusive"), "interval [0.8, 1.2] straddles 1; more seeds may decide it"),
    (dict(direction="<", threshold=0.05, ci=[0.01, 0.02]), "whole interval [0.01, 0.02] below 0.05"),
    (dict(deterministic=True, ci=None, mean=1.1), "exact value 1.1, above 1"),
    (dict(deterministic=True, ci=None, mean=0.9, verdict="did not hold"), "exact value 0.9, below 1: the wrong side"),
    (dict(ci=None, n=1, effects=[1.2], verdict="inconclusive", note="one seed: no interval (run with --seeds 2 or more)"),
     "one seed: no interval (run with --seeds 2 or more)"),
])
def test_a_claim_without_a_reason_gets_one_read_from_its_numbers(fields, reason):
    assert derived_reason(claim(**fields)) == reason
    assert reason_of(claim(**fields)) == (reason, True)


def test_a_given_reason_is_shown_as_given_on_one_line():
    assert reason_of(claim(reason="SGD's best lr is at the top of its\n grid")) == (
        "SGD's best lr is at the top of its grid", False)


def test_the_tuning_table_shows_each_grid_its_best_and_the_edge():
    table = tuning_table({"SGD": {"grid": {"lr": [0.03, 0.1, 0.3]}, "best": {"lr": 0.3}, "at_edge": True},
                          "heavy ball": {"grid": {"lr": [0.01, 0.1], "momentum": [0.5, 0.9]},
                                         "best": {"lr": 0.1, "momentum": 0.5}, "at_edge": False}})
    assert "<td>SGD</td><td>lr ∈ {0.03, 0.1, 0.3}</td><td>lr 0.3</td><td class=\"at-edge\">⚠ at grid edge</td>" in table
    assert "lr ∈ {0.01, 0.1}; momentum ∈ {0.5, 0.9}" in table and "<td>lr 0.1, momentum 0.5</td><td>inside the grid" in table
    assert tuning_table(None) == "" and tuning_table({}) == ""


# --- a small real report --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab_report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report"
    assert main(["lab", "--only", "landscapes,convex-hull,momentum-forms", "--seeds", "2", "--workers", "1",
                 "--no-progress", "--out", str(out)]) == 0
    return out


def test_rebuilding_from_results_json_gives_the_same_page(lab_report, tmp_path):
    written = (lab_report / "index.html").read_text()
    assert rebuild(lab_report) == lab_report / "index.html"
    assert (lab_report / "index.html").read_text() == written
    # a copy without plotly.js gets it back, and the marker lists it (the lab still owns the folder)
    copy_folder = tmp_path / "copy"
    copy_folder.mkdir()
    for path in lab_report.iterdir():
        if path.name != report_module.PLOTLY_JS:
            (copy_folder / path.name).write_bytes(path.read_bytes())
    marker = json.loads((copy_folder / ".descend-report").read_text())
    marker["files"].remove(report_module.PLOTLY_JS)
    (copy_folder / ".descend-report").write_text(json.dumps(marker))
    assert report_module.main([str(copy_folder)]) == 0
    assert (copy_folder / report_module.PLOTLY_JS).exists()
    assert report_module.PLOTLY_JS in json.loads((copy_folder / ".descend-report").read_text())["files"]


def test_rebuilding_refuses_a_folder_without_results(tmp_path, capsys):
    assert report_module.main([str(tmp_path)]) == 2
    assert "results.json: cannot read it" in capsys.readouterr().err
    (tmp_path / "results.json").write_text("{}")
    assert report_module.main([str(tmp_path)]) == 2
    assert "not a descend lab results.json" in capsys.readouterr().err
    assert not (tmp_path / "index.html").exists()


def test_the_page_shows_the_new_fields_and_survives_unknown_ones(lab_report, tmp_path):
    results = json.loads((lab_report / "results.json").read_text())
    richer = copy.deepcopy(results)
    claims = richer["claims"]
    first, second = list(claims)[:2]
    claims[first].update(kind="experiment", verdict="inconclusive (grid edge)", quote="verbatim",
                         reason="SGD's best learning rate is the top of its grid",
                         tuning={"SGD": {"grid": {"lr": [0.1, 0.3]}, "best": {"lr": 0.3}, "at_edge": True}})
    claims[second].update(kind="worked check", verdict="a verdict from the future", quote="paraphrase",
                          interval=[1.0, 2.0], interval_method="bootstrap, 95%", beyond_course=True,
                          figures=["landscapes-saddle.png", "landscapes-saddle-interactive.plotly.json"])
    richer["counts"] = {"experiment": {"held": 1}, "worked check": {"held": 1}}  # a shape the page must not need
    for path in lab_report.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / "results.json").write_text(json.dumps(richer))
    page = rebuild(tmp_path).read_text()
    assert 'data-verdict="inconclusive (grid edge)"' in page and "⚠ at grid edge" in page
    assert "SGD&#x27;s best learning rate is the top of its grid" in page
    assert 'class="badge other">a verdict from the future' in page  # shown, in grey, never a crash
    assert 'data-kind="worked check"' in page and "bootstrap, 95%" in page
    assert f"“{html.escape(claims[first]['statement'])}”" in page  # verbatim: in quotation marks
    assert "paraphrase</span>" in page and "beyond the course</span>" in page
    # a claim links to the figures that show it, and they are there to link to
    for name in ("landscapes-saddle.png", "landscapes-saddle-interactive.plotly.json"):
        anchor = report_module.figure_anchor(name)
        assert f'href="#{anchor}"' in page and page.count(f'id="{anchor}"') == 1


def test_every_landscape_figure_has_a_playground_link_the_page_accepts(lab_report):
    results = json.loads((lab_report / "results.json").read_text())
    page = (lab_report / "index.html").read_text()
    trajectories = [f for e in results["experiments"].values() for f in e["figures"]
                    if f["kind"] == "interactive" and any(t.get("type") == "contour" for t in
                                                          json.loads((lab_report / f["file"]).read_text())["data"])]
    assert len(trajectories) == 7  # zigzag, 4 landscapes, momentum on Rosenbrock, the convex hull
    for figure in trajectories:
        spec = json.loads((lab_report / figure["file"]).read_text())
        setup = spec["layout"]["meta"]["playground"]["setup"]
        assert f'data-setup="{encode_setup(setup)}"' in page, figure["file"]
        answer = api.run_setup({**setup, "landscape_params": setup["params"], "surface": False})
        assert len(answer["runs"]) == len(setup["runs"])
        stochastic = setup["landscape"] == "convex-hull"
        assert retraces(spec, answer, stochastic) == (1 if stochastic else len(setup["runs"])), figure["file"]


def retraces(spec: dict, answer: dict, stochastic: bool) -> int:
    """How many of the figure's paths the playground's runs retrace: at the positions of the step slider in the
    first third of the run, the figure's dot (θ_k, 5 digits) is the playground's θ_k. (Later, runs near the edge
    of stability are chaotic: the last bits of rounding, which differ between the lab's batched runs and one
    run, grow until the paths differ in detail.) Paths the lab stopped early are compared up to there."""
    slider = spec["layout"]["sliders"][0]["steps"]
    dots, horizon = len(answer["runs"]), int(slider[-1]["label"]) / 3
    retraced = 0
    for run_index, run in enumerate(answer["runs"]):
        if stochastic and run_index > 0:
            continue  # SGD's own samples differ from the lab's; gradient descent (run 0) must match
        positions = [(int(step["label"]), step["args"][0]["x"][dots + run_index][0],
                      step["args"][0]["y"][dots + run_index][0]) for step in slider]
        last = positions[-1]
        for k, x, y in positions:
            if k > horizon or ((x, y) == (last[1], last[2]) and k != last[0]):
                break  # past the first third, or the figure's path ended here (arrived, or left the view)
            expected = np.array(run["points"][k])
            assert np.allclose([x, y], expected, rtol=2e-4, atol=2e-4), (run["optimizer"], k, (x, y), expected)
        retraced += 1
    return retraced


def test_setup_links_round_trip_and_refuse_what_is_not_a_setup():
    setup = {"landscape": "quadratic", "params": {"condition": 20.0, "scale": 4.0}, "start": [-5.0, -2.0],
             "steps": 100, "seed": 0, "runs": [{"optimizer": "SGD", "hyperparameters": {"lr": 1e-6, "β": 0.5}}]}
    text = encode_setup(setup)
    assert set(text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert decode_setup(text) == setup
    url = setup_url(setup)
    assert url.startswith(ADDRESS + "#setup=") and setup_from_url(url) == setup
    assert setup_from_url(url + "&other=1") == setup
    import base64

    for bad in ("", "!!!", base64.urlsafe_b64encode(b"[1, 2]").decode(), "eyJsYW5kc2NhcGUiOiJxdWFkcmF0aWMifQ"):
        with pytest.raises(ValueError):
            decode_setup(bad)
    with pytest.raises(ValueError, match="no field"):
        encode_setup({**setup, "colour": "red"})
    with pytest.raises(ValueError):
        encode_setup({**setup, "steps": math.nan})


def test_a_category_keeps_its_colour_across_panels_and_never_wears_an_optimizers():
    from descend.lab import style

    # the learning-rate figure's two panels label the same three rates differently
    for category in ("too low", "right", "too high"):
        assert style.color(f"{category} (α = 0.01)") == style.color(f"{category} (1e-4): test accuracy 0.09")
    assert len({style.color(c) for c in ("too low", "right", "too high")}) == 3
    assert style.color("Adam (lr 0.1)") == style.KNOWN["Adam"] and style.color("heavy ball (lr 0.3)") == \
        style.KNOWN["SGD+momentum"]
    assert not set(style.FALLBACK) & set(style.KNOWN.values())
    assert set(style.SEMANTIC.values()) <= set(style.FALLBACK)
    labels = ["β = 0.0", "β = 0.5", "β = 0.9", "EMA form", "velocity form", "Adam", "SGD (lr 0.1)"]
    chosen = style.distinct(labels)
    by_key = {}
    for label, colour in chosen.items():
        by_key.setdefault(colour, set()).add(style.key(label))
    assert all(len(keys) == 1 for keys in by_key.values()), chosen  # no colour means two things
    assert chosen["Adam"] == style.KNOWN["Adam"] and chosen["β = 0.0"] == style.color("β = 0.0")
