"""Builds, caches and loads the fused CPU kernels in ``_kernels.c``.

The first use compiles the file with the system C compiler (well under a
second) into a cache folder (``$DESCEND_CACHE_DIR``, else
``~/.cache/descend``), keyed by the source, the flags and the CPU; later
processes load the cached library.  It is loaded after torch, so its OpenMP
calls run on the libgomp torch already loaded.  Without a compiler, or with
``DESCEND_NATIVE=0``, ``library()`` returns None and the optimizers use their
reference path.
"""
from __future__ import annotations

import array
import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

SOURCE = Path(__file__).with_name("_kernels.c")
FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fopenmp", "-std=gnu11", "-shared", "-fPIC"]
DTYPES = {torch.float32: "f32", torch.float64: "f64"}

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_loaded = False
error: str | None = None  # why the library is unavailable, when it is


def _cpu_signature() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "\n".join(sorted({line for line in lines if line.startswith(("model name", "flags"))}))
    except OSError:
        return os.uname().machine


def _cache_dir() -> Path:
    return Path(os.environ.get("DESCEND_CACHE_DIR") or Path.home() / ".cache" / "descend")


def _build(compiler: str) -> Path:
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join([compiler, *FLAGS, _cpu_signature()]).encode()).hexdigest()
    target = _cache_dir() / f"kernels-{key[:16]}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        built = Path(scratch) / target.name
        subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", str(built), "-lm"], check=True, capture_output=True, text=True)
        os.replace(built, target)  # atomic: concurrent processes never load a half-written file
    return target


def library() -> ctypes.CDLL | None:
    """The loaded kernels, built on first use; None when they cannot be had (see ``error``)."""
    global _library, _loaded, error
    if _loaded:
        return _library
    with _lock:
        if _loaded:
            return _library
        if os.environ.get("DESCEND_NATIVE", "1") == "0":
            error = "disabled by DESCEND_NATIVE=0"
        else:
            compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
            try:
                if compiler is None:
                    raise OSError("no C compiler (cc or gcc) on PATH")
                _library = _declare(ctypes.CDLL(str(_build(compiler))))
            except (OSError, subprocess.CalledProcessError) as exc:
                detail = getattr(exc, "stderr", "") or str(exc)
                error = f"could not build the fused kernels: {detail.strip()[:500]}"
        _loaded = True
    return _library


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    P, I, D = ctypes.c_void_p, ctypes.c_int, ctypes.c_double
    signatures = {
        "all_finite": (I, [I, P, P, I]),
        "sgd": (I, [I, P, P, P, P, D, D, D, D, I, I, I]),
        "adam": (I, [I, P, P, P, P, P, P, P, D, D, D, D, D, I, I, I, I]),
        "adagrad": (I, [I, P, P, P, P, P, D, D, D, D, I, I]),
        "rmsprop": (I, [I, P, P, P, P, P, P, D, D, D, D, D, I, I]),
        "adadelta": (I, [I, P, P, P, P, P, D, D, D, D, I, I]),
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


def count_steps(step_tensors: Sequence[Tensor]):
    """``t ← t + 1`` for each float32 CPU step counter, in one call; returns the new values (a C double array)."""
    values = (ctypes.c_double * len(step_tensors))()
    library().count_steps(len(step_tensors), pointers(step_tensors), values)
    return values


def all_finite(tensors: Sequence[Tensor]) -> bool:
    """True when no element of these contiguous CPU tensors of one dtype is NaN or ±inf."""
    return bool(kernel("all_finite", tensors[0].dtype)(len(tensors), pointers(tensors), sizes(tensors), threads()))
