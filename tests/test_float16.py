"""float16 in the generated C kernels: kept as its bits, converted a block at a time with the CPU's
instructions (AVX-512F or F16C) or the portable integer conversion, all three giving the same bits as the
compiler's ``_Float16`` casts (which the kernels used before) on every half and every float; and
``state_dtype=torch.float16`` (torch's fused kernel keeps float16 moments) on every path."""
from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest
import torch

import descend
from descend.backends import build, cpu

needs_compiler = pytest.mark.skipif(not cpu.available(), reason="no C compiler")

# Every half widened, every float (all 2^32 bit patterns, 65536 blocks of 65536 on the threads) narrowed,
# through the block conversion the kernels are built with, the integer one, and the compiler's _Float16 cast.
CHECKER = r'''
#include "_prelude.h"
#if defined(__FLT16_MAX__)
#define CAST_WIDEN(h) ({ _Float16 c_; memcpy(&c_, &(h), 2); (float)c_; })
#define CAST_NARROW(x) ({ _Float16 c_ = (_Float16)(x); uint16_t b_; memcpy(&b_, &c_, 2); b_; })
int has_cast(void) { return 1; }
#else
#define CAST_WIDEN(h) f16_to_f32(h)
#define CAST_NARROW(x) f32_to_f16(x)
int has_cast(void) { return 0; }
#endif

int path(void) { return F16_PATH; }

/* mismatches[0]: block widening against the integer one; [1]: the integer one against the cast */
void halves(int64_t *mismatches) {
  static uint16_t src[65536];
  static float blocks[65536];
  for (int k = 0; k < 65536; k++) src[k] = (uint16_t)k;
  f16_widen(src, blocks, 65536);
  for (int k = 0; k < 65536; k++) {
    const float integer = f16_to_f32(src[k]), cast = CAST_WIDEN(src[k]);
    mismatches[0] += memcmp(&blocks[k], &integer, 4) != 0;
    mismatches[1] += memcmp(&integer, &cast, 4) != 0;
  }
}

/* the same for narrowing every float */
void floats(int64_t *mismatches, int threads) {
  int64_t blocked = 0, cast = 0;
  #pragma omp parallel for num_threads(threads) reduction(+ : blocked, cast) schedule(static)
  for (int64_t chunk = 0; chunk < 65536; chunk++) {
    float x[4096];
    uint16_t h[4096];
    for (int part = 0; part < 16; part++) {
      for (int k = 0; k < 4096; k++) {
        const uint32_t bits = (uint32_t)(chunk << 16) | (uint32_t)(part * 4096 + k);
        memcpy(&x[k], &bits, 4);
      }
      f16_narrow(x, h, 4096);
      for (int k = 0; k < 4096; k++) {
        const uint16_t integer = f32_to_f16(x[k]);
        blocked += h[k] != integer;
        cast += integer != CAST_NARROW(x[k]);
      }
    }
  }
  mismatches[0] = blocked;
  mismatches[1] = cast;
}

void widen_portable(const uint16_t *src, float *dst, int64_t n) { for (int64_t k = 0; k < n; k++) dst[k] = f16_to_f32(src[k]); }
void narrow_portable(const float *src, uint16_t *dst, int64_t n) { for (int64_t k = 0; k < n; k++) dst[k] = f32_to_f16(src[k]); }
'''


@pytest.fixture(scope="module")
def checker():
    library = ctypes.CDLL(str(build.build(CHECKER, "float16_check")))
    library.floats.argtypes = [ctypes.c_void_p, ctypes.c_int]
    for name in ("widen_portable", "narrow_portable"):
        getattr(library, name).argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    return library


@needs_compiler
def test_the_conversion_is_the_one_the_cpu_reports():
    reported = build.cpu_flags()
    expected = 2 if {"avx512f", "f16c", "avx"} <= reported else 1 if {"f16c", "avx"} <= reported else 0
    assert build.support().f16_path() == expected
    assert ("-DDESCEND_F16_PORTABLE" in build.flags()) == (expected == 0)


