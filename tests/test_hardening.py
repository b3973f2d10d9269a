"""Issue 18, items 1–16: one step off the default path, descend stays memory-safe and honest.

Each test reproduces a failure reported against the previous design (a hand-written Adafactor kernel,
hyperparameters found with ``vars()``, a state fingerprint) and checks the behaviour the issue asks for.
They go through the public API wherever they can, so that they run against any version of descend; the
few that look at the native boundary itself import it.  The cases that corrupted the heap run in a child
process, so that a regression fails the test instead of killing the run.
"""
from __future__ import annotations

import copy
import io
import json
import os
import shutil
import subprocess
import sys
import types
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import descend
from descend.steps import Momentum, ScaleByLearningRate, sqrt

ROOT = Path(__file__).resolve().parents[1]
HAVE_COMPILER = bool(os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc"))
needs_compiler = pytest.mark.skipif(not HAVE_COMPILER, reason="no C compiler: the fused kernels cannot be built here")


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def run_isolated(script: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """``script`` in a fresh Python process that imports this checkout's descend."""
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    environment.update(env or {})
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=environment, capture_output=True, text=True,
                          timeout=timeout)


def results_of(completed: subprocess.CompletedProcess) -> dict:
    """The ``RESULT {json}`` lines a child printed, by name; a child that crashed fails the test here."""
    results = {}
    for line in completed.stdout.splitlines():
        if line.startswith("RESULT "):
            entry = json.loads(line[len("RESULT "):])
            results[entry.pop("name")] = entry
    assert completed.returncode == 0, (
        f"the child process died (exit status {completed.returncode}) after {list(results)}:\n"
        f"{completed.stderr[-3000:]}")
    return results


def paths_of(optimizer) -> list[str]:
    return [info.path for info in optimizer.kernel_info()]


# --- items 1 and 2: a kernel never touches a buffer it was not generated for ------------------------

# Runs every case of items 1 and 2 in one child process: the default path (the generated kernels) against
# the reference chain (fused=False) from the same start, with a state dtype other than the parameter's, or
# one edited mid-run.  Prints one RESULT line per case.
MEMORY_CASES = r'''
import json, torch, descend
def generator(seed): return torch.Generator().manual_seed(seed)
SHAPES = [(33, 17), (2, 5, 7), (9,)]

def run(make, param_dtype, fused, edits, steps):
    params = [torch.nn.Parameter(torch.randn(s, generator=generator(i), dtype=torch.float64).to(param_dtype))
              for i, s in enumerate(SHAPES)]
    optimizer = make(params, fused)
    paths = set()
    for step in range(steps):
        if step in edits:
            optimizer.param_groups[0]["state_dtype"] = edits[step]
        for i, p in enumerate(params):
            p.grad = torch.randn(p.shape, generator=generator(100 * step + i), dtype=torch.float64).to(param_dtype)
        optimizer.step()
        paths.update(paths_of(optimizer))
    dtypes = sorted({str(v.dtype) for p in params for k, v in optimizer.state[p].items() if k != "step"})
    return [p.detach().double() for p in params], paths, dtypes

def paths_of(optimizer): return [info.path for info in optimizer.kernel_info()]

def compare(name, make, param_dtype, edits=None, steps=5):
    edits = edits or {}
    fused, fused_paths, fused_dtypes = run(make, param_dtype, None, edits, steps)
    reference, _, reference_dtypes = run(make, param_dtype, False, edits, steps)
    difference = max(float((f - r).abs().max()) for f, r in zip(fused, reference))
    finite = all(bool(torch.isfinite(f).all()) for f in fused)
    print("RESULT " + json.dumps(dict(name=name, difference=difference, finite=finite, paths=sorted(fused_paths),
                                      dtypes=fused_dtypes, reference_dtypes=reference_dtypes)), flush=True)

def adafactor(params, fused, state_dtype):
    return descend.Adafactor(params, beta1=0.9, weight_decay=0.01, fused=fused, state_dtype=state_dtype)

for param_dtype, state_dtype in [("float32", "bfloat16"), ("float64", "float32"), ("float32", "float64"),
                                 ("bfloat16", "bfloat16"), ("float16", "float32")]:
    compare(f"adafactor-{param_dtype}-{state_dtype}",
            lambda params, fused, sd=getattr(torch, state_dtype): adafactor(params, fused, sd),
            getattr(torch, param_dtype))

EDITS = {2: torch.bfloat16, 4: torch.float64, 6: None}
for name, make in [
        ("adam", lambda params, fused: descend.Adam(params, lr=0.01, fused=fused)),
        ("rmsprop", lambda params, fused: descend.RMSprop(params, lr=0.01, centered=True, momentum=0.9, fused=fused)),
        ("sgd", lambda params, fused: descend.SGD(params, lr=0.01, momentum=0.9, fused=fused)),
        ("adafactor", lambda params, fused: descend.Adafactor(params, beta1=0.9, fused=fused))]:
    compare(f"edit-{name}", make, torch.float32, EDITS, steps=8)
'''


@pytest.fixture(scope="module")
def memory_cases():
    return results_of(run_isolated(MEMORY_CASES))


@needs_compiler
@pytest.mark.parametrize("case", ["adafactor-float32-bfloat16", "adafactor-float64-float32",
                                  "adafactor-float32-float64", "adafactor-bfloat16-bfloat16",
                                  "adafactor-float16-float32"])
def test_item1_adafactor_with_a_state_dtype_unlike_the_parameter_matches_the_reference(memory_cases, case):
    """Item 1: the hand-written Adafactor kernel read bf16/fp32 statistics as the parameter's type, past the
    end of their buffers (glibc aborts, SIGSEGV, NaN parameters)."""
    result = memory_cases[case]
    assert result["paths"] == ["generated"], result  # the kernels ran: the comparison means something
    state_dtype = "torch." + case.rsplit("-", 1)[1]
    assert result["dtypes"] == [state_dtype] and result["reference_dtypes"] == [state_dtype], result
    assert result["finite"], result
    tolerance = 1e-2 if "-bfloat16-" in case or "-float16-" in case else 1e-5
    assert result["difference"] <= tolerance, result


@needs_compiler
@pytest.mark.parametrize("name", ["adam", "rmsprop", "sgd", "adafactor"])
def test_item2_state_dtype_edited_mid_run_is_converted(memory_cases, name):
    """Item 2: editing ``param_groups[0]["state_dtype"]`` after the state exists ran the kernel for the new dtype
    over buffers of the old one (NaN, or "malloc(): unaligned tcache chunk detected")."""
    result = memory_cases[f"edit-{name}"]
    assert result["paths"] == ["generated"], result
    assert result["dtypes"] == ["torch.float32"] == result["reference_dtypes"], result  # None again at the end
    assert result["finite"] and result["difference"] <= 1e-5, result


@needs_compiler
@pytest.mark.parametrize("corruption", ["dtype", "elements", "layout", "device"])
def test_item2_the_native_boundary_refuses_a_buffer_the_kernel_was_not_generated_for(corruption):
    """Item 2, "required beyond the two fixes": the check before every kernel call.  A buffer that does not
    fit reaches the boundary only if the state conversion before it is broken; the boundary then raises and
    runs nothing."""
    from descend.backends import cpu
    from descend.plan.plan import compile
    from descend.adapter.routing import route

    param = torch.nn.Parameter(torch.randn(6, 5, generator=generator(0)))
    param.grad = torch.randn(6, 5, generator=generator(1))
    optimizer = descend.Adafactor([param], beta1=0.9)
    optimizer.step()
    group = optimizer.param_groups[0]
    chain = optimizer.full_chain(optimizer._numbers(group))
    plan, numbers = compile(chain)
    (bucket,) = route("Adafactor", group, plan, [param])
    assert bucket.path == "c"
    work = optimizer._work(bucket, chain, plan, numbers, "Adafactor")
    state = work.states[0]
    if corruption == "dtype":
        state["exp_avg"] = state["exp_avg"].double()
    elif corruption == "elements":
        state["exp_avg_sq_row"] = torch.zeros(5)  # one value per row: 6 are read
    elif corruption == "layout":
        state["exp_avg"] = torch.zeros(5, 6).t()
    else:
        state["exp_avg"] = torch.zeros(6, 5, device="meta")
    before = param.detach().clone()
    with pytest.raises(RuntimeError, match="nothing was run"):
        cpu.update(work)
    assert torch.equal(param.detach(), before)


# Edits that keep a tensor object and its version counter (``x.data = y`` replaces the storage under the same
# tensor; torch checks a new ``p.grad`` but not ``p.grad.data = ...``) after the steady-state step has been
# remembered: each must reach the full step's boundary check, never the kernel with its old addresses.
REPLACED_STORAGE = r"""
import json, sys, torch, descend
how = sys.argv[1]
def run(fused):
    param = torch.nn.Parameter(torch.randn(4096, generator=torch.Generator().manual_seed(0)))
    optimizer = descend.Adam([param], lr=0.01, fused=fused)
    for step in range(3):
        param.grad = torch.randn(4096, generator=torch.Generator().manual_seed(step + 1))
        optimizer.step()
    param.grad = torch.ones(4096)
    if how == "state":
        optimizer.state[param]["exp_avg"].data = torch.zeros(16)
    elif how == "grad-size":
        param.grad.data = torch.ones(16)
    elif how == "grad-dtype":
        param.grad.data = torch.ones(4096, dtype=torch.float64)
    before = param.detach().clone()
    try:
        optimizer.step()
        outcome = "stepped"
    except (RuntimeError, ValueError) as error:
        outcome = "refused: " + str(error)
    return outcome, before, param.detach().clone()
fused, reference = run(None), run(False)
print("RESULT " + json.dumps(dict(name=how, outcome=fused[0], reference=reference[0],
      unchanged=bool(torch.equal(fused[1], fused[2])), difference=float((fused[2] - reference[2]).abs().max()))))
"""


@needs_compiler
@pytest.mark.parametrize("how", ["state", "grad-size", "grad-dtype"])
def test_item2_storage_replaced_under_the_same_tensor_never_reaches_the_kernel(how):
    """The remembered kernel call (descend.adapter.fastpath) was keyed on tensor identity and version alone:
    ``state["exp_avg"].data = torch.zeros(16)`` left the kernel writing 4096 floats through a freed pointer
    (the process hung or corrupted the heap), ``p.grad.data = torch.ones(16)`` read 4080 floats past the
    gradient (NaN), a float64 gradient was read as float32 (an update of 1e30)."""
    result = results_of(run_isolated(REPLACED_STORAGE.replace("sys.argv[1]", repr(how)), timeout=120))[how]
    if how == "grad-dtype":  # torch would promote it; the full step converts it, as the reference does
        assert result["outcome"] == result["reference"] == "stepped"
        assert result["difference"] <= 1e-6, result
    else:
        assert result["outcome"].startswith("refused") and "nothing was run" in result["outcome"] or \
            "shape" in result["outcome"], result
        assert result["unchanged"], result


# --- item 3: one rounding rule -------------------------------------------------------------------------


@needs_compiler
@pytest.mark.parametrize("cls, kwargs", [(descend.RMSprop, {}), (descend.RMSprop, dict(centered=True, momentum=0.9)),
                                         (descend.Adam, dict(amsgrad=True)), (descend.Adadelta, {}),
                                         (descend.NAdam, {})])
def test_item3_bfloat16_state_gives_the_same_update_on_every_path(cls, kwargs):
    """Item 3: with bf16 state the chain read back the value an earlier step had just stored, rounded, and the
    kernel kept it unrounded: RMSprop, one step, parameters 3.8e-4 apart on a step of 0.1."""
    results = {}
    for path in ("fused", "reference", "foreach"):
        param = torch.nn.Parameter(torch.randn(1000, generator=generator(1)))
        optimizer = cls([param], lr=0.1, state_dtype=torch.bfloat16, fused=None if path == "fused" else False,
                        foreach=path == "foreach", **kwargs)
        for step in range(3):
            param.grad = torch.randn(1000, generator=generator(5 + step))
            optimizer.step()
        assert paths_of(optimizer) == ["generated" if path == "fused" else "reference"]
        results[path] = param.detach().clone(), {k: v.clone() for k, v in optimizer.state[param].items()}
    for path in ("reference", "foreach"):
        torch.testing.assert_close(results["fused"][0], results[path][0], rtol=0, atol=2e-6)
        for key, value in results["fused"][1].items():  # the stored state: the same bits (1 ulp where the
            other = results[path][1][key]                # unrounded values differ in their last bit)
            assert value.dtype == other.dtype
            torch.testing.assert_close(value.float(), other.float(), rtol=2 ** -7, atol=1e-30)


# --- item 4: stochastic rounding keyed on a per-parameter step count ----------------------------------


@pytest.mark.parametrize("fused", [None, False])
@pytest.mark.parametrize("name", ["SGD", "Lion"])
def test_item4_stochastic_rounding_draws_new_bits_every_step(name, fused):
    """Item 4: chains that keep no step counter drew the same random bits every step: an EMA with β = 0.999 fed
    g = 1 stalled at 0.34 after 3000 steps instead of 0.950 (Lion's exp_avg at 0.34 instead of 0.865)."""
    elements = 4096 if fused is None else 512
    param = torch.nn.Parameter(torch.zeros(elements))
    if name == "SGD":
        optimizer = descend.SGD([param], lr=0.0, momentum=0.999, dampening=0.999, state_dtype=torch.bfloat16,
                                fused=fused)
        key, steps = "momentum_buffer", 3000
    else:
        optimizer = descend.Lion([param], lr=0.0, betas=(0.9, 0.999), state_dtype=torch.bfloat16, fused=fused)
        key, steps = "exp_avg", 2000
    for _ in range(steps):
        param.grad = torch.ones(elements)
        optimizer.step()
    expected = 1 - 0.999 ** steps
    assert optimizer.state[param][key].dtype == torch.bfloat16
    assert abs(optimizer.state[param][key].float().mean().item() - expected) < 0.01


def test_item4_stochastic_rounding_is_bit_reproducible_on_resume_and_across_thread_counts():
    def run(split=None, threads=None):
        previous = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        try:
            param = torch.nn.Parameter(torch.zeros(70_000))
            optimizer = descend.SGD([param], lr=0.01, momentum=0.99, dampening=0.99, state_dtype=torch.bfloat16)
            for step in range(40):
                if step == split:
                    buffer = io.BytesIO()
                    torch.save(optimizer.state_dict(), buffer)
                    buffer.seek(0)
                    param = torch.nn.Parameter(param.detach().clone())
                    optimizer = descend.SGD([param], lr=0.01, momentum=0.99, dampening=0.99, state_dtype=torch.bfloat16)
                    optimizer.load_state_dict(torch.load(buffer))
                param.grad = torch.randn(70_000, generator=generator(step))
                optimizer.step()
            return param.detach(), optimizer.state[param]["momentum_buffer"]
        finally:
            torch.set_num_threads(previous)

    param, buffer = run()
    for other_param, other_buffer in (run(split=17), run(threads=1)):
        assert torch.equal(param, other_param) and torch.equal(buffer, other_buffer)


# --- item 5: what a formula reads besides its step's numeric fields -------------------------------------

SCALE = 1.0  # read by ScaleByModuleVariable's formula


class Settings:
    def __init__(self):
        self.scale = 1.0


SETTINGS = Settings()


@dataclass
class ScaleByModuleVariable(descend.Elementwise):
    def formula(self, u, param, state, t):
        return u * SCALE


def _helper(u):
    return u * SCALE


@dataclass
class ScaleThroughAHelper(descend.Elementwise):
    def formula(self, u, param, state, t):
        return _helper(u)


@dataclass
class ScaleThroughAMethod(descend.Elementwise):
    def scaled(self, u):
        return u * SCALE

    def formula(self, u, param, state, t):
        return self.scaled(u)


@dataclass
class ScaleByClassAttribute(descend.Elementwise):
    factor = 1.0  # a class attribute, not a field

    def formula(self, u, param, state, t):
        return u * self.factor


class Constants:  # a class used as a namespace of numbers
    scale = 1.0


@dataclass
class ScaleByClassConstant(descend.Elementwise):
    def formula(self, u, param, state, t):
        return u * Constants.scale


settings_module = types.ModuleType("hardening_settings")
settings_module.scale = 1.0


@dataclass
class ScaleByModuleAttribute(descend.Elementwise):
    def formula(self, u, param, state, t):
        return u * settings_module.scale


@dataclass
class ScaleByGlobalSettings(descend.Elementwise):
    def formula(self, u, param, state, t):
        return u * SETTINGS.scale


@dataclass
class ScaleBySettingsField(descend.Elementwise):
    settings: object

    def formula(self, u, param, state, t):
        return u * self.settings.scale


@dataclass
class ScaleByCallableField(descend.Elementwise):
    scale: object

    def formula(self, u, param, state, t):
        return u * self.scale()


def _set_scale(value: float) -> None:
    global SCALE
    SCALE = value
    settings_module.scale = value
    ScaleByClassAttribute.factor = value
    Constants.scale = value
    SETTINGS.scale = value


def _closure_step():
    factor = 1.0

    @dataclass
    class ScaleByClosure(descend.Elementwise):
        def formula(self, u, param, state, t):
            return u * factor

    def set_factor(value):
        nonlocal factor
        factor = value
    return ScaleByClosure, set_factor


def _run_with_a_changing_value(make_step, set_value, fused):
    param = torch.nn.Parameter(torch.zeros(3))
    optimizer = descend.make_optimizer("ScaledSGD", lambda group: [make_step(), ScaleByLearningRate(group["lr"])],
                                       dict(lr=1.0))([param], fused=fused)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step, value in enumerate((1.0, 10.0, 100.0)):
            set_value(value)
            param.grad = torch.ones(3)
            optimizer.step()
        paths = paths_of(optimizer)
    set_value(1.0)
    return -param[0].item(), paths, [str(w.message) for w in caught]


@needs_compiler
@pytest.mark.parametrize("kind", [ScaleByModuleVariable, ScaleThroughAHelper, ScaleThroughAMethod,
                                  ScaleByClassAttribute, ScaleByModuleAttribute, ScaleByClassConstant, "closure"])
def test_item5_a_number_read_from_outside_the_fields_is_followed_by_the_kernel(kind):
    """Item 5: a formula reading a module constant (or a closure, a class attribute, a module's attribute, through
    a helper) got the value baked into the kernel: later values were ignored by the fused path only.  descend
    re-traces when such a value changes (the promise is in descend/plan/external.py and the README)."""
    if kind == "closure":
        kind, set_value = _closure_step()
    else:
        set_value = _set_scale
    fused = _run_with_a_changing_value(kind, set_value, None)
    reference = _run_with_a_changing_value(kind, set_value, False)
    assert fused[0] == reference[0] == 111.0, (fused, reference)
    assert fused[1] == ["generated"], fused  # the kernel ran, with the value of the moment
    assert not fused[2], fused


@pytest.mark.parametrize("make_step, names", [
    (lambda: ScaleByGlobalSettings(), "SETTINGS"),
    (lambda: ScaleBySettingsField(SETTINGS), "ScaleBySettingsField.settings"),
    (lambda: ScaleByCallableField(lambda: SETTINGS.scale), "ScaleByCallableField.scale")])
def test_item5_a_number_hidden_in_an_object_sends_the_chain_to_the_reference_path_with_a_warning(make_step, names):
    fused = _run_with_a_changing_value(make_step, _set_scale, None)
    reference = _run_with_a_changing_value(make_step, _set_scale, False)
    assert fused[0] == reference[0] == 111.0, (fused, reference)
    assert fused[1] == ["reference"]
    warned = [message for message in fused[2] if names in message]
    # once, though every step made its step anew
    assert len(warned) <= 1 and (warned or _warned_before(names)), fused[2]


def _warned_before(text: str) -> bool:
    """descend warns once per reason and process: a reason another test triggered first is not repeated."""
    from descend.adapter import routing

    return any(text in reason for reason in routing._warned)


@needs_compiler
def test_item5_a_value_that_keeps_changing_leaves_the_kernels_after_a_few_values():
    """Each value read from outside the fields is a kernel of its own; a value that changes every step (a number
    that belongs in a field) must not compile a kernel per step forever."""
    from descend.plan import external

    kind, set_factor = _closure_step()
    param = torch.nn.Parameter(torch.zeros(3))
    optimizer = descend.make_optimizer("Drifting", lambda group: [kind()], dict(lr=1.0))([param])
    total = 0.0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(external.MAX_VALUES + 4):
            set_factor(float(step))
            total += step
            param.grad = torch.ones(3)
            optimizer.step()
    assert param[0].item() == total
    assert paths_of(optimizer) == ["reference"]
    assert any("changed more than" in str(w.message) for w in caught)


def _double(u):
    return u * 2.0


def _triple(u):
    return u * 3.0


ACTIVATION = _double  # a user's function the formula calls: rebinding it changes the formula


@dataclass
class ScaleByActivation(descend.Elementwise):
    def formula(self, u, param, state, t):
        return ACTIVATION(u)


@pytest.mark.parametrize("fused", [None, False])
def test_item5_rebinding_a_function_the_formula_calls_re_traces(fused):
    global ACTIVATION
    param = torch.nn.Parameter(torch.zeros(2))
    optimizer = descend.make_optimizer("Activated", lambda group: [ScaleByActivation()], dict(lr=1.0))([param],
                                                                                                     fused=fused)
    try:
        for activation in (_double, _triple):
            ACTIVATION = activation
            param.grad = torch.ones(2)
            optimizer.step()
    finally:
        ACTIVATION = _double
    assert param[0].item() == 5.0
    assert paths_of(optimizer) == ["generated" if fused is None and HAVE_COMPILER else "reference"]


@dataclass
class OneMinusBeta(descend.Elementwise):
    beta: float

    def __post_init__(self):
        self.one_minus_beta = 1.0 - self.beta  # not a field: the formula reads it all the same

    def formula(self, u, param, state, t):
        return -self.one_minus_beta * u


@pytest.mark.parametrize("fused", [None, False])
def test_item5_attributes_set_in_post_init_are_numbers_too(fused):
    first, second = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    cls = descend.make_optimizer("PostInit", lambda group: [OneMinusBeta(group["beta"])], dict(beta=0.5))
    optimizer = cls([{"params": [first]}, {"params": [second], "beta": 0.75}], fused=fused)
    first.grad, second.grad = torch.ones(2), torch.ones(2)
    optimizer.step()
    assert first[0].item() == -0.5 and second[0].item() == -0.25
    assert paths_of(optimizer) == ["generated" if fused is None and HAVE_COMPILER else "reference"] * 2


# --- item 6: slots and frozen dataclasses -----------------------------------------------------------------


@dataclass(slots=True)
class SlotsScale(descend.Elementwise):
    lr: float

    def formula(self, u, param, state, t):
        return -self.lr * u


@dataclass(frozen=True)
class FrozenScale(descend.Elementwise):
    lr: float

    def formula(self, u, param, state, t):
        return -self.lr * u


@dataclass(slots=True, frozen=True)
class SlotsFrozenScale(descend.Elementwise):
    lr: float

    def formula(self, u, param, state, t):
        return -self.lr * u


@pytest.mark.parametrize("fused", [None, False])
@pytest.mark.parametrize("kind", [SlotsScale, FrozenScale, SlotsFrozenScale])
def test_item6_slots_and_frozen_steps_take_their_numbers_as_hyperparameters(kind, fused):
    """Item 6: hyperparameters were found with ``vars(step)``, empty for slots: every number was baked in, lr
    schedules had no effect and every group ran with the first group's lr, silently."""
    first, second = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    optimizer = descend.make_optimizer("Plain", lambda group: [kind(group["lr"])], dict(lr=1.0))(
        [{"params": [first], "lr": 1.0}, {"params": [second], "lr": 3.0}], fused=fused)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 0.5 ** epoch)
    for _ in range(2):
        first.grad, second.grad = torch.ones(2), torch.ones(2)
        optimizer.step()
        schedule.step()
    assert (first[0].item(), second[0].item()) == (-1.5, -4.5)
    info = optimizer.kernel_info()[0]
    assert info.path == ("generated" if fused is None and HAVE_COMPILER else "reference")
    assert f"{kind.__name__}.lr" in info.slots


