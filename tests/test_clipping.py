"""``max_grad_norm``: the step equals ``torch.nn.utils.clip_grad_norm_(params, max_grad_norm)`` followed by the
step, on every path, for every optimizer; and ``ClipByGlobalNorm`` in a chain of one's own."""
from __future__ import annotations

import copy

import pytest
import torch

import descend
from descend.backends import cpu, eager
from descend.steps import AddWeightDecay, ClipByGlobalNorm, Momentum, ScaleByLearningRate
from conftest import make_params, nonconvex_loss
import reference as ref

STEPS = 8
MAX_NORM = 0.55  # the test problem's gradient norm falls from 0.79 to 0.47: clipped at first, then not
PATHS = {"c": dict(fused=True), "reference": dict(fused=False, foreach=False),
         "foreach": dict(fused=False, foreach=True)}
OPTIMIZERS = {
    "SGD": (descend.SGD, dict(lr=0.1, momentum=0.9, weight_decay=0.01)),
    "Adagrad": (descend.Adagrad, dict(lr=0.1)),
    "RMSprop": (descend.RMSprop, dict(lr=0.01, centered=True)),
    "Adadelta": (descend.Adadelta, dict()),
    "Adam": (descend.Adam, dict(lr=0.05, amsgrad=True)),
    "AdamW": (descend.AdamW, dict(lr=0.05, weight_decay=0.1)),
    "NAdam": (descend.NAdam, dict(lr=0.05)),
    "RAdam": (descend.RAdam, dict(lr=0.05)),
    "Adafactor": (descend.Adafactor, dict(beta1=0.9)),
    "Lion": (descend.Lion, dict(lr=0.01, weight_decay=0.1)),
    "LAMB": (descend.LAMB, dict(lr=0.05, weight_decay=0.01)),
    "LARS": (descend.LARS, dict(lr=5.0, weight_decay=0.01)),
}
TORCH_CLASSES = {"SGD": torch.optim.SGD, "Adagrad": torch.optim.Adagrad, "RMSprop": torch.optim.RMSprop,
                 "Adadelta": torch.optim.Adadelta, "Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW,
                 "NAdam": torch.optim.NAdam, "RAdam": torch.optim.RAdam}
TOLERANCE = {torch.float64: dict(rtol=1e-12, atol=1e-12), torch.float32: dict(rtol=1e-6, atol=1e-6)}


def two_groups(params, lr_scale=0.5):
    """The test parameters in two param groups, the second with a smaller learning rate where there is one."""
    return [{"params": params[:2]}, {"params": params[2:], **({"lr": 0.01} if lr_scale else {})}]


def train(make, params, steps=STEPS, clip=None, maximize=False, poison=None):
    """``steps`` steps of ``make(params)``, with ``clip_grad_norm_(params, clip)`` before each when ``clip``
    is given; returns the parameters, the optimizer and the norms clip_grad_norm_ returned."""
    params = [p.detach().clone().requires_grad_() for p in params]
    optimizer = make(params)
    norms = []
    for step in range(steps):
        optimizer.zero_grad()
        loss = nonconvex_loss(params)
        (-loss if maximize else loss).backward()
        if poison is not None and step == steps - 1:
            params[0].grad[1, 1] = poison
        if clip is not None:
            norms.append(torch.nn.utils.clip_grad_norm_(params, clip))
        optimizer.step()
    return params, optimizer, norms


def states(optimizer, params):
    """The parameters, then every state tensor, in a fixed order."""
    return list(params) + [value for p in params for _, value in sorted(optimizer.state[p].items())]


def assert_trajectories_equal(got, want, dtype, start):
    assert not start or any(not torch.equal(w.detach(), s) for w, s in zip(want, start)), "nothing moved"
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g.detach(), w.detach(), **TOLERANCE[dtype], equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_step_equals_clip_grad_norm_then_the_step(name, path, dtype):
    cls, kwargs = OPTIMIZERS[name]
    lr_scale = "lr" in kwargs
    start = make_params(dtype)
    ours, optimizer, _ = train(lambda p: cls(two_groups(p, lr_scale), max_grad_norm=MAX_NORM, **kwargs, **PATHS[path]),
                               start)
    theirs, reference, norms = train(lambda p: cls(two_groups(p, lr_scale), **kwargs, **PATHS[path]), start,
                                     clip=MAX_NORM)
    unclipped, plain, _ = train(lambda p: cls(two_groups(p, lr_scale), **kwargs, **PATHS[path]), start)
    assert any(n > MAX_NORM for n in norms), "never clipped"
    # Lion's sign update barely sees the scale of the gradient, but its momentum does
    assert not all(torch.equal(a, b) for a, b in zip(states(reference, theirs), states(plain, unclipped))), \
        "clipping changed nothing"
    assert_trajectories_equal(ours, theirs, dtype, start)
    assert_trajectories_equal(states(optimizer, ours), states(reference, theirs), dtype, start=[])
    assert optimizer.last_grad_norm.dtype == dtype
    torch.testing.assert_close(optimizer.last_grad_norm, norms[-1], **TOLERANCE[dtype])
    if path == "c":
        assert all(info.path == "generated" for info in optimizer.kernel_info())
        assert optimizer.kernel_info()[0].steps[0] == "ClipByGlobalNorm"


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", TORCH_CLASSES)
def test_step_equals_clip_grad_norm_then_torch_optim(name, path):
    cls, kwargs = OPTIMIZERS[name]
    start = make_params(torch.float64)
    ours, _, _ = train(lambda p: cls(two_groups(p), max_grad_norm=MAX_NORM, **kwargs, **PATHS[path]), start)
    theirs, _, _ = train(lambda p: TORCH_CLASSES[name](two_groups(p), **kwargs), start, clip=MAX_NORM)
    assert_trajectories_equal(ours, theirs, torch.float64, start)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", ["SGD", "Adam", "Adafactor", "LAMB", "LARS"])