@needs_compiler
def test_every_half_widens_to_the_same_float_on_every_conversion(checker):
    mismatches = (ctypes.c_int64 * 2)()
    checker.halves(mismatches)
    assert list(mismatches) == [0, 0]
    # and to the float torch gives (widening is exact; torch keeps a NaN a NaN, not necessarily its payload)
    halves = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(torch.float16)
    ours = torch.empty(65536, dtype=torch.float32)
    checker.widen_portable(halves.data_ptr(), ours.data_ptr(), 65536)
    theirs = halves.float()
    assert torch.equal(ours.isnan(), theirs.isnan())
    assert torch.equal(ours[~ours.isnan()].view(torch.int32), theirs[~theirs.isnan()].view(torch.int32))


@needs_compiler
def test_every_float_narrows_to_the_same_half_on_every_conversion(checker):
    """All 2^32 floats: the AVX-512/F16C blocks against the integer conversion, and the integer conversion
    against the compiler's ``_Float16`` cast (the kernels' conversion before)."""
    if checker.path() == 0 and not checker.has_cast():
        pytest.skip("neither F16C nor _Float16 to compare the integer conversion with")
    mismatches = (ctypes.c_int64 * 2)()
    checker.floats(mismatches, torch.get_num_threads())
    assert list(mismatches) == [0, 0]


@needs_compiler
def test_narrowing_rounds_as_torch_does_at_every_boundary(checker):
    """Independent of the hardware: torch's float → half on the boundaries (every half, the midpoints between
    neighbouring halves and one float either side of them, overflow, the subnormal range) and a dense sample."""
    halves = torch.arange(0, 0x7c00, dtype=torch.int32).to(torch.int16).view(torch.float16).double()
    midpoints = ((halves[:-1] + halves[1:]) / 2).float()
    near = torch.cat([midpoints, torch.nextafter(midpoints, torch.tensor(0.0)),
                      torch.nextafter(midpoints, torch.tensor(1e9)), halves.float(),
                      torch.tensor([65504.0, 65519.99, 65520.0, 65536.0, 1e38, float("inf"), 2.0**-25, 2.0**-24,
                                    2.0**-26, 1.5 * 2.0**-25, 2.0**-14, 2.0**-14 - 2.0**-25, 1e-45])])
    sample = torch.randint(-2**31, 2**31, (1 << 20,), generator=torch.Generator().manual_seed(0),
                           dtype=torch.int64).to(torch.int32).view(torch.float32)
    floats = torch.cat([near, -near, sample])
    floats = floats[~floats.isnan()].contiguous()
    ours = torch.empty(floats.numel(), dtype=torch.float16)
    checker.narrow_portable(floats.data_ptr(), ours.data_ptr(), floats.numel())
    assert torch.equal(ours.view(torch.int16), floats.half().view(torch.int16))


# --- the kernels -------------------------------------------------------------------------------------

CASES = {
    "Adam": (descend.Adam, dict(lr=0.01)),
    "AdamW": (descend.AdamW, dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
    "SGD": (descend.SGD, dict(lr=0.01, momentum=0.9, nesterov=True)),
    "RMSprop": (descend.RMSprop, dict(lr=0.01, centered=True, momentum=0.9)),
    "Adafactor": (descend.Adafactor, dict(lr=None, beta1=0.9)),  # rows/columns state and reductions: item passes
    "LAMB": (descend.LAMB, dict(lr=0.01)),  # norms: two passes
}
SHAPES = [(1000,), (37, 53), (3,), (5000,), (200, 300), (1, 1)]


def trained(cls, kwargs, state_dtype, steps=4, **paths):
    generator = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(shape, generator=generator).half()) for shape in SHAPES]
    optimizer = cls(params, state_dtype=state_dtype, **kwargs, **paths)
    for _ in range(steps):
        for param in params:
            param.grad = torch.randn(param.shape, generator=generator).half()
        optimizer.step()
    return params, optimizer


def values(params, optimizer):
    return [p.detach() for p in params] + [v for p in params for _, v in sorted(optimizer.state[p].items())
                                           if torch.is_tensor(v)]


