"""Lion, NAdam and RAdam: each against its paper, NAdam and RAdam against torch.optim, on every path."""
from __future__ import annotations

import copy
import inspect

import pytest
import torch

import descend
from descend.plan.plan import compile
from conftest import make_params, nonconvex_loss, run_optimizer
import reference as ref

STEPS = 40
# "foreach": the multi-tensor reference chain (fused=False spelled out; foreach=True alone means the same, as in torch)
PATHS = {"fused": dict(), "reference": dict(fused=False), "foreach": dict(fused=False, foreach=True)}

PAPER_CASES = {
    # name: (descend class, descend kwargs, reference step, reference hyperparameters)
    "lion": (descend.Lion, dict(lr=0.01), ref.lion_step, dict(lr=0.01)),
    "lion-decay-betas": (
        descend.Lion, dict(lr=0.02, betas=(0.8, 0.95), weight_decay=0.3), ref.lion_step,
        dict(lr=0.02, beta1=0.8, beta2=0.95, weight_decay=0.3)),
    "nadam": (descend.NAdam, dict(lr=0.01), ref.nadam_step, dict(lr=0.01)),
    "nadam-l2-momentum-decay": (
        descend.NAdam, dict(lr=0.01, weight_decay=0.1, momentum_decay=0.05), ref.nadam_step,
        dict(lr=0.01, l2=0.1, momentum_decay=0.05)),
    "nadamw": (
        descend.NAdam, dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True, betas=(0.8, 0.99)),
        ref.nadam_step, dict(lr=0.01, decoupled=0.1, beta1=0.8, beta2=0.99)),
    "radam": (descend.RAdam, dict(lr=0.01), ref.radam_step, dict(lr=0.01)),
    "radam-l2-beta2": (
        descend.RAdam, dict(lr=0.01, weight_decay=0.1, betas=(0.8, 0.9)), ref.radam_step,
        dict(lr=0.01, l2=0.1, beta1=0.8, beta2=0.9)),
    "radam-decoupled": (
        descend.RAdam, dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True), ref.radam_step,
        dict(lr=0.01, decoupled=0.1)),
}


