"""Adam's bias correction: the size of the first steps, and |Δ| ≲ α."""
from __future__ import annotations

import matplotlib.pyplot as plt
import torch

import descend

from .. import data
from ..claims import Claim
from ..core import Context, Result

NAME = "bias-correction"
ORDER = 6
TITLE = "Adam's bias correction"
CLAIMS = [
    Claim(id="uncorrected-adam-first-step-is-inflated",
          source="seed 003, Quiz 7 (Adam: “the full Adam update also includes a bias correction mechanism”); "
                 "seed 004, Alg. 1",
          statement="m and v are initialized at zero and biased towards it in the first steps; without correction "
                    "the first step is (1−β₁)/√(1−β₂)·α per coordinate (3.2α for β₂ = 0.999, 10α for 0.9999).",
          measurement="largest relative error between the median first-step |Δ|/α and (1−β₁)/√(1−β₂) (uncorrected) "
                      "or 1 (corrected), over β₂ ∈ {0.99, 0.999, 0.9999}, MLP on digits",
          criterion="relative error < 0.05", threshold=0.05, direction="<"),
    Claim(id="corrected-adam-steps-stay-near-alpha",
          source="seed 001, Question 5 (Adam's stepsizes are approximately bounded by the stepsize hyperparameter)",
          statement="With bias correction the effective step |Δ| is approximately bounded by α.",
          measurement="99th percentile of |Δ|/α over every coordinate update of 60 steps (β₂ = 0.999, corrected)",
          criterion="99th percentile < 1.5", threshold=1.5, direction="<"),
]

BETA1, LR = 0.9, 1e-3


def train_recording(ctx, split, beta2, corrected, steps, generator):
    """Loss curve and all |Δθ|/α of a run, per step."""
    torch.manual_seed(ctx.seed)
    model = ctx.place(data.mlp(64, 32, 10, depth=1))
    optimizer = descend.Adam(model.parameters(), lr=LR, betas=(BETA1, beta2), bias_correction=corrected)
    ratios, losses = [], []
    for _ in range(steps):
        before = [p.detach().clone() for p in model.parameters()]
        losses += data.train(model, optimizer, split, 1, generator=generator)
        moved = torch.cat([(p.detach() - b).abs().flatten() for p, b in zip(model.parameters(), before)]) / LR
        ratios.append(moved[moved > 0].cpu())
    return losses, ratios


def run(ctx: Context) -> Result:
    split = data.digits(ctx.seed)
    steps = 200 if ctx.full else 60
    numbers, curves, corrected_ratios = {}, {}, None
    runs = [(b2, c) for b2 in (0.99, 0.999, 0.9999) for c in (True, False)]
    for beta2, corrected in ctx.track(runs):
        losses, ratios = train_recording(ctx, split, beta2, corrected, steps, ctx.generator())
        label = f"β₂={beta2}, {'corrected' if corrected else 'uncorrected'}"
        curves[label] = losses
        predicted = 1.0 if corrected else (1 - BETA1) / (1 - beta2) ** 0.5
        numbers[label] = {"first_step_median_ratio": ratios[0].median().item(), "predicted": predicted,
                          "loss_after_10_steps": losses[9], "final_loss": losses[-1]}
        if corrected and beta2 == 0.999:
            corrected_ratios = torch.cat(ratios)
    p99 = torch.quantile(corrected_ratios[:1_000_000], 0.99).item()
    first_error = max(abs(v["first_step_median_ratio"] - v["predicted"]) / v["predicted"] for v in numbers.values())
    numbers["corrected_beta2_0.999_ratio_p99"] = p99
    numbers["corrected_beta2_0.999_fraction_at_most_1"] = (corrected_ratios <= 1.0).float().mean().item()
    if ctx.figures_wanted:
        figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
        for label, losses in curves.items():
            left.plot(losses[:60], "-" if "uncorrected" not in label else "--", label=label,
                      color=ctx.color(label.split(",")[0]))
        left.set_title("early training loss (MLP on digits); dashed: uncorrected"), left.set_xlabel("step")
        left.set_ylabel("mini-batch cross-entropy (nats)"), left.legend(fontsize=8)
        right.hist(corrected_ratios.clamp(max=3).numpy(), bins=60, log=True, color=ctx.color("Adam"))
        right.axvline(1.0, color="k", linestyle="--")
        right.set_xlabel("|Δθ|/α per coordinate update (clipped at 3)"), right.set_ylabel("count (log scale)")
        right.set_title(f"β₂ = 0.999, corrected: 99th percentile {p99:.2f}")
        ctx.save(figure, "steps", caption="Left: without correction the first steps are several α long and the "
                 "loss jumps (dashed). Right: with correction almost every coordinate moves by at most α.")
    summary = ("Median first-step |Δ|/α, uncorrected: " + ", ".join(
        f"β₂={b}: {numbers[f'β₂={b}, uncorrected']['first_step_median_ratio']:.2f} "
        f"(predicted {numbers[f'β₂={b}, uncorrected']['predicted']:.2f})" for b in (0.99, 0.999, 0.9999))
        + f"; corrected: {numbers['β₂=0.999, corrected']['first_step_median_ratio']:.2f}. With correction, "
        f"99% of updates have |Δ|/α ≤ {p99:.2f}.")
    return Result({"uncorrected-adam-first-step-is-inflated": first_error,
                   "corrected-adam-steps-stay-near-alpha": p99}, summary, numbers)
