"""The lab's state-precision and schedule-free experiments: their claims registered before anything runs (the 8-bit
arm's only where descend declares state_dtype="8bit"), a tiny run of each that measures every claim and draws it, and
verdicts that can come out against the claims."""
from __future__ import annotations

import importlib

import pytest
import torch

from descend.lab import CLAIMS, EXPERIMENTS, Context, verdicts
from descend.lab.experiments import schedule_free, state_precision
from descend.plan import state as codecs


def test_each_low_precision_arm_has_its_claims_and_float32_is_the_reference():
    assert state_precision.STATE_DTYPES[:2] == (torch.float32, torch.bfloat16)
    assert ("8bit" in state_precision.STATE_DTYPES) == ("8bit" in codecs.STATE_DTYPES)
    expected = {f"{state_precision.SLUGS[d]}-state-{what}" for d in state_precision.STATE_DTYPES[1:]
                for what in ("test-loss-matches-float32", "test-accuracy-matches-float32", "bytes")}
    assert {c.id for c in state_precision.CLAIMS} == expected and expected <= set(CLAIMS)
    for claim in state_precision.CLAIMS:
        assert claim.beyond_course and "beyond the course" in claim.source
        if claim.kind == "experiment":
            assert claim.direction == "between" and claim.threshold[0] == -claim.threshold[1] > -1.01
            assert set(claim.compares) == {state_precision.label(torch.float32), claim.compares[0]}
        else:
            assert claim.deterministic and not claim.compares
    assert EXPERIMENTS["state-precision"] is state_precision and EXPERIMENTS["schedule-free"] is schedule_free


def test_the_8bit_arm_and_its_claims_follow_the_codec_module_s_declaration(monkeypatch):
    try:
        monkeypatch.setattr(codecs, "STATE_DTYPES", tuple(d for d in codecs.STATE_DTYPES if d != "8bit") + ("8bit",))
        importlib.reload(state_precision)
        assert state_precision.STATE_DTYPES == (torch.float32, torch.bfloat16, "8bit")
        assert {c.id for c in state_precision.CLAIMS if c.id.startswith("8bit-")} == {
            "8bit-state-test-loss-matches-float32", "8bit-state-test-accuracy-matches-float32", "8bit-state-bytes"}
        monkeypatch.setattr(codecs, "STATE_DTYPES", tuple(d for d in codecs.STATE_DTYPES if d != "8bit"))
        importlib.reload(state_precision)
        assert state_precision.STATE_DTYPES == (torch.float32, torch.bfloat16)
        assert not any(c.id.startswith("8bit-") for c in state_precision.CLAIMS)
    finally:
        monkeypatch.undo()
        importlib.reload(state_precision)


def test_schedule_free_claim_is_a_non_inferiority_margin_against_both_tuned_records():
    (claim,) = schedule_free.CLAIMS
    assert claim.direction == "<" and claim.threshold == schedule_free.MARGIN > 0 and claim.beyond_course
    assert "Defazio" in claim.source and set(claim.compares) == {schedule_free.COSINE, schedule_free.FREE}


@pytest.mark.parametrize("module", [state_precision, schedule_free])
def test_a_tiny_run_tunes_measures_every_claim_and_draws_it(tmp_path, monkeypatch, module):
    monkeypatch.setattr(module, "STEPS", {"quick": 6, "full": 6})
    monkeypatch.setattr(module, "LR_GRID", (1e-3, 3e-3))
    ids = tuple(c.id for c in module.CLAIMS)
    tuned = module.tune(Context(seed=1_000_000, progress=False, name=module.NAME, figures_wanted=False,
                                claim_ids=ids))
    compared = {label for c in module.CLAIMS for label in c.compares}
    assert set(tuned) == compared and all(record["best"]["lr"] in record["grid"]["lr"] for record in tuned.values())
    context = Context(seed=0, progress=False, name=module.NAME, figure_dir=tmp_path, tuned=tuned, claim_ids=ids)
    result = module.run(context)
    assert set(result.effects) == set(ids) and all(isinstance(v, float) for v in result.effects.values())
    assert context.figures and all((tmp_path / f).stat().st_size > 1000 for f in context.figures)
    assert {c for f in context.figures for c in context.figure_claims[f]} == set(ids) and result.summary


def test_state_bytes_are_read_from_the_state_tensors():
    model = torch.nn.Linear(784, 128)
    import descend

    sizes = {}
    for dtype in (torch.float32, torch.bfloat16):
        optimizer = descend.AdamW(model.parameters(), state_dtype=dtype)
        model(torch.randn(4, 784)).sum().backward()
        optimizer.step()
        sizes[dtype] = state_precision.state_bytes(optimizer)
    parameters = 784 * 128 + 128
    assert 8 * parameters <= sizes[torch.float32] < 8 * parameters + 64  # two moments, plus the step counters
    assert 0.49 < sizes[torch.bfloat16] / sizes[torch.float32] < 0.51


def arms(loss: float, accuracy: float, state_bytes: int) -> dict:
    return {"test_loss": loss, "test_accuracy": accuracy, "state_bytes": state_bytes}


def test_the_verdicts_can_go_against_the_claims():
    low = state_precision.STATE_DTYPES[1]
    slug = state_precision.SLUGS[low]
    by_id = {c.id: c for c in state_precision.CLAIMS}
    reference = state_precision.label(torch.float32)

    def judged(numbers_per_seed):
        effects = [state_precision.effects(numbers) for numbers in numbers_per_seed]
        return {claim_id: verdicts.aggregate(by_id[claim_id], [e[claim_id] for e in effects])["verdict"]
                for claim_id in by_id if claim_id.startswith(slug)}

    def seeds(loss, accuracy, state_bytes):
        return [{reference: arms(0.30, 0.90, 800), **{state_precision.label(d): arms(loss + 0.001 * s, accuracy,
                                                                                      state_bytes)
                                                      for d in state_precision.STATE_DTYPES[1:]}} for s in range(5)]

    assert set(judged(seeds(0.30, 0.90, 400)).values()) == {"held"}
    worse = judged(seeds(0.36, 0.85, 800))  # a worse model, and state that kept every float32 byte
    assert set(worse.values()) == {"did not hold"}
    (claim,) = schedule_free.CLAIMS
    assert verdicts.aggregate(claim, [0.05, 0.06, 0.04, 0.055])["verdict"] == "did not hold"
    assert verdicts.aggregate(claim, [-0.01, 0.0, -0.005, 0.004])["verdict"] == "held"