# --- item 7: one kernel for every value, whatever container holds the numbers ----------------------------


@dataclass
class Rates:
    beta: float
    scale: float


@dataclass
class TupleMomentum(descend.Elementwise):
    stateful = True
    betas: tuple
    rates: Rates
    weights: list
    key: str = "buffer"

    def formula(self, u, param, state, t):
        buffer = state[self.key] = self.betas[0] * state[self.key] + (1 - self.betas[0]) * u
        return -0.1234567 * self.betas[1] * self.rates.scale * self.weights[0] * buffer + 0 * self.rates.beta


def _kernel_files(folder: Path) -> int:
    return len(list(folder.glob("*.so")))


@needs_compiler
def test_item7_numbers_in_tuples_lists_and_nested_dataclasses_compile_one_kernel(tmp_path, monkeypatch):
    """Item 7: numbers in a tuple field were structure: a new C kernel compiled, cached and dlopened for every
    value (a momentum schedule: one .so per step, forever)."""
    monkeypatch.setenv("DESCEND_CACHE_DIR", str(tmp_path))

    def chain(group):
        beta, scale = group["betas"]
        return [TupleMomentum((beta, scale), Rates(beta, scale), [scale])]

    def run(fused):
        param = torch.nn.Parameter(torch.zeros(5))
        optimizer = descend.make_optimizer("Tupled", chain, dict(betas=(0.5, 1.0)))([param], fused=fused)
        counts = []
        for step in range(6):
            optimizer.param_groups[0]["betas"] = (0.5 + 0.05 * step, 1.0 + step)
            param.grad = torch.ones(5)
            optimizer.step()
            counts.append(_kernel_files(tmp_path))
        return param.detach(), counts, optimizer.kernel_info()[0]

    fused, counts, info = run(None)
    reference, _, _ = run(False)
    assert info.path == "generated" and counts[0] >= 1, (info, counts)  # the first value compiled into tmp_path
    assert counts == [counts[0]] * 6, counts  # and no other value compiled anything
    assert {"TupleMomentum.betas[0]", "TupleMomentum.rates.scale", "TupleMomentum.weights[0]"} <= set(info.slots)
    torch.testing.assert_close(fused, reference)


