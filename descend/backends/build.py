"""Builds, caches and loads the CPU kernels (the generated chain kernels and the small support library).

A kernel is compiled with the system C compiler (``$CC``, which may carry flags, else ``cc``/``gcc``) on
first use, into a cache folder (``$DESCEND_CACHE_DIR``, else ``~/.cache/descend``), keyed by its source,
the shared ``_prelude.h``, the flags and the CPU.  A library is written atomically (temporary file,
fsync, rename) with its size and SHA-256 recorded beside it, and checked against them before it is
loaded: a truncated or corrupted file (a crash mid-write, a full disk) is rebuilt, never loaded.  It is
loaded after torch, so its OpenMP calls run on the libgomp torch already loaded.

float16 tensors are converted a block at a time with the CPU's own instructions (AVX-512F or F16C, as
``/proc/cpuinfo`` reports them: ``float16_flags``), which the cache key includes with the other flags.

``-ffp-contract=off``: the compiler may not fuse ``a*b + c`` behind a formula's back (a formula asks for
a fused multiply-add with ``fma`` where bit-parity with torch needs one).  ``DESCEND_SANITIZE=1`` builds
every kernel with ``-fsanitize=address,undefined`` (the process must preload libasan: see
tests/test_sanitize.py).  ``DESCEND_NATIVE=0`` turns the kernels off.

Without a compiler, with an unwritable cache, or when a kernel fails to compile, the optimizers run their
reference path, and a ``RuntimeWarning`` says why, once per reason; ``error`` holds the last reason.
"""
from __future__ import annotations

import array
import ctypes
import hashlib
import os
import shlex
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from torch import Tensor

PRELUDE = Path(__file__).with_name("_prelude.h")
SUPPORT = Path(__file__).with_name("_support.c")
BASE_FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-ffp-contract=off", "-fopenmp", "-std=gnu11", "-shared",
              "-fPIC"]
SANITIZE_FLAGS = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all"]

_lock = threading.RLock()
_support: ctypes.CDLL | None = None
_support_loaded = False
_functions: dict[tuple[str, str], object] = {}  # (source hash, name) -> function, or None when it could not be built
_failures: dict[str, str] = {}  # source hash -> the compiler's message
_warned: set[str] = set()
error: str | None = None  # why the last kernel is unavailable, when one is


def disabled() -> bool:
    return os.environ.get("DESCEND_NATIVE", "1") == "0"


def sanitizing() -> bool:
    return os.environ.get("DESCEND_SANITIZE", "0") == "1"


