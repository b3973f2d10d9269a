"""Builds, caches and loads the CPU kernels: the generated chain kernels and the hand-written ``_kernels.c``.

A kernel is compiled with the system C compiler (``$CC``, which may carry flags, else ``cc``/``gcc``) on
first use, into a cache folder (``$DESCEND_CACHE_DIR``, else ``~/.cache/descend``), keyed by its source,
the shared ``_prelude.h``, the flags and the CPU.  A library is written atomically (temporary file,
fsync, rename) with its size and SHA-256 recorded beside it, and checked against them before it is
loaded: a truncated or corrupted file (a crash mid-write, a full disk) is rebuilt, never loaded.  It is
loaded after torch, so its OpenMP calls run on the libgomp torch already loaded.

Without a compiler, with an unwritable cache, or when a kernel fails to compile, the optimizers run their
reference path, and a ``RuntimeWarning`` says why, once per reason; ``error`` holds the last reason.
``DESCEND_NATIVE=0`` turns the kernels off silently.
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
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

SOURCE = Path(__file__).with_name("_kernels.c")
PRELUDE = Path(__file__).with_name("_prelude.h")
FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fopenmp", "-std=gnu11", "-shared", "-fPIC"]
DTYPES = {torch.float32: "f32", torch.float64: "f64"}  # what the hand-written kernels take
CHAIN_DTYPES = frozenset({torch.float32, torch.float64, torch.bfloat16, torch.float16})  # generated kernels

_lock = threading.RLock()
_library: ctypes.CDLL | None = None
_loaded = False
_chains: dict[str, object] = {}  # source hash -> kernel function, or None when it could not be built
_warned: set[str] = set()
error: str | None = None  # why the last kernel is unavailable, when one is


def _cpu_signature() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "\n".join(sorted({line for line in lines if line.startswith(("model name", "flags"))}))
    except OSError:
        return os.uname().machine


def _cache_dir() -> Path:
    return Path(os.environ.get("DESCEND_CACHE_DIR") or Path.home() / ".cache" / "descend")


def _compiler() -> list[str]:
    """The C compiler command, with any flags ``$CC`` carries (``CC="gcc -m64"``)."""
    command = shlex.split(os.environ.get("CC") or "") or [shutil.which("cc") or shutil.which("gcc") or ""]
    if not command[0] or shutil.which(command[0]) is None:
        raise OSError(f"no C compiler found ({'$CC=' + os.environ['CC'] if os.environ.get('CC') else 'cc or gcc'} "
                      "is not on PATH)")
    return command


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _verified(target: Path) -> bool:
    """True when ``target`` is the library its record describes (size and SHA-256)."""
    record = target.with_suffix(".sha256")
    try:
        size, digest = record.read_text().split()
        data = target.read_bytes()
    except (OSError, ValueError):
        return False
    return len(data) == int(size) and _digest(data) == digest


def _write_atomically(path: Path, data: bytes) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}-", delete=False) as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(handle.name, path)


def build(source: str, stem: str) -> Path:
    """The cached library compiled from C ``source``, built (or rebuilt, when its file fails verification)
    as needed.  Raises ``OSError`` or ``subprocess.CalledProcessError`` (with the compiler's message)."""
    compiler = _compiler()
    key = _digest(source.encode() + PRELUDE.read_bytes() + " ".join([*compiler, *FLAGS, _cpu_signature()]).encode())
    target = _cache_dir() / f"{stem}-{key[:16]}.so"
    if _verified(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        source_file, built = Path(scratch) / f"{stem}.c", Path(scratch) / target.name
        source_file.write_text(source)
        subprocess.run([*compiler, *FLAGS, f"-I{PRELUDE.parent}", str(source_file), "-o", str(built), "-lm"],
                       check=True, capture_output=True, text=True)
        data = built.read_bytes()
        _write_atomically(target, data)  # a crash before the record is written leaves an unverified file
        _write_atomically(target.with_suffix(".sha256"), f"{len(data)} {_digest(data)}\n".encode())
    return target


def warn_once(reason: str, consequence: str, stacklevel: int) -> None:
    """A ``RuntimeWarning`` that a fast path cannot be had, once per reason (``_warned`` remembers them)."""
    if reason not in _warned:
        _warned.add(reason)
        warnings.warn(f"descend: {reason}; {consequence} (correct, but slower)", RuntimeWarning,
                      stacklevel=stacklevel + 1)


def _unavailable(reason: str) -> None:
    """Records why a kernel cannot be had and warns once per reason."""
    global error
    error = reason
    warn_once(reason, "the optimizers run their reference path", stacklevel=4)


def _failure(exc: Exception) -> str:
    detail = (getattr(exc, "stderr", "") or str(exc)).strip()
    return detail[:2000]


def disabled() -> bool:
    return os.environ.get("DESCEND_NATIVE", "1") == "0"


def library() -> ctypes.CDLL | None:
    """The hand-written kernels, built on first use; None when they cannot be had (see ``error``)."""
    global _library, _loaded, error
    if _loaded:
        return _library
    with _lock:
        if _loaded:
            return _library
        if disabled():
            error = "disabled by DESCEND_NATIVE=0"
        else:
            try:
                _library = _declare(ctypes.CDLL(str(build(SOURCE.read_text(), "kernels"))))
            except (OSError, subprocess.CalledProcessError) as exc:
                _unavailable(f"could not build the fused kernels: {_failure(exc)}")
        _loaded = True
    return _library


def chain_kernel(source: str, name: str):
    """The generated kernel ``name`` compiled from ``source`` (cached per process and on disk); None when
    it cannot be built (``error`` says why, and a warning says so once)."""
    key = _digest(source.encode())
    if key in _chains:
        return _chains[key]
    with _lock:
        if key not in _chains:
            function = None
            if library() is not None:
                try:
                    function = getattr(ctypes.CDLL(str(build(source, "chain"))), name)
                    P, I = ctypes.c_void_p, ctypes.c_int
                    function.restype, function.argtypes = I, [I, P, P, P, P, P, I]
                except (OSError, AttributeError, subprocess.CalledProcessError) as exc:
                    _unavailable(f"could not build a generated kernel: {_failure(exc)}")
                    function = None
            _chains[key] = function
    return _chains[key]


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    P, I, D = ctypes.c_void_p, ctypes.c_int, ctypes.c_double
    signatures = {
        "all_finite": (I, [I, P, P, I]),
        "adafactor": (I, [I, P, P, P, P, P, P, P, P, D, D, D, D, I, I, D, D, D, I, I]),
    }
    for name, (restype, argtypes) in signatures.items():
        for suffix in DTYPES.values():
            function = getattr(lib, f"{name}_{suffix}")
            function.restype, function.argtypes = restype, argtypes
    lib.count_steps.restype, lib.count_steps.argtypes = None, [I, P, P]
    return lib


def kernel(name: str, dtype: torch.dtype):
    return getattr(library(), f"{name}_{DTYPES[dtype]}")


class _Int64s(array.array):
    """A C array of int64 (sizes, or data pointers) that ctypes passes as its address; three times
    quicker to build than a ctypes array, which matters with hundreds of tensors per step."""

    @property
    def _as_parameter_(self) -> int:
        return self.buffer_info()[0]


def pointers(tensors: Sequence[Tensor | None] | None):
    """A C array of data pointers (NULL for a None entry), or NULL for a missing list."""
    if tensors is None:
        return None
    return _Int64s("q", [0 if t is None else t.data_ptr() for t in tensors])


def sizes(tensors: Sequence[Tensor]):
    return _Int64s("q", [t.numel() for t in tensors])


def int64s(values: Sequence[int]):
    return _Int64s("q", values)


def doubles(values: Sequence[float]):
    return (ctypes.c_double * len(values))(*values)


def threads() -> int:
    return torch.get_num_threads()


def readable(tensor: Tensor) -> bool:
    """True when the kernels can work on ``tensor`` in place: a contiguous CPU float32/float64 tensor."""
    return tensor.dtype in DTYPES and tensor.is_cpu and tensor.is_contiguous()


def can_fuse(param: Tensor, grad: Tensor | None) -> bool:
    """True when the kernels can update ``param`` in place: ``readable``, with a gradient of the same dtype
    and layout (its state is made alike: see ChainOptimizer)."""
    return (readable(param) and grad is not None and grad.dtype == param.dtype and grad.layout == torch.strided
            and grad.is_contiguous())


def dense(tensor: Tensor) -> bool:
    """True when ``tensor`` covers its memory exactly once with no gaps (contiguous in some order of its
    dims, e.g. ``channels_last``): a kernel can then treat it as a flat array."""
    if tensor.is_contiguous():
        return True
    expected = 1
    for stride, size in sorted((s, n) for s, n in zip(tensor.stride(), tensor.shape) if n != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def can_fuse_chain(param: Tensor, grad: Tensor | None) -> bool:
    """True when a generated kernel can update ``param`` in place: a dense CPU tensor of a dtype the kernels
    take, with a gradient of the same dtype and strides (its state is made alike: see ChainOptimizer)."""
    return (param.dtype in CHAIN_DTYPES and param.is_cpu and grad is not None and grad.dtype == param.dtype
            and grad.layout == torch.strided and grad.stride() == param.stride() and dense(param))


def count_steps(step_tensors: Sequence[Tensor]):
    """``t ← t + 1`` for each float32 CPU step counter, in one call; returns the new values (a C double array)."""
    values = (ctypes.c_double * len(step_tensors))()
    library().count_steps(len(step_tensors), pointers(step_tensors), values)
    return values


def all_finite(tensors: Sequence[Tensor]) -> bool:
    """True when no element of these contiguous CPU tensors of one dtype is NaN or ±inf."""
    return bool(kernel("all_finite", tensors[0].dtype)(len(tensors), pointers(tensors), sizes(tensors), threads()))