@needs_compiler
def test_item7_a_momentum_schedule_compiles_nothing_after_its_first_step(tmp_path, monkeypatch):
    monkeypatch.setenv("DESCEND_CACHE_DIR", str(tmp_path))
    for cls, kwargs in ((descend.Adam, {}), (descend.SGD, dict(momentum=0.5)), (descend.Adafactor, dict(beta1=0.5))):
        param = torch.nn.Parameter(torch.zeros(4, 3))
        optimizer = cls([param], **kwargs)
        schedule = descend.MomentumSchedule(optimizer, descend.linear_ramp(0.5, 0.99, 10))
        counts = []
        for _ in range(6):
            param.grad = torch.ones(4, 3)
            optimizer.step()
            schedule.step()
            counts.append(_kernel_files(tmp_path))
        assert counts == [counts[0]] * 6, (cls.__name__, counts)


# --- item 8: any real scalar is a number, and warnings point at the user's line ------------------------------


@needs_compiler
def test_item8_numpy_hyperparameters_stay_on_the_kernel_without_warnings(tmp_path, monkeypatch):
    """Item 8: an lr that is a numpy.float32 (what LambdaLR writes when the lambda returns one) left the fused
    path, warned on every step and cached one more plan per value."""
    def run(number):
        param = torch.nn.Parameter(torch.zeros(5))
        optimizer = descend.SGD([param], lr=number(0.1), momentum=number(0.9), weight_decay=number(0.01))
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: number(0.9 ** epoch))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(5):
                param.grad = torch.ones(5)
                optimizer.step()
                schedule.step()
                counts.append(_kernel_files(tmp_path))
        return param.detach(), caught, paths_of(optimizer)

    counts: list[int] = []
    plain, _, _ = run(float)
    monkeypatch.setenv("DESCEND_CACHE_DIR", str(tmp_path))
    counts.clear()
    for number in (np.float32, np.float64, lambda value: torch.tensor(value)):
        result, caught, paths = run(number)
        assert paths == ["generated"] and not [w for w in caught if "descend" in str(w.message)], caught
        torch.testing.assert_close(result, plain)
    assert set(counts) == {0}, counts  # every value ran the kernel the float run had built


