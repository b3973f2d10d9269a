"""LAMB and LARS against optax's definitions (tests/reference.py), on every path, and the trust ratio's edges."""
from __future__ import annotations

import copy
import inspect

import pytest
import torch

import descend
from descend.backends import cpu, eager
from descend.steps import ScaleByTrustRatio
from conftest import make_params, nonconvex_loss, run_optimizer
import reference as ref

STEPS = 30
PATHS = {"c": dict(fused=True), "reference": dict(fused=False, foreach=False),
         "foreach": dict(fused=False, foreach=True)}

CASES = {
    # name: (descend class, descend kwargs, reference step, reference hyperparameters)
    "lamb": (descend.LAMB, dict(lr=0.01), ref.lamb_step, dict(lr=0.01)),
    "lamb-decay-betas-eps": (
        descend.LAMB, dict(lr=0.02, betas=(0.8, 0.95), eps=1e-3, weight_decay=0.1), ref.lamb_step,
        dict(lr=0.02, beta1=0.8, beta2=0.95, eps=1e-3, weight_decay=0.1)),
    "lars": (descend.LARS, dict(lr=5.0), ref.lars_step, dict(lr=5.0)),
    "lars-decay-eps-coefficient": (
        descend.LARS, dict(lr=1.0, momentum=0.8, weight_decay=0.05, trust_coefficient=0.01, eps=1e-3),
        ref.lars_step, dict(lr=1.0, momentum=0.8, weight_decay=0.05, trust_coefficient=0.01, eps=1e-3)),
    "lars-nesterov": (
        descend.LARS, dict(lr=2.0, weight_decay=0.01, nesterov=True), ref.lars_step,
        dict(lr=2.0, weight_decay=0.01, nesterov=True)),
    "lars-no-momentum": (descend.LARS, dict(lr=10.0, momentum=0.0), ref.lars_step, dict(lr=10.0, momentum=0.0)),
}


def _moved(got, want, start):
    for w, s in zip(want, start):
        assert (w - s).abs().max() > 1e-3 * s.abs().max(), "the reference hardly moved: the comparison would prove little"


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", CASES)
def test_float64_trajectory_equals_optax_definition(name, path):
    cls, kwargs, step_fn, hyper = CASES[name]
    start = make_params(torch.float64)
    got, optimizer = run_optimizer(cls, start, STEPS, **kwargs, **PATHS[path])
    want = ref.run_reference(step_fn, start, nonconvex_loss, STEPS, **hyper)
    _moved(got, want, start)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", CASES)
def test_float32_trajectory_equals_optax_definition_in_float32(name, path):
    cls, kwargs, step_fn, hyper = CASES[name]
    start = make_params(torch.float32)
    got, _ = run_optimizer(cls, start, STEPS, **kwargs, **PATHS[path])
    want = ref.run_reference(step_fn, start, nonconvex_loss, STEPS, **hyper)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", ["lamb-decay-betas-eps", "lars-nesterov"])
def test_maximize_climbs_the_reference_trajectory(name, path):
    cls, kwargs, step_fn, hyper = CASES[name]
    start = make_params(torch.float64)
    got, _ = run_optimizer(cls, start, STEPS, loss_fn=lambda p: -nonconvex_loss(p), maximize=True, **kwargs,
                           **PATHS[path])
    want = ref.run_reference(step_fn, start, nonconvex_loss, STEPS, **hyper)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls, kwargs", [(descend.LAMB, dict(weight_decay=0.1)), (descend.LARS, dict(lr=0.1))])
def test_the_generated_kernel_makes_two_passes_the_norms_then_the_update(cls, kwargs):
    param = torch.nn.Parameter(torch.randn(8, 5))
    param.grad = torch.randn(8, 5)
    optimizer = cls([param], **kwargs)
    info = optimizer.kernel_info()[0]
    assert info.path == "generated" and info.passes == 2, info
    assert "ScaleByTrustRatio" in info.steps
    calls = []
    real = cpu.update
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cpu, "update", lambda work: calls.append(work) or real(work))
        patch.setattr(eager, "update", lambda *a, **k: pytest.fail("the reference path ran"))
        optimizer.step()
    assert calls


