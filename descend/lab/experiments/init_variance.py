"""The 1/√n rule's derivation (seed 003): Var(s) = n·Var(w)·Var(x) for s = Σ wᵢxᵢ, and where it needs E[x] = 0."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch

from ..claims import QUIZ, Claim
from ..core import Context, Result

NAME = "init-variance"
TITLE = "Var(s) = n·Var(w)·Var(x): the 1/√n initialization rule"
ORDER = 10  # beside the lab's experiment on the same topic (ties sort by NAME)

FAN_INS = (16, 64, 256)
DRAWS = 5_000  # independent (w, x) draws per fan-in
RELU_RATIO = 0.5 / (0.5 - 1 / (2 * math.pi))  # E[x²]/Var(x) for x = ReLU(z), z ~ N(0, 1)

COST = {"run": 0.2}

CLAIMS = [
    Claim(id="init-variance-of-weighted-sum", source=f"{QUIZ}, question 2 (c) hints, the derivation of Var(s)",
          statement="For s = Σᵢ wᵢxᵢ with independent, identically distributed, zero-mean wᵢ and xᵢ, "
                    "Var(s) = n·Var(w)·Var(x); so w = randn(n)/√n gives Var(s) = Var(x).",
          quote="paraphrase", kind="worked check",
          measurement=f"largest |Var(s)/(n·Var(w)·Var(x)) − 1| over n ∈ {FAN_INS}, {DRAWS} draws each "
                      "(w ~ N(0, 1/n), x uniform with variance 1), sample variances",
          criterion="< 0.1 (sampling error of a variance from 5000 draws: about 2%)", threshold=0.1, direction="<",
          scale="nonnegative"),
    Claim(id="init-variance-needs-zero-mean-inputs", source=f"{QUIZ}, question 2 (c) hints",
          statement="Note that this is not generally the case: For example ReLU units will have a positive mean.",
          quote="verbatim", kind="worked check",
          measurement=f"Var(s)/(n·Var(w)·Var(x)) with x = ReLU(z), z ~ N(0, 1), n = 256 (predicted "
                      f"E[x²]/Var(x) = {RELU_RATIO:.3f}: the derivation's formula then underestimates Var(s))",
          criterion="> 1.2 (the formula underestimates Var(s))", threshold=1.2, direction=">", scale="ratio"),
]


def variance_ratio(n: int, inputs: str, generator: torch.Generator) -> float:
    w = torch.randn(DRAWS, n, generator=generator, dtype=torch.float64) / math.sqrt(n)
    if inputs == "uniform":
        x = (torch.rand(DRAWS, n, generator=generator, dtype=torch.float64) - 0.5) * math.sqrt(12)
    else:
        x = torch.relu(torch.randn(DRAWS, n, generator=generator, dtype=torch.float64))
    s = (w * x).sum(1)
    return (s.var() / (n * w.var() * x.var())).item()


def run(ctx: Context) -> Result:
    generator = ctx.generator()
    uniform = {n: variance_ratio(n, "uniform", generator) for n in FAN_INS}
    relu = {n: variance_ratio(n, "relu", generator) for n in FAN_INS}
    worst = max(abs(r - 1) for r in uniform.values())
    if ctx.figures_wanted:
        figure, axis = plt.subplots(figsize=(7, 4.4))
        axis.semilogx(FAN_INS, list(uniform.values()), "o-", color=ctx.color("zero-mean inputs"),
                      label="zero-mean inputs (uniform)")
        axis.semilogx(FAN_INS, list(relu.values()), "s-", color=ctx.color("ReLU inputs"), label="ReLU inputs")
        axis.axhline(1.0, color="black", linestyle="--", linewidth=0.8, label="n·Var(w)·Var(x)")
        axis.axhline(RELU_RATIO, color=ctx.color("ReLU inputs"), linestyle=":", label="E[x²]/Var(x) for ReLU")
        axis.set_xticks(FAN_INS, [str(n) for n in FAN_INS]), axis.minorticks_off()
        axis.set_xlabel("fan-in n"), axis.set_ylabel("Var(s) / (n·Var(w)·Var(x)) (dimensionless)")
        axis.set_title(f"s = Σ wᵢxᵢ with w ~ N(0, 1/n), {DRAWS} draws"), axis.legend(fontsize=8)
        ctx.save(figure, "variance", caption="With zero-mean inputs the derivation's Var(s) = n·Var(w)·Var(x) holds at "
                 "every fan-in; with ReLU inputs (positive mean) Var(s) is E[x²]/Var(x) ≈ 1.47 times larger.",
                 claims=[c.id for c in CLAIMS])
    summary = ("Var(s)/(n·Var(w)·Var(x)) for zero-mean inputs: " + ", ".join(f"n={n}: {r:.3f}" for n, r in uniform.items())
               + "; for ReLU inputs: " + ", ".join(f"n={n}: {r:.3f}" for n, r in relu.items())
               + f" (E[x²]/Var(x) = {RELU_RATIO:.3f}): with w ~ N(0, 1/n) and ReLU inputs, Var(s) = E[x²] = ½, which is "
               "why He et al. use Var(w) = 2/n.")
    return Result({"init-variance-of-weighted-sum": worst, "init-variance-needs-zero-mean-inputs": relu[256]}, summary,
                  {"zero_mean_ratio": uniform, "relu_ratio": relu, "relu_predicted": RELU_RATIO, "draws": DRAWS})
