"""Optimizer step time, bandwidth and memory: descend against torch.optim, measured side by side.

    python benchmarks/step_speed.py [--repeats 7] [--threads 2] [--output benchmarks/RESULTS.md]
    python benchmarks/step_speed.py --device cuda [--output benchmarks/RESULTS.md]

For every optimizer and workload it prints descend's step time, torch.optim's for each of its
paths (fused / foreach / for-loop), the ratio to torch's fastest, the bandwidth descend reaches
counting the minimum bytes the algorithm must move, and that as a fraction of in-place axpy
bandwidth measured in the same run.  Timings are medians over interleaved repeats.  Then the cold
and warm first step (kernel build included), the peak extra memory of a step, and SAM's overhead.

``--device cuda`` times the GPU path instead (descend's generated Triton kernel against torch's fused,
foreach and for-loop paths) and writes its table as the section "## GPU step time" at the end of
``--output``, keeping the CPU sections already there.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import descend
from descend.backends import build, cpu

# name: (descend factory, torch factory or None, the torch class it is compared with, min bytes per fp32 param)
OPTIMIZERS = {
    "Adam": (lambda p, **k: descend.Adam(p, lr=1e-3, **k), lambda p, **k: torch.optim.Adam(p, lr=1e-3, **k), 28),
    "AdamW": (lambda p, **k: descend.AdamW(p, lr=1e-3, **k), lambda p, **k: torch.optim.AdamW(p, lr=1e-3, **k), 28),
    "SGD momentum": (lambda p, **k: descend.SGD(p, lr=1e-3, momentum=0.9, **k),
                     lambda p, **k: torch.optim.SGD(p, lr=1e-3, momentum=0.9, **k), 20),
    "Adagrad": (lambda p, **k: descend.Adagrad(p, **k), lambda p, **k: torch.optim.Adagrad(p, **k), 20),
    "RMSprop": (lambda p, **k: descend.RMSprop(p, **k), lambda p, **k: torch.optim.RMSprop(p, **k), 20),
    "Adadelta": (lambda p, **k: descend.Adadelta(p, **k), lambda p, **k: torch.optim.Adadelta(p, **k), 28),
    "Adafactor": (lambda p, **k: descend.Adafactor(p, **k), lambda p, **k: torch.optim.Adafactor(p, **k), 12),
    # torch has the same memory traffic in SGD(momentum, dampening) but no look-ahead Nesterov (it forbids
    # nesterov with dampening): its Nesterov step with dampening 0 is the closest, same-cost algorithm.
    "EMA momentum": (lambda p, **k: descend.SGD(p, lr=1e-3, momentum=0.9, dampening=0.9, **k),
                     lambda p, **k: torch.optim.SGD(p, lr=1e-3, momentum=0.9, dampening=0.9, **k), 20),
    "look-ahead Nesterov": (lambda p, **k: descend.SGD(p, lr=1e-3, momentum=0.9, dampening=0.9, nesterov=True, **k),
                            lambda p, **k: torch.optim.SGD(p, lr=1e-3, momentum=0.9, nesterov=True, **k), 20),
    "NAdam": (lambda p, **k: descend.NAdam(p, **k), lambda p, **k: torch.optim.NAdam(p, **k), 28),
    "RAdam": (lambda p, **k: descend.RAdam(p, **k), lambda p, **k: torch.optim.RAdam(p, **k), 28),
    # Lion has no torch.optim class: compared with descend's own reference chain on torch's foreach ops
    "Lion": (lambda p, **k: descend.Lion(p, **k),
             lambda p, **k: descend.Lion(p, fused=False, **({"foreach": k["foreach"]} if "foreach" in k else k)), 20),
}
TORCH_PATHS = {"fused": dict(fused=True), "foreach": dict(foreach=True), "for-loop": dict(foreach=False)}


def workloads():
    """(a) one 4096×4096 matrix; (b) ~200 transformer-like tensors, ~16M params; (c) 1000 tensors of 256."""
    width, layers = 320, 12
    shapes = [(4096, width)]
    for _ in range(layers):
        shapes += [(width, width)] * 4 + [(width,)] * 4  # attention: q, k, v, o and their biases
        shapes += [(4 * width, width), (4 * width,), (width, 4 * width), (width,)]  # MLP
        shapes += [(width,)] * 4  # two layer norms
    return {
        "(a) 1×4096²": [(4096, 4096)],
        f"(b) {len(shapes)} tensors": shapes,
        "(c) 1000×256": [(256,)] * 1000,
    }


def make_params(shapes, seed=0, device="cpu"):
    generator = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(shape, generator=generator).to(device)) for shape in shapes]
    for p in params:
        p.grad = (torch.randn(p.shape, generator=generator) * 1e-2).to(device)
    return params


def time_interleaved(functions: dict, repeats: int) -> dict:
    """Median seconds per call; the candidates take turns so that drift in the machine hits all alike."""
    for function in functions.values():
        function()  # warm-up: state allocation, kernel load
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def axpy(numel: int):
    """x ← x + a·y on numel floats (12 bytes per element): the bandwidth reference, timed alongside each row."""
    x, y = torch.randn(numel), torch.randn(numel)
    return lambda: x.add_(y, alpha=1e-3)


def speed_table(repeats: int) -> list[str]:
    rows = ["| optimizer | workload | descend ms | descend (nonfinite=skip) ms | torch fused ms | torch foreach ms "
            "| torch for-loop ms | torch fastest / descend (default · skip) | GB/s, min bytes (default · skip) "
            "| of axpy bandwidth (default · skip) |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for workload, shapes in workloads().items():
        numel = sum(torch.Size(s).numel() for s in shapes)
        print(f"{workload}: {numel / 1e6:.1f}M params", file=sys.stderr)
        for name, (make_ours, make_theirs, min_bytes) in OPTIMIZERS.items():
            candidates = {"axpy": axpy(numel)}
            for label, kwargs in (("descend", {}), ("descend-skip", dict(nonfinite="skip"))):
                candidates[label] = make_ours(make_params(shapes), **kwargs).step
            for path, kwargs in TORCH_PATHS.items():
                try:
                    optimizer = make_theirs(make_params(shapes), **kwargs)
                    optimizer.step()
                    candidates[path] = optimizer.step
                except (RuntimeError, ValueError, TypeError):
                    pass  # torch has no such path for this optimizer on this device
            seconds = time_interleaved(candidates, repeats)
            bandwidth = 12 * numel / seconds["axpy"]
            fastest = min(seconds[p] for p in TORCH_PATHS if p in seconds)
            ours = (seconds["descend"], seconds["descend-skip"])
            achieved = [min_bytes * numel / s for s in ours]
            cell = lambda key: f"{seconds[key] * 1e3:.2f}" if key in seconds else "—"  # noqa: E731
            rows.append(f"| {name} | {workload} | {cell('descend')} | {cell('descend-skip')} | {cell('fused')} | "
                        f"{cell('foreach')} | {cell('for-loop')} | {fastest / ours[0]:.2f}× · {fastest / ours[1]:.2f}× | "
                        f"{achieved[0] / 1e9:.1f} · {achieved[1] / 1e9:.1f} | "
                        f"{achieved[0] / bandwidth:.0%} · {achieved[1] / bandwidth:.0%} |")
            print(rows[-1], file=sys.stderr)
    return rows


# --- GPU ---------------------------------------------------------------------------------------

# torch has a fused (single-kernel) path for these; descend is compared with it
GPU_AGAINST_FUSED = ("Adam", "AdamW", "SGD momentum", "Adagrad")
# and none for these; descend is compared with torch's fastest path (foreach, on CUDA)
GPU_AGAINST_FASTEST = ("RMSprop", "Adadelta")


def time_cuda(functions: dict, repeats: int, calls: int = 20) -> dict:
    """Median seconds per call on the GPU: each sample is ``calls`` back-to-back calls between two CUDA
    events (so launch overhead counts, as in training); candidates take turns, as in time_interleaved."""
    for function in functions.values():
        function()  # warm-up: state allocation, kernel compilation
    torch.cuda.synchronize()
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(calls):
                function()
            end.record()
            end.synchronize()
            times[name].append(start.elapsed_time(end) / 1e3 / calls)
    return {name: statistics.median(values) for name, values in times.items()}


def device_copy(numel: int):
    """y ← x on numel floats (8 bytes per element): the bandwidth reference on the GPU."""
    x, y = torch.randn(numel, device="cuda"), torch.empty(numel, device="cuda")
    return lambda: y.copy_(x)


def gpu_speed_table(repeats: int) -> list[str]:
    """descend's default path (the Triton kernel; nonfinite="raise" reads its flag back, one sync per step)
    and with nonfinite="ignore" (no sync), against each of torch's paths on the same tensors."""
    rows = ["| optimizer | workload | descend ms | descend (nonfinite=ignore) ms | torch fused ms | torch foreach ms "
            "| torch for-loop ms | compared with | torch / descend (default · ignore) | GB/s, min bytes (default) "
            "| of copy bandwidth (default · ignore) |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for workload, shapes in workloads().items():
        numel = sum(torch.Size(s).numel() for s in shapes)
        print(f"{workload}: {numel / 1e6:.1f}M params on {torch.cuda.get_device_name()}", file=sys.stderr)
        for name in GPU_AGAINST_FUSED + GPU_AGAINST_FASTEST:
            make_ours, make_theirs, min_bytes = OPTIMIZERS[name]
            candidates = {"copy": device_copy(numel)}
            for label, kwargs in (("descend", {}), ("descend-ignore", dict(nonfinite="ignore"))):
                candidates[label] = make_ours(make_params(shapes, device="cuda"), **kwargs).step
            for path, kwargs in TORCH_PATHS.items():
                try:
                    optimizer = make_theirs(make_params(shapes, device="cuda"), **kwargs)
                    optimizer.step()
                    candidates[path] = optimizer.step
                except (RuntimeError, ValueError, TypeError):
                    pass  # torch has no such path for this optimizer
            seconds = time_cuda(candidates, repeats)
            copy_bandwidth = 8 * numel / seconds["copy"]
            if name in GPU_AGAINST_FUSED and "fused" in seconds:
                against, theirs = "torch fused", seconds["fused"]
            else:
                against, theirs = "torch fastest", min(seconds[p] for p in TORCH_PATHS if p in seconds)
            ours = (seconds["descend"], seconds["descend-ignore"])
            achieved = [min_bytes * numel / s for s in ours]
            cell = lambda key: f"{seconds[key] * 1e3:.3f}" if key in seconds else "—"  # noqa: E731
            rows.append(f"| {name} | {workload} | {cell('descend')} | {cell('descend-ignore')} | {cell('fused')} | "
                        f"{cell('foreach')} | {cell('for-loop')} | {against} | "
                        f"{theirs / ours[0]:.2f}× · {theirs / ours[1]:.2f}× | {achieved[0] / 1e9:.0f} | "
                        f"{achieved[0] / copy_bandwidth:.0%} · {achieved[1] / copy_bandwidth:.0%} |")
            print(rows[-1], file=sys.stderr)
    return rows


def gpu_main(args) -> None:
    if not torch.cuda.is_available():
        print("step_speed.py: --device cuda needs a CUDA device, and torch sees none", file=sys.stderr)
        sys.exit(2)
    from descend.backends import triton as codegen_triton

    if not codegen_triton.available():
        print("warning: triton is not installed; descend runs its foreach reference path on CUDA", file=sys.stderr)
    title = "## GPU step time"
    lines = [
        title,
        "",
        f"Measured {datetime.date.today().isoformat()} on {torch.cuda.get_device_name()}, torch {torch.__version__}, "
        f"triton {getattr(codegen_triton.triton, '__version__', 'absent')}, float32, median of {args.repeats} "
        "interleaved samples of 20 back-to-back steps timed with CUDA events. Produced by "
        "`python benchmarks/step_speed.py --device cuda`.",
        "",
        "`descend` is the default path: one generated Triton kernel per step and dtype; with "
        "`nonfinite=\"raise\"` (the default) it reads the kernel's non-finite flag back, one host sync per step; "
        "`nonfinite=ignore` does not. Adam/AdamW/SGD/Adagrad are compared with torch's `fused=True`, "
        "RMSprop/Adadelta (no fused path in torch) with torch's fastest path. Bandwidth counts the minimum bytes "
        "each algorithm must move per parameter, against a device copy (8 bytes per element) timed in turn "
        "with each row.",
        "",
        *gpu_speed_table(args.repeats),
    ]
    section = "\n".join(lines) + "\n"
    print(section)
    if args.output:  # the CPU sections and every other benchmark's stay; an earlier GPU section is replaced
        write_sections(args.output, "", [(title, section[len(title):].strip("\n").split("\n"))])


SIXTEEN_BIT = {  # torch's fused CPU path takes bfloat16 for these
    "Adam": OPTIMIZERS["Adam"], "AdamW": OPTIMIZERS["AdamW"], "SGD momentum": OPTIMIZERS["SGD momentum"],
    "Adagrad": OPTIMIZERS["Adagrad"],
}


def sixteen_bit_table(repeats: int) -> list[str]:
    """bfloat16 parameters and gradients: descend's generated kernel (float32 compute, float32 state) against
    torch's paths on the same bfloat16 parameters (torch keeps bfloat16 state)."""
    rows = ["| optimizer | workload | descend bf16 ms | torch fused bf16 ms | torch foreach bf16 ms | "
            "torch fused / descend |", "|---|---|---|---|---|---|"]
    for workload, shapes in list(workloads().items())[:2]:
        for name, (make_ours, make_theirs, _) in SIXTEEN_BIT.items():
            candidates = {"descend": make_ours(make_params_16(shapes)).step}
            for path in ("fused", "foreach"):
                try:
                    optimizer = make_theirs(make_params_16(shapes), **TORCH_PATHS[path])
                    optimizer.step()
                    candidates[path] = optimizer.step
                except (RuntimeError, ValueError, TypeError):
                    pass
            seconds = time_interleaved(candidates, repeats)
            cell = lambda key: f"{seconds[key] * 1e3:.2f}" if key in seconds else "—"  # noqa: E731
            ratio = f"{seconds['fused'] / seconds['descend']:.2f}×" if "fused" in seconds else "—"
            rows.append(f"| {name} | {workload} | {cell('descend')} | {cell('fused')} | {cell('foreach')} | {ratio} |")
            print(rows[-1], file=sys.stderr)
    return rows


def make_params_16(shapes):
    params = []
    for p in make_params(shapes):
        params.append(torch.nn.Parameter(p.detach().bfloat16()))
        params[-1].grad = p.grad.bfloat16()
    return params


def state_dtype_table(repeats: int) -> list[str]:
    """Adam with float32 parameters and bfloat16 state (stochastic rounding) against float32 state."""
    rows = ["| workload | float32 state ms | bfloat16 state ms | speed-up | state bytes float32 | state bytes bfloat16 |",
            "|---|---|---|---|---|---|"]
    for workload, shapes in list(workloads().items())[:2]:
        optimizers = {str(d): descend.Adam(make_params(shapes), state_dtype=d) for d in (torch.float32, torch.bfloat16)}
        seconds = time_interleaved({k: o.step for k, o in optimizers.items()}, repeats)
        size = {k: sum(v.numel() * v.element_size() for s in o.state.values() for key, v in s.items() if key != "step")
                for k, o in optimizers.items()}
        f32, bf16 = str(torch.float32), str(torch.bfloat16)
        rows.append(f"| {workload} | {seconds[f32] * 1e3:.2f} | {seconds[bf16] * 1e3:.2f} | "
                    f"{seconds[f32] / seconds[bf16]:.2f}× | {size[f32] / 2**20:.0f} MiB | {size[bf16] / 2**20:.0f} MiB |")
        print(rows[-1], file=sys.stderr)
    return rows


FIRST_STEP = """
import time, torch, descend
from descend.steps import AddWeightDecay
class Custom(descend.Adam):  # a chain no built-in optimizer has: its kernel is generated and compiled on first use
    def chain(self, group):
        return [AddWeightDecay(0.1)] + super().chain(group)
p = torch.nn.Parameter(torch.randn(1024, 1024)); p.grad = torch.randn(1024, 1024)
optimizer = {factory}([p])
start = time.perf_counter(); optimizer.step(); print(time.perf_counter() - start)
"""


def first_step_table() -> list[str]:
    """Cold: a fresh kernel cache (the build is in the first step); warm: a later process, cache in place."""
    rows = ["| optimizer | cold first step s (kernel build included) | warm first step s (later process) |", "|---|---|---|"]
    for name, factory in (("Adam", "descend.Adam"), ("Adafactor", "descend.Adafactor"), ("SGD", "descend.SGD"),
                          ("a user's chain (L2 + Adam)", "Custom")):
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, DESCEND_CACHE_DIR=cache)
            run = lambda: float(subprocess.run([sys.executable, "-c", FIRST_STEP.format(factory=factory)],  # noqa: E731
                                               env=env, capture_output=True, text=True, check=True).stdout)
            cold, warm = run(), run()
        rows.append(f"| {name} | {cold:.2f} | {warm:.3f} |")
    return rows