# --- the trust ratio's edges ----------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("cls, kwargs, step_fn, hyper", [
    (descend.LAMB, dict(lr=0.1, weight_decay=0.1), ref.lamb_step, dict(lr=0.1, weight_decay=0.1)),
    (descend.LARS, dict(lr=0.1, weight_decay=0.1), ref.lars_step, dict(lr=0.1, weight_decay=0.1)),
])
def test_a_zero_parameter_or_a_zero_gradient_takes_a_trust_ratio_of_one(cls, kwargs, step_fn, hyper, path):
    """A bias that starts at 0 (‖θ‖ = 0) still moves: ``r = 1``, not ``0/‖u‖ = 0``; a tensor whose update is 0
    (‖u‖ = 0) gets ``r = 1`` rather than ``‖θ‖/0``."""
    zero_param = torch.zeros(4, dtype=torch.float64)
    params = [torch.nn.Parameter(zero_param.clone()), torch.nn.Parameter(torch.ones(3, dtype=torch.float64)),
              torch.nn.Parameter(torch.full((2, 2), 2.0, dtype=torch.float64))]
    grads = [torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=torch.float64), torch.zeros(3, dtype=torch.float64),
             torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)]
    if cls is descend.LARS:  # ‖g + λθ‖ = 0 for the second tensor too
        params[1].data.zero_()
    start = [p.detach().clone() for p in params]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    cls(params, **kwargs, **PATHS[path]).step()
    want = step_fn(start, grads, [{} for _ in start], 1, **hyper)
    assert not torch.equal(params[0].detach(), zero_param)
    for p, w in zip(params, want):
        assert torch.isfinite(p).all()
        torch.testing.assert_close(p.detach(), w, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("path", PATHS)
def test_a_nan_gradient_makes_only_its_own_tensor_nan_as_in_optax(path):
    """The trust ratio is per tensor: NaN in one gradient makes that tensor's ratio NaN (optax's ``where``
    does not catch it) and leaves the other tensors' steps as they would be."""
    start = make_params(torch.float64)
    params = [p.clone().requires_grad_() for p in start]
    nonconvex_loss(params).backward()
    grads = [p.grad.clone() for p in params]
    params[0].grad[1, 2] = grads[0][1, 2] = float("nan")
    descend.LAMB(params, lr=0.1, nonfinite="ignore", **PATHS[path]).step()
    want = ref.lamb_step(start, grads, [{} for _ in start], 1, lr=0.1)
    assert torch.isnan(params[0]).all()
    for p, w in zip(params, want):
        torch.testing.assert_close(p.detach(), w, rtol=1e-14, atol=1e-15, equal_nan=True)


def test_scale_by_trust_ratio_in_a_chain_of_ones_own():
    """optax's ``scale_by_trust_ratio`` alone, before plain SGD: ``θ ← θ − α‖θ‖·g/‖g‖``."""
    TrustSGD = descend.make_optimizer(
        "TrustSGD", lambda group: [ScaleByTrustRatio(), descend.steps.ScaleByLearningRate(group["lr"])],
        defaults=dict(lr=0.1))
    for path in PATHS.values():
        param = torch.nn.Parameter(torch.tensor([3.0, 4.0], dtype=torch.float64))
        param.grad = torch.tensor([0.0, -2.0], dtype=torch.float64)
        TrustSGD([param], **path).step()
        torch.testing.assert_close(param.detach(), torch.tensor([3.0, 4.5], dtype=torch.float64), rtol=0, atol=1e-15)


# --- the torch.optim contract ----------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", ["lamb-decay-betas-eps", "lars-nesterov"])
def test_state_dict_round_trip_resumes_bit_for_bit(name, path):
    cls, kwargs, _, _ = CASES[name]
    start = make_params(torch.float32)
    straight, straight_optimizer = run_optimizer(cls, start, 12, **kwargs, **PATHS[path])
    first, first_optimizer = run_optimizer(cls, start, 6, **kwargs, **PATHS[path])
    checkpoint = copy.deepcopy(first_optimizer.state_dict())
    resumed = [p.clone().requires_grad_() for p in first]
    resumed_optimizer = cls(resumed, **kwargs, **PATHS[path])
    resumed_optimizer.load_state_dict(checkpoint)
    for _ in range(6):
        resumed_optimizer.zero_grad()
        nonconvex_loss(resumed).backward()
        resumed_optimizer.step()
    for r, s in zip(resumed, straight):
        assert torch.equal(r, s)


def test_state_keys():
    _, lamb = run_optimizer(descend.LAMB, make_params(), 2)
    assert set(lamb.state[lamb.param_groups[0]["params"][0]]) == {"step", "exp_avg", "exp_avg_sq"}
    _, lars = run_optimizer(descend.LARS, make_params(), 2, lr=0.1)
    assert set(lars.state[lars.param_groups[0]["params"][0]]) == {"momentum_buffer"}
    _, plain = run_optimizer(descend.LARS, make_params(), 2, lr=0.1, momentum=0.0)
    assert not plain.state


def test_signatures_are_the_issues():
    lamb = inspect.signature(descend.LAMB).parameters
    assert list(lamb)[:5] == ["params", "lr", "betas", "eps", "weight_decay"]
    assert [lamb[n].default for n in ("lr", "betas", "eps", "weight_decay")] == [1e-3, (0.9, 0.999), 1e-6, 0.0]
    lars = inspect.signature(descend.LARS).parameters
    assert list(lars)[:7] == ["params", "lr", "momentum", "weight_decay", "trust_coefficient", "eps", "nesterov"]
    assert lars["lr"].default is inspect.Parameter.empty
    assert [lars[n].default for n in ("momentum", "weight_decay", "trust_coefficient", "eps", "nesterov")] == \
        [0.9, 0.0, 1e-3, 0.0, False]
    for parameters in (lamb, lars):
        for name in ("maximize", "nonfinite", "fused", "foreach", "state_dtype", "max_grad_norm"):
            assert parameters[name].kind is inspect.Parameter.KEYWORD_ONLY, name


BAD = [
    (descend.LAMB, dict(lr=-1e-3), "lr"),
    (descend.LAMB, dict(betas=(1.0, 0.999)), r"betas\[0\]"),
    (descend.LAMB, dict(betas=(0.9, -0.1)), r"betas\[1\]"),
    (descend.LAMB, dict(betas=0.9), "betas must be a pair"),
    (descend.LAMB, dict(eps=-1e-6), "eps"),
    (descend.LAMB, dict(weight_decay=float("nan")), "weight_decay"),
    (descend.LARS, dict(lr=-0.1), "lr"),
    (descend.LARS, dict(lr=0.1, momentum=-0.9), "momentum"),
    (descend.LARS, dict(lr=0.1, weight_decay=-1.0), "weight_decay"),
    (descend.LARS, dict(lr=0.1, trust_coefficient=-1e-3), "trust_coefficient"),
    (descend.LARS, dict(lr=0.1, eps=-1.0), "eps"),
    (descend.LARS, dict(lr=0.1, momentum=0.0, nesterov=True), "nesterov=True needs momentum > 0"),
]


@pytest.mark.parametrize("cls, kwargs, message", BAD)
def test_bad_hyperparameters_raise_value_error(cls, kwargs, message):
    with pytest.raises(ValueError, match=f"{cls.__name__}: {message}"):
        cls([torch.nn.Parameter(torch.zeros(2))], **kwargs)


def test_lars_needs_a_learning_rate():
    with pytest.raises(TypeError):
        descend.LARS([torch.nn.Parameter(torch.zeros(2))])


# --- the same bits for any number of threads --------------------------------------------------------

THREAD_SHAPES = [(600, 700), (40000,), (40, 1030), (7, 3), (64, 16, 3, 3)] + [(130, 257)] * 9


def run_with_threads(cls, kwargs, threads):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        generator = torch.Generator().manual_seed(0)
        params = [torch.randn(shape, generator=generator).requires_grad_() for shape in THREAD_SHAPES]
        optimizer = cls(params, fused=True, **kwargs)
        for _ in range(3):
            for p in params:
                p.grad = torch.randn(p.shape, generator=generator)
            optimizer.step()
        return [p.detach().clone() for p in params] + [optimizer.last_grad_norm]
    finally:
        torch.set_num_threads(previous)


@pytest.mark.skipif(not cpu.available(), reason="no C compiler: no generated kernels")
@pytest.mark.parametrize("cls, kwargs", [(descend.LAMB, dict(weight_decay=0.01, max_grad_norm=100.0)),
                                         (descend.LARS, dict(lr=1.0, weight_decay=0.01))])
def test_the_kernels_give_the_same_bits_for_any_thread_count(cls, kwargs):
    """The two-pass kernel takes small tensors one per thread and large ones with every thread (which tensors
    are small depends on the thread count); the norms are summed in the same order either way."""
    one = run_with_threads(cls, kwargs, 1)
    for threads in (2, 3, 8):
        got = run_with_threads(cls, kwargs, threads)
        assert all(a is b or torch.equal(a, b) for a, b in zip(one, got)), f"{threads} threads"


# --- what the two passes read -------------------------------------------------------------------------


def update_passes(cls, kwargs, **options):
    param = torch.nn.Parameter(torch.randn(30, 20))
    param.grad = torch.randn(30, 20)
    info = cls([param], **kwargs, **options).kernel_info()[0]
    passes = info.c_source().split("FOR_EACH_SLICE")  # the update pass has no reduction: a slice pass
    assert len(passes) == 2
    return passes


def test_lamb_writes_its_moments_in_the_norms_pass_and_its_update_pass_reads_no_gradient():
    """float32 state is stored exactly as computed, so the first pass writes ``exp_avg`` and ``exp_avg_sq``
    and the second reads them back instead of the gradient: 28 bytes read per parameter instead of 32."""
    first, update = update_passes(descend.LAMB, dict(weight_decay=0.1))
    assert "S_exp_avg[j] = " in first and "S_exp_avg_sq[j] = " in first
    assert "G[j]" not in update and "S_exp_avg[j] = " not in update and "P[j] = " in update


def test_state_rounded_when_stored_is_written_in_the_last_pass_only():
    """bfloat16 state rounds (stochastically) when stored: a later pass reading it back would see other
    numbers than the unrounded ones the formulas assign, so the update pass recomputes from the gradient."""
    first, update = update_passes(descend.LAMB, dict(weight_decay=0.1), state_dtype=torch.bfloat16)
    assert "S_exp_avg[j] = " not in first and "G[j]" in update and "S_exp_avg[j] = " in update
    start = make_params(torch.float32)
    fused, _ = run_optimizer(descend.LAMB, start, 10, state_dtype=torch.bfloat16, fused=True)
    reference, _ = run_optimizer(descend.LAMB, start, 10, state_dtype=torch.bfloat16, fused=False)
    for f, r in zip(fused, reference):
        torch.testing.assert_close(f, r, rtol=1e-5, atol=1e-6)


def test_lars_keeps_its_momentum_for_the_update_pass():
    """LARS's buffer takes the trust ratio, so only the last pass can write it."""
    first, update = update_passes(descend.LARS, dict(lr=0.1, weight_decay=0.1))
    assert "S_momentum_buffer[j]" not in first and "S_momentum_buffer[j] = " in update and "G[j]" in update