def _opaque_optimizer(name: str, foreach: bool = False):
    """An optimizer whose step calls a torch function: the reference path, with a warning (unique per name)."""
    kind = dataclass(type(name, (descend.Elementwise,),
                          {"formula": lambda self, u, param, state, t: torch.tanh(u) * -0.1}))
    param = torch.nn.Parameter(torch.zeros(3))
    param.grad = torch.ones(3)
    return descend.make_optimizer(f"{name}Optimizer", lambda group: [kind()], dict(lr=1.0))([param], foreach=foreach)


def _where(caught, needle):
    found = [(w.filename, w.lineno) for w in caught if needle in str(w.message)]
    assert found, [str(w.message) for w in caught]
    return found[0]


def test_item8_warnings_point_at_the_users_line():
    """Item 8 (warnings): one that pointed into torch/_dynamo/eval_frame.py (the wrapper spoilt its stacklevel).
    Checked through a plain step, torch's wrappers (an lr scheduler and a step hook) and kernel_info."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        optimizer = _opaque_optimizer("WarnPlain")
        line = sys._getframe().f_lineno + 1
        optimizer.step()
    assert _where(caught, "WarnPlain") == (__file__, line)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        optimizer = _opaque_optimizer("WarnWrapped")
        torch.optim.lr_scheduler.StepLR(optimizer, 1)  # wraps optimizer.step
        optimizer.register_step_pre_hook(lambda *arguments: None)
        line = sys._getframe().f_lineno + 1
        optimizer.step()
    assert _where(caught, "WarnWrapped") == (__file__, line)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        optimizer = _opaque_optimizer("WarnInfo")
        line = sys._getframe().f_lineno + 1
        optimizer.kernel_info()
    assert _where(caught, "WarnInfo") == (__file__, line)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        optimizer = _opaque_optimizer("WarnLists", foreach=True)
        line = sys._getframe().f_lineno + 1
        optimizer.step()
    assert _where(caught, "WarnLists cannot run on lists") == (__file__, line)


def test_item8_warnings_point_at_the_users_line_under_torch_compile():
    optimizer = _opaque_optimizer("WarnCompiled")

    def train_step():
        optimizer.step()
    line = train_step.__code__.co_firstlineno + 1
    compiled = torch.compile(train_step, backend="eager")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled()
    assert _where(caught, "WarnCompiled") == (__file__, line)


# --- item 9: reserved state names --------------------------------------------------------------------------


def _momentum_keyed(name: str):
    @dataclass
    class KeyedMomentum(descend.Elementwise):
        stateful = True
        momentum: float = 0.9
        key: str = name

        def formula(self, u, param, state, t):
            buffer = state[self.key] = self.momentum * state[self.key] + u
            return -0.1 * buffer
    return KeyedMomentum


def _writes_undeclared(key: str):
    @dataclass
    class WritesState(descend.Elementwise):
        name: str = key

        def formula(self, u, param, state, t):
            state[self.name] = u
            return -0.1 * u
    return WritesState


def _scalar_named(key: str):
    @dataclass
    class ScalarNamed(descend.Elementwise):
        scalar_state = (key,)

        def prepare(self, state, t):
            state[key] = torch.tensor(float(t))

        def formula(self, u, param, state, t):
            return -0.1 * u * state[key]
    return ScalarNamed


@pytest.mark.parametrize("options", [dict(), dict(fused=False), dict(foreach=True), dict(fused=True)])
@pytest.mark.parametrize("make", [_momentum_keyed, _writes_undeclared, _scalar_named])
@pytest.mark.parametrize("key", ["grad", "param", "step"])
def test_item9_a_state_entry_named_grad_param_or_step_is_refused_before_anything_changes(key, make, options):
    """Item 9: a state key named grad or param was traced as the kernel's own gradient/parameter: the kernel wrote
    the momentum buffer into p.grad, or over the parameter; ``step`` clobbered the step counter."""
    kind = make(key)
    param = torch.nn.Parameter(torch.ones(4))
    param.grad = torch.ones(4)
    optimizer = descend.make_optimizer("Keyed", lambda group: [kind()], dict(lr=1.0))([param], **options)
    with pytest.raises(ValueError, match=rf"{kind.__name__}.*'{key}'"):
        optimizer.step()
    assert torch.equal(param.detach(), torch.ones(4)) and torch.equal(param.grad, torch.ones(4))
    assert not optimizer.state


# --- item 10: the multi-tensor reference path runs every formula ------------------------------------------

FORMULAS = {
    "Tanh": lambda u: torch.tanh(u),
    "Cube": lambda u: u ** 3,
    "Zero": lambda u: 0.0,
    "PowerOfTwo": lambda u: 2.0 ** u,
    "Clamp": lambda u: u.clamp(-0.5, 0.5),
    "Root": lambda u: sqrt(u * u + 1.0),
}


@pytest.mark.parametrize("name", FORMULAS)
def test_item10_foreach_runs_every_formula_the_one_tensor_path_runs(name):
    """Item 10: foreach=True failed with raw TypeErrors on torch.tanh(u), u ** 3, return 0.0."""
    formula = FORMULAS[name]
    kind = dataclass(type(f"Foreach{name}", (descend.Elementwise,),
                          {"formula": lambda self, u, param, state, t: formula(u)}))
    cls = descend.make_optimizer(f"Foreach{name}Optimizer", lambda group: [kind(), ScaleByLearningRate(group["lr"])],
                                 dict(lr=0.1))
    results = {}
    for foreach in (False, True):
        params = [torch.nn.Parameter(torch.randn(s, generator=generator(i))) for i, s in enumerate([(3, 4), (5,), ()])]
        for p in params:
            p.grad = torch.randn(p.shape, generator=generator(7))
        optimizer = cls(params, fused=False, foreach=foreach)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            optimizer.step()
            optimizer.step()
        results[foreach] = torch.cat([p.detach().flatten() for p in params])
        fallbacks = [str(w.message) for w in caught if "cannot run on lists" in str(w.message)]
        assert len(fallbacks) <= 1, fallbacks  # once, naming the step and the reason
        assert all(f"Foreach{name}" in message for message in fallbacks)
    torch.testing.assert_close(results[True], results[False], rtol=0, atol=0)


# --- item 11: a kernel that cannot be built is reported as such --------------------------------------------

BROKEN_COMPILER = """#!/bin/sh
for argument in "$@"; do
  case "$argument" in *chain.c) echo "chain.c:1:1: error: this compiler refuses chain kernels" >&2; exit 1;; esac
