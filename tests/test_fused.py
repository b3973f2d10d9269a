"""The fused C kernels against the reference chain (fused=False), and how the path is chosen."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from unittest import mock

import pytest
import torch

import descend
from descend.adapter.finite import locally_finite
from descend.backends import build, cpu, eager
from conftest import make_params, nonconvex_loss

HAVE_COMPILER = bool(os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc"))
pytestmark = pytest.mark.skipif(not HAVE_COMPILER, reason="no C compiler: the fused kernels cannot be built here")


def test_kernels_build_wherever_a_compiler_is():
    assert cpu.available(), build.error

CONFIGS = {
    "sgd": (descend.SGD, dict(lr=0.05)),
    "sgd-decay-maximize": (descend.SGD, dict(lr=0.05, weight_decay=0.1, maximize=True)),
    "momentum-velocity": (descend.SGD, dict(lr=0.05, momentum=0.9)),
    "momentum-ema": (descend.SGD, dict(lr=0.05, momentum=0.9, dampening=0.9, weight_decay=0.01)),
    "nesterov": (descend.SGD, dict(lr=0.05, momentum=0.9, nesterov=True)),
    "nesterov-lookahead": (descend.SGD, dict(lr=0.05, momentum=0.8, dampening=0.8, nesterov=True)),
    "adagrad": (descend.Adagrad, dict(lr=0.1, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1)),
    "adagrad-maximize": (descend.Adagrad, dict(lr=0.1, maximize=True)),
    "rmsprop": (descend.RMSprop, dict(lr=0.01)),
    "rmsprop-centered-momentum": (descend.RMSprop, dict(lr=0.01, centered=True, momentum=0.5, weight_decay=0.1)),
    "rmsprop-momentum-maximize": (descend.RMSprop, dict(lr=0.01, momentum=0.9, maximize=True)),
    "adadelta": (descend.Adadelta, dict(weight_decay=0.01)),
    "adadelta-maximize": (descend.Adadelta, dict(lr=0.5, maximize=True)),
    "adam": (descend.Adam, dict(lr=0.01)),
    "adam-l2-amsgrad": (descend.Adam, dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
    "adam-uncorrected-maximize": (descend.Adam, dict(lr=0.01, bias_correction=False, maximize=True)),
    "adamw": (descend.AdamW, dict(lr=0.01, weight_decay=0.1)),
    "adamw-amsgrad": (descend.AdamW, dict(lr=0.01, amsgrad=True, betas=(0.8, 0.95))),
    "adafactor": (descend.Adafactor, dict()),
    "adafactor-beta1-decay": (descend.Adafactor, dict(beta1=0.9, weight_decay=0.1, clip_threshold=0.5)),
    "adafactor-lr-unscaled": (descend.Adafactor, dict(lr=0.02, relative_step=False, scale_parameter=False)),
    "adafactor-warmup-maximize": (descend.Adafactor, dict(warmup_init=True, maximize=True, decay_rate=-0.5)),
    "lion": (descend.Lion, dict(lr=0.01)),
    "lion-decay-maximize": (descend.Lion, dict(lr=0.01, betas=(0.8, 0.95), weight_decay=0.3, maximize=True)),
    "nadam": (descend.NAdam, dict(lr=0.01)),
    "nadam-l2-maximize": (descend.NAdam, dict(lr=0.01, weight_decay=0.1, momentum_decay=0.02, maximize=True)),
    "nadamw": (descend.NAdam, dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    "radam": (descend.RAdam, dict(lr=0.01)),
    "radam-l2-maximize": (descend.RAdam, dict(lr=0.01, weight_decay=0.1, betas=(0.8, 0.9), maximize=True)),
    "radam-decoupled": (descend.RAdam, dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    "adamax-l2-maximize": (descend.Adamax, dict(lr=0.01, weight_decay=0.1, maximize=True)),
    "asgd-averaging": (descend.ASGD, dict(lr=0.05, lambd=0.01, t0=3, weight_decay=0.1)),
    "rprop-clamped": (descend.Rprop, dict(lr=0.05, etas=(0.4, 1.5), step_sizes=(1e-3, 0.1))),
}
STEPS = 25


def side_by_side(cls, kwargs, dtype, resync):
    start = make_params(dtype)
    fused = [p.clone().requires_grad_() for p in start]
    reference = [p.clone().requires_grad_() for p in start]
    fused_optimizer = cls(fused, fused=True, **kwargs)
    reference_optimizer = cls(reference, fused=False, **kwargs)
    for _ in range(STEPS):
        for params, optimizer in ((fused, fused_optimizer), (reference, reference_optimizer)):
            optimizer.zero_grad()
            nonconvex_loss(params).backward()
            optimizer.step()
        yield fused, reference, fused_optimizer, reference_optimizer
        if resync:
            with torch.no_grad():
                for f, r in zip(fused, reference):
                    f.copy_(r)


@pytest.mark.parametrize("name", CONFIGS)
def test_float32_fused_step_equals_reference_step(name):
    cls, kwargs = CONFIGS[name]
    for fused, reference, _, _ in side_by_side(cls, kwargs, torch.float32, resync=True):
        for f, r in zip(fused, reference):
            torch.testing.assert_close(f, r, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", CONFIGS)
def test_float64_fused_trajectory_equals_reference(name):
    cls, kwargs = CONFIGS[name]
    start = make_params(torch.float64)
    for fused, reference, fused_optimizer, reference_optimizer in side_by_side(cls, kwargs, torch.float64, False):
        pass
    for f, r, s in zip(fused, reference, start):
        assert not torch.equal(r, s)
        torch.testing.assert_close(f, r, rtol=1e-10, atol=1e-12)
    for param_f, param_r in zip(fused, reference):
        state_f, state_r = fused_optimizer.state[param_f], reference_optimizer.state[param_r]
        assert state_f.keys() == state_r.keys()
        for key in state_f:
            torch.testing.assert_close(state_f[key], state_r[key], rtol=1e-9, atol=1e-12)


def test_default_takes_the_fused_path_on_cpu():
    param = torch.nn.Parameter(torch.randn(4, 3))
    param.grad = torch.randn(4, 3)
    optimizer = descend.Adam([param])
    with mock.patch.object(eager, "update", side_effect=AssertionError("reference path taken")):
        optimizer.step()
    with mock.patch.object(cpu, "update", side_effect=AssertionError("fused path taken")):
        descend.Adam([param], fused=False).step()


def test_mixed_group_fuses_what_it_can_and_runs_the_rest_on_the_reference_path():
    params = [torch.nn.Parameter(torch.randn(6, 4)), torch.nn.Parameter(torch.randn(5, dtype=torch.float64)),
              torch.nn.Parameter(torch.randn(3).to(torch.bfloat16)), torch.nn.Parameter(torch.randn(4, 6).t()),
              torch.nn.Parameter(torch.randn(4, 6)[:, ::2])]
    for p in params:
        p.grad = torch.randn_like(p)
    optimizer = descend.Adam(params, lr=0.1)
    fused_calls, reference_calls = [], []
    real_fused, real_update = cpu.update, eager.update

    def spy_fused(work):
        fused_calls.append([p.dtype for p in work.params])
        return real_fused(work)

    def spy_update(work, foreach):
        reference_calls.extend(tuple(p.shape) for p in work.params)
        return real_update(work, foreach)

    with mock.patch.object(cpu, "update", spy_fused), mock.patch.object(eager, "update", spy_update):
        optimizer.step()
    # float32 (the contiguous and the transposed, dense, one), float64 and bfloat16 are fused, one call each
    assert sorted(map(str, fused_calls)) == ["[torch.bfloat16]", "[torch.float32, torch.float32]", "[torch.float64]"]
    assert reference_calls == [(4, 3)]  # the strided slice: its gradient (from randn_like) has other strides
    assert all(torch.isfinite(p.float()).all() for p in params)


def test_fused_true_refuses_what_the_kernel_cannot_take():
    param = torch.nn.Parameter(torch.randn(4, 6)[:, ::2])
    param.grad = torch.randn_like(param)
    with pytest.raises(RuntimeError, match="`fused=True` requires all the params.*not laid out like the parameter"):
        descend.SGD([param], lr=0.1, fused=True).step()
    param.grad = torch.randn(4, 6)[:, ::2]  # the parameter's own strides: a view with gaps
    with pytest.raises(RuntimeError, match="`fused=True` requires all the params.*not dense"):
        descend.SGD([param], lr=0.1, fused=True).step()
    param = torch.nn.Parameter(torch.randn(6, 4).t())  # dense, but its rows are not rows of memory
    param.grad = torch.randn(6, 4).t()
    with pytest.raises(RuntimeError, match="works on rows and columns, and the parameter is not contiguous"):
        descend.Adafactor([param], fused=True).step()
    with pytest.raises(ValueError, match="fused"):
        descend.SGD([param], lr=0.1, fused="yes")


def test_fused_step_bumps_the_autograd_version_counter():
    param = torch.nn.Parameter(torch.randn(3))
    loss = (param**2).sum()
    param.grad = torch.randn(3)
    descend.SGD([param], lr=0.1).step()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_native_finiteness_check(dtype):
    tensors = [torch.randn(1000, dtype=dtype), torch.full((70000,), torch.finfo(dtype).max, dtype=dtype)]
    assert locally_finite(tensors)
    for bad in (float("nan"), float("inf"), float("-inf")):
        poisoned = [t.clone() for t in tensors]
        poisoned[1][69999] = bad
        assert not locally_finite(poisoned)


def test_without_kernels_everything_still_works(tmp_path):
    script = (
        "import torch, descend; from descend.backends import build, cpu\n"
        "p = torch.nn.Parameter(torch.ones(3)); p.grad = torch.ones(3)\n"
        "descend.Adam([p], lr=0.1).step(); assert not cpu.available(), build.error\n"
        "assert torch.allclose(p, torch.full((3,), 0.9)), p\n"
        "try:\n    descend.Adam([p], fused=True).step()\nexcept RuntimeError as e:\n    print(e)\n"
    )
    env = dict(os.environ, DESCEND_NATIVE="0")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "DESCEND_NATIVE=0" in result.stdout


def test_kernels_build_into_a_fresh_cache_folder(tmp_path):
    script = "from descend.backends import build; lib = build.support(); assert lib is not None, build.error; print(lib._name)"
    env = dict(os.environ, DESCEND_CACHE_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith(str(tmp_path)) and list(tmp_path.glob("support-*.so"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_adafactor_kernel_with_many_large_tensors_equals_reference(dtype):
    """More than 4 × threads tensors of ≥ 32768 elements take the kernel's tensor-per-thread branch."""
    count = 4 * torch.get_num_threads() + 1
    shapes = [(256, 160)] * count + [(640,), (3, 200, 180)]
    generator = torch.Generator().manual_seed(0)
    fused = [torch.nn.Parameter(torch.randn(s, generator=generator, dtype=dtype)) for s in shapes]
    reference = [torch.nn.Parameter(p.detach().clone()) for p in fused]
    fused_optimizer = descend.Adafactor(fused, beta1=0.9, weight_decay=0.01, fused=True)
    reference_optimizer = descend.Adafactor(reference, beta1=0.9, weight_decay=0.01, fused=False)
    for _ in range(4):
        for f, r in zip(fused, reference):
            f.grad = torch.randn(f.shape, generator=generator, dtype=dtype)
            r.grad = f.grad.clone()
        fused_optimizer.step()
        reference_optimizer.step()
    tolerance = 1e-6 if dtype == torch.float32 else 1e-12
    for f, r in zip(fused, reference):
        torch.testing.assert_close(f, r, rtol=tolerance, atol=tolerance)
