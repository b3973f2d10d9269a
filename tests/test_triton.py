"""The generated Triton kernels against the reference chain (fused=False).

Without a GPU the kernels run in Triton's interpreter (``TRITON_INTERPRET=1``) on small CPU tensors: the
driver is told to send CPU parameters to them (``descend.backends.triton.DEVICE_TYPES``), so the whole optimizer
path runs (state, step counts, scalars, the non-finite flag), one launch per step.  Blocks of 16 and chunks
of 32 elements make the test parameters (20, 4, 12, 24 and 1 elements) cover full slices, masked tails and
tensors split over two programs.  The tests at the end run the compiled kernels where CUDA is present.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from unittest import mock

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed (pip install descend[gpu])")

import descend  # noqa: E402
from descend.backends import build, eager  # noqa: E402
from descend.backends import triton as codegen_triton  # noqa: E402
from descend.plan.plan import compile  # noqa: E402
from descend.steps import AddWeightDecay, Elementwise, ScaleByLearningRate, StateSpec  # noqa: E402
from descend.steps import exp, log, maximum, minimum, sign, sqrt, where  # noqa: E402
from conftest import make_params, nonconvex_loss, run_optimizer  # noqa: E402
from test_fused import CONFIGS  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # numpy, on NaN input
DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]
HAVE_CUDA = torch.cuda.is_available()


def traced(cls, kwargs):
    """The plan variant of the chain ``cls(**kwargs)`` runs for vectors (None when the Triton kernels cannot run
    it: not one elementwise pass), and its hyperparameters."""
    optimizer = cls([torch.nn.Parameter(torch.zeros(2))], **kwargs)
    group = optimizer.param_groups[0]
    plan, numbers = compile(optimizer.full_chain(group), group.get("maximize", False))
    variant = plan.variant(1)
    return (variant if codegen_triton.single_pass(variant) else None), numbers


def kernel_of(variant, param_dtype, state_dtype):
    return codegen_triton.kernel(variant.pieces[0], variant.schedules[0], param_dtype, state_dtype)


TRACED = [name for name, (cls, kwargs) in CONFIGS.items() if traced(cls, kwargs)[0] is not None]


def test_every_elementwise_configuration_has_a_trace():
    assert set(CONFIGS) - set(TRACED) == {name for name in CONFIGS if name.startswith("adafactor")}


@pytest.fixture
def interpreted(monkeypatch):
    """Triton's CPU interpreter, and the driver sending CPU parameters to the Triton kernels."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # read by triton.jit when a generated module is imported
    monkeypatch.setattr(codegen_triton, "DEVICE_TYPES", frozenset({"cpu", "cuda"}))
    monkeypatch.setattr(codegen_triton, "BLOCK", 16)
    monkeypatch.setattr(codegen_triton, "CHUNK", 32)
    assert codegen_triton.interpreting()


@pytest.fixture
def launches(monkeypatch):
    """The driver's Triton steps so far (a list that grows by one per launch)."""
    calls = []
    real = codegen_triton.update

    def counting(work):
        calls.append(work)
        return real(work)

    monkeypatch.setattr(codegen_triton, "update", counting)
    return calls


def side_by_side(cls, kwargs, dtype, steps, resync, device="cpu", reference_dtype=None):
    """Yields the parameters of the default path (on ``device``) and of the reference chain (fused=False,
    on the CPU, in ``reference_dtype``) after each step, both from the same start and on the same loss."""
    start = make_params(dtype)
    ours = [p.clone().to(device).requires_grad_() for p in start]
    reference = [p.clone().to(reference_dtype or dtype).requires_grad_() for p in start]
    optimizers = cls(ours, **kwargs), cls(reference, fused=False, **kwargs)
    for _ in range(steps):
        for params, optimizer in zip((ours, reference), optimizers):
            optimizer.zero_grad()
            with torch.no_grad():
                inputs = [p.detach().cpu().to(reference_dtype or dtype).requires_grad_() for p in params]
            nonconvex_loss(inputs).backward()
            for p, q in zip(params, inputs):
                p.grad = q.grad.to(p.dtype).to(p.device)  # the same gradient for both: the reference's
            optimizer.step()
        yield ours, reference, *optimizers
        if resync:
            with torch.no_grad():
                for o, r in zip(ours, reference):
                    o.copy_(r)