done
exec cc "$@"
"""


@needs_compiler
@pytest.mark.skipif(not shutil.which("cc") or not shutil.which("sh"), reason="needs cc and sh")
def test_item11_a_chain_whose_c_does_not_compile_is_reported_with_the_compilers_message(tmp_path, monkeypatch):
    """Item 11: kernel_info() still said "runs on a generated C kernel" and fused=True blamed the dtype."""
    compiler = tmp_path / "cc"
    compiler.write_text(BROKEN_COMPILER)
    compiler.chmod(0o755)
    monkeypatch.setenv("CC", str(compiler))
    monkeypatch.setenv("DESCEND_CACHE_DIR", str(tmp_path / "cache"))

    @dataclass
    class Unbuildable(descend.Elementwise):
        def formula(self, u, param, state, t):
            return u * -0.7654321  # a chain no other test builds

    cls = descend.make_optimizer("Unbuildable", lambda group: [Unbuildable()], dict(lr=1.0))
    param = torch.nn.Parameter(torch.zeros(3))
    param.grad = torch.ones(3)
    optimizer = cls([param])
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        info = optimizer.kernel_info()[0]
        optimizer.step()
    assert info.path == "reference" and "this compiler refuses chain kernels" in info.reason, info
    assert param[0].item() == pytest.approx(-0.7654321)
    with pytest.raises(RuntimeError, match="this compiler refuses chain kernels"):
        cls([param], fused=True).step()


def test_item11_no_compiler_is_reported_by_kernel_info_and_fused_true(tmp_path):
    completed = run_isolated(
        "import torch, descend, warnings\n"
        "warnings.simplefilter('ignore')\n"
        "p = torch.nn.Parameter(torch.zeros(3)); p.grad = torch.ones(3)\n"
        "print('INFO', descend.Adam([p]).kernel_info()[0])\n"
        "try:\n    descend.Adam([p], fused=True).step()\nexcept RuntimeError as error:\n    print('FUSED', error)\n",
        env={"CC": str(tmp_path / "no-such-compiler"), "DESCEND_CACHE_DIR": str(tmp_path / "cache")})
    assert completed.returncode == 0, completed.stderr
    info = next(line for line in completed.stdout.splitlines() if line.startswith("INFO"))
    fused = next(line for line in completed.stdout.splitlines() if line.startswith("FUSED"))
    assert "reference path" in info and "no C compiler found" in info, info
    assert "no C compiler found" in fused, fused


# --- item 12: a checkpoint written after a hyperparameter change -------------------------------------------

MyMomentum = descend.make_optimizer(
    "MyMomentum", lambda group: ([Momentum(group["momentum"])] if group["momentum"] else [])
    + [ScaleByLearningRate(group["lr"])], dict(lr=0.1, momentum=0.9))


def _switch(**values):
    def change(optimizer):
        for group in optimizer.param_groups:
            group.update(values)
    return change


SWITCHES = {
    "sgd-momentum-to-0": (lambda ps: descend.SGD(ps, lr=0.1, momentum=0.9), _switch(momentum=0.0)),
    "adam-amsgrad-off": (lambda ps: descend.Adam(ps, lr=0.01, amsgrad=True), _switch(amsgrad=False)),
    "rmsprop-centered-off": (lambda ps: descend.RMSprop(ps, lr=0.01, centered=True, momentum=0.9),
                             _switch(centered=False, momentum=0.0)),
    "adafactor-beta1-none": (lambda ps: descend.Adafactor(ps, beta1=0.9), _switch(beta1=None)),
    "adam-amsgrad-off-bf16": (lambda ps: descend.Adam(ps, lr=0.01, amsgrad=True, state_dtype=torch.bfloat16),
                              _switch(amsgrad=False)),
    "make-optimizer-momentum-to-0": (lambda ps: MyMomentum(ps), _switch(momentum=0.0)),
}


def _checkpoint_round_trip(state_dict):
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer)


@pytest.mark.parametrize("name", SWITCHES)
def test_item12_a_checkpoint_written_after_a_setting_was_switched_off_resumes_exactly(name):
    """Item 12: descend refused its own checkpoint ("not kept … another optimizer?") after MomentumSchedule ramped
    momentum to 0, amsgrad or centered was switched off, or Adafactor's beta1 became None."""
    make, switch = SWITCHES[name]

    def run(split):
        param = torch.nn.Parameter(torch.randn(4, 3, generator=generator(0)))
        optimizer = make([param])
        for step in range(6):
            if step == 2:
                switch(optimizer)
            if step == split:
                saved = _checkpoint_round_trip(optimizer.state_dict())
                param = torch.nn.Parameter(param.detach().clone())
                optimizer = make([param])
                switch(optimizer)
                optimizer.load_state_dict(saved)
            param.grad = torch.randn(4, 3, generator=generator(10 + step))
            optimizer.step()
        return param.detach(), optimizer.state_dict()["state"]

    uninterrupted, state = run(None)
    resumed, resumed_state = run(4)
    assert torch.equal(uninterrupted, resumed)
    assert state.keys() == resumed_state.keys()
    for index in state:
        assert state[index].keys() == resumed_state[index].keys()
        for key, value in state[index].items():
            assert value.dtype == resumed_state[index][key].dtype and torch.equal(value, resumed_state[index][key]), key