def test_maximize_clips_the_negated_gradient_alike(name, path):
    cls, kwargs = OPTIMIZERS[name]
    start = make_params(torch.float64)
    make = lambda clip: lambda p: cls(p, maximize=True, max_grad_norm=clip, **kwargs, **PATHS[path])  # noqa: E731
    ours, _, _ = train(make(MAX_NORM), start, maximize=True)
    theirs, _, _ = train(make(None), start, clip=MAX_NORM, maximize=True)
    assert_trajectories_equal(ours, theirs, torch.float64, start)


@pytest.mark.parametrize("path", ["c", "reference"])
@pytest.mark.parametrize("name", ["Adam", "SGD", "LAMB"])
def test_bfloat16_parameters_clip_as_their_float32_step_rounds(name, path):
    """16-bit parameters compute in float32 and round once: a step equals clip_grad_norm_ and the step on
    float32 copies (of the parameters and the same gradients), rounded to bfloat16.  (torch's clip_grad_norm_
    on bfloat16 gradients would round the clipped gradient to bfloat16 first.)"""
    cls, kwargs = OPTIMIZERS[name]
    ours = [p.to(torch.bfloat16).requires_grad_() for p in make_params(torch.float32)]
    wide = [p.detach().float().requires_grad_() for p in ours]
    nonconvex_loss(ours).backward()
    for w, o in zip(wide, ours):
        w.grad = o.grad.float()
    optimizer = cls(ours, max_grad_norm=MAX_NORM, **kwargs, **PATHS[path])
    optimizer.step()
    norm = torch.nn.utils.clip_grad_norm_(wide, MAX_NORM)
    cls(wide, **kwargs, **PATHS[path]).step()
    assert norm > MAX_NORM
    torch.testing.assert_close(optimizer.last_grad_norm, norm, rtol=1e-6, atol=0)
    for o, w in zip(ours, wide):
        torch.testing.assert_close(o.detach(), w.detach().to(torch.bfloat16), rtol=0, atol=0)


# --- non-finite gradients ------------------------------------------------------------------------


@pytest.mark.parametrize("poison", [float("nan"), float("inf")])
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", ["SGD", "AdamW", "LAMB"])
def test_nonfinite_gradients_under_each_policy(name, path, poison):
    """``ignore``: as torch (the norm is NaN or inf, so every gradient is scaled by NaN or 0); ``raise``: the
    same step, then FloatingPointError; ``skip``: nothing changes and ``last_grad_norm`` is NaN."""
    cls, kwargs = OPTIMIZERS[name]
    start = make_params(torch.float64)
    make = lambda policy, clip=MAX_NORM: lambda p: cls(  # noqa: E731
        p, nonfinite=policy, max_grad_norm=clip, **kwargs, **PATHS[path])
    theirs, _, _ = train(make("ignore", None), start, clip=MAX_NORM, poison=poison)
    assert torch.isnan(theirs[0]).any()
    ignored, ignoring, _ = train(make("ignore"), start, poison=poison)
    assert_trajectories_equal(ignored, theirs, torch.float64, start)
    torch.testing.assert_close(ignoring.last_grad_norm, torch.tensor(poison, dtype=torch.float64), equal_nan=True)
    params = [p.detach().clone().requires_grad_() for p in start]
    optimizer = make("raise")(params)
    for step in range(STEPS):
        optimizer.zero_grad()
        nonconvex_loss(params).backward()
        if step == STEPS - 1:
            params[0].grad[1, 1] = poison
            with pytest.raises(FloatingPointError):
                optimizer.step()
        else:
            optimizer.step()
    assert_trajectories_equal(params, theirs, torch.float64, start)
    before, _, _ = train(make("skip"), start, steps=STEPS - 1)
    skipped, skipping, _ = train(make("skip"), start, poison=poison)
    assert skipping.skipped_steps == 1 and torch.isnan(skipping.last_grad_norm)
    assert all(torch.equal(a, b) for a, b in zip(skipped, before))