def rounding(dtype):
    """One unit in the last place, relative: what rounding a float32 result to ``dtype`` may change."""
    return dict(rtol=torch.finfo(dtype).eps, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", TRACED)
def test_triton_kernel_equals_reference_chain(name, dtype, interpreted, launches):
    cls, kwargs = CONFIGS[name]
    steps = {torch.float64: 3, torch.float32: 2}.get(dtype, 1)  # the interpreter is slow: few steps
    for ours, reference, optimizer, reference_optimizer in side_by_side(
            cls, kwargs, dtype, steps, resync=dtype != torch.float64):
        for o, r in zip(ours, reference):
            if dtype == torch.float32:
                torch.testing.assert_close(o, r, rtol=1e-6, atol=1e-6)
            elif dtype != torch.float64:
                torch.testing.assert_close(o, r, **rounding(dtype))
    if dtype == torch.float64:  # the whole trajectory, no re-syncing
        for o, r, s in zip(ours, reference, make_params(dtype)):
            assert not torch.equal(r, s)
            torch.testing.assert_close(o, r, rtol=1e-10, atol=1e-12)
    assert len(launches) == steps  # one launch per step covers all five parameters
    for o, r in zip(ours, reference):
        state, expected = optimizer.state[o], reference_optimizer.state[r]
        assert state.keys() == expected.keys()
        for key in state:
            assert state[key].dtype == expected[key].dtype
            tolerance = dict(rtol=1e-9, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-7)
            torch.testing.assert_close(state[key], expected[key], **tolerance)


@pytest.mark.parametrize("cls, kwargs", [(descend.Adam, dict(lr=0.01)), (descend.AdamW, dict(lr=0.01, amsgrad=True)),
                                         (descend.SGD, dict(lr=0.05, momentum=0.9))], ids=["Adam", "AdamW", "SGD"])
def test_triton_kernel_keeps_float16_state(cls, kwargs, interpreted, launches):
    """``state_dtype=torch.float16`` (torch fused's float16 moments) in the Triton kernel, as on the reference path."""
    for ours, reference, optimizer, reference_optimizer in side_by_side(
            cls, dict(kwargs, state_dtype=torch.float16), torch.float16, 2, resync=True):
        for o, r in zip(ours, reference):
            torch.testing.assert_close(o, r, **rounding(torch.float16))
    assert len(launches) == 2
    for o, r in zip(ours, reference):
        for key, value in optimizer.state[o].items():
            if key != "step":
                assert value.dtype == reference_optimizer.state[r][key].dtype == torch.float16
                torch.testing.assert_close(value, reference_optimizer.state[r][key], rtol=2e-3, atol=1e-5)


# one case per built-in step and setting, so that a wrong formula fails here too, not only a wrong printer
TORCH_CASES = [
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.05)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.1, initial_accumulator_value=0.1)),
    ("RMSprop", dict(lr=0.01, centered=True, momentum=0.5, alpha=0.9, maximize=True)),
    ("Adadelta", dict(lr=0.5, rho=0.95, weight_decay=0.1)),
    ("Adam", dict(lr=0.01, weight_decay=0.1, betas=(0.8, 0.99))),
    ("AdamW", dict(lr=0.01, weight_decay=0.3, amsgrad=True)),
]


@pytest.mark.parametrize("name, kwargs", TORCH_CASES, ids=[name for name, _ in TORCH_CASES])
def test_triton_trajectory_equals_torch_optim(name, kwargs, interpreted, launches):
    start = make_params(torch.float64)
    got, _ = run_optimizer(getattr(descend, name), start, 3, **kwargs)
    want, _ = run_optimizer(getattr(torch.optim, name), start, 3, foreach=False, **kwargs)
    for g, w, s in zip(got, want, start):
        assert not torch.equal(w, s)
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
    assert len(launches) == 3


def test_the_default_and_fused_true_take_the_triton_kernel(interpreted, launches):
    param = torch.nn.Parameter(torch.randn(4, 3))
    param.grad = torch.randn(4, 3)
    for fused in (None, True):
        with mock.patch.object(eager, "update", side_effect=AssertionError("reference path taken")):
            descend.Adam([param], fused=fused).step()
    assert len(launches) == 2
    descend.Adam([param], fused=False).step()
    assert len(launches) == 2