MEMORY_STEP = """
import gc, torch, descend
def kib(key):
    return next(int(line.split()[1]) for line in open('/proc/self/status') if line.startswith(key))
shapes = [(4096, 4096), (1024, 4096), (4096,)]
params = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
for p in params: p.grad = torch.randn(p.shape)
optimizer = {factory}
optimizer.step(); gc.collect()
before = kib('VmRSS'); open('/proc/self/clear_refs', 'w').write('5')
optimizer.step()
print((kib('VmHWM') - before) * 1024)
"""


def memory_table() -> list[str]:
    """Peak resident memory a step adds over the memory held before it (state already allocated)."""
    largest = 4096 * 4096 * 4
    rows = [f"| optimizer | path | peak extra bytes in a step | / largest parameter ({largest / 2**20:.0f} MiB) |",
            "|---|---|---|---|"]
    for name, factory in [("Adam", "descend.Adam(params)"), ("AdamW", "descend.AdamW(params)"),
                          ("SGD momentum", "descend.SGD(params, lr=0.1, momentum=0.9)"),
                          ("Adagrad", "descend.Adagrad(params)"), ("RMSprop", "descend.RMSprop(params, centered=True)"),
                          ("Adadelta", "descend.Adadelta(params)"), ("Adafactor", "descend.Adafactor(params, beta1=0.9)"),
                          ("Adam", "descend.Adam(params, fused=False)"),
                          ("Adam", "descend.Adam(params, state_dtype=torch.bfloat16)"),
                          ("Adam", "descend.Adam(params, fused=False, foreach=True)"),
                          ("Adam", "torch.optim.Adam(params, fused=True)"),
                          ("Adam", "torch.optim.Adam(params, foreach=True)"),
                          ("Adafactor", "torch.optim.Adafactor(params, foreach=False)")]:
        out = subprocess.run([sys.executable, "-c", MEMORY_STEP.format(factory=factory)], capture_output=True,
                             text=True, check=True).stdout
        extra = max(0, int(out))
        flags = [flag for flag in ("fused=False", "foreach=True", "state_dtype=torch.bfloat16") if flag in factory]
        path = factory.split("(")[0] + (f"({', '.join(flags)})" if flags else "")
        rows.append(f"| {name} | {path} | {extra / 2**20:.1f} MiB | {extra / largest:.2f} |")
    return rows


