"""Properties the papers state, checked over many random cases with hypothesis."""
from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import descend

FAST = settings(max_examples=60, deadline=None)

nonzero = st.floats(1e-3, 1e3).flatmap(lambda x: st.sampled_from([x, -x]))
gradient_sequences = st.lists(st.lists(nonzero, min_size=3, max_size=3), min_size=1, max_size=25)
beta_pairs = st.tuples(st.floats(0.0, 0.99), st.floats(0.5, 0.9999))


def adam_updates(gradients, **kwargs):
    """The changes Δθ Adam makes when fed this gradient sequence (float64)."""
    param = torch.nn.Parameter(torch.zeros(len(gradients[0]), dtype=torch.float64))
    optimizer = descend.Adam([param], **kwargs)
    updates = []
    for g in gradients:
        before = param.detach().clone()
        param.grad = torch.tensor(g, dtype=torch.float64)
        optimizer.step()
        updates.append(param.detach() - before)
    return updates


@FAST
@given(gradient_sequences, st.floats(1e-2, 1e2), beta_pairs)
def test_adam_update_is_invariant_to_rescaling_the_gradient(gradients, c, betas):
    plain = adam_updates(gradients, lr=0.1, betas=betas, eps=0.0)
    scaled = adam_updates([[c * x for x in g] for g in gradients], lr=0.1, betas=betas, eps=0.0)
    for a, b in zip(plain, scaled):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def adam_step_bound(t, beta1, beta2):
    """Cauchy–Schwarz bound B_t on |m̂_t|/√v̂_t: m̂ = Σwᵢgᵢ, v̂ = Σuᵢgᵢ² ⇒ |m̂|/√v̂ ≤ √(Σwᵢ²/uᵢ)."""
    ages = range(t)
    weights = [(1 - beta1) * beta1**k / (1 - beta1**t) for k in ages]
    second = [(1 - beta2) * beta2**k / (1 - beta2**t) for k in ages]
    return math.sqrt(sum(w * w / u for w, u in zip(weights, second)))


@FAST
@given(gradient_sequences, beta_pairs)
def test_adam_step_is_bounded_by_lr_times_the_exact_bound(gradients, betas):
    """Kingma & Ba §2.1: |Δ| ≲ α.  Exactly: |Δ_t| ≤ α·B_t, with B_1 = 1 and B_t ≈ 1 when (1−β₁) ≤ √(1−β₂)."""
    beta1, beta2 = betas
    lr = 0.01
    for t, update in enumerate(adam_updates(gradients, lr=lr, betas=betas, eps=0.0), start=1):
        bound = adam_step_bound(t, beta1, beta2)
        assert update.abs().max().item() <= lr * bound * (1 + 1e-9)
    assert adam_step_bound(1, beta1, beta2) == 1.0
    if 1 - beta1 <= math.sqrt(1 - beta2) and beta1**2 < beta2:
        limit = (1 - beta1) / math.sqrt((1 - beta2) * (1 - beta1**2 / beta2))
        assert limit <= 1 / math.sqrt(1 - beta1**2 / beta2)


@FAST
@given(nonzero, st.integers(1, 30), beta_pairs)
def test_adam_step_is_exactly_lr_for_a_constant_gradient(g, steps, betas):
    """With bias correction, m̂ = g and v̂ = g² for a constant gradient, so every step is exactly α."""
    for update in adam_updates([[g, g, g]] * steps, lr=0.01, betas=betas, eps=0.0):
        torch.testing.assert_close(update.abs(), torch.full((3,), 0.01, dtype=torch.float64), rtol=1e-12, atol=0)


@FAST
@given(st.integers(1, 64), st.integers(1, 64), st.lists(st.integers(1, 3), max_size=2))
def test_adafactor_state_of_an_n_by_m_matrix_has_n_plus_m_floats(n, m, leading):
    param = torch.nn.Parameter(torch.randn(*leading, n, m))
    optimizer = descend.Adafactor([param])
    param.grad = torch.randn_like(param)
    optimizer.step()
    floats = sum(v.numel() for k, v in optimizer.state[param].items() if k != "step")
    assert floats == math.prod(leading) * (n + m)


@FAST
@given(st.integers(0, 5000), st.integers(0, 100), st.integers(1, 5000))
def test_warmup_cosine_factor_stays_in_range_and_warms_up_linearly(step, warmup, total):
    warmup = min(warmup, total)
    factor = descend.optimizers.schedules.warmup_cosine_factor(step, warmup, total, min_factor=0.1)
    assert 0.0 < factor <= 1.0 + 1e-12
    if step < warmup:
        assert math.isclose(factor, (step + 1) / warmup)
    elif step >= total:
        assert math.isclose(factor, 0.1)