def test_one_kernel_serves_every_learning_rate(interpreted, launches):
    params = [torch.nn.Parameter(torch.randn(5)) for _ in range(2)]
    reference = [torch.nn.Parameter(p.detach().clone()) for p in params]
    optimizer = descend.SGD(params, lr=0.1, momentum=0.9)
    reference_optimizer = descend.SGD(reference, lr=0.1, momentum=0.9, fused=False)
    for lr in (0.1, 0.5, 0.02):
        kernels = len(codegen_triton._kernels)
        for ps, opt in ((params, optimizer), (reference, reference_optimizer)):
            opt.param_groups[0]["lr"] = lr
            for p in ps:
                p.grad = torch.ones_like(p)
            opt.step()
        for p, r in zip(params, reference):
            torch.testing.assert_close(p, r, rtol=1e-6, atol=1e-6)
    assert len(launches) == 3 and len(codegen_triton._kernels) == kernels  # the last two steps built none


def test_the_flag_reports_a_nonfinite_gradient_without_reading_past_a_tensor(interpreted):
    variant, hyper = traced(descend.Adam, dict(lr=0.1))
    kernel = kernel_of(variant, torch.float32, torch.float32)
    sizes = [5, 40, 16]  # a tail only; two chunks with full slices and a tail; exactly one full slice
    buffers = [torch.zeros(n + 3) for n in sizes]
    for buffer, n in zip(buffers, sizes):
        buffer[n:] = math.nan  # beyond the end of each tensor: never read
    grads = [buffer[:n] for buffer, n in zip(buffers, sizes)]
    params = [torch.zeros(n) for n in sizes]
    states = [dict(exp_avg=torch.zeros(n), exp_avg_sq=torch.zeros(n)) for n in sizes]

    def flag():
        return codegen_triton.launch(kernel, params, grads, states, [1.0] * 3, None, hyper, {}).item()

    assert flag() == 0
    for tensor, position, value in ((0, 4, math.inf), (1, 35, math.nan), (1, 3, -math.inf), (2, 15, math.nan)):
        grads[tensor][position] = value
        assert flag() == 1, (tensor, position)
        grads[tensor][position] = 0.0
    assert flag() == 0


def test_a_nonfinite_gradient_raises_after_the_step_as_on_the_cpu(interpreted, launches):
    param = torch.nn.Parameter(torch.ones(20))
    param.grad = torch.ones(20)
    param.grad[17] = math.nan
    with pytest.raises(FloatingPointError, match="step was applied"):
        descend.SGD([param], lr=0.1).step()
    assert len(launches) == 1
    assert param[0].item() == pytest.approx(0.9) and math.isnan(param[17].item())


def test_a_subclass_that_changes_its_chain_gets_its_own_kernel(interpreted, launches):
    class DecayedSGD(descend.SGD):
        def chain(self, group):
            return [AddWeightDecay(0.5), *super().chain(group)]

    param = torch.nn.Parameter(torch.tensor([2.0]))
    param.grad = torch.tensor([1.0])
    DecayedSGD([param], lr=0.1, weight_decay=0.0).step()
    assert len(launches) == 1
    assert param.item() == pytest.approx(1.8)  # 2 − 0.1·(1 + 0.5·2), not the 1.9 of plain SGD


@dataclass
class SignedUpdate(Elementwise):
    """A user's own step (Lion's update rule): ``m ← βm + (1−β)u``, emits ``sign(m)``, and ``0`` where the
    running average is below ``floor`` in magnitude."""

    stateful = True
    beta: float
    floor: float
    key: str = "lion_avg"

    def formula(self, u, param, state, t):
        average = state[self.key] = self.beta * state[self.key] + (1.0 - self.beta) * u
        return where(abs(average) > self.floor, sign(average), 0.0)


class Signed(descend.SGD):
    def chain(self, group):
        return [SignedUpdate(0.9, 1e-3), ScaleByLearningRate(group["lr"])]


@dataclass
class EveryOperation(Elementwise):
    """A step that uses every vector operation the printer knows (no textbook meaning)."""

    threshold: float

    def formula(self, u, param, state, t):
        large = exp(-abs(u)) - log(abs(u) + 1.0) / (1.0 + param * param)
        small = minimum(u, param) * sign(param) - maximum(-u, 0.5 * param)
        return where(u > self.threshold, large, small) + (u >= param) * 0.25 - sqrt(abs(param))