def test_item12_momentum_schedule_ramped_to_zero_resumes():
    param = torch.nn.Parameter(torch.randn(4, 3, generator=generator(0)))
    optimizer = descend.SGD([param], lr=0.1, momentum=0.9)
    schedule = descend.MomentumSchedule(optimizer, descend.linear_ramp(0.9, 0.0, 2))
    for _ in range(4):
        param.grad = torch.ones(4, 3)
        optimizer.step()
        schedule.step()
    assert optimizer.param_groups[0]["momentum"] == 0.0
    fresh = descend.SGD([torch.nn.Parameter(param.detach().clone())], lr=0.1, momentum=0.9)
    fresh.load_state_dict(_checkpoint_round_trip(optimizer.state_dict()))
    torch.optim.SGD([torch.nn.Parameter(param.detach().clone())], lr=0.1).load_state_dict(optimizer.state_dict())


@pytest.mark.parametrize("torch_class, descend_class, before, after", [
    (torch.optim.SGD, descend.SGD, dict(lr=0.1, momentum=0.9), dict(momentum=0.0)),
    (torch.optim.Adam, descend.Adam, dict(amsgrad=True), dict(amsgrad=False)),
    (torch.optim.RMSprop, descend.RMSprop, dict(centered=True, momentum=0.9), dict(centered=False, momentum=0.0)),
])
def test_item12_torch_checkpoints_after_a_switch_load_too(torch_class, descend_class, before, after):
    param = torch.nn.Parameter(torch.randn(4, 3, generator=generator(0)))
    optimizer = torch_class([param], **before)
    for step in range(3):
        if step == 1:
            optimizer.param_groups[0].update(after)
        param.grad = torch.randn(4, 3, generator=generator(step))
        optimizer.step()
    resumed = torch.nn.Parameter(param.detach().clone())
    ours = descend_class([resumed], **before)
    ours.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    assert all(ours.param_groups[0][key] == value for key, value in after.items())
    for p in (param, resumed):
        p.grad = torch.ones(4, 3)
    optimizer.step()
    ours.step()
    torch.testing.assert_close(resumed, param)


