"""Adam's bias correction: the size of the first steps, and |Δ| ≲ α."""
from __future__ import annotations

import matplotlib.pyplot as plt
import torch

import descend

from .. import data
from ..core import Context, Result

NAME = "bias-correction"
TITLE = "6. Adam's bias correction"
CLAIM = ("Without bias correction Adam's first step is (1−β₁)/√(1−β₂)·α per coordinate (3.2α for β₂ = 0.999, 10α "
         "for 0.9999) instead of α; with it the step stays near α: 99% of coordinate updates have |Δ|/α ≤ 1.5.")

BETA1, LR = 0.9, 1e-3


def train_recording(ctx, split, beta2, corrected, steps, generator):
    """Loss curve and all |Δθ|/α of a run, per step."""
    torch.manual_seed(0)
    model = ctx.place(data.mlp(64, 64, 10, depth=1))
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
    steps = 300 if ctx.full else 100
    numbers, curves, corrected_ratios = {}, {}, None
    runs = [(b2, c) for b2 in (0.99, 0.999, 0.9999) for c in (True, False)]
    for beta2, corrected in ctx.track(runs):
        losses, ratios = train_recording(ctx, split, beta2, corrected, steps, ctx.generator())
        label = f"β₂={beta2}, {'corrected' if corrected else 'uncorrected'}"
        curves[label] = losses
        predicted = 1.0 if corrected else (1 - BETA1) / (1 - beta2) ** 0.5
        first = ratios[0].median().item()
        numbers[label] = {"first_step_median_ratio": first, "predicted": predicted,
                          "loss_after_10_steps": losses[9], "final_loss": losses[-1]}
        if corrected and beta2 == 0.999:
            corrected_ratios = torch.cat(ratios)
    p99 = torch.quantile(corrected_ratios[:1_000_000], 0.99).item()
    numbers["corrected_beta2_0.999_ratio_p99"] = p99
    numbers["corrected_beta2_0.999_fraction_at_most_1"] = (corrected_ratios <= 1.0).float().mean().item()

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for label, losses in curves.items():
        left.plot(losses[:60], "-" if "uncorrected" not in label else "--", label=label)
    left.set_title("early training loss (MLP on digits)"), left.set_xlabel("step"), left.legend(fontsize=8)
    right.hist(corrected_ratios.clamp(max=3).numpy(), bins=60, log=True)
    right.axvline(1.0, color="k", linestyle="--")
    right.set_title(f"|Δ|/α of every coordinate update, β₂ = 0.999, corrected (99th pct {p99:.2f})")
    ctx.save(figure, "steps")

    first_steps_match = all(
        abs(v["first_step_median_ratio"] - v["predicted"]) / v["predicted"] < 0.05
        for k, v in numbers.items() if isinstance(v, dict)
    )
    held = first_steps_match and p99 <= 1.5
    summary = ("Median first-step |Δ|/α, uncorrected: " + ", ".join(
        f"β₂={b}: {numbers[f'β₂={b}, uncorrected']['first_step_median_ratio']:.2f} "
        f"(predicted {numbers[f'β₂={b}, uncorrected']['predicted']:.2f})" for b in (0.99, 0.999, 0.9999))
        + f"; corrected: {numbers['β₂=0.999, corrected']['first_step_median_ratio']:.2f}. With correction, "
        f"99% of updates have |Δ|/α ≤ {p99:.2f}.")
    return Result(held, summary, numbers)
