"""The whole GPU check in one run: every generated Triton kernel against the reference chain on real CUDA
tensors, then descend's step time against torch.optim's fused and foreach paths.

    bash benchmarks/gpu_check.sh             # on a machine with an NVIDIA GPU, torch and triton; no network
    bash benchmarks/gpu_check.sh --smoke     # anywhere: the same script on the CPU, kernels in Triton's
                                             # interpreter, tiny sizes (what CI runs)

Writes ``gpu_check.md`` (tables) and ``gpu_check.json`` (every number) to ``--out`` (``$OUT`` in the shell
script).  Stops itself before ``--budget`` seconds: what is left is reported as not run, never silently
dropped.  Exit status 1 when a kernel disagreed with the reference, 0 otherwise.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import descend  # noqa: E402
from descend.backends import triton as triton_backend  # noqa: E402

# name -> (descend factory, torch factory or None, minimum bytes moved per parameter in float32)
CANDIDATES = {
    "AdamW": (lambda p, **k: descend.AdamW(p, lr=1e-3, **k), lambda p, **k: torch.optim.AdamW(p, lr=1e-3, **k), 28),
    "Adam": (lambda p, **k: descend.Adam(p, lr=1e-3, **k), lambda p, **k: torch.optim.Adam(p, lr=1e-3, **k), 28),
    "SGD momentum": (lambda p, **k: descend.SGD(p, lr=1e-3, momentum=0.9, **k),
                     lambda p, **k: torch.optim.SGD(p, lr=1e-3, momentum=0.9, **k), 20),
    "Lion": (lambda p, **k: descend.Lion(p, lr=1e-4, **k), None, 20),
    "NAdam": (lambda p, **k: descend.NAdam(p, **k), lambda p, **k: torch.optim.NAdam(p, **k), 28),
    "RAdam": (lambda p, **k: descend.RAdam(p, **k), lambda p, **k: torch.optim.RAdam(p, **k), 28),
    "Adafactor": (lambda p, **k: descend.Adafactor(p, **k), lambda p, **k: torch.optim.Adafactor(p, **k), 12),
}


def _bitsandbytes_adamw8bit(params, fused=None, foreach=None, **kwargs):
    """bitsandbytes' AdamW8bit, in the "torch fused" column of the 8-bit AdamW rows (it has one path)."""
    if foreach:
        raise TypeError("bitsandbytes has one path")
    try:
        import bitsandbytes
    except ImportError as error:
        raise RuntimeError(f"bitsandbytes is not installed: {error}") from error
    return bitsandbytes.optim.AdamW8bit(params, lr=1e-3, **kwargs)


# 8-bit block-quantised state (state_dtype="8bit"): 16 bytes per parameter moved (θ and g in float32, m and v
# in one byte each, read and written); the kernel check's sizes stay float32 state (under 4,096 elements or
# not whole blocks of 256) against its float64 reference
CANDIDATES["AdamW 8-bit"] = (lambda p, **k: descend.AdamW(p, lr=1e-3, state_dtype="8bit", **k),
                             _bitsandbytes_adamw8bit, 16)
if hasattr(descend, "Muon"):  # matrices only
    CANDIDATES["Muon"] = (lambda p, **k: descend.Muon(p, **k), lambda p, **k: torch.optim.Muon(p, **k), 12)
TORCH_PATHS = {"fused": dict(fused=True), "foreach": dict(foreach=True)}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class Clock:
    def __init__(self, budget: float):
        self.start, self.budget = time.monotonic(), budget

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.start)


def shapes_for(name: str, workload: str, smoke: bool) -> list[tuple[int, ...]]:
    """1×16.8M, 49 tensors of 16.8M in all, 1000×256 (matrices for Muon); a few thousand elements in smoke mode."""
    if smoke and name == "AdamW 8-bit":  # big enough to be kept in 8 bits (whole blocks, at least 4,096)
        return {"one": [(64, 64)], "49": [(16, 256)] * 2 + [(13,)], "many": [(8, 8)] * 12}[workload]
    if smoke:
        vector = [(16, 13)] if name == "Muon" else [(13,)]
        return {"one": [(64, 48)], "49": [(16, 8)] * 6 + vector, "many": [(8, 8)] * 12}[workload]
    if name == "Muon":
        return {"one": [(4096, 4096)], "49": [(1024, 1024)] * 16, "many": [(16, 16)] * 1000}[workload]
    return {"one": [(4096, 4096)], "49": [(1024, 320)] * 48 + [(1024 * 64,)], "many": [(256,)] * 1000}[workload]