def test_item12_another_optimizers_checkpoint_is_still_refused():
    param = torch.nn.Parameter(torch.randn(4, 3))
    param.grad = torch.ones(4, 3)
    adam = descend.Adam([param])
    adam.step()
    with pytest.raises(ValueError, match="another optimizer"):
        descend.SGD([param], lr=0.1, momentum=0.9).load_state_dict(adam.state_dict())
    with pytest.raises(ValueError, match="another optimizer"):
        MyMomentum([param]).load_state_dict(adam.state_dict())
    theirs = torch.optim.Adam([param])
    theirs.step()
    with pytest.raises(ValueError):
        descend.SGD([param], lr=0.1, momentum=0.9).load_state_dict(theirs.state_dict())


# --- item 13: None entries of old SGD checkpoints ---------------------------------------------------------


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_item13_an_old_sgd_checkpoint_with_none_buffers_loads_as_in_torch(momentum):
    """Item 13: torch < 2.0 wrote {"momentum_buffer": None}: descend refused it (momentum 0) or died on the first
    step with AttributeError (momentum 0.9)."""
    saved = {"state": {0: {"momentum_buffer": None}},
             "param_groups": [{"lr": 0.1, "momentum": momentum, "dampening": 0, "weight_decay": 0, "nesterov": False,
                               "params": [0]}]}
    results = []
    for cls in (descend.SGD, torch.optim.SGD):
        param = torch.nn.Parameter(torch.ones(3))
        optimizer = cls([param], lr=0.1, momentum=momentum)
        optimizer.load_state_dict(copy.deepcopy(saved))
        for _ in range(2):
            param.grad = torch.ones(3)
            optimizer.step()
        results.append(param.detach())
    torch.testing.assert_close(results[0], results[1])


