"""Kernels generated from the chain's formulas: they compute the chain they are given, in every dtype, and
the driver around them never crashes, never runs a stale kernel, and says when it cannot fuse."""
from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass

import pytest
import torch

import descend
from descend.backends import build, cpu
from descend.plan.plan import compile
from descend.plan.trace import trace
from descend.steps import NotTraceable, sqrt, where
from descend.steps import AddWeightDecay, Elementwise
from conftest import make_params, nonconvex_loss
from test_fused import CONFIGS

HAVE_COMPILER = bool(os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc"))
pytestmark = pytest.mark.skipif(not HAVE_COMPILER, reason="no C compiler: the kernels cannot be built here")
ELEMENTWISE = {name: config for name, config in CONFIGS.items() if config[0] is not descend.Adafactor}


def steps_side_by_side(cls, kwargs, dtype, steps=6):
    """Fused and reference copies, re-synced after each step; yields the pair after each step."""
    fused = [p.clone().requires_grad_() for p in make_params(dtype)]
    reference = [p.detach().clone().requires_grad_() for p in fused]
    optimizers = cls(fused, fused=True, **kwargs), cls(reference, fused=False, **kwargs)
    for _ in range(steps):
        for params, optimizer in zip((fused, reference), optimizers):
            optimizer.zero_grad()
            nonconvex_loss(params).backward()
            optimizer.step()
        yield fused, reference
        with torch.no_grad():
            for f, r in zip(fused, reference):
                f.copy_(r)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_16_bit_kernels_equal_the_reference_within_their_rounding(name, dtype):
    # both compute in float32 with float32 state and round once into the parameter: at most a last-bit difference
    cls, kwargs = ELEMENTWISE[name]
    ulp = 2.0**-7 if dtype == torch.bfloat16 else 2.0**-10
    for fused, reference in steps_side_by_side(cls, kwargs, dtype):
        for f, r in zip(fused, reference):
            torch.testing.assert_close(f.float(), r.float(), rtol=ulp, atol=1e-6)


def test_every_builtin_chain_traces_and_its_kernel_is_shared_across_hyperparameter_values():
    for name, (cls, kwargs) in ELEMENTWISE.items():
        optimizer = cls([torch.nn.Parameter(torch.ones(2))], **kwargs)
        chain = optimizer.chain(optimizer.param_groups[0])
        assert compile(chain, kwargs.get("maximize", False))[0].variant(1).pieces is not None, name
    param = torch.nn.Parameter(torch.ones(3))
    param.grad = torch.ones(3)
    optimizer = descend.Adam([param], lr=0.1)
    optimizer.step()
    compiled = len(cpu._programs), len(build._functions)
    for lr in (0.2, 0.3, torch.tensor(0.4)):
        optimizer.param_groups[0]["lr"] = lr
        optimizer.step()
    assert (len(cpu._programs), len(build._functions)) == compiled  # a learning rate is an argument, not a kernel


def test_a_subclass_that_changes_its_chain_gets_that_chain_on_every_path():
    class DecayedSGD(descend.SGD):
        def chain(self, group):
            return [AddWeightDecay(0.5)] + super().chain(group)

    results = {}
    for flags in (dict(), dict(fused=True), dict(fused=False), dict(fused=False, foreach=True)):
        param = torch.nn.Parameter(torch.tensor([2.0]))
        param.grad = torch.tensor([1.0])
        DecayedSGD([param], lr=0.1, **flags).step()
        results[str(flags)] = param.item()
    assert results == {key: pytest.approx(1.8) for key in results}, results


@dataclass
class TanhSquash(Elementwise):
    """A step with an op the generator does not know (torch.tanh): it cannot be traced."""

    def formula(self, u, param, state, t):
        return torch.tanh(u)


def test_a_step_the_generator_cannot_trace_runs_on_the_reference_path_with_one_warning():
    class Squashed(descend.SGD):
        def chain(self, group):
            return [TanhSquash()] + super().chain(group)

    param = torch.nn.Parameter(torch.tensor([2.0, -3.0]))
    param.grad = torch.tensor([10.0, -10.0])
    optimizer = Squashed([param], lr=0.1)
    with pytest.warns(RuntimeWarning, match="TanhSquash"):
        optimizer.step()
    torch.testing.assert_close(param.detach(), torch.tensor([2.0, -3.0]) - 0.1 * torch.tanh(torch.tensor([10.0, -10.0])))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        optimizer.step()  # once per reason
    with pytest.raises(RuntimeError, match="TanhSquash"):
        Squashed([param], lr=0.1, fused=True).step()


def test_python_control_flow_on_a_hyperparameter_is_refused_by_the_tracer():
    @dataclass
    class Branchy(Elementwise):
        scale: float

        def formula(self, u, param, state, t):
            return u * 2 if self.scale > 1 else u

    with pytest.raises(NotTraceable, match="Branchy"):
        trace([Branchy(2.0)], False, 1, {}, 1)


def test_per_step_conditions_are_written_with_where_and_agree_on_every_path():
    @dataclass
    class Warmup(Elementwise):
        """Zero update for the first ``steps`` steps, then u/√t."""

        steps: float

        def formula(self, u, param, state, t):
            return where(t > self.steps, u / sqrt(t), 0.0 * u)

    class Late(descend.Adagrad):
        def chain(self, group):
            return [Warmup(2.0)] + super().chain(group)

    finals = []
    for flags in (dict(fused=True), dict(fused=False), dict(fused=False, foreach=True)):
        params = [p.clone().requires_grad_() for p in make_params(torch.float64)]
        optimizer = Late(params, lr=0.1, **flags)
        for _ in range(5):
            optimizer.zero_grad()
            nonconvex_loss(params).backward()
            optimizer.step()
        finals.append(params)
    for other in finals[1:]:
        for a, b in zip(finals[0], other):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_a_kernel_that_fails_to_compile_falls_back_with_the_compilers_message(monkeypatch, tmp_path):
    monkeypatch.setenv("DESCEND_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cpu, "_programs", {})
    monkeypatch.setattr(build, "_functions", {})
    monkeypatch.setattr(build, "_warned", set())
    monkeypatch.setattr(cpu, "source", lambda *args: "this is not C;\n")
    param = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    param.grad = torch.tensor([1.0, 1.0])
    with pytest.warns(RuntimeWarning, match="could not build a generated kernel"):
        descend.SGD([param], lr=0.5).step()
    torch.testing.assert_close(param.detach(), torch.tensor([0.5, 1.5]))
    assert "error" in build.error
    info = descend.SGD([param], lr=0.5).kernel_info()[0]
    assert info.path == "reference" and "could not be built" in info.reason and "error" in info.reason
    with pytest.raises(RuntimeError, match="`fused=True` requires.*could not be built.*error"):
        descend.SGD([param], lr=0.5, fused=True).step()


def test_per_step_scalars_are_computed_in_double():
    # with β₂ = 0.9999, 1 − β₂ in float32 is off by 8e-5 relative; the kernel computes it in double
    param = torch.nn.Parameter(torch.full((8,), 1.0))
    param.grad = torch.linspace(-1, 1, 8)
    exact = param.detach().double().clone()
    optimizer = descend.Adam([param], lr=0.1, betas=(0.9, 0.9999), fused=True)
    reference = descend.Adam([exact.requires_grad_()], lr=0.1, betas=(0.9, 0.9999), fused=False)
    exact.grad = param.grad.double()
    for _ in range(3):
        optimizer.step()
        reference.step()
    torch.testing.assert_close(param.detach().double(), exact.detach(), rtol=2e-7, atol=2e-7)


# --- the state is checked against the parameter before a kernel touches it ---------------------------


def trained(model, optimizer, steps=3, dtype=torch.float32, channels_last=False):
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x = torch.randn(2, 3, 6, 6, generator=generator).to(dtype)
        if channels_last:
            x = x.to(memory_format=torch.channels_last)
        optimizer.zero_grad()
        model(x).float().square().mean().backward()
        optimizer.step()
    return model


def conv():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(64, 2))


@pytest.mark.parametrize("cls", [descend.Adam, descend.SGD, descend.RMSprop, descend.Adagrad, descend.Adadelta])
def test_a_dtype_change_after_some_steps_is_followed_on_the_fused_path(cls):
    results = []
    for fused in (True, False):
        model = conv()
        optimizer = cls(model.parameters(), lr=0.01, fused=fused, **({"momentum": 0.9} if cls is descend.SGD else {}))
        trained(model, optimizer)
        model.double()
        trained(model, optimizer, dtype=torch.float64)
        model.bfloat16()
        trained(model, optimizer, dtype=torch.bfloat16)
        model.float()
        trained(model, optimizer)
        results.append([p.detach() for p in model.parameters()])
        for param in model.parameters():
            for key, value in optimizer.state[param].items():
                if key != "step":
                    assert value.dtype == torch.float32 and value.shape == param.shape
    for f, r in zip(*results):
        torch.testing.assert_close(f, r, rtol=1e-5, atol=1e-6)


def test_a_layout_change_after_some_steps_is_followed_on_the_fused_path():
    results = []
    for fused in (True, False):
        model = conv().to(memory_format=torch.channels_last)
        optimizer = descend.Adam(model.parameters(), lr=0.01, fused=fused)
        trained(model, optimizer, steps=3, channels_last=True)
        model.to(memory_format=torch.contiguous_format)
        trained(model, optimizer, steps=3)
        results.append([p.detach() for p in model.parameters()])
    for f, r in zip(*results):
        torch.testing.assert_close(f, r, rtol=1e-6, atol=1e-7)


def test_a_resized_parameter_raises_a_clear_error_and_nothing_is_written():
    param = torch.nn.Parameter(torch.ones(4))
    param.grad = torch.ones(4)
    optimizer = descend.Adam([param], lr=0.1)
    optimizer.step()
    param.data = torch.ones(1000)
    param.grad = torch.ones(1000)
    with pytest.raises(RuntimeError, match="resized"):
        optimizer.step()
    assert torch.equal(param.detach(), torch.ones(1000))


# --- the kernel cache ------------------------------------------------------------------------------

STEP_SCRIPT = (
    "import torch, descend, warnings\n"
    "warnings.simplefilter('always')\n"
    "p = torch.nn.Parameter(torch.ones(3)); p.grad = torch.ones(3)\n"
    "descend.Adam([p], lr=0.1).step()\n"
    "assert torch.allclose(p, torch.full((3,), 0.9)), p\n"
    "from descend.backends import cpu; print('library', cpu.available())\n"
)


def run_script(env_changes, script=STEP_SCRIPT):
    env = dict(os.environ, **env_changes)
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=180)