PORTABLE_RUN = '''
import sys, torch, descend
sys.path.insert(0, "tests")
from test_float16 import CASES, trained, values
from descend.backends import build
assert build.support().f16_path() == 0
out = {}
for name, (cls, kwargs) in CASES.items():
    for state_dtype in (None, torch.float16):
        params, optimizer = trained(cls, kwargs, state_dtype)
        assert {info.path for info in optimizer.kernel_info()} == {"generated"}, optimizer.kernel_info()
        out[name, str(state_dtype)] = values(params, optimizer)
torch.save(out, sys.argv[1])
'''


@needs_compiler
def test_kernels_with_the_portable_conversion_give_the_same_bits(tmp_path):
    if build.support().f16_path() == 0:
        pytest.skip("this CPU has no F16C: the kernels use the portable conversion already")
    saved = tmp_path / "portable.pt"
    env = dict(os.environ, DESCEND_F16="portable", PYTHONPATH=os.getcwd())
    result = subprocess.run([sys.executable, "-c", PORTABLE_RUN, str(saved)], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    portable = torch.load(saved)
    for name, (cls, kwargs) in CASES.items():
        for state_dtype in (None, torch.float16):
            params, optimizer = trained(cls, kwargs, state_dtype)
            assert {info.path for info in optimizer.kernel_info()} == {"generated"}
            ours = values(params, optimizer)
            assert len(ours) == len(portable[name, str(state_dtype)])
            for a, b in zip(ours, portable[name, str(state_dtype)]):
                assert a.dtype == b.dtype and torch.equal(a, b), (name, state_dtype)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("paths", [dict(fused=False), dict(fused=False, foreach=True), dict(foreach=True),
                                   dict(fused=None)], ids=["one-tensor", "torch-foreach", "foreach-kernel", "kernel"])
def test_float16_state_is_kept_in_float16_on_every_path(name, paths):
    """``state_dtype=torch.float16``: every entry that follows the state dtype is float16, and every path
    agrees with the reference chain (one tensor at a time) within float16's rounding of the moments."""
    cls, kwargs = CASES[name]
    if paths.get("fused") is None and not cpu.available():
        pytest.skip("no C compiler")
    params, optimizer = trained(cls, kwargs, torch.float16, **paths)
    reference_params, reference = trained(cls, kwargs, torch.float16, fused=False)
    for param in params:
        kept = [v.dtype for k, v in optimizer.state[param].items() if torch.is_tensor(v) and v.dim() and k != "step"]
        assert kept and set(kept) == {torch.float16}, optimizer.state[param]
    for ours, theirs in zip(values(params, optimizer), values(reference_params, reference)):
        torch.testing.assert_close(ours.float(), theirs.float(), rtol=2e-3, atol=1e-5)


@needs_compiler
@pytest.mark.parametrize("cls", [torch.optim.Adam, torch.optim.AdamW])
def test_float16_state_matches_torch_fused_float16_adam(cls):
    """torch's fused CPU Adam keeps float16 moments for float16 parameters; descend's float16 state does too."""
    ours_cls = getattr(descend, cls.__name__)
    generator = torch.Generator().manual_seed(1)
    theirs = [torch.nn.Parameter(torch.randn(4097, generator=generator).half())]
    ours = [torch.nn.Parameter(theirs[0].detach().clone())]
    torch_optimizer = cls(theirs, lr=1e-3, weight_decay=0.01, fused=True)
    optimizer = ours_cls(ours, lr=1e-3, weight_decay=0.01, state_dtype=torch.float16)
    for _ in range(5):
        theirs[0].grad = torch.randn(4097, generator=generator).half()
        ours[0].grad = theirs[0].grad.clone()
        torch_optimizer.step()
        optimizer.step()
    for key in ("exp_avg", "exp_avg_sq"):  # the same numbers, up to float16's rounding (a 10-bit mantissa)
        assert torch_optimizer.state[theirs[0]][key].dtype == optimizer.state[ours[0]][key].dtype == torch.float16
        torch.testing.assert_close(optimizer.state[ours[0]][key].float(), torch_optimizer.state[theirs[0]][key].float(),
                                   rtol=2e-3, atol=2.5e-4)
    torch.testing.assert_close(ours[0].float(), theirs[0].float(), rtol=1e-3, atol=1e-3)
