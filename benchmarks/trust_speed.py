"""LAMB, LARS and gradient clipping: their step time against the peers they must keep up with, in one run.

    python benchmarks/trust_speed.py [--repeats 9] [--steps 5] [--threads 2]

16.8M float32 parameters, as one 4096×4096 tensor and as 49 tensors of 586×585.  Every optimizer updates
the same parameters and gradients (the learning rates are tiny, so nothing drifts); each repeat times
``--steps`` steps of every optimizer in turn (interleaved, so load from other processes falls on all of
them alike) and the medians over repeats are compared.  The targets of issue 19:

* LAMB ≤ 1.45× descend's AdamW (two passes: the norms, then the update);
* LARS ≤ 1.2× descend's SGD with momentum;
* ``max_grad_norm`` adds ≤ 15% to AdamW (one more read of the gradients: the sum of squares);

and, for comparison, torch's ``clip_grad_norm_`` followed by torch's fused AdamW.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's descend, not an installed one
import descend  # noqa: E402

WORKLOADS = {"1×4096²": [(4096, 4096)], "49×586×585": [(586, 585)] * 49}


def optimizers(params):
    """name -> a function taking one step."""
    def stepper(optimizer, clip=None):
        def step():
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(params, clip)
            optimizer.step()
        return step

    return {
        "descend AdamW": stepper(descend.AdamW(params, lr=1e-9)),
        "descend LAMB": stepper(descend.LAMB(params, lr=1e-9, weight_decay=0.01)),
        "descend SGD momentum": stepper(descend.SGD(params, lr=1e-9, momentum=0.9)),
        "descend LARS": stepper(descend.LARS(params, lr=1e-9, weight_decay=1e-4)),
        "descend AdamW max_grad_norm": stepper(descend.AdamW(params, lr=1e-9, max_grad_norm=1e9)),
        "torch fused AdamW": stepper(torch.optim.AdamW(params, lr=1e-9, fused=True)),
        "torch clip_grad_norm_ + fused AdamW": stepper(torch.optim.AdamW(params, lr=1e-9, fused=True), clip=1e9),
    }


def measure(shapes, repeats: int, steps: int) -> dict[str, float]:
    generator = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(shape, generator=generator)) for shape in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=generator) * 1e-2
    steppers = optimizers(params)
    for step in steppers.values():  # build the kernels, make the state
        step()
    times: dict[str, list[float]] = {name: [] for name in steppers}
    for _ in range(repeats):
        for name, step in steppers.items():
            start = time.perf_counter()
            for _ in range(steps):
                step()
            times[name].append((time.perf_counter() - start) / steps)
    return {name: statistics.median(values) for name, values in times.items()}


RATIOS = [
    ("LAMB / descend AdamW", "descend LAMB", "descend AdamW", 1.45),
    ("LARS / descend SGD momentum", "descend LARS", "descend SGD momentum", 1.2),
    ("AdamW max_grad_norm / AdamW", "descend AdamW max_grad_norm", "descend AdamW", 1.15),
    ("descend AdamW / torch fused AdamW", "descend AdamW", "torch fused AdamW", None),
    ("descend AdamW max_grad_norm / torch clip_grad_norm_ + fused AdamW", "descend AdamW max_grad_norm",
     "torch clip_grad_norm_ + fused AdamW", None),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, float32, median of {args.repeats} interleaved "
          f"repeats of {args.steps} steps")
    for workload, shapes in WORKLOADS.items():
        medians = measure(shapes, args.repeats, args.steps)
        print(f"\n## {workload} ({sum(torch.Size(s).numel() for s in shapes) / 1e6:.1f}M parameters)\n")
        print("| optimizer | ms per step |\n|---|---|")
        for name, seconds in medians.items():
            print(f"| {name} | {seconds * 1e3:.2f} |")
        print("\n| ratio | measured | target |\n|---|---|---|")
        for label, numerator, denominator, target in RATIOS:
            ratio = medians[numerator] / medians[denominator]
            verdict = "" if target is None else f"≤ {target:.2f}× ({'met' if ratio <= target else 'missed'})"
            print(f"| {label} | {ratio:.2f}× | {verdict} |")


if __name__ == "__main__":
    main()