def make_params(shapes, device, dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    params = []
    for shape in shapes:
        p = torch.nn.Parameter(torch.randn(shape, generator=generator).to(device=device, dtype=dtype))
        p.grad = (torch.randn(shape, generator=generator) * 1e-2).to(device=device, dtype=dtype)
        params.append(p)
    return params


# --- correctness ----------------------------------------------------------------------------------


def check_kernels(device: str, smoke: bool, clock: Clock) -> list[dict]:
    """Every candidate, in every dtype, on odd sizes: the default path on ``device`` against the reference chain
    (fused=False) on the CPU in float64, step by step from the same start with the same gradients."""
    sizes = [1, 1000, 8192 + 17, 3 * 8192 + 5, 64 * 1024 + 3] if not smoke else [1, 37, 100]
    results = []
    for name, (make, _, _) in CANDIDATES.items():
        for dtype_name, dtype in DTYPES.items():
            if clock.left() < 60:
                results.append(dict(name=name, dtype=dtype_name, status="not run (time)"))
                continue
            shapes = [(n,) for n in sizes] + [(33, 17)] if name != "Muon" else [(33, 17), (8, 40)]
            ours = make_params(shapes, device, dtype)
            reference = [torch.nn.Parameter(p.detach().cpu().double()) for p in ours]
            optimizers = make(ours), make(reference, fused=False)
            tolerance = {torch.float32: 2e-5, torch.bfloat16: 2e-2, torch.float16: 2e-3}[dtype]
            if name == "Muon":
                tolerance = max(tolerance, 2e-2)  # its iteration runs in bfloat16 on both
            worst, found_nan = 0.0, False
            generator = torch.Generator().manual_seed(1)
            started = time.monotonic()
            for _ in range(3):
                for p, r in zip(ours, reference):
                    grad = torch.randn(p.shape, generator=generator).to(dtype)
                    p.grad = grad.to(device)
                    r.grad = grad.double()
                for optimizer in optimizers:
                    optimizer.step()
                for p, r in zip(ours, reference):
                    got, want = p.detach().double().cpu(), r.detach().to(dtype).double()
                    found_nan |= bool(torch.isnan(got).any())
                    scale = want.abs().max().item() or 1.0
                    worst = max(worst, (got - want).abs().max().item() / scale)
                with torch.no_grad():  # re-synced: each step is compared on its own
                    for p, r in zip(ours, reference):
                        p.copy_(r.to(dtype))
            path = optimizers[0].kernel_info()[0].path
            ok = not found_nan and worst <= tolerance
            results.append(dict(name=name, dtype=dtype_name, status="ok" if ok else "MISMATCH", worst=worst,
                                tolerance=tolerance, seconds=round(time.monotonic() - started, 2), path=path))
            print(f"  {name:14s} {dtype_name:9s} {results[-1]['status']:9s} worst {worst:.2e}", flush=True)
    return results


def run_pytest(smoke: bool, clock: Clock) -> dict:
    """descend's own CUDA tests (skipped without a GPU; in smoke mode only collected)."""
    if clock.left() < 120:
        return dict(status="not run (time)")
    tests = ["tests/test_triton.py", "tests/test_foreach.py"]
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests,
               "-k", "cuda or CUDA"] + (["--collect-only"] if smoke else [])
    started = time.monotonic()
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=max(30, clock.left() - 90))
    except subprocess.TimeoutExpired:
        return dict(status="timed out", seconds=round(time.monotonic() - started, 1))
    tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or [""]
    return dict(status="ok" if done.returncode in (0, 5) else "FAILED", returncode=done.returncode,
                summary=tail[0], seconds=round(time.monotonic() - started, 1))


# --- speed ---------------------------------------------------------------------------------------


def timer(device: str):
    if device == "cuda":
        def measure(function, calls: int) -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(calls):
                function()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3 / calls
    else:
        def measure(function, calls: int) -> float:
            start = time.perf_counter()
            for _ in range(calls):
                function()
            return (time.perf_counter() - start) / calls
    return measure


def speed(device: str, smoke: bool, repeats: int, clock: Clock) -> list[dict]:
    measure = timer(device)
    calls = 1 if smoke else 20
    rows = []
    for name, (make_ours, make_theirs, min_bytes) in CANDIDATES.items():
        for workload in ("one", "49", "many"):
            if clock.left() < 45:
                rows.append(dict(name=name, workload=workload, status="not run (time)"))
                continue
            shapes = shapes_for(name, workload, smoke)
            numel = sum(math.prod(s) for s in shapes)
            candidates = {"descend": make_ours(make_params(shapes, device)),
                          "descend (nonfinite=ignore)": make_ours(make_params(shapes, device), nonfinite="ignore")}
            for path, kwargs in TORCH_PATHS.items():
                if make_theirs is None:
                    continue
                try:
                    optimizer = make_theirs(make_params(shapes, device), **kwargs)
                    optimizer.step()
                    candidates[f"torch {path}"] = optimizer
                except (RuntimeError, ValueError, TypeError):
                    pass  # torch has no such path for this optimizer here
            for optimizer in candidates.values():
                optimizer.step()  # warm-up: state, kernel compilation
            times = {key: [] for key in candidates}
            for _ in range(repeats):
                for key, optimizer in candidates.items():
                    times[key].append(measure(optimizer.step, calls))
            medians = {key: statistics.median(values) for key, values in times.items()}
            torch_best = min((v for k, v in medians.items() if k.startswith("torch")), default=None)
            row = dict(name=name, workload=workload, params=numel, ms={k: v * 1e3 for k, v in medians.items()},
                       torch_best_over_descend=(torch_best / medians["descend"]) if torch_best else None,
                       gb_per_s=min_bytes * numel / medians["descend"] / 1e9, status="ok")
            rows.append(row)
            print(f"  {name:14s} {workload:5s} descend {row['ms']['descend']:.3f} ms"
                  + (f", torch best / descend {row['torch_best_over_descend']:.2f}×" if torch_best else ""), flush=True)
    return rows


