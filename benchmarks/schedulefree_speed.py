"""Schedule-free step time: descend's generated kernel against the ``schedulefree`` package's own paths.

    python benchmarks/schedulefree_speed.py [--repeats 15] [--threads 2]

16.8M float32 parameters as one 4096² matrix and as 49 tensors (48 of 4096×84 and one of 4096×64), for
``AdamWScheduleFree`` (weight decay 0.01) and ``SGDScheduleFree`` (weight decay 1e-4): descend's default path
(one generated C kernel per step), schedulefree's foreach path (its default) and its for-loop, and in-place
axpy for the machine's bandwidth; then the switch ``eval()`` + ``train()`` on both.  Timings are medians
over interleaved repeats (the candidates take turns, so that drift in a shared machine hits all alike).
schedulefree divides the gradient in place, so every candidate's gradients are restored (untimed) before each
timed step.  It prints a Markdown table.  From a checkout: ``PYTHONPATH=. python benchmarks/...``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

import descend

try:
    import schedulefree
except ImportError:  # pragma: no cover
    sys.exit("schedulefree is not installed: pip install schedulefree")

WORKLOADS = {"1 × 4096²": [(4096, 4096)], "49 tensors": [(4096, 84)] * 48 + [(4096, 64)]}
CLASSES = {
    "AdamWScheduleFree": (descend.AdamWScheduleFree, schedulefree.AdamWScheduleFree, dict(lr=1e-3, weight_decay=0.01)),
    "SGDScheduleFree": (descend.SGDScheduleFree, schedulefree.SGDScheduleFree, dict(lr=0.1, weight_decay=1e-4)),
}
# bytes each moves per parameter and step: descend reads θ, g, z (and v) and writes θ, z (and v) once
MIN_BYTES = {"AdamWScheduleFree": 28, "SGDScheduleFree": 20}


def make(shapes, seed=0):
    generator = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(shape, generator=generator)) for shape in shapes]
    grads = [torch.randn(shape, generator=generator) * 1e-2 for shape in shapes]
    return params, grads


def candidate(optimizer, params, grads):
    """(setup, step, switch, optimizer): setup restores the gradients (untimed)."""
    for p, g in zip(params, grads):
        p.grad = g.clone()
    optimizer.train()
    optimizer.step()  # state made, kernels built

    def setup():
        for p, g in zip(params, grads):
            p.grad.copy_(g)

    def switch():
        optimizer.eval()
        optimizer.train()

    return setup, optimizer.step, switch, optimizer


def interleaved(candidates: dict, which: int, repeats: int) -> dict[str, float]:
    """Median seconds of ``candidates[name][which]`` over ``repeats`` rounds in turn."""
    times = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, parts in candidates.items():
            parts[0]()
            start = time.perf_counter()
            parts[which]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, schedulefree {getattr(schedulefree, '__version__', '1.4.1')}, "
          f"{args.threads} threads, {args.repeats} interleaved repeats, medians\n")
    print("| optimizer | workload | descend ms | schedulefree foreach ms | schedulefree for-loop ms "
          "| foreach / descend | descend GB/s (min bytes) | of axpy's | eval()+train(): descend ms | schedulefree ms |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, (ours, theirs, kwargs) in CLASSES.items():
        for workload, shapes in WORKLOADS.items():
            numel = sum(torch.Size(s).numel() for s in shapes)
            runs = {}
            for label, factory in (("descend", lambda p: ours(p, **kwargs)),
                                   ("foreach", lambda p: theirs(p, **kwargs, foreach=True)),
                                   ("for-loop", lambda p: theirs(p, **kwargs, foreach=False))):
                params, grads = make(shapes)
                runs[label] = candidate(factory(params), params, grads)
            info = runs["descend"][3].kernel_info()[0]
            assert info.path == "generated", info
            x, y = torch.randn(numel), torch.randn(numel)  # axpy: x ← x + a·y, 12 bytes a parameter
            runs["axpy"] = (lambda: None, lambda: x.add_(y, alpha=1e-3))
            step = interleaved(runs, 1, args.repeats)
            switch = interleaved({k: runs[k] for k in ("descend", "foreach")}, 2, max(3, args.repeats // 3))
            ms = {k: v * 1e3 for k, v in step.items()}
            print(f"| {name} | {workload} ({numel / 1e6:.1f}M) | {ms['descend']:.1f} | {ms['foreach']:.1f} | "
                  f"{ms['for-loop']:.1f} | {step['foreach'] / step['descend']:.2f}× | "
                  f"{MIN_BYTES[name] * numel / step['descend'] / 1e9:.1f} | "
                  f"{MIN_BYTES[name] * step['axpy'] / (12 * step['descend']):.0%} | {switch['descend'] * 1e3:.1f} | "
                  f"{switch['foreach'] * 1e3:.1f} |", flush=True)
            del runs


if __name__ == "__main__":
    main()