def sam_table(repeats: int) -> list[str]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512), torch.nn.ReLU(),
                                torch.nn.Linear(512, 10))
    x, y = torch.randn(512, 256), torch.randint(0, 10, (512,))
    base = descend.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    sam = descend.SAM(model.parameters(), descend.SGD, lr=1e-3, momentum=0.9)

    def forward_backward(optimizer):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    seconds = time_interleaved({
        "forward+backward": lambda: forward_backward(base),
        "base step (f+b+SGD)": lambda: base.step(lambda: forward_backward(base)),
        "SAM step": lambda: sam.step(lambda: forward_backward(sam)),
    }, repeats * 3)
    budget = (seconds["base step (f+b+SGD)"] + seconds["forward+backward"]) * 1.1
    return ["| measured | ms |", "|---|---|"] + [f"| {k} | {v * 1e3:.2f} |" for k, v in seconds.items()] + [
        f"| budget: (base step + one forward/backward) × 1.1 | {budget * 1e3:.2f} |",
        f"| SAM within budget | {'yes' if seconds['SAM step'] <= budget else 'no'} |"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, help="also write the tables to this markdown file")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cuda: time the GPU path and write it as the last section of --output")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.device == "cuda":
        return gpu_main(args)
    if not cpu.available():
        print(f"warning: fused kernels unavailable ({build.error}); timing the reference path", file=sys.stderr)
    header = [
        "# Optimizer step speed and memory",
        "",
        f"Measured {datetime.date.today().isoformat()} on {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__}, {args.threads} threads, median of {args.repeats} "
        "interleaved repeats, float32. Produced by `make bench` (`python benchmarks/step_speed.py`).",
        "",
        "`descend` is the default path: the fused kernel, whose non-finite check (`nonfinite=\"raise\"`) rides "
        "along with its read of the gradient. `nonfinite=skip` checks the gradients before the step, one more "
        "read. Bandwidth counts the minimum bytes each algorithm must move per parameter "
        "(Adam 28, SGD momentum 20, Adafactor 12, ...) against in-place axpy (12 bytes) timed in turn with each row.",
        "",
        "Timings on this shared 2-core machine vary by about ±10% between runs (torch's for-loop Adafactor by "
        "more). A fraction above 100% is possible: this machine reads memory at about 31 GB/s but absorbs writes "
        "almost for free, so axpy's time is mostly its 8 bytes of reads, and a step that reads 16 of its 28 "
        "bytes (Adam) can move more counted bytes per second than axpy.",
        "",
    ]
    sections = [("## Step time", speed_table(args.repeats)),
                ("## bfloat16 parameters", sixteen_bit_table(args.repeats)),
                ("## bfloat16 state (`state_dtype=torch.bfloat16`)", state_dtype_table(args.repeats)),
                ("## First step", first_step_table()),
                ("## Peak extra memory in a step", memory_table()), ("## SAM", sam_table(args.repeats))]
    text = "\n".join(header + [line for title, rows in sections for line in ["", title, "", *rows]]) + "\n"
    print(text)
    if args.output:
        write_sections(args.output, "\n".join(header), sections)


def write_sections(path: Path, header: str, sections: list[tuple[str, list[str]]]) -> None:
    """Writes ``sections`` into the Markdown file ``path``: a section of the same title is replaced where it
    stands, the others are appended, and every other section of the file (the other benchmarks' tables)
    is kept as it was.  ``header`` replaces the text before the first section, unless it is empty."""
    old = path.read_text() if path.exists() else ""
    preamble, *parts = old.split("\n## ")
    kept = [("## " + part.split("\n", 1)[0], part.split("\n", 1)[1] if "\n" in part else "") for part in parts]
    new = {title: "\n" + "\n".join(rows).strip("\n") + "\n" for title, rows in sections}
    body = [(title, new.pop(title, text)) for title, text in kept] + list(new.items())
    text = (header or preamble).rstrip("\n") + "\n" + "".join(f"\n{title}\n{text.rstrip()}\n" for title, text in body)
    path.write_text(text)


if __name__ == "__main__":
    main()