# --- item 14: every state entry keeps its dtype through a round trip ---------------------------------------


@pytest.mark.parametrize("param_dtype, state_dtype", [(torch.float64, None), (torch.bfloat16, torch.bfloat16),
                                                      (torch.float16, None), (torch.float32, torch.float64)])
@pytest.mark.parametrize("cls", [descend.NAdam, descend.Adam, descend.RAdam, descend.Adafactor, descend.SGD])
def test_item14_a_resumed_run_is_bit_identical_and_keeps_every_dtype(cls, param_dtype, state_dtype):
    """Item 14: NAdam's mu_product changed dtype on load (float64 params, or 16-bit params with bf16 state): the
    resumed run was 7.6e-10 off after 38 steps in float64."""
    kwargs = dict(momentum=0.9, lr=0.01) if cls is descend.SGD else {}

    def run(split):
        param = torch.nn.Parameter(torch.randn(6, 4, generator=generator(1), dtype=torch.float64).to(param_dtype))
        optimizer = cls([param], state_dtype=state_dtype, **kwargs)
        for step in range(38):
            if step == split:
                saved = _checkpoint_round_trip(optimizer.state_dict())
                param = torch.nn.Parameter(param.detach().clone())
                optimizer = cls([param], state_dtype=state_dtype, **kwargs)
                optimizer.load_state_dict(saved)
            param.grad = torch.randn(6, 4, generator=generator(10 + step), dtype=torch.float64).to(param_dtype)
            optimizer.step()
        return param.detach(), optimizer.state[param]

    param, state = run(None)
    resumed, resumed_state = run(19)
    assert torch.equal(param, resumed)
    assert state.keys() == resumed_state.keys()
    for key in state:
        assert state[key].dtype == resumed_state[key].dtype, key
        assert state[key].device == resumed_state[key].device, key
        assert torch.equal(state[key], resumed_state[key]), key


# --- item 15: no state for a parameter whose chain keeps none -----------------------------------------------


@pytest.mark.parametrize("options", [dict(), dict(fused=False), dict(foreach=True), dict(nonfinite="skip")])
def test_item15_sgd_without_momentum_keeps_no_state(options):
    """Item 15: SGD without momentum left an empty {} in optimizer.state for every stepped parameter (torch leaves
    none), so torch's test_non_empty_state failed."""
    params = [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2, 2))]
    optimizer = descend.SGD(params, lr=0.1, **options)
    for _ in range(2):
        for p in params:
            p.grad = torch.ones_like(p)
        optimizer.step()
    optimizer.kernel_info()
    assert len(optimizer.state) == 0 and optimizer.state_dict()["state"] == {}
    assert all(p not in optimizer.state for p in params)
    torch_optimizer = torch.optim.SGD(params, lr=0.1)
    torch_optimizer.step()
    assert len(torch_optimizer.state) == 0  # what torch keeps: nothing


# --- item 16: parameters on the meta device ----------------------------------------------------------------

META_CLASSES = [(descend.SGD, dict(momentum=0.9)), (descend.Adagrad, {}), (descend.RMSprop, dict(centered=True)),
                (descend.Adadelta, {}), (descend.Adam, dict(amsgrad=True)), (descend.AdamW, {}),
                (descend.Adafactor, {}), (descend.Lion, {}), (descend.NAdam, {}), (descend.RAdam, {})]


@pytest.mark.parametrize("options", [dict(), dict(foreach=True), dict(fused=False), dict(nonfinite="skip")])
@pytest.mark.parametrize("cls, kwargs", META_CLASSES)
def test_item16_meta_parameters_step_with_state_on_meta(cls, kwargs, options):
    """Item 16: torch.optim steps meta parameters (deferred init, memory planning); every descend optimizer raised
    "Cannot copy out of meta tensor" from the non-finite check."""
    params = [torch.nn.Parameter(torch.empty(4, 3, device="meta")), torch.nn.Parameter(torch.empty(5, device="meta"))]
    optimizer = cls(params, **kwargs, **options)
    for _ in range(2):
        for p in params:
            p.grad = torch.empty_like(p)
        optimizer.step()
    for p in params:
        assert p.device.type == "meta"
        state = optimizer.state[p]
        assert state, cls.__name__
        for key, value in state.items():
            expected = "cpu" if key in ("step", "mu_product") else "meta"  # torch keeps its counters on the CPU
            assert value.device.type == expected, (key, value.device)


@pytest.mark.parametrize("descend_class, torch_class, kwargs", [
    (descend.SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9)), (descend.Adam, torch.optim.Adam, {}),
    (descend.NAdam, torch.optim.NAdam, {}), (descend.RMSprop, torch.optim.RMSprop, dict(centered=True))])
def test_item16_meta_state_is_what_torch_keeps(descend_class, torch_class, kwargs):
    kept = []
    for cls in (descend_class, torch_class):
        param = torch.nn.Parameter(torch.empty(4, 3, device="meta"))
        optimizer = cls([param], **kwargs)
        param.grad = torch.empty_like(param)
        optimizer.step()
        kept.append({key: (value.device.type, tuple(value.shape)) for key, value in optimizer.state[param].items()
                     if key != "step"})  # (descend's RMSprop keeps no step counter: its formula reads no t)
    assert kept[0] == kept[1]