# --- several groups, and ClipByGlobalNorm in a chain of one's own -------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_groups_that_clip_share_one_norm_and_each_clips_to_its_own_bound(path):
    """The norm is over every group that clips (as one ``clip_grad_norm_`` over their parameters); each group
    scales by its own ``max_grad_norm``; a group without one is neither clipped nor counted."""
    start = make_params(torch.float64)
    params = [p.clone().requires_grad_() for p in start]
    optimizer = descend.SGD([{"params": params[:2], "max_grad_norm": 0.1}, {"params": params[2:4], "max_grad_norm": 0.3},
                             {"params": params[4:]}], lr=0.1, **PATHS[path])
    nonconvex_loss(params).backward()
    grads = [p.grad.clone() for p in params]
    optimizer.step()
    _, norm = ref.clip_by_global_norm(grads[:4], 1.0)
    assert norm > 0.3
    torch.testing.assert_close(optimizer.last_grad_norm, torch.tensor(norm, dtype=torch.float64), rtol=1e-14, atol=0)
    factors = [0.1 / (norm + 1e-6)] * 2 + [0.3 / (norm + 1e-6)] * 2 + [1.0]
    for p, s, g, f in zip(params, start, grads, factors):
        torch.testing.assert_close(p.detach(), s - 0.1 * f * g, rtol=1e-14, atol=1e-15)


def test_parameters_without_a_gradient_are_left_out_of_the_norm_as_in_torch():
    start = make_params(torch.float64)
    ours, theirs = ([p.clone().requires_grad_() for p in start] for _ in range(2))
    for params in (ours, theirs):
        (params[0].sum() ** 2 + params[2].sum() ** 2).backward()
    norm = torch.nn.utils.clip_grad_norm_(theirs, 0.5)
    torch.optim.SGD(theirs, lr=0.1).step()
    optimizer = descend.SGD(ours, lr=0.1, max_grad_norm=0.5)
    optimizer.step()
    torch.testing.assert_close(optimizer.last_grad_norm, norm)
    for o, t in zip(ours, theirs):
        torch.testing.assert_close(o, t, rtol=1e-14, atol=1e-15)


def clipped_momentum(group):
    return [ClipByGlobalNorm(group["max_norm"]), Momentum(group["momentum"]), ScaleByLearningRate(group["lr"])]


ClippedSGD = descend.make_optimizer("ClippedSGD", clipped_momentum, defaults=dict(lr=0.1, momentum=0.9, max_norm=1.0))


@pytest.mark.parametrize("path", PATHS)
def test_clip_by_global_norm_in_a_chain_of_ones_own(path):
    start = make_params(torch.float64)
    ours, optimizer, _ = train(lambda p: ClippedSGD(two_groups(p), max_norm=MAX_NORM, **PATHS[path]), start)
    theirs, _, norms = train(lambda p: torch.optim.SGD(two_groups(p), lr=0.1, momentum=0.9), start, clip=MAX_NORM)
    assert_trajectories_equal(ours, theirs, torch.float64, start)
    torch.testing.assert_close(optimizer.last_grad_norm, norms[-1], rtol=1e-12, atol=0)
    assert optimizer.kernel_info()[0].path == ("generated" if path == "c" else "reference")


@pytest.mark.parametrize("path", PATHS)
def test_clip_by_global_norm_after_another_step_clips_what_it_receives(path):
    """``[AddWeightDecay, ClipByGlobalNorm, ...]`` clips ``g + λθ``, and the norm is of ``g + λθ``."""
    DecayThenClip = descend.make_optimizer(
        "DecayThenClip", lambda g: [AddWeightDecay(0.5), ClipByGlobalNorm(0.2), ScaleByLearningRate(g["lr"])],
        defaults=dict(lr=0.1))
    start = make_params(torch.float64)
    params = [p.clone().requires_grad_() for p in start]
    nonconvex_loss(params).backward()
    decayed = [p.grad + 0.5 * p.detach() for p in params]
    clipped, norm = ref.clip_by_global_norm(decayed, 0.2)
    optimizer = DecayThenClip(params, **PATHS[path])
    optimizer.step()
    assert norm > 0.2
    for p, s, c in zip(params, start, clipped):
        torch.testing.assert_close(p.detach(), s - 0.1 * c, rtol=1e-14, atol=1e-15)


def test_the_c_path_sums_the_squares_in_a_generated_kernel():
    start = make_params(torch.float32)
    params = [p.clone().requires_grad_() for p in start]
    nonconvex_loss(params).backward()
    optimizer = descend.AdamW(params, max_grad_norm=MAX_NORM)
    shares = []
    real = cpu.contributions
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cpu, "contributions", lambda work, stage: shares.append(real(work, stage)) or shares[-1])
        patch.setattr(eager, "contributions", lambda *a: pytest.fail("the reference path summed the squares"))
        optimizer.step()
    assert sum(s["ClipByGlobalNorm#0:squares"] for s in shares) == pytest.approx(
        float(optimizer.last_grad_norm) ** 2, rel=1e-6)


def test_max_grad_norm_checkpoints_and_deep_copies_with_its_group():
    params = [torch.nn.Parameter(torch.randn(3))]
    optimizer = descend.Adam(params, max_grad_norm=2.0)
    assert optimizer.state_dict()["param_groups"][0]["max_grad_norm"] == 2.0
    assert copy.deepcopy(optimizer).param_groups[0]["max_grad_norm"] == 2.0
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="max_grad_norm"):
            descend.Adam(params, max_grad_norm=bad)