def test_a_corrupted_cached_kernel_is_rebuilt_not_loaded(tmp_path):
    first = run_script({"DESCEND_CACHE_DIR": str(tmp_path)})
    assert first.returncode == 0 and "library True" in first.stdout, first.stderr
    libraries = sorted(tmp_path.glob("*.so"))
    assert len(libraries) == 2  # the support kernels and Adam's generated one
    for damage in ("truncate", "empty", "garbage"):  # a crash mid-write, a full disk, a stray file
        for library in libraries:
            data = library.read_bytes()
            library.write_bytes({"truncate": data[: len(data) // 3], "empty": b"",
                                 "garbage": b"\x7fELF" + b"x" * 64}[damage])
        again = run_script({"DESCEND_CACHE_DIR": str(tmp_path)})
        assert again.returncode == 0, (damage, again.stderr)  # a SIGBUS would be a negative return code
        assert "library True" in again.stdout and "RuntimeWarning" not in again.stderr, damage
        for library in libraries:
            assert build.verified(library), damage


def test_without_a_compiler_the_optimizers_warn_once_and_still_step(tmp_path):
    result = run_script({"DESCEND_CACHE_DIR": str(tmp_path), "CC": "/nonexistent/cc"},
                        STEP_SCRIPT + "descend.SGD([p], lr=0.1).step()\n")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("RuntimeWarning") == 1 and "no C compiler" in result.stderr
    assert "library False" in result.stdout


def test_an_unwritable_cache_warns_and_steps(tmp_path):
    if os.geteuid() == 0:
        blocked = tmp_path / "file"  # root can write anywhere: a cache "folder" that is a file cannot be made
        blocked.write_text("")
        cache = blocked / "cache"
    else:
        cache = tmp_path / "readonly"
        cache.mkdir()
        cache.chmod(0o500)
    result = run_script({"DESCEND_CACHE_DIR": str(cache)})
    assert result.returncode == 0, result.stderr
    assert "RuntimeWarning" in result.stderr and "library False" in result.stdout


def test_cc_with_flags_is_a_compiler_with_flags(tmp_path):
    compiler = shutil.which("cc") or shutil.which("gcc")
    result = run_script({"DESCEND_CACHE_DIR": str(tmp_path), "CC": f"{compiler} -O2"})
    assert result.returncode == 0 and "library True" in result.stdout, result.stderr
    assert "RuntimeWarning" not in result.stderr


def test_the_generated_source_is_readable_c_with_one_loop_and_double_scalars():
    optimizer = descend.Adam([torch.nn.Parameter(torch.ones(2))], lr=0.1)
    source = optimizer.kernel_info()[0].c_source(torch.float32)
    assert source.count("for (int64_t j = lo; j < hi; j++)") == 1
    assert "pow(hyper[" in source and "const double" in source  # bias corrections once per tensor, in double
    assert math.isclose(sum(1 for line in source.splitlines() if "[j] = " in line), 3)  # θ, m, v: one write each


# --- state_dtype=torch.bfloat16: half the state memory, stochastic rounding -----------------------


def decayed_average(fused: bool, steps: int = 600) -> torch.Tensor:
    """RMSprop's s ← 0.999·s + 0.001·g² from s = 1 with g = 0 and lr = 0: s should reach 0.999^steps."""
    param = torch.nn.Parameter(torch.zeros(4096))
    param.grad = torch.zeros(4096)
    optimizer = descend.RMSprop([param], lr=0.0, alpha=0.999, state_dtype=torch.bfloat16, fused=fused)
    optimizer.step()
    optimizer.state[param]["square_avg"].fill_(1.0)
    for _ in range(steps):
        optimizer.step()
    return optimizer.state[param]["square_avg"]


def test_bfloat16_state_is_rounded_stochastically_so_a_slow_average_still_decays():
    nearest = torch.tensor(1.0, dtype=torch.bfloat16)
    assert torch.equal(nearest * 0.999, nearest)  # round-to-nearest: the average would never move
    fused, reference = decayed_average(True), decayed_average(False)
    assert fused.dtype == torch.bfloat16
    assert torch.equal(fused, reference)  # the kernel and the reference draw the same random bits
    assert fused.float().mean().item() == pytest.approx(0.999**600, rel=0.01)


def test_bfloat16_state_trains_like_float32_state_on_a_long_run():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(256, 32, generator=generator)
    y = x @ torch.randn(32, 1, generator=generator) + 0.01 * torch.randn(256, 1, generator=generator)
    losses = {}
    for state_dtype in (torch.float32, torch.bfloat16):
        weight = torch.nn.Parameter(torch.zeros(32, 1))
        optimizer = descend.Adam([weight], lr=3e-3, betas=(0.9, 0.999), state_dtype=state_dtype)
        for _ in range(600):
            optimizer.zero_grad()
            loss = ((x @ weight - y) ** 2).mean()
            loss.backward()
            optimizer.step()
        losses[state_dtype] = loss.item()
        assert all(v.dtype == state_dtype for k, v in optimizer.state[weight].items() if k != "step")
    assert losses[torch.bfloat16] == pytest.approx(losses[torch.float32], rel=0.1, abs=1e-4), losses


def test_state_dtype_is_checked():
    with pytest.raises(ValueError, match="state_dtype"):
        descend.Adam([torch.nn.Parameter(torch.ones(2))], state_dtype=torch.int8)


def test_a_checkpoint_keeps_the_float32_state_of_16_bit_parameters_bit_for_bit():
    param = torch.nn.Parameter(torch.randn(64).bfloat16())
    param.grad = torch.randn(64).bfloat16()
    optimizer = descend.Adam([param], lr=0.1)
    optimizer.step()
    saved = optimizer.state_dict()
    fresh = descend.Adam([param], lr=0.1)
    fresh.load_state_dict(saved)
    for key in ("exp_avg", "exp_avg_sq"):
        assert fresh.state[param][key].dtype == torch.float32
        assert torch.equal(fresh.state[param][key], optimizer.state[param][key])


def test_adafactor_kernel_makes_two_passes_its_clipping_sum_riding_on_the_first_passs_second_walk_of_each_row():
    from descend.plan.formula import COLS
    from descend.plan.schedule import schedule

    param = torch.nn.Parameter(torch.randn(64, 48))
    info = descend.Adafactor([param]).kernel_info()[0]
    segment = info.variant.pieces[0]
    plain = schedule(segment.outputs, role_axes=segment.axes)
    walked = schedule(segment.outputs, role_axes=segment.axes, tails=True)
    # without a second walk over the rows Σu² (u = g·a_i·c_j·s) is known only after a pass of its own
    assert len(plain.passes) == 3 and all(p.tail is None for p in plain.passes)
    # with it: the first pass finishes each row's statistic a_i, then walks the row again for Σ_i g²a_i² per
    # column; Σu² = s²·Σ_j c_j²·(those sums) between the passes; the second pass writes the update
    first, update = walked.passes
    assert first.tail is not None and [node.axes for node in first.tail.reductions] == [COLS]
    assert not first.stores and [role for role, _ in update.stores] == ["param"]
    assert info.passes == 2  # what the C kernel runs


@pytest.mark.parametrize("make", [lambda p: descend.LAMB(p, lr=1e-3), lambda p: descend.LARS(p, lr=1e-3),
                                  lambda p: descend.Adam(p, lr=1e-3, max_grad_norm=1.0)])
def test_chains_whose_sums_have_no_row_or_column_factor_keep_their_passes(make):
    param = torch.nn.Parameter(torch.randn(64, 48))
    info = make([param]).kernel_info()[0]
    assert info.passes == sum(len(s.passes) for s in info.variant.schedules if s is not None)
