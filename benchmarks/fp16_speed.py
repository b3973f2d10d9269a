"""float16 parameters and 16-bit state: descend's generated kernels against torch's fused CPU kernel.

    python benchmarks/fp16_speed.py [--repeats 15] [--threads 2]

Two tables, each measured in one process with every contender's steps interleaved (median of the repeats):

1. float16 parameters and gradients, Adam and AdamW, 16.8M parameters as one 4096² tensor and as 49 tensors
   (48 of 4096×84, one of 4096×64): descend with float32 state (its default: 22 bytes per parameter moved),
   with ``state_dtype=torch.float16`` (torch's bytes: 14 B/param) and ``torch.bfloat16`` (stochastic
   rounding, 14 B/param), each as a ratio to torch's fused kernel (float16 state, 14 B/param) timed beside it.
   The byte-bound ratio of float32 state is 14/22 = 0.64.
2. float32 parameters, AdamW: ``state_dtype=torch.bfloat16`` against float32 state (20 against 28 B/param;
   bound 1.4×), and torch fused (float32 state) for scale.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import descend
from descend.backends import build

WORKLOADS = {"1 × 4096²": [(4096, 4096)], "49 tensors": [(4096, 84)] * 48 + [(4096, 64)]}
OPTIMIZERS = {"Adam": (descend.Adam, torch.optim.Adam, {}),
              "AdamW": (descend.AdamW, torch.optim.AdamW, {"weight_decay": 0.01})}


def params_of(shapes, dtype):
    generator = torch.Generator().manual_seed(0)
    params = []
    for shape in shapes:
        param = torch.nn.Parameter(torch.randn(shape, generator=generator).to(dtype))
        param.grad = (0.01 * torch.randn(shape, generator=generator)).to(dtype)
        params.append(param)
    return params


def interleaved(contenders: dict, repeats: int) -> dict[str, float]:
    """Median milliseconds per step of each contender (a step function), the contenders taking turns."""
    for step in contenders.values():  # warm up: state made, kernels built, pages touched
        step()
        step()
    times = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, step in contenders.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(values) for name, values in times.items()}


def float16_table(repeats: int) -> list[str]:
    rows = ["| optimizer | workload | torch fused ms (fp16 state) | descend fp32 state ms | ratio | "
            "descend fp16 state ms | ratio | descend bf16 state ms | ratio |",
            "|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(rows), flush=True)
    for name, (ours, theirs, extra) in OPTIMIZERS.items():
        for workload, shapes in WORKLOADS.items():
            contenders = {"torch": theirs(params_of(shapes, torch.float16), lr=1e-3, fused=True, **extra).step}
            for state in (None, torch.float16, torch.bfloat16):
                contenders[str(state)] = ours(params_of(shapes, torch.float16), lr=1e-3, state_dtype=state, **extra).step
            ms = interleaved(contenders, repeats)
            cells = [f"{ms[str(s)]:.2f} | {ms['torch'] / ms[str(s)]:.2f}×" for s in (None, torch.float16, torch.bfloat16)]
            rows.append(f"| {name} | {workload} | {ms['torch']:.2f} | " + " | ".join(cells) + " |")
            print(rows[-1], flush=True)
    return rows


def bfloat16_state_table(repeats: int) -> list[str]:
    rows = ["| workload | torch fused ms | descend fp32 state ms | descend bf16 state ms | bf16 / fp32 state speed-up |",
            "|---|---|---|---|---|"]
    print("\n".join(rows), flush=True)
    for workload, shapes in WORKLOADS.items():
        contenders = {"torch": torch.optim.AdamW(params_of(shapes, torch.float32), lr=1e-3, fused=True).step,
                      "fp32": descend.AdamW(params_of(shapes, torch.float32), lr=1e-3).step,
                      "bf16": descend.AdamW(params_of(shapes, torch.float32), lr=1e-3, state_dtype=torch.bfloat16).step}
        ms = interleaved(contenders, repeats)
        rows.append(f"| {workload} | {ms['torch']:.2f} | {ms['fp32']:.2f} | {ms['bf16']:.2f} | "
                    f"{ms['fp32'] / ms['bf16']:.2f}× |")
        print(rows[-1], flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    support = build.support()
    path = {2: "AVX-512", 1: "F16C", 0: "portable"}[support.f16_path()] if support is not None else "no kernels"
    print(f"torch {torch.__version__}, {args.threads} threads, {args.repeats} interleaved repeats, "
          f"float16 conversion: {path}\n")
    float16_table(args.repeats)
    print()
    bfloat16_state_table(args.repeats)


if __name__ == "__main__":
    main()
