"""Muon's step time: descend.Muon against torch.optim.Muon, measured side by side in one run.

    python benchmarks/muon_speed.py [--repeats 5] [--threads 2]

Workloads: one 2048×2048 matrix, and 64 matrices of 128×128.  The two optimizers step in turn (interleaved,
after a warm-up step each); the table gives the median step time of each and the ratio torch / descend
(above 1: descend is faster).  Both start from the same parameters and see the same gradient every step, so
the script also checks that their parameters are still bit-identical after the timed steps.

Where descend's time goes: the iteration's bf16 matrix products are torch's own (oneDNN), one batched call
per product for all same-shape matrices of a group (torch.optim.Muon calls ``mm``/``addmm`` matrix by
matrix); the elementwise work (momentum, Nesterov, the bf16 store, decay and the update) is two generated C
passes instead of torch's seven tensor operations per matrix.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import descend

WORKLOADS = {"one 2048×2048 matrix": [(2048, 2048)], "64 matrices of 128×128": [(128, 128)] * 64}


def make(cls, shapes):
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(shape, generator=g).requires_grad_() for shape in shapes]
    grads = [torch.randn(shape, generator=g) for shape in shapes]
    for p, grad in zip(params, grads):
        p.grad = grad
    return params, cls(params, lr=0.02)


def timed(optimizer) -> float:
    start = time.perf_counter()
    optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, median of {args.repeats} interleaved steps")
    print(f"{'workload':<26} {'torch.optim.Muon':>17} {'descend.Muon':>13} {'ratio':>7}  parameters")
    for name, shapes in WORKLOADS.items():
        theirs_params, theirs = make(torch.optim.Muon, shapes)
        ours_params, ours = make(descend.Muon, shapes)
        timed(theirs), timed(ours)  # warm-up: descend builds its kernels here
        times = {"torch": [], "descend": []}
        for _ in range(args.repeats):
            times["torch"].append(timed(theirs))
            times["descend"].append(timed(ours))
        t_torch, t_ours = statistics.median(times["torch"]), statistics.median(times["descend"])
        same = all(torch.equal(a, b) for a, b in zip(theirs_params, ours_params))
        print(f"{name:<26} {t_torch * 1e3:>14.1f} ms {t_ours * 1e3:>10.1f} ms {t_torch / t_ours:>6.2f}×  "
              f"{'bit-identical' if same else 'DIFFER'}")


if __name__ == "__main__":
    main()
