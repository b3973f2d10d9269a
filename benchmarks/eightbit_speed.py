"""8-bit block-quantised state (``state_dtype="8bit"``): descend's AdamW step against its float32-state step and
torchao's ``AdamW8bit`` on the CPU, and the state's bytes per parameter.

    python benchmarks/eightbit_speed.py [--repeats 9] [--threads 2] [--torchao-repeats 3]

16.8M float32 parameters as one 4096² tensor and as 49 tensors (48 of 4096×84, one of 4096×64), in one
process, the contenders' steps interleaved (median of the repeats).  A float32-state AdamW step moves 28
bytes per parameter (read θ, g, m, v; write θ, m, v), an 8-bit one 14 plus the scales (1/64 byte each).
torchao's CPU path is torch ops on its tensor subclass: it is timed over fewer repeats.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import descend

WORKLOADS = {"1 × 4096²": [(4096, 4096)], "49 tensors": [(4096, 84)] * 48 + [(4096, 64)]}


def params_of(shapes):
    generator = torch.Generator().manual_seed(0)
    params = []
    for shape in shapes:
        param = torch.nn.Parameter(torch.randn(shape, generator=generator))
        param.grad = 0.01 * torch.randn(shape, generator=generator)
        params.append(param)
    return params


def timed(step, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def state_bytes(optimizer) -> float:
    """Bytes of state tensors per parameter (torchao's subclass counted by its codes and scales)."""
    total, count = 0, 0
    for group in optimizer.param_groups:
        for p in group["params"]:
            count += p.numel()
            for key, value in optimizer.state[p].items():
                if key == "step" or not isinstance(value, torch.Tensor):
                    continue
                parts = [value.codes, value.scale] if hasattr(value, "codes") else [value]
                total += sum(t.numel() * t.element_size() for t in parts)
    return total / count


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--torchao-repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        from torchao.optim import AdamW8bit
    except ImportError:
        AdamW8bit = None
    print(f"torch {torch.__version__}, {args.threads} threads, {args.repeats} interleaved repeats "
          f"({args.torchao_repeats} for torchao)\n")
    rows = ["| workload | descend fp32 state ms | descend 8-bit ms | 8-bit speed-up | torchao AdamW8bit ms | "
            "descend 8-bit / torchao speed-up | state bytes/param (fp32, 8-bit, torchao) |",
            "|---|---|---|---|---|---|---|"]
    print("\n".join(rows), flush=True)
    for workload, shapes in WORKLOADS.items():
        optimizers = {"fp32": descend.AdamW(params_of(shapes), lr=1e-3),
                      "8bit": descend.AdamW(params_of(shapes), lr=1e-3, state_dtype="8bit")}
        if AdamW8bit is not None:
            optimizers["torchao"] = AdamW8bit(params_of(shapes), lr=1e-3)
        for optimizer in optimizers.values():  # warm up: state made, kernels built, pages touched
            optimizer.step()
            optimizer.step()
        times = {name: [] for name in optimizers}
        for round_ in range(args.repeats):
            for name, optimizer in optimizers.items():
                if name != "torchao" or round_ < args.torchao_repeats:
                    times[name] += timed(optimizer.step, 1)
        ms = {name: 1000 * statistics.median(values) for name, values in times.items()}
        sizes = ", ".join(f"{state_bytes(o):.3f}" for o in optimizers.values())
        theirs = (f"{ms['torchao']:.0f} | {ms['torchao'] / ms['8bit']:.0f}×" if "torchao" in ms else "– | –")
        rows.append(f"| {workload} | {ms['fp32']:.2f} | {ms['8bit']:.2f} | {ms['fp32'] / ms['8bit']:.2f}× | {theirs} | "
                    f"{sizes} |")
        print(rows[-1], flush=True)


if __name__ == "__main__":
    main()