def cpu_flags() -> set[str]:
    """The instruction-set flags the CPU reports (``/proc/cpuinfo``); empty where it does not say."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def float16_flags() -> list[str]:
    """What float16 conversion the kernels are built with (``F16_PATH`` in ``_prelude.h``): AVX-512 blocks
    where the CPU has AVX-512F, F16C blocks where it has F16C (and AVX), else the portable integer
    conversion; ``DESCEND_F16=portable`` asks for the portable one anywhere (the tests compare them)."""
    reported = cpu_flags()
    if os.environ.get("DESCEND_F16") == "portable" or "f16c" not in reported or "avx" not in reported:
        return ["-DDESCEND_F16_PORTABLE"]
    return ["-mavx", "-mf16c"] + (["-mavx512f"] if "avx512f" in reported else [])


def flags() -> list[str]:
    return BASE_FLAGS + float16_flags() + (SANITIZE_FLAGS if sanitizing() else [])


def _cpu_signature() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "\n".join(sorted({line for line in lines if line.startswith(("model name", "flags"))}))
    except OSError:
        return os.uname().machine


def cache_dir() -> Path:
    return Path(os.environ.get("DESCEND_CACHE_DIR") or Path.home() / ".cache" / "descend")


def _compiler() -> list[str]:
    """The C compiler command, with any flags ``$CC`` carries (``CC="gcc -m64"``)."""
    command = shlex.split(os.environ.get("CC") or "") or [shutil.which("cc") or shutil.which("gcc") or ""]
    if not command[0] or shutil.which(command[0]) is None:
        raise OSError(f"no C compiler found ({'$CC=' + os.environ['CC'] if os.environ.get('CC') else 'cc or gcc'} "
                      "is not on PATH)")
    return command


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verified(target: Path) -> bool:
    """True when ``target`` is the library its record describes (size and SHA-256)."""
    record = target.with_suffix(".sha256")
    try:
        size, expected = record.read_text().split()
        data = target.read_bytes()
    except (OSError, ValueError):
        return False
    return len(data) == int(size) and digest(data) == expected


def write_atomically(path: Path, data: bytes) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}-", delete=False) as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(handle.name, path)


def build(source: str, stem: str) -> Path:
    """The cached library compiled from C ``source``, built (or rebuilt, when its file fails verification)
    as needed.  Raises ``OSError`` or ``subprocess.CalledProcessError`` (with the compiler's message)."""
    compiler = _compiler()
    key = digest(source.encode() + PRELUDE.read_bytes() + " ".join([*compiler, *flags(), _cpu_signature()]).encode())
    target = cache_dir() / f"{stem}-{key[:16]}.so"
    if verified(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        source_file, built = Path(scratch) / f"{stem}.c", Path(scratch) / target.name
        source_file.write_text(source)
        subprocess.run([*compiler, *flags(), f"-I{PRELUDE.parent}", str(source_file), "-o", str(built), "-lm"],
                       check=True, capture_output=True, text=True)
        data = built.read_bytes()
        write_atomically(target, data)  # a crash before the record is written leaves an unverified file
        write_atomically(target.with_suffix(".sha256"), f"{len(data)} {digest(data)}\n".encode())
    return target


def warn_once(reason: str, consequence: str) -> None:
    """A ``RuntimeWarning`` that a fast path cannot be had, once per reason, pointing at the user's line."""
    if reason not in _warned:
        _warned.add(reason)
        from ..adapter.warn import warn_user

        warn_user(f"descend: {reason}; {consequence} (correct, but slower)", RuntimeWarning)


def _failure(exc: Exception) -> str:
    detail = (getattr(exc, "stderr", "") or str(exc)).strip()
    return detail[:2000]


def _unavailable(reason: str) -> None:
    global error
    error = reason
    warn_once(reason, "the optimizers run their reference path")


P, I, D = ctypes.c_void_p, ctypes.c_int, ctypes.c_double


def support() -> ctypes.CDLL | None:
    """The support kernels (the finiteness check, the step counters), built on first use; None when they
    cannot be had (see ``error``): then no generated kernel can be either."""
    global _support, _support_loaded, error
    if _support_loaded:
        return _support
    with _lock:
        if _support_loaded:
            return _support
        if disabled():
            error = "disabled by DESCEND_NATIVE=0"
        else:
            try:
                library = ctypes.CDLL(str(build(SUPPORT.read_text(), "support")))
                for name in ("all_finite_f32", "all_finite_f64", "all_finite_u16"):
                    getattr(library, name).restype = I
                    getattr(library, name).argtypes = [I, P, P, I]
                library.count_steps.restype, library.count_steps.argtypes = None, [I, P, P]
                library.f16_path.restype, library.f16_path.argtypes = I, []
                _support = library
            except (OSError, subprocess.CalledProcessError) as exc:
                _unavailable(f"could not build the fused kernels: {_failure(exc)}")
        _support_loaded = True
    return _support


def function(source: str, name: str, argtypes: list, restype=I):
    """``name`` from the library compiled from ``source`` (cached per process and on disk); None when it cannot
    be built (``failure(source)`` and ``error`` say why, and a warning says so once)."""
    key = (digest(source.encode()), name)
    if key in _functions:
        return _functions[key]
    with _lock:
        if key not in _functions:
            found = None
            if support() is not None:
                try:
                    found = getattr(ctypes.CDLL(str(build(source, "chain"))), name)
                    found.restype, found.argtypes = restype, argtypes
                except (OSError, AttributeError, subprocess.CalledProcessError) as exc:
                    _failures[key[0]] = _failure(exc)
                    _unavailable(f"could not build a generated kernel: {_failure(exc)}")
                    found = None
            _functions[key] = found
    return _functions[key]


def failure(source: str) -> str | None:
    """Why the kernel compiled from ``source`` could not be built (the compiler's message), if it could not."""
    return _failures.get(digest(source.encode()))


class Int64s(array.array):
    """A C array of int64 (sizes, or data pointers) that ctypes passes as its address; three times
    quicker to build than a ctypes array, which matters with hundreds of tensors per step."""

    @property
    def _as_parameter_(self) -> int:
        return self.buffer_info()[0]


class Doubles(array.array):
    """A C array of doubles, passed as its address."""

    @property
    def _as_parameter_(self) -> int:
        return self.buffer_info()[0]


def int64s(values: Sequence[int]) -> Int64s:
    return Int64s("q", values)


def doubles(values: Sequence[float]) -> Doubles:
    return Doubles("d", values)


def pointers(tensors: Sequence[Tensor | None]) -> Int64s:
    """A C array of data pointers (NULL for a None entry)."""
    return Int64s("q", [0 if t is None else t.data_ptr() for t in tensors])


def sizes(tensors: Sequence[Tensor]) -> Int64s:
    return Int64s("q", [t.numel() for t in tensors])


def threads() -> int:
    import torch

    return torch.get_num_threads()
