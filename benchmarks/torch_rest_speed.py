"""Step time of Adamax, ASGD, Rprop and SparseAdam: descend against torch.optim, measured side by side.

    python benchmarks/torch_rest_speed.py [--repeats 7] [--threads 2] [--output benchmarks/TORCH_REST.md]

For each optimizer and workload it prints descend's step time (its default path: the generated C kernel),
torch.optim's for each of its paths (foreach, for-loop; torch has no fused path for these four, and
SparseAdam only one), and the ratio of torch's fastest to descend's.  Timings are medians over interleaved
repeats (the candidates take turns, so drift in the machine hits all alike).  The dense workloads are those
of benchmarks/step_speed.py; SparseAdam's is an ``nn.Embedding(sparse=True)`` table whose gradient names a
batch of rows, repeated indices included.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

import descend
from descend.backends import cpu

DENSE = {  # name: (descend factory, torch factory)
    "Adamax": (lambda p, **k: descend.Adamax(p, **k), lambda p, **k: torch.optim.Adamax(p, **k)),
    "ASGD": (lambda p, **k: descend.ASGD(p, t0=0, **k), lambda p, **k: torch.optim.ASGD(p, t0=0, **k)),
    "Rprop": (lambda p, **k: descend.Rprop(p, **k), lambda p, **k: torch.optim.Rprop(p, **k)),
}
TORCH_PATHS = {"foreach": dict(foreach=True), "for-loop": dict(foreach=False)}


def workloads():
    """(a) one 4096×4096 matrix; (b) ~200 transformer-like tensors, ~16M params; (c) 1000 tensors of 256."""
    width, layers = 320, 12
    shapes = [(4096, width)]
    for _ in range(layers):
        shapes += [(width, width)] * 4 + [(width,)] * 4 + [(4 * width, width), (4 * width,), (width, 4 * width)]
        shapes += [(width,)] * 5
    return {"(a) 1×4096²": [(4096, 4096)], f"(b) {len(shapes)} tensors": shapes, "(c) 1000×256": [(256,)] * 1000}


def make_params(shapes, seed=0):
    generator = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(shape, generator=generator)) for shape in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=generator) * 1e-2
    return params


def embedding(rows: int, width: int, batch: int, seed=0) -> list[torch.nn.Parameter]:
    """An embedding table with the sparse gradient of one batch of ``batch`` indices drawn from its first
    quarter (so indices repeat)."""
    torch.manual_seed(seed)
    table = torch.nn.Embedding(rows, width, sparse=True)
    index = torch.randint(0, rows // 4, (batch,), generator=torch.Generator().manual_seed(seed))
    table(index).sum().backward()
    return [table.weight]


def time_interleaved(functions: dict, repeats: int) -> dict:
    """Median seconds per call."""
    for function in functions.values():
        function()  # warm-up: state allocation, kernel build
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def row(name: str, workload: str, seconds: dict) -> str:
    fastest = min(seconds[p] for p in TORCH_PATHS if p in seconds)
    cell = lambda key: f"{seconds[key] * 1e3:.2f}" if key in seconds else "—"  # noqa: E731
    return (f"| {name} | {workload} | {cell('descend')} | {cell('foreach')} | {cell('for-loop')} | "
            f"{fastest / seconds['descend']:.2f}× |")


def speed_table(repeats: int) -> list[str]:
    rows = ["| optimizer | workload | descend ms | torch foreach ms | torch for-loop ms | torch fastest / descend |",
            "|---|---|---|---|---|---|"]
    for workload, shapes in workloads().items():
        for name, (ours, theirs) in DENSE.items():
            candidates = {"descend": ours(make_params(shapes)).step}
            for path, kwargs in TORCH_PATHS.items():
                candidates[path] = theirs(make_params(shapes), **kwargs).step
            rows.append(row(name, workload, time_interleaved(candidates, repeats)))
            print(rows[-1], file=sys.stderr)
    for rows_, width, batch in ((262_144, 64, 8192), (16_384, 256, 4096)):
        workload = f"embedding {rows_:,}×{width}, batch {batch}"
        candidates = {"descend": descend.SparseAdam(embedding(rows_, width, batch)).step,
                      "for-loop": torch.optim.SparseAdam(embedding(rows_, width, batch)).step}
        rows.append(row("SparseAdam", workload, time_interleaved(candidates, repeats)))
        print(rows[-1], file=sys.stderr)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not cpu.available():
        print("warning: the C kernels are unavailable; timing descend's reference path", file=sys.stderr)
    lines = ["# Adamax, ASGD, Rprop, SparseAdam: step time", "",
             f"Measured {datetime.date.today().isoformat()} on {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} cores, torch {torch.__version__}, {args.threads} threads, median of {args.repeats} "
             "interleaved repeats, float32, load average {:.1f} (other work on the machine: the ratios, measured in "
             "one run, are what to read). Produced by `python benchmarks/torch_rest_speed.py`.".format(os.getloadavg()[0]),
             "",
             *speed_table(args.repeats)]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        args.output.write_text(text)


if __name__ == "__main__":
    main()