class Everything(descend.SGD):
    def chain(self, group):
        return [EveryOperation(0.1), ScaleByLearningRate(group["lr"])]


@pytest.mark.parametrize("cls, dtype", [(Signed, torch.float32), (Signed, torch.bfloat16),
                                        (Everything, torch.float32), (Everything, torch.float64)],
                         ids=["signed-f32", "signed-bf16", "every-op-f32", "every-op-f64"])
def test_a_user_written_step_runs_in_the_triton_kernel(cls, dtype, interpreted, launches):
    for ours, reference, *_ in side_by_side(cls, dict(lr=0.01), dtype, 2, resync=True):
        for o, r in zip(ours, reference):
            torch.testing.assert_close(o, r, **(rounding(dtype) if dtype == torch.bfloat16 else {}))
    assert len(launches) == 2


@dataclass
class ShrinkingStep(Elementwise):
    """A step with a per-tensor number in its state: ``p ← βp`` once per step (``prepare``), ``u ← p·u``."""

    scalar_state = ("shrink",)
    beta: float

    def state_specs(self, ndim):
        return (StateSpec("shrink", shape="scalar", init=1.0, storage="default"),)

    def prepare(self, state, t):
        state["shrink"].mul_(self.beta)

    def formula(self, u, param, state, t):
        return u * state["shrink"]


class Shrinking(descend.SGD):
    def chain(self, group):
        return [ShrinkingStep(0.5), *super().chain(group)]


def test_prepared_per_tensor_scalars_reach_the_kernel(interpreted, launches):
    for ours, reference, *_ in side_by_side(Shrinking, dict(lr=0.1, momentum=0.9), torch.float32, 2, resync=True):
        for o, r in zip(ours, reference):
            torch.testing.assert_close(o, r, rtol=1e-6, atol=1e-6)
    assert len(launches) == 2


def test_the_trial_launch_runs_every_kind_of_kernel(interpreted):
    for cls, kwargs in ((Shrinking, dict(lr=0.1)), (descend.Adam, dict(amsgrad=True))):
        kernel = kernel_of(traced(cls, kwargs)[0], torch.bfloat16, torch.float32)
        codegen_triton._trial(kernel, torch.device("cpu"))  # what a first CUDA launch runs, here interpreted


def test_a_kernel_that_cannot_be_generated_leaves_its_parameters_to_the_reference_path(interpreted, monkeypatch):
    monkeypatch.setattr(codegen_triton, "triton_source", mock.Mock(side_effect=SyntaxError("broken printer")))
    for name, fresh in (("_kernels", {}), ("error", None)):
        monkeypatch.setattr(codegen_triton, name, fresh)
    monkeypatch.setattr(build, "_warned", set())
    param = torch.nn.Parameter(torch.tensor([2.0]))
    param.grad = torch.tensor([1.0])
    with pytest.warns(RuntimeWarning, match="broken printer"):
        descend.SGD([param], lr=0.1).step()
    assert param.item() == pytest.approx(1.9)
    with pytest.raises(RuntimeError, match="broken printer"):
        descend.SGD([param], lr=0.1, fused=True).step()