# --- the report ------------------------------------------------------------------------------------


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [f"# GPU check ({'smoke: CPU, Triton interpreter' if report['smoke'] else env['device']})", "",
             f"{env['date']}, torch {env['torch']}, triton {env['triton']}, Python {env['python']}. "
             f"Produced by `bash benchmarks/gpu_check.sh{' --smoke' if report['smoke'] else ''}` in "
             f"{report['seconds']:.0f} s.", "", "## Kernels against the reference chain", "",
             "| optimizer | dtype | result | worst relative difference | tolerance | path |", "|---|---|---|---|---|---|"]
    for r in report["kernels"]:
        lines.append(f"| {r['name']} | {r['dtype']} | {r['status']} | {r.get('worst', float('nan')):.2e} | "
                     f"{r.get('tolerance', float('nan')):.0e} | {r.get('path', '')} |")
    test = report["pytest"]
    lines += ["", f"descend's CUDA tests: {test['status']} {test.get('summary', '')}", "", "## Step time", "",
              "| optimizer | workload | params | descend ms | nonfinite=ignore ms | torch fused ms | torch foreach ms "
              "| torch best / descend | GB/s (min bytes) |", "|---|---|---|---|---|---|---|---|---|"]
    note = "(AdamW 8-bit: the torch fused column is bitsandbytes' AdamW8bit, where it is installed.)"
    for r in report["speed"]:
        if r["status"] != "ok":
            lines.append(f"| {r['name']} | {r['workload']} | | {r['status']} | | | | | |")
            continue
        ms = r["ms"]
        cell = lambda key: f"{ms[key]:.3f}" if key in ms else "—"  # noqa: E731
        ratio = f"{r['torch_best_over_descend']:.2f}×" if r["torch_best_over_descend"] else "—"
        lines.append(f"| {r['name']} | {r['workload']} | {r['params'] / 1e6:.2f}M | {cell('descend')} | "
                     f"{cell('descend (nonfinite=ignore)')} | {cell('torch fused')} | {cell('torch foreach')} | "
                     f"{ratio} | {r['gb_per_s']:.0f} |")
    return "\n".join(lines + ["", note]) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="the CPU and Triton's interpreter, tiny sizes")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds; what is left after it is not run")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    clock = Clock(args.budget)
    if args.smoke:
        os.environ["TRITON_INTERPRET"] = "1"  # read when a generated kernel module is imported
        triton_backend.DEVICE_TYPES = frozenset({"cpu", "cuda"})
        triton_backend.BLOCK, triton_backend.CHUNK = 16, 32
        device, repeats = "cpu", 1
    else:
        if not torch.cuda.is_available():
            print("gpu_check: no CUDA device (use --smoke to check the script on the CPU)", file=sys.stderr)
            return 2
        device, repeats = "cuda", args.repeats
    if not triton_backend.available():
        print("gpu_check: triton is not installed: descend would run its reference path on CUDA", file=sys.stderr)
        return 2
    environment = dict(date=time.strftime("%Y-%m-%d"), torch=torch.__version__,
                       triton=getattr(triton_backend.triton, "__version__", "?"), python=platform.python_version(),
                       device=torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu")
    print(f"gpu_check: {environment}", flush=True)
    print("kernels against the reference chain:", flush=True)
    kernels = check_kernels(device, args.smoke, clock)
    print("descend's CUDA tests:", flush=True)
    tests = run_pytest(args.smoke, clock)
    print(f"  {tests}", flush=True)
    print("step time:", flush=True)
    rows = speed(device, args.smoke, repeats, clock)
    report = dict(environment=environment, smoke=args.smoke, kernels=kernels, pytest=tests, speed=rows,
                  seconds=time.monotonic() - clock.start)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "gpu_check_smoke" if args.smoke else "gpu_check"
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=1))
    (args.out / f"{stem}.md").write_text(markdown(report))
    print(f"gpu_check: wrote {args.out / stem}.md and .json in {report['seconds']:.0f} s", flush=True)
    failed = any(r["status"] == "MISMATCH" for r in kernels) or tests["status"] == "FAILED"
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
