"""The generated C kernels under AddressSanitizer and UndefinedBehaviorSanitizer.

``DESCEND_SANITIZE=1`` builds every kernel with ``-fsanitize=address,undefined`` (descend/backends/build.py).
Python itself is not instrumented, so the sanitizer's runtime is preloaded (``LD_PRELOAD`` of the compiler's
libasan, with libstdc++ beside it: torch throws C++ exceptions, and ASan's ``__cxa_throw`` interceptor finds
the real one only when libstdc++ is loaded before torch), leaks are not reported (Python keeps its objects to
the end by design), and the sanitized kernels get a cache folder of their own.  The fused-path tests, the
C-backed memory cases of tests/test_hardening.py and the fuzz's runs and user steps then run in a child
pytest; any report fails the test.  A deliberately broken kernel, built through the same path, shows that a
write past a buffer is caught.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from descend.backends import build

ROOT = Path(__file__).resolve().parents[1]


def _runtime(name: str) -> str | None:
    """The compiler's copy of a runtime library (``cc -print-file-name``), None where it has none."""
    try:
        compiler = build._compiler()
        found = subprocess.run([*compiler, f"-print-file-name={name}"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    path = found.stdout.strip()
    return path if os.path.isabs(path) and os.path.exists(path) else None


LIBASAN = _runtime("libasan.so")
LIBSTDCXX = _runtime("libstdc++.so.6") or _runtime("libstdc++.so")
pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or build.disabled() or LIBASAN is None or LIBSTDCXX is None,
    reason="needs Linux, a C compiler with AddressSanitizer (libasan) and libstdc++, and DESCEND_NATIVE not 0")


def sanitized(logs: Path) -> dict[str, str]:
    """The environment of a child whose kernels are built and run under the sanitizers; reports go to
    ``logs`` (a child's own stderr is captured by pytest, and an aborting process cannot flush it)."""
    logs.mkdir(parents=True, exist_ok=True)
    return dict(
        os.environ,
        DESCEND_SANITIZE="1",
        DESCEND_CACHE_DIR=str(build.cache_dir() / "sanitize"),
        LD_PRELOAD=" ".join(filter(None, [LIBASAN, LIBSTDCXX, os.environ.get("LD_PRELOAD")])),
        ASAN_OPTIONS=f"detect_leaks=0:log_path={logs / 'asan'}",
        UBSAN_OPTIONS=f"print_stacktrace=1:halt_on_error=1:log_path={logs / 'ubsan'}",
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    )


def reports(logs: Path) -> str:
    return "\n".join(f"{path.name}:\n{path.read_text(errors='replace')[:4000]}" for path in sorted(logs.glob("*")))


OVERFLOW = r"""
import sys, torch
from descend.backends import build
source = "void fill(float *x, int n) { for (int i = 0; i <= n; i++) x[i] = 1.0f; }  /* one past the end */"
fill = build.function(source, "fill", [build.P, build.I], restype=None)
assert fill is not None, build.error
x = torch.zeros(8)
fill(x.data_ptr(), int(sys.argv[1]))
print("survived", float(x.sum()))
"""


@pytest.mark.parametrize("last", [7, 8])
def test_a_kernel_that_writes_past_its_buffer_is_caught(tmp_path, last):
    """The same build path as every generated kernel: a loop that writes x[n] for n = 8 writes one float past
    a tensor of 8, and the sanitized process dies with ASan's report; n = 7 stays inside and runs clean."""
    logs = tmp_path / "logs"
    child = subprocess.run([sys.executable, "-c", OVERFLOW, str(last)], cwd=ROOT,
                           env=sanitized(logs), capture_output=True, text=True, timeout=300)
    if last == 7:
        assert child.returncode == 0 and "survived" in child.stdout, (child.stderr[-3000:], reports(logs))
        assert not list(logs.glob("*")), reports(logs)
    else:
        assert child.returncode != 0 and "survived" not in child.stdout
        assert "heap-buffer-overflow" in reports(logs), (child.stderr[-3000:], reports(logs))


def test_the_fused_path_tests_run_clean_under_the_sanitizers(tmp_path):
    logs = tmp_path / "logs"
    selection = ["tests/test_fused.py", "tests/test_hardening.py::test_item1_adafactor_with_a_state_dtype_unlike_the_"
                 "parameter_matches_the_reference", "tests/test_hardening.py::test_item2_state_dtype_edited_mid_run_is_"
                 "converted", "tests/test_hardening.py::test_item2_storage_replaced_under_the_same_tensor_never_"
                 "reaches_the_kernel", "tests/test_fuzz.py::test_random_runs_agree_with_the_reference_chain",
                 "tests/test_fuzz.py::test_generated_user_steps_agree_on_every_path_or_are_refused"]
    # a quarter of the fuzz's cases by default: every kernel is compiled again, instrumented, on a fresh machine
    environment = dict(sanitized(logs), DESCEND_FUZZ_SCALE=os.environ.get("DESCEND_FUZZ_SCALE", "0.25"))
    child = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *selection], cwd=ROOT,
                           env=environment, capture_output=True, text=True, timeout=1200)
    assert child.returncode == 0, (child.stdout[-4000:], child.stderr[-2000:], reports(logs))
    assert not list(logs.glob("*")), reports(logs)
    assert " passed" in child.stdout, child.stdout[-2000:]


def test_the_sanitizer_flags_reach_the_compiler(monkeypatch):
    monkeypatch.setenv("DESCEND_SANITIZE", "1")
    assert "-fsanitize=address,undefined" in build.flags()
    monkeypatch.setenv("DESCEND_SANITIZE", "0")
    assert not any(flag.startswith("-fsanitize") for flag in build.flags())
    assert shutil.which(build._compiler()[0])
