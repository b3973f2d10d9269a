"""Adafactor's step: descend's generated C kernel against torch.optim.Adafactor (foreach and for-loop).

    python benchmarks/adafactor_speed.py [--rounds 5] [--repeats 7] [--threads 2] [--hand]

Two workloads of about 16.8M float32 parameters: one 4096×4096 matrix, and the 193 transformer-like tensors
of benchmarks/step_speed.py.  Every contender's steps are interleaved within a round (median of the repeats);
the rounds are repeated and the table gives, per contender, the median of the round medians and their spread
(min–max).  "torch best" is the faster of torch's foreach and for-loop paths in each round; the ratio is
torch best / descend, per round, then its median and spread.

``--hand`` adds the hand-written Adafactor kernel this repository had before its kernels were generated
(``descend/_kernels.c`` at ``262dd77^``, built from git history into a temporary directory) as a second
reference point.  It computes the same chain (HF Adafactor, no beta1, no weight decay).
"""
from __future__ import annotations

import argparse
import ctypes
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

import descend
from descend.backends import build

ROOT = Path(__file__).resolve().parents[1]


def transformer_shapes(width: int = 320, layers: int = 12) -> list[tuple[int, ...]]:
    shapes = [(4096, width)]
    for _ in range(layers):
        shapes += [(width, width)] * 4 + [(width,)] * 4
        shapes += [(4 * width, width), (4 * width,), (width, 4 * width), (width,)]
        shapes += [(width,)] * 4
    return shapes


WORKLOADS = {"1 × 4096²": [(4096, 4096)], "193 tensors": transformer_shapes()}


def make_params(shapes, seed=0):
    generator = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(shape, generator=generator)) for shape in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=generator) * 1e-2
    return params


def hand_kernel():
    """The deleted hand-written kernel (git history), compiled with the flags the generated kernels get."""
    directory = Path(tempfile.mkdtemp(prefix="adafactor_hand_"))
    for name in ("_kernels.c", "_prelude.h"):
        text = subprocess.run(["git", "-C", str(ROOT), "show", f"262dd77^:descend/{name}"], check=True,
                              capture_output=True, text=True).stdout
        (directory / name).write_text(text)
    library = directory / "hand.so"
    subprocess.run([*build._compiler(), *build.BASE_FLAGS, f"-I{directory}", str(directory / "_kernels.c"), "-o",
                    str(library), "-lm"], check=True)
    function = ctypes.CDLL(str(library)).adafactor_f32
    p_array = ctypes.POINTER(ctypes.c_void_p)
    function.argtypes = [ctypes.c_int, p_array, p_array, p_array, p_array, p_array, p_array,
                         ctypes.POINTER(ctypes.c_int64), ctypes.POINTER(ctypes.c_double), ctypes.c_double,
                         ctypes.c_double, ctypes.c_double, ctypes.c_double, ctypes.c_int, ctypes.c_int,
                         ctypes.c_double, ctypes.c_double, ctypes.c_double, ctypes.c_int, ctypes.c_int]
    return function


def hand_step(function, params, threads):
    """A step function running the hand kernel on ``params`` (HF defaults: relative step, scale_parameter)."""
    rows, cols, full = [], [], []
    for p in params:
        if p.dim() >= 2:
            rows.append(torch.zeros(p.shape[:-1])), cols.append(torch.zeros(p.shape[:-2] + p.shape[-1:]))
            full.append(None)
        else:
            rows.append(None), cols.append(torch.zeros(1)), full.append(torch.zeros_like(p))
    keep = [params, rows, cols, full]

    def array(tensors):
        return (ctypes.c_void_p * len(tensors))(*[0 if t is None else t.data_ptr() for t in tensors])

    p, g, r, c, v = (array(x) for x in (params, [q.grad for q in params], rows, cols, full))
    m = ctypes.cast(None, ctypes.POINTER(ctypes.c_void_p))
    shape = []
    for q in params:
        shape += [q.shape[:-2].numel(), q.shape[-2], q.shape[-1]] if q.dim() >= 2 else [1, 1, q.numel()]
    shape = (ctypes.c_int64 * len(shape))(*shape)
    steps = (ctypes.c_double * len(params))(*[10.0] * len(params))
    cast = lambda a: ctypes.cast(a, ctypes.POINTER(ctypes.c_void_p))  # noqa: E731

    def step():
        keep  # noqa: B018 (the buffers live as long as the step)
        function(len(params), cast(p), cast(g), cast(r), cast(c), cast(v), m, shape, steps, -0.8, 1e-30, 1e-3, -1.0,
                 0, 1, 1.0, 0.0, 0.0, 0, threads)

    return step


def one_round(contenders: dict, repeats: int) -> dict[str, float]:
    times = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, step in contenders.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(values) for name, values in times.items()}


def spread(values) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--hand", action="store_true", help="add the deleted hand kernel from git history")
    parser.add_argument("--only", choices=list(WORKLOADS), help="one workload")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hand = hand_kernel() if args.hand else None
    header = ["descend", "torch foreach", "torch for-loop"] + (["hand kernel"] if hand else [])
    print(f"| workload | {' ms | '.join(header)} ms | torch best / descend |"
          + (" hand / descend |" if hand else ""))
    print("|---" * (len(header) + 2 + bool(hand)) + "|")
    for workload, shapes in WORKLOADS.items():
        if args.only and workload != args.only:
            continue
        contenders = {"descend": descend.Adafactor(make_params(shapes)).step,
                      "torch foreach": torch.optim.Adafactor(make_params(shapes), foreach=True).step,
                      "torch for-loop": torch.optim.Adafactor(make_params(shapes), foreach=False).step}
        if hand:
            contenders["hand kernel"] = hand_step(hand, make_params(shapes), args.threads)
        for step in contenders.values():  # warm up: state made, kernels built, pages touched
            step(), step()
        rounds = [one_round(contenders, args.repeats) for _ in range(args.rounds)]
        per = {name: [r[name] for r in rounds] for name in contenders}
        ratio = [min(r["torch foreach"], r["torch for-loop"]) / r["descend"] for r in rounds]
        cells = [spread(per[name]) for name in header]
        line = f"| {workload} | {' | '.join(cells)} | {spread(ratio)}× |"
        if hand:
            line += f" {spread([r['hand kernel'] / r['descend'] for r in rounds])}× |"
        print(line, flush=True)


if __name__ == "__main__":
    main()
