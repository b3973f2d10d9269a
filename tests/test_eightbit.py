"""8-bit block-quantised state (``state_dtype="8bit"``): bitsandbytes' dynamic map, absmax per block of 256,
nearest code; torchao's ``AdamW8bit`` numbers; the C and Triton kernels equal to the torch-ops definition; checkpoints
holding plain codes and scales that load back bit for bit and convert to and from float32 state."""
from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
import torch

import descend
from descend.backends import cpu
from descend.plan import blockwise
from descend.plan.plan import compile
from descend.plan.state import Blockwise8bit, codec_for

N = 64 * 256  # elements of the test tensors: 64 blocks (at least 4,096: kept in 8 bits)


def moments(n: int, signed: bool, seed: int = 0) -> torch.Tensor:
    """Values spread over many decades, as moments are; some blocks all zero."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g) * torch.rand(n, generator=g) ** 6 * 10.0 ** torch.randint(-8, 3, (n,), generator=g)
    x.view(-1, 256)[::9] = 0.0
    return x if signed else x.abs()


# --- the codec ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("signed", [True, False])
def test_the_map_is_the_dynamic_map_of_bitsandbytes_and_torchao(signed):
    values = blockwise.dynamic_map(signed)
    assert len(values) == 256 and list(values) == sorted(values) and len(set(values)) == 256
    assert 0.0 in values and values[-1] == 1.0 and (min(values) < -0.99 if signed else min(values) == 0.0)
    quant_utils = pytest.importorskip("torchao.optim.quant_utils")
    expected = torch.tensor(quant_utils.create_dynamic_map(signed), dtype=torch.float32)
    assert torch.equal(torch.tensor(values), expected)


@pytest.mark.parametrize("signed", [True, False])
def test_each_value_takes_the_nearest_code_of_its_quotient_by_the_block_absmax(signed):
    x = moments(N, signed)
    codes, scales = blockwise.quantise(x, signed)
    blocks = x.view(-1, 256)
    assert torch.equal(scales, blocks.abs().amax(1).clamp(min=1e-12))
    table = torch.tensor(blockwise.dynamic_map(signed), dtype=torch.float64)
    quotient = (blocks / scales[:, None]).double().reshape(-1, 1)
    distance = (quotient - table).abs()
    nearest = distance.argmin(1)
    chosen = distance.gather(1, codes.long()[:, None])[:, 0]
    best = distance.gather(1, nearest[:, None])[:, 0]
    assert torch.all(chosen <= best + 1e-7)  # nearest (ties and float32 rounding of the midpoints aside)
    assert (codes.long() == nearest).double().mean() > 0.9999
    decoded = blockwise.dequantise(codes, scales, signed)
    gaps = torch.cat([table[1:] - table[:-1], torch.zeros(1, dtype=torch.float64)])
    bound = (gaps.max() / 2 * scales.double()).repeat_interleave(256)
    assert torch.all((decoded.double() - x.double()).abs() <= 1.001 * bound)  # (-1 is half a gap from the map)


def test_small_entries_and_entries_of_a_partial_block_stay_float32():
    assert codec_for("8bit", torch.float32, 4096) == Blockwise8bit()
    assert codec_for("8bit", torch.float32, 4095) == codec_for("8bit", torch.float32, 4096 + 100) == \
        codec_for(None, torch.float32)
    params = [torch.nn.Parameter(torch.randn(n)) for n in (4095, 4096 + 100, 4096)]
    optimizer = descend.AdamW(params, state_dtype="8bit")
    for p in params:
        p.grad = torch.randn_like(p)
    optimizer.step()
    dtypes = [optimizer.state[p]["exp_avg"].dtype for p in params]
    assert dtypes == [torch.float32, torch.float32, torch.uint8]
    assert "exp_avg_absmax" not in optimizer.state[params[0]]


@pytest.mark.parametrize("value", ["8-bit", "int8", torch.uint8, 8])
def test_an_unknown_state_dtype_is_a_clear_value_error(value):
    with pytest.raises(ValueError, match="state_dtype must be"):
        descend.AdamW([torch.nn.Parameter(torch.zeros(N))], state_dtype=value)


def test_adamw_keeps_at_most_2_1_bytes_of_state_per_parameter():
    p = torch.nn.Parameter(torch.randn(N))
    optimizer = descend.AdamW([p], state_dtype="8bit")
    p.grad = torch.randn_like(p)
    optimizer.step()
    state = optimizer.state[p]
    size = sum(v.numel() * v.element_size() for k, v in state.items() if k != "step")
    assert size / p.numel() <= 2.1
    assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == torch.uint8


# --- torchao's AdamW8bit --------------------------------------------------------------------------------


@pytest.mark.parametrize("fused", [None, False])
def test_adamw_matches_torchao_adamw8bit(fused):
    optim = pytest.importorskip("torchao.optim")
    torch.manual_seed(0)
    start = [torch.randn(512, 512), torch.randn(8192), torch.randn(100)]  # (flips are rare: count enough codes)
    ours = [torch.nn.Parameter(t.clone()) for t in start]
    theirs = [torch.nn.Parameter(t.clone()) for t in start]
    a = descend.AdamW(ours, lr=1e-3, state_dtype="8bit", fused=fused)
    b = optim.AdamW8bit(theirs, lr=1e-3)
    for _ in range(10):
        for p, q in zip(ours, theirs):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        a.step()
        b.step()
    for p, q in zip(ours[:2], theirs[:2]):
        for key in ("exp_avg", "exp_avg_sq"):
            assert (a.state[p][key] == b.state[q][key].codes).double().mean() >= 0.9999
    difference = torch.cat([(p - q).abs().reshape(-1) for p, q in zip(ours, theirs)])
    # where no code ever differed the parameters agree within 2e-6; an element whose moment was once a code
    # apart (torchao's lerp rounds otherwise than torch.optim's β·m + (1−β)·g, which descend computes) moves
    # by up to a map gap of the update, ~0.1·lr (and its code may then drift several apart, into finer codes)
    assert (difference <= 2e-6).double().mean() >= 0.9999 and difference.max() <= 1e-4
    for p, q in zip(ours, theirs):  # one step from the same state: at most one code apart
        with torch.no_grad():
            p.copy_(q)
        for key in ("exp_avg", "exp_avg_sq"):
            if p.numel() >= 4096:
                a.state[p][key].copy_(b.state[q][key].codes)
                a.state[p][key + "_absmax"].copy_(b.state[q][key].scale)
            else:
                a.state[p][key].copy_(b.state[q][key])
        p.grad = torch.randn_like(p)
        q.grad = p.grad.clone()
    a.step()
    b.step()
    for p, q in zip(ours[:2], theirs[:2]):
        for key in ("exp_avg", "exp_avg_sq"):
            codes, expected = a.state[p][key], b.state[q][key].codes
            assert (codes == expected).double().mean() >= 0.9999
            assert (codes.int() - expected.int()).abs().max() <= 1
    for p, q in zip(ours, theirs):
        torch.testing.assert_close(p, q, rtol=0, atol=2e-6)


# --- the C kernels equal the reference path -----------------------------------------------------------

OPTIMIZERS = {
    "AdamW": (descend.AdamW, {}),
    "Adam": (descend.Adam, dict(lr=1e-2, amsgrad=True)),
    "SGD": (descend.SGD, dict(lr=0.1, momentum=0.9)),
    "Lion": (descend.Lion, {}),
    "RMSprop": (descend.RMSprop, dict(centered=True)),
    "Adafactor": (descend.Adafactor, dict(beta1=0.9)),
}


def trajectory(cls, kwargs, fused, shape, steps=4, threads=None, memory_format=torch.contiguous_format):
    torch.manual_seed(1)
    p = torch.nn.Parameter(torch.randn(shape).to(memory_format=memory_format))
    optimizer = cls([p], state_dtype="8bit", fused=fused, **kwargs)
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        for _ in range(steps):
            p.grad = torch.randn_like(p)
            optimizer.step()
    finally:
        torch.set_num_threads(before)
    return p, optimizer


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_the_c_kernel_keeps_the_reference_paths_codes(name):
    cls, kwargs = OPTIMIZERS[name]
    shape = (N,)  # (Adafactor's matrices run on the reference path: their rows are not whole blocks)
    p, kernel = trajectory(cls, kwargs, True, shape)
    q, reference = trajectory(cls, kwargs, False, shape)
    assert kernel.kernel_info()[0].path == "generated"
    eight_bit = [k for k, v in kernel.state[p].items() if v.dtype == torch.uint8]
    assert eight_bit
    for key in eight_bit:
        assert torch.equal(kernel.state[p][key], reference.state[q][key]), key
        torch.testing.assert_close(kernel.state[p][key + "_absmax"], reference.state[q][key + "_absmax"],
                                   rtol=1e-6, atol=0)
    # the rest of the chain: the float32 kernels' own rounding (a reciprocal where the reference divides)
    torch.testing.assert_close(p, q, rtol=0, atol=1e-6)
    if name in ("SGD", "Lion"):  # exact arithmetic on both paths: everything bit for bit
        assert torch.equal(p, q) and all(torch.equal(v, reference.state[q][k]) for k, v in kernel.state[p].items())


@pytest.mark.parametrize("seed", [0, 1])
def test_the_c_kernels_quantiser_is_the_torch_definition_bit_for_bit(seed):
    """SGD's first step stores the gradient itself as the momentum: the kernel's codes and scales are
    ``blockwise.quantise`` of it, over values of many decades, blocks of zeros and two thread counts."""
    grads = [moments(N, True, seed), moments(4 * N, True, seed + 10)]
    for threads in (1, 2):
        params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
        optimizer = descend.SGD(params, lr=0.1, momentum=0.9, state_dtype="8bit", fused=True)
        for p, g in zip(params, grads):
            p.grad = g.clone()
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            optimizer.step()
        finally:
            torch.set_num_threads(before)
        for p, g in zip(params, grads):
            codes, scales = blockwise.quantise(g, True)
            assert torch.equal(optimizer.state[p]["momentum_buffer"], codes)
            assert torch.equal(optimizer.state[p]["momentum_buffer_absmax"], scales)


def with_ones(values: torch.Tensor) -> torch.Tensor:
    """``values`` in blocks of 255 with a 1 each: every block's scale is 1, its quotients the values."""
    blocks = max(-(-values.numel() // 255), 16)
    padded = torch.cat([values, torch.ones(blocks * 255 - values.numel())]).view(blocks, 255)
    return torch.cat([padded, torch.ones(blocks, 1)], dim=1).reshape(-1)


@pytest.mark.parametrize("signed", [True, False])
def test_the_c_kernel_rounds_at_every_boundary_of_the_map_as_the_definition(signed):
    """Quotients on each of the 255 rounding boundaries and one float32 step either side of them."""
    bounds = blockwise.boundaries(signed)
    values = torch.cat([bounds, bounds.nextafter(torch.tensor(-2.0)), bounds.nextafter(torch.tensor(2.0))])
    if signed:  # the first moment: SGD's first step stores the gradient as it is
        grad = with_ones(values)
        optimizer_of, key = (lambda ps: descend.SGD(ps, lr=0.1, momentum=0.9, state_dtype="8bit", fused=True)), \
            "momentum_buffer"
        stored = grad
    else:  # a sum of squares: Adagrad's first step stores g·g
        grad = with_ones(values.clamp(min=0).sqrt())
        optimizer_of, key = (lambda ps: descend.Adagrad(ps, state_dtype="8bit", fused=True)), "sum"
        stored = grad * grad
    p = torch.nn.Parameter(torch.zeros_like(grad))
    optimizer = optimizer_of([p])
    p.grad = grad.clone()
    optimizer.step()
    codes, scales = blockwise.quantise(stored, signed)
    assert torch.equal(optimizer.state[p][key + "_absmax"], scales)
    assert torch.equal(optimizer.state[p][key], codes)
    if signed:  # each boundary takes the code above it, the float32 below it the code below
        assert torch.equal(codes.view(-1, 256)[:, :255].reshape(-1)[:255].long(), torch.arange(1, 256))
        assert torch.equal(codes.view(-1, 256)[:, :255].reshape(-1)[255:510].long(), torch.arange(0, 255))


@pytest.mark.parametrize("signed", [True, False])
def test_the_vector_search_is_the_nearest_code_everywhere(signed):
    """The AVX-512 kernels' search (a decade candidate and one boundary), in torch ops: on every boundary, every
    decade edge and four float32 steps either side, and a stride over all float32 in [-1, 1]."""
    bounds = blockwise.boundaries(signed)
    edges = torch.tensor([10.0 ** (k - 7) for k in range(8)])
    values = [bounds, edges, torch.arange(0, 0x3F800001, 4999, dtype=torch.int64).to(torch.int32).view(torch.float32),
              torch.tensor([0.0, -0.0, 1.0, -1.0])]
    for near in (bounds, edges):
        below, above = near, near
        for _ in range(4):
            below, above = below.nextafter(torch.tensor(-2.0)), above.nextafter(torch.tensor(2.0))
            values += [below, above]
    x = torch.cat(values)
    x = torch.cat([x, -x])
    x = x[x.abs() <= 1]  # (a quotient by the block's absolute maximum)
    codes, _ = blockwise.quantise(with_ones(x), signed)  # every block's scale 1: its quotients are x
    assert torch.equal(blockwise.vector_codes(x, signed), codes.view(-1, 256)[:, :255].reshape(-1)[:x.numel()].long())
    assert blockwise.vector_codes(torch.tensor([float("nan")]), signed).tolist() == [0]


PORTABLE_RUN = """
import sys, torch, descend
sys.path.insert(0, "tests")
from descend.backends import build
from test_eightbit import OPTIMIZERS, trajectory, N
assert build.support().f16_path() == 0
torch.save({name: trajectory(cls, kwargs, True, (N,))[1].state_dict() for name, (cls, kwargs) in OPTIMIZERS.items()},
           sys.argv[1])
"""


def test_the_portable_search_gives_the_vector_kernels_codes(tmp_path):
    """Without AVX-512 (or with DESCEND_F16=portable) the kernels search a cell table: the same codes."""
    from descend.backends import build

    if build.support() is None or build.support().f16_path() != 2:
        pytest.skip("the kernels here use the portable search already")
    saved = tmp_path / "portable.pt"
    env = dict(os.environ, DESCEND_F16="portable", PYTHONPATH=os.getcwd())
    done = subprocess.run([sys.executable, "-c", PORTABLE_RUN, str(saved)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    portable = torch.load(saved)
    for name, (cls, kwargs) in OPTIMIZERS.items():
        ours = trajectory(cls, kwargs, True, (N,))[1].state_dict()["state"][0]
        theirs = portable[name]["state"][0]
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours), name


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16bit_parameters_with_8bit_state_take_the_reference_paths_numbers(dtype):
    results = []
    for fused in (True, False):
        torch.manual_seed(0)
        p = torch.nn.Parameter(torch.randn(N).to(dtype))
        optimizer = descend.AdamW([p], state_dtype="8bit", fused=fused)
        for _ in range(3):
            p.grad = torch.randn(N).to(dtype)
            optimizer.step()
        results.append((p, optimizer.state[p]))
    (p, ours), (q, theirs) = results
    assert ours["exp_avg"].dtype == torch.uint8
    assert torch.equal(p, q) and all(torch.equal(v, theirs[k]) for k, v in ours.items())


def test_sparse_gradients_refuse_8bit_state():
    with pytest.raises(ValueError, match="not for sparse gradients"):
        descend.SparseAdam([torch.nn.Parameter(torch.zeros(N))], state_dtype="8bit")


def test_channels_last_blocks_follow_memory_order_on_both_paths():
    shape, layout = (16, 64, 2, 8), torch.channels_last
    p, kernel = trajectory(descend.SGD, dict(lr=0.1, momentum=0.9), True, shape, memory_format=layout)
    q, reference = trajectory(descend.SGD, dict(lr=0.1, momentum=0.9), False, shape, memory_format=layout)
    assert torch.equal(p, q)
    codes = kernel.state[p]["momentum_buffer"]
    assert codes.is_contiguous(memory_format=layout) and torch.equal(codes, reference.state[q]["momentum_buffer"])


def test_the_foreach_reference_path_equals_the_one_tensor_path():
    p, lists = trajectory(descend.AdamW, dict(foreach=True), False, (N,))
    q, single = trajectory(descend.AdamW, dict(foreach=False), False, (N,))
    assert torch.equal(p, q) and all(torch.equal(v, single.state[q][k]) for k, v in lists.state[p].items())


def test_the_native_boundary_checks_the_scales():
    variant = compile(descend.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9).full_chain(
        {"lr": 0.1, "momentum": 0.9, "dampening": 0.0, "nesterov": False, "weight_decay": 0.0, "maximize": False}
    ), False)[0].variant(1)
    segment, layout = variant.pieces[0], cpu.layouts(variant, torch.float32, Blockwise8bit())[0]
    assert dict(layout.blocks) == {"momentum_buffer": True}
    p = torch.zeros(N)
    roles = {"param": p, "grad": torch.zeros(N), "momentum_buffer": torch.zeros(N, dtype=torch.uint8)}
    table = [[roles[role]] for role in segment.loads]
    cpu.check_buffers(segment, layout, table + [[torch.zeros(N // 256)]], [p], False)
    for bad in (torch.zeros(N // 256 - 1), torch.zeros(N // 256, dtype=torch.float64), torch.zeros(2 * N // 256)[::2]):
        with pytest.raises(RuntimeError, match="scales of the 8-bit momentum_buffer"):
            cpu.check_buffers(segment, layout, table + [[bad]], [p], False)


@pytest.fixture
def interpreted(monkeypatch):
    """Triton's interpreter on CPU tensors (as tests/test_triton.py runs it), with slices of two blocks: a
    tensor of 17 blocks ends in a masked half slice."""
    from descend.backends import triton

    if not triton.available():
        pytest.skip("triton is not installed")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(triton, "DEVICE_TYPES", frozenset({"cpu", "cuda"}))
    monkeypatch.setattr(triton, "BLOCK", 512)
    monkeypatch.setattr(triton, "CHUNK", 1024)
    launched = []
    launch = triton.launch
    monkeypatch.setattr(triton, "launch", lambda kernel, *a, **k: launched.append(kernel.eight_bit) or launch(
        kernel, *a, **k))
    return launched


@pytest.mark.parametrize("name", ["AdamW", "SGD", "Lion", "RMSprop"])
def test_the_triton_kernel_keeps_the_reference_paths_codes(name, interpreted):
    cls, kwargs = OPTIMIZERS[name]
    results = []
    for fused in (None, False):
        torch.manual_seed(1)
        params = [torch.nn.Parameter(torch.randn(N)), torch.nn.Parameter(torch.randn(17 * 256))]
        optimizer = cls(params, state_dtype="8bit", fused=fused, **kwargs)
        for _ in range(3):
            for p in params:
                p.grad = torch.randn_like(p)
            optimizer.step()
        results.append((params, optimizer))
    assert interpreted and all(interpreted), "the Triton kernel ran with 8-bit roles"
    (ours, kernel), (theirs, reference) = results
    for p, q in zip(ours, theirs):
        for key, value in kernel.state[p].items():
            if value.dtype == torch.uint8:
                assert torch.equal(value, reference.state[q][key]), key
                torch.testing.assert_close(kernel.state[p][key + "_absmax"], reference.state[q][key + "_absmax"],
                                           rtol=1e-6, atol=0)
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)
        if name in ("SGD", "Lion"):
            assert torch.equal(p, q) and all(torch.equal(v, reference.state[q][k]) for k, v in kernel.state[p].items())


def test_the_triton_kernels_quantiser_is_the_torch_definition_at_every_boundary(interpreted):
    bounds = blockwise.boundaries(True)
    grad = with_ones(torch.cat([bounds, bounds.nextafter(torch.tensor(-2.0)), bounds.nextafter(torch.tensor(2.0)),
                                -bounds, torch.tensor([0.0, -0.0])]))
    p = torch.nn.Parameter(torch.zeros_like(grad))
    optimizer = descend.SGD([p], lr=0.1, momentum=0.9, state_dtype="8bit")
    p.grad = grad.clone()
    optimizer.step()
    assert interpreted == [(("momentum_buffer", True),)]
    codes, scales = blockwise.quantise(grad, True)
    assert torch.equal(optimizer.state[p]["momentum_buffer"], codes)
    assert torch.equal(optimizer.state[p]["momentum_buffer_absmax"], scales)


def test_triton_refuses_8bit_state_with_slices_of_part_blocks(interpreted, monkeypatch):
    from descend.backends import triton

    monkeypatch.setattr(triton, "BLOCK", 16)
    optimizer = descend.AdamW([torch.nn.Parameter(torch.zeros(1))])
    variant = compile(optimizer.full_chain(optimizer._numbers(optimizer.param_groups[0])), False)[0].variant(1)
    assert "BLOCK" in triton.reason(variant, torch.zeros(N), Blockwise8bit())


# --- checkpoints ---------------------------------------------------------------------------------------


def test_a_checkpoint_holds_plain_codes_and_scales_and_resumes_bit_for_bit():
    p, optimizer = trajectory(descend.AdamW, {}, None, (N,), steps=3)
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    saved = torch.load(io.BytesIO(buffer.getvalue()))
    entries = saved["state"][0]
    assert type(entries["exp_avg"]) is torch.Tensor and entries["exp_avg"].dtype == torch.uint8
    assert type(entries["exp_avg_absmax"]) is torch.Tensor and entries["exp_avg_absmax"].dtype == torch.float32
    q = torch.nn.Parameter(p.detach().clone())
    resumed = descend.AdamW([q], state_dtype="8bit")
    resumed.load_state_dict(saved)
    assert all(torch.equal(v, optimizer.state[p][k]) for k, v in resumed.state[q].items())
    for _ in range(2):
        p.grad = torch.randn_like(p)
        q.grad = p.grad.clone()
        optimizer.step()
        resumed.step()
    assert torch.equal(p, q) and all(torch.equal(v, optimizer.state[p][k]) for k, v in resumed.state[q].items())


def test_a_torch_checkpoint_loads_into_8bit_state_and_converts_back_to_float32():
    torch.manual_seed(2)
    p = torch.nn.Parameter(torch.randn(N))
    reference = torch.optim.AdamW([p])
    p.grad = torch.randn_like(p)
    reference.step()
    exp_avg = reference.state[p]["exp_avg"].clone()
    eight = descend.AdamW([p], state_dtype="8bit")
    eight.load_state_dict(reference.state_dict())
    codes, scales = blockwise.quantise(exp_avg, True)
    assert torch.equal(eight.state[p]["exp_avg"], codes) and torch.equal(eight.state[p]["exp_avg_absmax"], scales)
    assert eight.state_dict()["param_groups"][0]["state_dtype"] == "8bit"
    converted = eight.state_dict(state_dtype=None)  # float32 state: what torch.optim loads
    entries = converted["state"][0]
    assert converted["param_groups"][0]["state_dtype"] is None and "exp_avg_absmax" not in entries
    assert entries["exp_avg"].dtype == torch.float32 and eight.state[p]["exp_avg"].dtype == torch.uint8
    assert torch.equal(entries["exp_avg"], blockwise.dequantise(codes, scales, True))
    plain = descend.AdamW([p])
    plain.load_state_dict(converted)
    assert torch.equal(plain.state[p]["exp_avg"], entries["exp_avg"]) and "exp_avg_absmax" not in plain.state[p]
    back = torch.optim.AdamW([p])
    back.load_state_dict(converted)
    assert torch.equal(back.state[p]["exp_avg_sq"], blockwise.read(eight.state[p]["exp_avg_sq"],
                                                                  eight.state[p]["exp_avg_sq_absmax"], False))
    back.step()


def test_editing_state_dtype_converts_the_state_both_ways():
    p, optimizer = trajectory(descend.AdamW, {}, None, (N,), steps=1)
    optimizer.param_groups[0]["state_dtype"] = None
    p.grad = torch.zeros_like(p)
    decoded = blockwise.read(optimizer.state[p]["exp_avg"], optimizer.state[p]["exp_avg_absmax"], True)
    optimizer.step()
    state = optimizer.state[p]
    assert state["exp_avg"].dtype == torch.float32 and "exp_avg_absmax" not in state
    torch.testing.assert_close(state["exp_avg"], 0.9 * decoded)
    optimizer.param_groups[0]["state_dtype"] = "8bit"
    optimizer.step()
    assert optimizer.state[p]["exp_avg"].dtype == torch.uint8 and "exp_avg_absmax" in optimizer.state[p]