def test_compiled_kernels_never_take_cpu_tensors(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(codegen_triton, "DEVICE_TYPES", frozenset({"cpu", "cuda"}))
    param = torch.zeros(3)
    assert not codegen_triton.takes(param, torch.zeros(3))  # it would dereference host addresses on the GPU
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert codegen_triton.takes(param, torch.zeros(3))
    assert not codegen_triton.takes(param, torch.zeros(3, dtype=torch.float64))


def test_without_triton_no_parameter_goes_to_it(interpreted, launches, monkeypatch):
    monkeypatch.setattr(codegen_triton, "triton", None)  # as if `import triton` had failed
    monkeypatch.setattr(codegen_triton, "_imported", True)
    assert not codegen_triton.takes(torch.zeros(3), torch.zeros(3))
    param = torch.nn.Parameter(torch.tensor([2.0]))
    param.grad = torch.tensor([1.0])
    descend.SGD([param], lr=0.1).step()
    assert param.item() == pytest.approx(1.9) and not launches


def test_the_kernel_source_is_a_real_file_in_the_cache(interpreted, tmp_path, monkeypatch):
    monkeypatch.setenv("DESCEND_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(codegen_triton, "_kernels", {})
    kernel = kernel_of(traced(descend.Adagrad, {})[0], torch.float16, torch.float32)
    assert kernel.path.parent == tmp_path / "triton" and "tl.div_rn" in kernel.path.read_text()


def test_the_kernel_compiles_for_a_gpu_without_one(monkeypatch):
    """Triton compiles for a target without its device: the generated source passes the real front end,
    and its full slices use 16-byte vector loads and stores (where every address is aligned)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if "nvidia" not in triton.backends.backends:
        pytest.skip("this triton has no NVIDIA backend")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setenv("TRITON_DEFAULT_FP_FUSION", "1")
    monkeypatch.setattr(codegen_triton, "_kernels", {})
    variant = traced(descend.Adam, dict(amsgrad=True, weight_decay=0.1))[0]
    kernel = kernel_of(variant, torch.bfloat16, torch.float32)
    signature = {"pointers": "*i64", "sizes": "*i64", "chunk_tensor": "*i64", "chunk_start": "*i64",
                 "scalars": "*fp32", "found_flag": "*i32", **dict.fromkeys(["K", "NK", "BLOCK", "CHUNK", "ALIGN"],
                                                                          "constexpr")}
    constants = dict(K=len(variant.pieces[0].loads), NK=len(kernel.columns), BLOCK=1024, CHUNK=8192, ALIGN=16)
    compiled = triton.compile(ASTSource(kernel.function, signature, constants), target=GPUTarget("cuda", 90, 32),
                              options=dict(num_warps=codegen_triton.NUM_WARPS))
    ptx = compiled.asm["ptx"]
    assert "ld.global.v4" in ptx and "st.global.v4" in ptx and "sqrt.rn.f32" in ptx


# --- on a GPU: the compiled kernels ---------------------------------------------------------------

cuda_only = pytest.mark.skipif(not HAVE_CUDA, reason="no CUDA device: the compiled Triton kernels cannot run")


@cuda_only
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", TRACED)
def test_cuda_kernel_equals_the_float64_reference(name, dtype, launches):
    cls, kwargs = CONFIGS[name]
    tolerance = {torch.float64: dict(rtol=1e-10, atol=1e-12), torch.float32: dict(rtol=1e-5, atol=1e-6)}.get(
        dtype, rounding(dtype))
    for ours, reference, *_ in side_by_side(cls, kwargs, dtype, 3, resync=True, device="cuda",
                                            reference_dtype=torch.float64):
        for o, r in zip(ours, reference):
            torch.testing.assert_close(o.cpu().double(), r.to(dtype).double(), **tolerance)
    assert len(launches) == 3


@cuda_only
def test_cuda_without_triton_runs_the_foreach_reference_chain(launches, monkeypatch):
    monkeypatch.setattr(codegen_triton, "triton", None)
    monkeypatch.setattr(codegen_triton, "_imported", True)
    param = torch.nn.Parameter(torch.tensor([2.0], device="cuda"))
    param.grad = torch.tensor([1.0], device="cuda")
    with mock.patch.object(eager, "_update_chunk", wraps=eager._update_chunk) as chunk:
        descend.SGD([param], lr=0.1).step()
    assert chunk.called and not launches and param.item() == pytest.approx(1.9)


@cuda_only
def test_cuda_many_tensors_in_one_launch(launches):
    sizes = [1, 1000, codegen_triton.CHUNK, codegen_triton.CHUNK * 3 + 17, 4096 * 1024 + 5]
    params = [torch.nn.Parameter(torch.randn(n, device="cuda")) for n in sizes]
    reference = [torch.nn.Parameter(p.detach().cpu().double()) for p in params]
    for ps in (params, reference):
        for p in ps:
            p.grad = torch.full_like(p, 0.5)
    descend.AdamW(params, lr=0.1).step()
    descend.AdamW(reference, lr=0.1, fused=False).step()
    assert len(launches) == 1
    for p, r in zip(params, reference):
        torch.testing.assert_close(p.cpu().double(), r, rtol=1e-6, atol=1e-6)
