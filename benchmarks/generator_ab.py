"""The C kernels this checkout generates against those an earlier commit's printer generated, in one process.

    python benchmarks/generator_ab.py [--base 059e6ba] [--optimizer adafactor|lamb|lars] [--threads 1] [--repeats 15]

The earlier printer (``descend/backends/c.py`` at ``--base``, read from git) prints the schedule that commit
made (this checkout's ``schedule()`` without ``tails``, which is the same); both are built with this
checkout's compiler flags and ``_prelude.h``, and swapped into the same bound kernel calls, the steps of the
two taking turns.  Workloads: one 4096×4096 matrix (a) and benchmarks/step_speed.py's 193 tensors (b).
Prints the minimum and median step time of each.  The base printer must accept this checkout's schedules
(true for 059e6ba, the commit this work started from).
"""
from __future__ import annotations

import argparse
import importlib.util
import runpy
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import descend
from descend.backends import build, cpu
from descend.plan.schedule import schedule

ROOT = Path(__file__).resolve().parents[1]
OPTIMIZERS = {"adafactor": lambda p: descend.Adafactor(p), "lamb": lambda p: descend.LAMB(p, lr=1e-3),
              "lars": lambda p: descend.LARS(p, lr=1e-3)}


def base_printer(commit: str):
    text = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:descend/backends/c.py"], check=True,
                          capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp(prefix="generator_ab_")) / "c_base.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("descend.backends.c_base", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["descend.backends.c_base"] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="059e6ba")
    parser.add_argument("--optimizer", choices=list(OPTIMIZERS), default="adafactor")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    printer = base_printer(args.base)
    shapes = {"(a) 1×4096²": [(4096, 4096)],
              "(b) 193 tensors": runpy.run_path(str(ROOT / "benchmarks" / "adafactor_speed.py"))["transformer_shapes"]()}
    for workload, sizes in shapes.items():
        generator = torch.Generator().manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(s, generator=generator)) for s in sizes]
        for p in params:
            p.grad = torch.randn(p.shape, generator=generator) * 1e-2
        optimizer = OPTIMIZERS[args.optimizer](params)
        optimizer.step(), optimizer.step()
        calls = [call for bound in optimizer._bound.values() for call in bound.calls]
        versions = {"this checkout": [call.function for call in calls], f"base {args.base}": []}
        for call in calls:
            segment, plan = call.work.variant.pieces[0], call.work.variant.schedules[0]
            early = cpu.exact_roles(segment, call.layout)
            if len(plan.passes) >= 2 and early:  # what the base's for_layout made
                plan = schedule(segment.outputs, role_axes=segment.axes, early=early)
            code = printer.source(segment, plan, call.layout, "update_base")
            versions[f"base {args.base}"].append(build.function(code, "update_base", cpu.ARGTYPES))
        times = {name: [] for name in versions}
        for _ in range(args.repeats):
            for name, functions in versions.items():
                for call, function in zip(calls, functions):
                    call.function = function
                start = time.perf_counter()
                optimizer.step()
                times[name].append(time.perf_counter() - start)
        for name, values in times.items():
            print(f"{args.optimizer} {workload} {name}: min {1000 * min(values):.2f} ms, "
                  f"median {1000 * statistics.median(values):.2f} ms", flush=True)


if __name__ == "__main__":
    main()
