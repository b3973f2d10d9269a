"""Adamax, ASGD, Rprop and SparseAdam: torch.optim's numbers on every path, their textbook definitions, and
what is particular to each (Rprop's sign flips and etas near 1, ASGD's two averaging branches and its float32
step sizes, SparseAdam's rows).

Every path is checked against torch.optim's default (one-tensor) path over 40 steps of the shared nonconvex
problem: the reference chain one tensor at a time, on lists (foreach), the generated C kernel, and the
generated Triton kernel in Triton's interpreter.  Tolerances are the issue's: 1e-6 relative in float32,
1e-12 in float64.  Most agree bit for bit; where they do not, torch's CPU ``sqrt`` was not correctly rounded
(SparseAdam's generated kernels use the C library's ``sqrtf``).
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import descend
import reference as ref
from conftest import make_params, nonconvex_loss
from descend.backends import cpu
from descend.backends import triton as codegen_triton

STEPS = 40
TOLERANCE = {torch.float32: dict(rtol=1e-6, atol=1e-8), torch.float64: dict(rtol=1e-12, atol=1e-14)}
PATHS = {"reference": dict(fused=False, foreach=False), "foreach": dict(fused=False, foreach=True),
         "C": dict(fused=True), "triton": {}}

CASES = {
    "adamax": ("Adamax", dict(lr=0.01)),
    "adamax-l2-maximize": ("Adamax", dict(lr=0.01, betas=(0.8, 0.95), weight_decay=0.1, maximize=True)),
    "asgd-before-t0": ("ASGD", dict(lr=0.05, lambd=0.01)),  # t0 = 1e6: the average is the iterate
    "asgd-after-t0": ("ASGD", dict(lr=0.05, lambd=0.01, alpha=0.6, t0=10)),
    "asgd-l2-maximize": ("ASGD", dict(lr=0.02, t0=5, weight_decay=0.1, maximize=True)),
    "rprop": ("Rprop", dict()),
    "rprop-etas-near-1": ("Rprop", dict(lr=0.05, etas=(0.999, 1.001))),
    "rprop-etas-nearer-1": ("Rprop", dict(lr=0.05, etas=(1 - 1e-6, 1 + 1e-6))),
    "rprop-flips-clamped-maximize": ("Rprop", dict(lr=0.3, etas=(0.3, 1.9), step_sizes=(0.01, 0.05), maximize=True)),
}


@pytest.fixture
def interpreted(monkeypatch):
    """Triton's CPU interpreter, the driver sending CPU parameters to the Triton kernels, and the launches
    counted (so that a test sees the kernel ran)."""
    pytest.importorskip("triton", reason="triton is not installed")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(codegen_triton, "DEVICE_TYPES", frozenset({"cpu", "cuda"}))
    monkeypatch.setattr(codegen_triton, "BLOCK", 16)
    monkeypatch.setattr(codegen_triton, "CHUNK", 32)
    launches, real = [], codegen_triton.update
    monkeypatch.setattr(codegen_triton, "update", lambda work: launches.append(work) or real(work))
    return launches


def path_options(path, request):
    if path == "C" and not cpu.available():
        pytest.skip("no C compiler: no generated kernel here")
    if path == "triton":
        return request.getfixturevalue("interpreted")
    return None


def train(optimizer, params, steps=STEPS, on_step=None):
    for _ in range(steps):
        optimizer.zero_grad()
        nonconvex_loss(params).backward()
        if on_step is not None:
            on_step(params)
        optimizer.step()
    return optimizer


def twins(start):
    return [p.clone().requires_grad_() for p in start], [p.clone().requires_grad_() for p in start]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("case", list(CASES))
def test_every_path_equals_torch_over_40_steps(case, path, dtype, request):
    name, kwargs = CASES[case]
    launches = path_options(path, request)
    ours, theirs = twins(make_params(dtype))
    optimizer = train(getattr(descend, name)(ours, **kwargs, **PATHS[path]), ours)
    reference = train(getattr(torch.optim, name)(theirs, foreach=False, **kwargs), theirs)
    if launches is not None:
        assert len(launches) == STEPS, "the Triton kernel did not run every step"
    elif path == "C":
        assert optimizer.kernel_info()[0].path == "generated"
    for o, t, s in zip(ours, theirs, make_params(dtype)):
        assert not torch.equal(t, s), "torch did not move: the comparison would prove nothing"
        torch.testing.assert_close(o, t, **TOLERANCE[dtype])
    for o, t in zip(ours, theirs):  # the state too: every entry torch keeps, under its key
        mine, torchs = optimizer.state[o], reference.state[t]
        assert mine.keys() == torchs.keys()
        for key in torchs:
            torch.testing.assert_close(mine[key].to(torchs[key].dtype), torchs[key], **TOLERANCE[dtype])


# --- what each case is there for: the comparisons above would prove little without these -----------


def test_rprop_cases_flip_signs_and_hit_both_step_size_bounds():
    start = make_params(torch.float64)
    ours, _ = twins(start)
    flips, sizes = [], []

    def count(params):
        if params[0] in optimizer.state:
            flips.append(sum(int((p.grad * optimizer.state[p]["prev"] < 0).sum()) for p in params))
            sizes.append(torch.cat([optimizer.state[p]["step_size"].reshape(-1) for p in params]))

    optimizer = descend.Rprop(ours, lr=0.3, etas=(0.3, 1.9), step_sizes=(0.01, 0.05))
    train(optimizer, ours, on_step=count)
    sizes = torch.stack(sizes)
    assert sum(flips) > 20 and sizes.min() == 0.01 and sizes.max() == 0.05


def test_rprop_with_etas_near_1_moves_its_step_sizes_by_those_factors():
    params = [torch.zeros(3, dtype=torch.float64, requires_grad=True)]
    optimizer = descend.Rprop(params, lr=0.1, etas=(0.999, 1.001))
    for grad in ([1.0, 1.0, 0.0], [1.0, -1.0, 0.0]):  # same sign, flip, no gradient
        params[0].grad = torch.tensor(grad, dtype=torch.float64)
        optimizer.step()
    torch.testing.assert_close(optimizer.state[params[0]]["step_size"],
                               torch.tensor([0.1 * 1.001, 0.1 * 0.999, 0.1], dtype=torch.float64), rtol=1e-15, atol=0)
    assert optimizer.state[params[0]]["prev"].tolist() == [1.0, 0.0, 0.0]  # the flipped gradient is forgotten
    assert params[0].tolist() == pytest.approx([-0.2 - 1e-4, -0.1, 0.0], abs=1e-15)


def test_asgd_averages_only_after_t0_and_keeps_eta_and_mu_as_float32_tensors():
    start = make_params(torch.float64)
    before, after = twins(start)
    waiting = train(descend.ASGD(before, lr=0.05, lambd=0.01), before)
    averaging = train(descend.ASGD(after, lr=0.05, lambd=0.01, t0=10), after)
    for p in before:
        assert torch.equal(waiting.state[p]["ax"], p)  # μ = 1: ā ← θ
    for p in after[:4]:
        assert not torch.allclose(averaging.state[p]["ax"], p, rtol=1e-3)
    state = averaging.state[after[0]]
    assert state["eta"].dtype == state["mu"].dtype == torch.float32 and state["eta"].dim() == 0
    assert state["mu"].item() == pytest.approx(1 / (STEPS - 10))
    assert state["eta"].item() == torch.tensor(0.05 / (1 + 0.01 * 0.05 * STEPS) ** 0.75).item()


def test_asgd_checkpoints_taken_while_averaging_resume_both_ways_bit_for_bit():
    kwargs = dict(lr=0.05, lambd=0.01, t0=5)
    theirs, _ = twins(make_params(torch.float64))
    torch_optimizer = train(torch.optim.ASGD(theirs, foreach=False, **kwargs), theirs, steps=8)
    mine = descend.ASGD([p.detach().clone().requires_grad_() for p in theirs], **kwargs)
    ours = mine.param_groups[0]["params"]
    mine.load_state_dict(copy.deepcopy(torch_optimizer.state_dict()))
    train(mine, ours, steps=8), train(torch_optimizer, theirs, steps=8)
    back_params = [p.detach().clone().requires_grad_() for p in ours]
    back = torch.optim.ASGD(back_params, foreach=False, **kwargs)
    back.load_state_dict(copy.deepcopy(mine.state_dict()))
    train(back, back_params, steps=8), train(mine, ours, steps=8)
    for o, b in zip(ours, back_params):
        assert torch.equal(o, b) and torch.equal(mine.state[o]["ax"], back.state[b]["ax"])


def test_asgd_with_a_nan_gradient_skipped_keeps_eta_and_mu():
    params = [torch.ones(3, requires_grad=True)]
    optimizer = descend.ASGD(params, nonfinite="skip", t0=0)
    params[0].grad = torch.ones(3)
    optimizer.step()
    eta, mu = optimizer.state[params[0]]["eta"].clone(), optimizer.state[params[0]]["mu"].clone()
    params[0].grad = torch.tensor([1.0, float("nan"), 1.0])
    optimizer.step()
    assert optimizer.skipped_steps == 1
    assert torch.equal(optimizer.state[params[0]]["eta"], eta) and torch.equal(optimizer.state[params[0]]["mu"], mu)


# --- the textbook definitions (tests/reference.py), float64 --------------------------------------

TEXTBOOK = {
    "adamax": (descend.Adamax, dict(lr=0.01, weight_decay=0.1), ref.adamax_step, dict(lr=0.01, l2=0.1)),
    "asgd": (descend.ASGD, dict(lr=0.05, lambd=0.01, t0=10, weight_decay=0.1), ref.asgd_step,
             dict(lr=0.05, lambd=0.01, t0=10, l2=0.1)),
    "rprop": (descend.Rprop, dict(lr=0.3, etas=(0.3, 1.9), step_sizes=(0.01, 0.05)), ref.rprop_step,
              dict(lr=0.3, etas=(0.3, 1.9), step_sizes=(0.01, 0.05))),
}


@pytest.mark.parametrize("name", list(TEXTBOOK))
def test_matches_textbook_reference(name):
    cls, kwargs, step_fn, hyper = TEXTBOOK[name]
    start = make_params(torch.float64)
    ours, _ = twins(start)
    train(cls(ours, **kwargs), ours)
    want = ref.run_reference(step_fn, start, nonconvex_loss, STEPS, **hyper)
    for o, w, s in zip(ours, want, start):
        assert not torch.equal(w, s)
        torch.testing.assert_close(o.detach(), w, rtol=1e-10, atol=1e-12)


# --- SparseAdam: the rows a sparse gradient names ------------------------------------------------


def embedding_run(cls, dtype, steps=STEPS, **kwargs):
    """Two ``nn.Embedding(sparse=True)`` tables; each batch repeats indices and touches rows 0–11 of 50 only."""
    torch.manual_seed(0)
    tables = [nn.Embedding(50, 8, sparse=True).to(dtype), nn.Embedding(7, 3, sparse=True).to(dtype)]
    start = [t.weight.detach().clone() for t in tables]
    optimizer = cls([t.weight for t in tables], **kwargs)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        index = torch.randint(0, 12, (20,), generator=g)
        optimizer.zero_grad()
        (tables[0](index).sin().sum() + tables[1](index % 7).pow(2).sum()).backward()
        optimizer.step()
    return tables, start, optimizer


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("kwargs", [{}, dict(lr=0.01, betas=(0.8, 0.9), eps=1e-6, maximize=True)],
                         ids=["default", "maximize"])
def test_sparse_adam_on_embeddings_equals_torch_on_every_path(kwargs, path, dtype, request):
    launches = path_options(path, request)
    ours, start, optimizer = embedding_run(descend.SparseAdam, dtype, **kwargs, **PATHS[path])
    theirs, _, reference = embedding_run(torch.optim.SparseAdam, dtype, **kwargs)
    if launches is not None:
        assert len(launches) == STEPS
    for o, t, s in zip(ours, theirs, start):
        assert not torch.equal(t.weight, s)
        torch.testing.assert_close(o.weight, t.weight, **TOLERANCE[dtype])
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(optimizer.state[o.weight][key], reference.state[t.weight][key],
                                       **TOLERANCE[dtype])
    untouched = ours[0].weight[12:]  # rows no batch named: exactly as they were, and no state
    assert torch.equal(untouched, start[0][12:])
    assert not optimizer.state[ours[0].weight]["exp_avg"][12:].any()
    assert not optimizer.state[ours[0].weight]["exp_avg_sq"][12:].any()


@pytest.mark.parametrize("path", list(PATHS))
def test_sparse_adam_takes_gradients_sparse_in_every_dim_and_empty_ones(path, request):
    """A gradient sparse in both dims of a matrix (``to_sparse()``: one value per stored element), and one that
    stores nothing (the step is counted, as in torch, and nothing moves)."""
    path_options(path, request)
    g = torch.Generator().manual_seed(0)
    start = torch.randn(6, 5, generator=g, dtype=torch.float64)
    ours, theirs = start.clone().requires_grad_(), start.clone().requires_grad_()
    mine = descend.SparseAdam([ours], lr=0.1, **PATHS[path])
    reference = torch.optim.SparseAdam([theirs], lr=0.1)
    for step in range(6):
        grad = torch.randn(6, 5, generator=g, dtype=torch.float64) * (torch.rand(6, 5, generator=g) < 0.4)
        grad = torch.zeros(6, 5, dtype=torch.float64) if step == 3 else grad
        for p in (ours, theirs):
            p.grad = grad.to_sparse()
        mine.step(), reference.step()
    assert mine.state[ours]["step"].item() == reference.state[theirs]["step"] == 6
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)
    assert not torch.equal(theirs, start)


def test_sparse_adam_matches_its_textbook_reference():
    start = [torch.randn(9, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))]
    ours = [start[0].clone().requires_grad_()]
    optimizer = descend.SparseAdam(ours, lr=0.05)
    params, states = [start[0].clone()], [{}]
    g = torch.Generator().manual_seed(1)
    for t in range(1, STEPS + 1):
        index = torch.randint(0, 6, (5,), generator=g)
        values = torch.randn(5, 4, generator=g, dtype=torch.float64)
        # uncoalesced: repeated rows are summed
        grad = torch.sparse_coo_tensor(index[None], values, (9, 4), check_invariants=True)
        ours[0].grad = grad
        optimizer.step()
        params = ref.sparse_adam_step(params, [grad], states, t, lr=0.05)
    torch.testing.assert_close(ours[0].detach(), params[0], rtol=1e-10, atol=1e-12)
    assert torch.equal(ours[0][6:], start[0][6:])


def test_sparse_adam_refuses_dense_gradients_as_torch_and_others_refuse_sparse_ones():
    param = nn.Parameter(torch.ones(4, 2))
    param.grad = torch.ones(4, 2)
    for optimizer in (descend.SparseAdam([param]), torch.optim.SparseAdam([param])):
        with pytest.raises(RuntimeError, match="SparseAdam does not support dense gradients"):
            optimizer.step()
    param.grad = torch.ones(4, 2).to_sparse(1)
    for cls in (descend.Adamax, descend.ASGD, descend.Rprop, descend.Adam):
        with pytest.raises(TypeError, match="does not support sparse gradients; use descend.SparseAdam"):
            cls([param]).step()
    assert torch.equal(param, torch.ones(4, 2))


def test_sparse_adam_skips_a_step_whose_sparse_gradient_holds_nan():
    param = nn.Parameter(torch.ones(4, 2))
    optimizer = descend.SparseAdam([param], nonfinite="skip")
    param.grad = torch.sparse_coo_tensor([[1]], [[float("nan"), 1.0]], (4, 2), check_invariants=True)
    optimizer.step()
    assert optimizer.skipped_steps == 1 and torch.equal(param, torch.ones(4, 2)) and not optimizer.state


def test_sparse_adam_clips_by_the_sparse_gradients_norm():
    clipped, plain = nn.Parameter(torch.ones(4, 2)), nn.Parameter(torch.ones(4, 2))
    grad = torch.sparse_coo_tensor([[1, 1, 3]], [[3.0, 0.0], [0.0, 0.0], [0.0, 4.0]], (4, 2),
                                   check_invariants=True)  # norm 5
    clipping = descend.SparseAdam([clipped], max_grad_norm=1.0)
    reference = descend.SparseAdam([plain])
    clipped.grad, plain.grad = grad, grad * (1.0 / (5.0 + 1e-6))
    clipping.step(), reference.step()
    assert clipping.last_grad_norm.item() == pytest.approx(5.0)
    torch.testing.assert_close(clipped, plain)


# --- construction -------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, match", [
    (dict(etas=(0.5, 1.0)), "0 < etaminus < 1 < etaplus"),
    (dict(etas=(0.0, 1.2)), "0 < etaminus < 1 < etaplus"),
    (dict(etas=(0.5,)), "etas must be a pair"),
    (dict(step_sizes=(1.0, 0.1)), "0 <= min <= max"),
    (dict(step_sizes=(-1.0, 1.0)), "0 <= min <= max"),
    (dict(lr=-1.0), "lr"),
])
def test_rprop_refuses_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        descend.Rprop([nn.Parameter(torch.ones(2))], **kwargs)


@pytest.mark.parametrize("cls, kwargs, match", [
    (descend.ASGD, dict(t0=float("nan")), "t0"), (descend.ASGD, dict(lambd=-1.0), "lambd"),
    (descend.ASGD, dict(alpha=float("inf")), "alpha"), (descend.Adamax, dict(betas=(0.9, 1.0)), r"betas\[1\]"),
    (descend.Adamax, dict(eps=-1.0), "eps"), (descend.SparseAdam, dict(lr=0.0), "lr"),
    (descend.SparseAdam, dict(eps=0.0), "eps"),
])
def test_bad_hyperparameters_are_value_errors_naming_them(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls([nn.Parameter(torch.ones(2))], **kwargs)


def test_asgd_never_averages_with_t0_infinite():
    params = [nn.Parameter(torch.ones(2))]
    optimizer = descend.ASGD(params, t0=float("inf"))
    for _ in range(3):
        params[0].grad = torch.ones(2)
        optimizer.step()
    assert optimizer.state[params[0]]["mu"].item() == 1.0 and torch.equal(optimizer.state[params[0]]["ax"], params[0])


@pytest.mark.parametrize("name", ["Adamax", "ASGD", "Rprop", "SparseAdam"])
def test_every_class_runs_a_generated_kernel_by_default(name):
    if not cpu.available():
        pytest.skip("no C compiler")
    info = getattr(descend, name)([nn.Parameter(torch.ones(3, 2))]).kernel_info()[0]
    assert info.path == "generated", info
