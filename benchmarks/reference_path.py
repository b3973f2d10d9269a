"""The reference chain's time and memory on one large parameter, against torch.optim's own paths.

    python benchmarks/reference_path.py [--elements 67108864] [--repeats 3] [--rounds 3] [--threads 2]

One float32 parameter of 64M elements (256 MiB) and its gradient; after a first step (which makes the
state), each optimizer steps ``--repeats`` times.  Each configuration runs in a fresh process, so that one's
pages do not count for another, and the configurations take turns, ``--rounds`` times (interleaved: a
slower minute of this shared machine falls on all of them): the table gives the median step time and the peak
of the resident set above what the process held just before the timed steps, as a multiple of the
parameter's size (a sampling thread reads ``/proc/self/statm`` every millisecond), and the minor page faults
per step (pages the allocator mapped fresh: a temporary of the parameter's size is ``elements / 1024`` of them).  descend's
``fused=False`` is the reference chain one tensor at a time, ``fused=False, foreach=True`` the reference
chain on torch's ``_foreach_*`` lists, the default the generated C kernel; torch's for-loop is
``foreach=False``.  Ratios: torch's for-loop time / each row's time (above 1: faster than torch's loop).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time

CONFIGS = {
    "descend fused=False": ("descend", dict(fused=False, foreach=False)),
    "descend fused=False, foreach=True": ("descend", dict(fused=False, foreach=True)),
    "descend (default: generated C)": ("descend", dict()),
    "torch for-loop": ("torch", dict(foreach=False)),
    "torch foreach": ("torch", dict(foreach=True)),
    "torch fused": ("torch", dict(fused=True)),
}
OPTIMIZERS = ("Adam", "SGD")


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def one(library: str, name: str, kwargs: dict, elements: int, repeats: int, threads: int) -> dict:
    import torch
    torch.set_num_threads(threads)
    module = __import__("descend") if library == "descend" else torch.optim
    param = torch.nn.Parameter(torch.randn(elements))
    param.grad = torch.randn(elements)
    extra = dict(momentum=0.9) if name == "SGD" else {}
    optimizer = getattr(module, name)([param], lr=1e-3, **extra, **kwargs)
    optimizer.step()
    base, peak, running = resident_bytes(), [0], [True]

    def sample():
        while running[0]:
            peak[0] = max(peak[0], resident_bytes())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    times, faults = [], resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(repeats):
        start = time.perf_counter()
        optimizer.step()
        times.append(time.perf_counter() - start)
    running[0] = False
    sampler.join()
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / repeats
    return dict(seconds=statistics.median(times), peak_over_param=max(0, peak[0] - base) / (4 * elements),
                faults=faults)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elements", type=int, default=64 * 2**20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        library, name, kwargs = json.loads(args.child)
        print(json.dumps(one(library, name, kwargs, args.elements, args.repeats, args.threads)))
        return
    print(f"one float32 parameter of {args.elements:,} elements, {args.threads} threads, median over {args.rounds} "
          f"interleaved rounds of {args.repeats} steps, each configuration in a fresh process")
    print(f"{'optimizer':<6} {'path':<36} {'s/step':>8} {'torch loop / this':>18} {'peak RSS / param':>17} "
          f"{'faults/step':>12}")
    for name in OPTIMIZERS:
        measured: dict[str, list[dict]] = {label: [] for label in CONFIGS}
        for _ in range(args.rounds):
            for label, (library, kwargs) in CONFIGS.items():
                child = json.dumps([library, name, kwargs])
                done = subprocess.run([sys.executable, __file__, "--child", child, "--elements", str(args.elements),
                                       "--repeats", str(args.repeats), "--threads", str(args.threads)],
                                      capture_output=True, text=True)
                if done.returncode != 0:
                    print(f"{name:<6} {label:<36} failed: {done.stderr.strip().splitlines()[-1:]}")
                    continue
                measured[label].append(json.loads(done.stdout))
        rows = {label: dict(seconds=statistics.median(r["seconds"] for r in runs),
                            peak_over_param=max(r["peak_over_param"] for r in runs),
                            faults=statistics.median(r["faults"] for r in runs)) if runs else None
                for label, runs in measured.items()}
        loop = rows.get("torch for-loop")
        for label, row in rows.items():
            if row is None:
                continue
            ratio = f"{loop['seconds'] / row['seconds']:.2f}×" if loop else "—"
            print(f"{name:<6} {label:<36} {row['seconds']:>8.3f} {ratio:>18} {row['peak_over_param']:>16.2f}× "
                  f"{row['faults']:>12,.0f}")


if __name__ == "__main__":
    main()