@pytest.fixture
def float64_scalars():
    """torch.optim.NAdam (and descend, which keeps state as torch does) holds the product of momentum
    coefficients Π_t in the default dtype; the paper's Π_t is exact, so compare with a float64 default."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", PAPER_CASES)
def test_matches_the_paper(name, path, float64_scalars):
    cls, kwargs, step_fn, hyper = PAPER_CASES[name]
    start = make_params(torch.float64)
    got, _ = run_optimizer(cls, start, STEPS, **kwargs, **PATHS[path])
    want = ref.run_reference(step_fn, start, nonconvex_loss, STEPS, **hyper)
    for g, w, s in zip(got, want, start):
        assert not torch.equal(w, s), "the reference did not move: the comparison would prove nothing"
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_radam_takes_momentum_steps_until_the_variance_is_tractable_then_rectified_ones():
    # β₂ = 0.999: ρ_t ≤ 5 for t ≤ 5, so those steps are θ ← θ − α·m̂; the 6th is rectified
    param = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    optimizer = descend.RAdam([param], lr=0.1)
    for t in range(1, 7):
        before = param.detach().clone()
        param.grad = torch.tensor([0.5, 0.25], dtype=torch.float64)  # constant: m̂ = g exactly
        optimizer.step()
        change = param.detach() - before
        if t <= 5:
            torch.testing.assert_close(change, -0.1 * param.grad, rtol=1e-14, atol=0)
        else:
            assert (change.abs() < 0.1 * param.grad.abs() / 2).all()  # r_t ≈ 0.0 at first: a small step


def test_lion_moves_every_coordinate_by_exactly_the_learning_rate():
    # θ on a grid of quarters and α a power of two: θ ± α is exact, so |Δθ| = α must hold bit for bit
    param = torch.nn.Parameter(torch.randint(-40, 40, (1000,)).float() / 4)
    param.grad = torch.randn(1000)
    before = param.detach().clone()
    descend.Lion([param], lr=0.125).step()
    assert torch.equal((param.detach() - before).abs(), torch.full((1000,), 0.125))


# --- torch.optim.NAdam and torch.optim.RAdam ---------------------------------------------------

TORCH_CASES = {
    "nadam": (descend.NAdam, torch.optim.NAdam, dict(lr=0.01)),
    "nadam-l2": (descend.NAdam, torch.optim.NAdam, dict(lr=0.01, weight_decay=0.1)),
    "nadamw-momentum-decay-maximize": (
        descend.NAdam, torch.optim.NAdam,
        dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True, momentum_decay=0.02, maximize=True)),
    "nadam-betas-eps": (descend.NAdam, torch.optim.NAdam, dict(lr=0.02, betas=(0.7, 0.9), eps=1e-3)),
    "radam": (descend.RAdam, torch.optim.RAdam, dict(lr=0.01)),
    "radam-l2": (descend.RAdam, torch.optim.RAdam, dict(lr=0.01, weight_decay=0.1)),
    "radam-decoupled-maximize": (
        descend.RAdam, torch.optim.RAdam, dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
    "radam-betas-eps": (descend.RAdam, torch.optim.RAdam, dict(lr=0.02, betas=(0.7, 0.9), eps=1e-3)),
}


def _train(optimizer, params, steps, maximize=False):
    for _ in range(steps):
        optimizer.zero_grad()
        loss = nonconvex_loss(params)
        (-loss if maximize else loss).backward()  # maximize: the optimizer climbs, so the trajectory stays sane
        optimizer.step()


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", TORCH_CASES)
def test_matches_torch_optim(name, path):
    ours_cls, theirs_cls, kwargs = TORCH_CASES[name]
    start = make_params(torch.float64)
    ours = [p.clone().requires_grad_() for p in start]
    theirs = [p.clone().requires_grad_() for p in start]
    ours_optimizer, theirs_optimizer = ours_cls(ours, **kwargs, **PATHS[path]), theirs_cls(theirs, **kwargs)
    maximize = kwargs.get("maximize", False)
    _train(ours_optimizer, ours, STEPS, maximize)
    _train(theirs_optimizer, theirs, STEPS, maximize)
    for o, t, s in zip(ours, theirs, start):
        assert not torch.equal(t, s)
        torch.testing.assert_close(o, t, rtol=1e-12, atol=1e-12)
    for o, t in zip(ours, theirs):
        ours_state, theirs_state = ours_optimizer.state[o], theirs_optimizer.state[t]
        assert ours_state.keys() == theirs_state.keys()
        for key in theirs_state:
            assert ours_state[key].dtype == theirs_state[key].dtype, key
            torch.testing.assert_close(ours_state[key], theirs_state[key], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("ours_cls, theirs_cls", [(descend.NAdam, torch.optim.NAdam), (descend.RAdam, torch.optim.RAdam)])
def test_signature_follows_torch_optim(ours_cls, theirs_cls):
    ours, theirs = inspect.signature(ours_cls).parameters, inspect.signature(theirs_cls).parameters
    positional = [name for name, p in theirs.items() if p.kind == p.POSITIONAL_OR_KEYWORD]
    assert list(ours)[: len(positional)] == positional
    for name in positional[1:]:
        assert ours[name].default == theirs[name].default, name
    assert ours["maximize"].default is False and ours["foreach"].default is None


def test_lion_signature_follows_the_paper_and_lion_pytorch():
    parameters = inspect.signature(descend.Lion).parameters
    assert list(parameters)[:4] == ["params", "lr", "betas", "weight_decay"]
    assert [parameters[n].default for n in ("lr", "betas", "weight_decay")] == [1e-4, (0.9, 0.99), 0.0]


@pytest.mark.parametrize("ours_cls, theirs_cls", [(descend.NAdam, torch.optim.NAdam), (descend.RAdam, torch.optim.RAdam)])
def test_a_torch_checkpoint_resumes_in_descend(ours_cls, theirs_cls):
    start = make_params(torch.float64)
    theirs = [p.clone().requires_grad_() for p in start]
    theirs_optimizer = theirs_cls(theirs, lr=0.01, weight_decay=0.05)
    _train(theirs_optimizer, theirs, 10)
    ours = [p.detach().clone().requires_grad_() for p in theirs]
    ours_optimizer = ours_cls(ours, lr=0.01, weight_decay=0.05)
    ours_optimizer.load_state_dict(copy.deepcopy(theirs_optimizer.state_dict()))
    _train(theirs_optimizer, theirs, 10)
    _train(ours_optimizer, ours, 10)
    for o, t in zip(ours, theirs):
        torch.testing.assert_close(o, t, rtol=1e-12, atol=1e-12)


# --- checkpoints -------------------------------------------------------------------------------

RESUME_CASES = {
    "lion": (descend.Lion, dict(lr=0.01, weight_decay=0.1)),
    "nadam": (descend.NAdam, dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    "radam": (descend.RAdam, dict(lr=0.01, weight_decay=0.1)),
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", RESUME_CASES)
def test_state_dict_round_trip_resumes_bit_for_bit(name, path):
    cls, kwargs = RESUME_CASES[name]
    start = make_params(torch.float32)
    straight = [p.clone().requires_grad_() for p in start]
    straight_optimizer = cls(straight, **kwargs, **PATHS[path])
    _train(straight_optimizer, straight, 16)

    first = [p.clone().requires_grad_() for p in start]
    first_optimizer = cls(first, **kwargs, **PATHS[path])
    _train(first_optimizer, first, 8)
    checkpoint = copy.deepcopy(first_optimizer.state_dict())
    resumed = [p.detach().clone().requires_grad_() for p in first]
    resumed_optimizer = cls(resumed, **kwargs, **PATHS[path])
    resumed_optimizer.load_state_dict(checkpoint)
    assert resumed_optimizer.state_dict()["state"].keys() == checkpoint["state"].keys()
    _train(resumed_optimizer, resumed, 8)
    for r, s in zip(resumed, straight):
        assert torch.equal(r, s)
    for r, s in zip(resumed, straight):
        for key, value in straight_optimizer.state[s].items():
            assert torch.equal(resumed_optimizer.state[r][key], value), key


def test_state_keys_are_torchs():
    _, optimizer = run_optimizer(descend.NAdam, make_params(), 2)
    assert set(optimizer.state[optimizer.param_groups[0]["params"][0]]) == {"step", "mu_product", "exp_avg", "exp_avg_sq"}
    _, optimizer = run_optimizer(descend.RAdam, make_params(), 2)
    assert set(optimizer.state[optimizer.param_groups[0]["params"][0]]) == {"step", "exp_avg", "exp_avg_sq"}
    _, optimizer = run_optimizer(descend.Lion, make_params(), 2)
    assert set(optimizer.state[optimizer.param_groups[0]["params"][0]]) == {"exp_avg"}


# --- kernels and bad input ----------------------------------------------------------------------

KERNEL_CASES = [
    (descend.Lion, dict(weight_decay=0.1)), (descend.Lion, dict()),
    (descend.NAdam, dict()), (descend.NAdam, dict(weight_decay=0.1, decoupled_weight_decay=True)),
    (descend.RAdam, dict(weight_decay=0.1)), (descend.RAdam, dict(weight_decay=0.1, decoupled_weight_decay=True)),
]


@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("cls, kwargs", KERNEL_CASES)
def test_every_chain_traces_into_one_generated_kernel(cls, kwargs, maximize):
    optimizer = cls([torch.nn.Parameter(torch.zeros(3))], maximize=maximize, **kwargs)
    group = optimizer.param_groups[0]
    variant = compile(optimizer.chain(group), maximize)[0].variant(1)
    assert variant.pieces is not None, variant.reason
    assert len(variant.pieces) == 1 and len(variant.schedules[0].passes) == 1
    assert "int update_f32(" in optimizer.kernel_info()[0].c_source(torch.float32)


BAD = [
    (descend.Lion, dict(lr=-1e-4), "lr"),
    (descend.Lion, dict(betas=(0.9, 1.5)), r"betas\[1\]"),
    (descend.Lion, dict(betas=(-0.1, 0.99)), r"betas\[0\]"),
    (descend.Lion, dict(betas=0.9), "betas must be a pair"),
    (descend.Lion, dict(weight_decay=-0.1), "weight_decay"),
    (descend.NAdam, dict(lr=float("nan")), "lr"),
    (descend.NAdam, dict(betas=(1.0, 0.999)), r"betas\[0\]"),
    (descend.NAdam, dict(betas=(0.9, 1.0)), r"betas\[1\]"),
    (descend.NAdam, dict(eps=-1e-8), "eps"),
    (descend.NAdam, dict(weight_decay=-0.1), "weight_decay"),
    (descend.NAdam, dict(momentum_decay=-4e-3), "momentum_decay"),
    (descend.RAdam, dict(lr=-1.0), "lr"),
    (descend.RAdam, dict(betas=(0.9,)), "betas must be a pair"),
    (descend.RAdam, dict(betas=(0.9, -0.5)), r"betas\[1\]"),
    (descend.RAdam, dict(eps=float("inf")), "eps"),
    (descend.RAdam, dict(weight_decay=-0.1), "weight_decay"),
]


@pytest.mark.parametrize("cls, kwargs, message", BAD)
def test_bad_hyperparameters_raise_value_error(cls, kwargs, message):
    with pytest.raises(ValueError, match=f"{cls.__name__}: {message}"):
        cls([torch.nn.Parameter(torch.zeros(2))], **kwargs)


# --- non-finite gradients ----------------------------------------------------------------------------

NONFINITE_CASES = {"lion": (descend.Lion, dict(lr=0.01)), "nadam": (descend.NAdam, dict(lr=0.01)),
                   "radam": (descend.RAdam, dict(lr=0.01))}


def _poisoned(cls, kwargs, path, **policy):
    params = [p.clone().requires_grad_() for p in make_params(torch.float32)]
    optimizer = cls(params, **kwargs, **PATHS[path], **policy)
    _train(optimizer, params, 7)  # past RAdam's momentum-only steps
    optimizer.zero_grad()
    nonconvex_loss(params).backward()
    params[0].grad[0, 0] = float("nan")
    return params, optimizer


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", NONFINITE_CASES)
def test_a_nan_gradient_is_applied_then_raises_or_flows_through_as_in_torch(name, path):
    cls, kwargs = NONFINITE_CASES[name]
    runs = []
    for policy in ("raise", "ignore"):
        params, optimizer = _poisoned(cls, kwargs, path, nonfinite=policy)
        if policy == "raise":
            with pytest.raises(FloatingPointError):
                optimizer.step()
        else:
            optimizer.step()
        state = optimizer.state[params[0]]
        assert torch.isnan(state["exp_avg"][0, 0]) and torch.isfinite(state["exp_avg"].view(-1)[1:]).all()
        # NAdam, RAdam: θ becomes NaN; Lion: sign(NaN) = 0 (torch.sign), so θ only decays
        assert torch.isnan(params[0][0, 0]) != (cls is descend.Lion)
        runs.append([p.detach() for p in params] + [v for p in params for _, v in sorted(optimizer.state[p].items())])
    for raised, ignored in zip(*runs):  # the same step either way, as torch.optim would take it
        torch.testing.assert_close(raised, ignored, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", NONFINITE_CASES)
def test_a_nan_gradient_with_skip_leaves_parameters_and_state_untouched(name, path):
    cls, kwargs = NONFINITE_CASES[name]
    params, optimizer = _poisoned(cls, kwargs, path, nonfinite="skip")
    before = [p.detach().clone() for p in params], copy.deepcopy(optimizer.state_dict()["state"])
    optimizer.step()
    assert optimizer.skipped_steps == 1
    assert all(torch.equal(a, b) for a, b in zip(params, before[0]))
    after = optimizer.state_dict()["state"]
    assert all(torch.equal(after[i][key], value) for i, entries in before[1].items() for key, value in entries.items())
