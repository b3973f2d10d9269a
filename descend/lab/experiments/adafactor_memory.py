"""Adafactor's optimizer-state memory against Adam's, measured from the real state tensors (seed 004, Alg. 2)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import torch

import descend

from ..claims import SLIDES, Claim
from ..core import Context, Result

NAME = "adafactor-memory"
ORDER = 14
TITLE = "Adafactor's memory"
COST = {"run": 1.0}
CLAIMS = [Claim(
    id="adafactor-state-is-under-one-percent-of-adams",
    source=f"{SLIDES}, slides “Issue with Adam?”, “Memory! How to resolve?” and Algorithm 2 (factored second moments)",
    statement="Memory! How to resolve? Adafactor keeps the row and column sums R (n) and C (m) of an n×m matrix "
              "instead of Adam's m and v (2nm floats).",
    quote="paraphrase", kind="worked check",
    measurement="optimizer state bytes, Adafactor / Adam, on a transformer-shaped set of parameters (width 512, "
                "6 layers, vocabulary 8000), read from the real state tensors",
    criterion="ratio < 0.01 (and every matrix keeps exactly n + m floats, else the effect is set to 1)",
    threshold=0.01, direction="<", scale="ratio", deterministic=True)]


def transformer_shapes(width: int, layers: int, vocabulary: int) -> list[tuple[int, ...]]:
    shapes = [(vocabulary, width)]
    for _ in range(layers):
        shapes += [(width, width)] * 4 + [(width,)] * 4 + [(4 * width, width), (4 * width,), (width, 4 * width), (width,)]
        shapes += [(width,)] * 4
    return shapes


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(v.numel() * v.element_size() for s in optimizer.state.values() for k, v in s.items() if k != "step")


def run(ctx: Context) -> Result:
    width, layers, vocabulary = (768, 12, 16000) if ctx.full else (512, 6, 8000)
    shapes = transformer_shapes(width, layers, vocabulary)
    numbers = {}
    per_matrix_ok = True
    for name in ctx.track(["Adam", "Adafactor"]):
        params = [torch.nn.Parameter(torch.zeros(shape)) for shape in shapes]
        for p in params:
            p.grad = torch.full_like(p, 1e-3)
        optimizer = descend.Adam(params) if name == "Adam" else descend.Adafactor(params)
        optimizer.step()
        numbers[name] = state_bytes(optimizer)
        if name == "Adafactor":
            for p in params:
                if p.dim() == 2:
                    floats = sum(v.numel() for k, v in optimizer.state[p].items() if k != "step")
                    per_matrix_ok &= floats == p.shape[0] + p.shape[1]
        del params, optimizer
    parameters = sum(torch.Size(s).numel() for s in shapes)
    ratio = numbers["Adafactor"] / numbers["Adam"]
    if ctx.figures_wanted:
        figure, axis = plt.subplots(figsize=(6, 4))
        axis.bar(["Adam", "Adafactor"], [numbers["Adam"] / 2**20, numbers["Adafactor"] / 2**20],
                 color=[ctx.color("Adam"), ctx.color("Adafactor")])
        axis.set_yscale("log"), axis.set_ylabel("optimizer state (MiB, log scale)")
        axis.set_title(f"{parameters / 1e6:.1f}M parameters (width {width}, {layers} layers): ratio {ratio:.2%}")
        ctx.save(figure, "state", caption=f"Adafactor's state is {ratio:.2%} of Adam's: two vectors per matrix "
                 "instead of two full copies of it.", claims=["adafactor-state-is-under-one-percent-of-adams"])
    summary = (f"Optimizer state for {parameters / 1e6:.1f}M float32 parameters: Adam {numbers['Adam'] / 2**20:.1f} MiB, "
               f"Adafactor {numbers['Adafactor'] / 2**20:.2f} MiB ({ratio:.2%}); every matrix keeps exactly n + m floats: "
               f"{per_matrix_ok}.")
    return Result({"adafactor-state-is-under-one-percent-of-adams": ratio if per_matrix_ok else 1.0}, summary,
                  {"parameters": parameters, "state_bytes": numbers, "ratio": ratio,
                   "every_matrix_n_plus_m": per_matrix_ok, "width": width, "layers": layers})
