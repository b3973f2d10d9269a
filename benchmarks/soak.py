"""Soak test: 10⁵ steps of every optimizer on a small model; memory must not grow, values stay finite.

    python benchmarks/soak.py [--steps 100000]      (make soak)
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
from torch import nn

import descend


def resident_kib() -> int:
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS"))


OPTIMIZERS = {
    "SGD": lambda p: descend.SGD(p, lr=1e-2, momentum=0.9),
    "Adagrad": lambda p: descend.Adagrad(p),
    "RMSprop": lambda p: descend.RMSprop(p, centered=True, momentum=0.5, lr=1e-3),
    "Adadelta": lambda p: descend.Adadelta(p),
    "Adam": lambda p: descend.Adam(p, amsgrad=True),
    "AdamW": lambda p: descend.AdamW(p),
    "Adafactor": lambda p: descend.Adafactor(p, beta1=0.9),
    "SAM": lambda p: descend.SAM(p, descend.SGD, lr=1e-2, momentum=0.9),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 16, generator=generator), torch.randint(0, 4, (64,), generator=generator)
    failures = 0
    for name, make in OPTIMIZERS.items():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 4))
        optimizer = make(model.parameters())

        def closure():
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            return loss

        started, checkpoints = time.perf_counter(), []
        for step in range(args.steps):
            loss = optimizer.step(closure)
            if step in (args.steps // 10, args.steps - 1):
                checkpoints.append(resident_kib())
        growth = checkpoints[-1] - checkpoints[0]
        finite = all(torch.isfinite(p).all() for p in model.parameters()) and bool(torch.isfinite(loss.detach()))
        ok = finite and growth < 2048  # less than 2 MiB of growth after warm-up
        failures += not ok
        print(f"{name:10s} {args.steps} steps in {time.perf_counter() - started:6.1f} s  loss {float(loss.detach()):.4f}  "
              f"RSS growth after warm-up {growth} KiB  finite {finite}  {'ok' if ok else 'FAILED'}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
