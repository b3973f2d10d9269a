"""Momentum in practice (Quiz 7's hints): Nesterov against heavy ball, and a momentum schedule 0.5 → 0.99, each
variant at its own best learning rate and momentum."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch

import descend

from .. import data, tuning
from ..claims import QUIZ, Claim
from ..core import Context, Result

NAME = "momentum-practice"
TITLE = "Momentum in practice: Nesterov vs heavy ball, and a momentum schedule"
ORDER = 4  # beside the lab's experiment on the same topic (ties sort by NAME)
COST = {"tune": 9.0, "run": 0.5}

EPOCHS = {"quick": 6, "full": 30}
MOMENTUM_GRID = (0.5, 0.9, 0.97)
RAMP = (0.5, 0.99)

CLAIMS = [
    Claim(id="nesterov-slightly-better-than-heavy-ball", source=f"{QUIZ}, question 1 (c), “Nesterov Momentum”",
          statement="It enjoys stronger theoretical converge guarantees for convex functions and in practice it also "
                    "consistently works slightly better than standard momentum.",
          quote="verbatim",
          measurement="final full training loss of heavy ball divided by Nesterov's (MLP 64-64-10 on digits, "
                      f"{EPOCHS['quick']} epochs, velocity form; each at its best lr and μ of a grid widened until the "
                      "best is inside)",
          criterion="ratio > 1 (Nesterov lower)", threshold=1.0, direction=">", scale="ratio",
          compares=("heavy ball", "Nesterov")),
    Claim(id="momentum-schedule-helps-a-little", source=f"{QUIZ}, question 1 (b), “Momentum update”",
          statement="Similar to annealing schedules for learning rates (discussed later, below), optimization can "
                    "sometimes benefit a little from momentum schedules, where the momentum is increased in later "
                    "stages of learning.",
          quote="verbatim",
          measurement=f"final full training loss with a constant μ divided by the loss with μ ramped linearly "
                      f"{RAMP[0]} → {RAMP[1]} over {EPOCHS['quick']} epochs (the hint's “typical setting”), both in "
                      "the averaged form v ← μv + (1−μ)g, whose step does not grow with μ; the constant one at its "
                      "best lr and μ, the ramp at its best lr",
          criterion="ratio > 1 (the schedule lower)", threshold=1.0, direction=">", scale="ratio",
          compares=("EMA, constant μ", "EMA, μ 0.5 → 0.99")),
]

# label: (kwargs for descend.SGD given μ, the momentum is ramped, starting lr grid); the averaged form's step is
# the velocity form's times (1 − μ), so its grid starts ten times higher
VARIANTS = {
    "heavy ball": (lambda mu: dict(momentum=mu), False, (0.03, 0.1, 0.3)),
    "Nesterov": (lambda mu: dict(momentum=mu, nesterov=True), False, (0.03, 0.1, 0.3)),
    "EMA, constant μ": (lambda mu: dict(momentum=mu, dampening=mu), False, (0.3, 1.0, 3.0)),
    "EMA, μ 0.5 → 0.99": (lambda mu: dict(momentum=RAMP[0], dampening=RAMP[0]), True, (0.3, 1.0, 3.0)),
}


def steps_for(split: data.Split, full: bool) -> int:
    return EPOCHS["full" if full else "quick"] * math.ceil(len(split.y_train) / 64)


def train(split: data.Split, seed: int, variant: str, lr: float, momentum: float | None, steps: int):
    """(final full training loss, mini-batch loss every 10 steps); inf when a run diverged."""
    make_kwargs, ramped, _ = VARIANTS[variant]
    torch.manual_seed(seed)
    model = data.mlp(64, 64, 10, depth=1)
    optimizer = descend.SGD(model.parameters(), lr=lr, nonfinite="skip", **make_kwargs(momentum))

    def ramp(done: int) -> None:
        if ramped:  # the averaged form keeps dampening = momentum at every step
            mu = RAMP[0] + (RAMP[1] - RAMP[0]) * min(done / steps, 1.0)
            for group in optimizer.param_groups:
                group["momentum"] = group["dampening"] = mu

    losses = data.train(model, optimizer, split, steps, generator=torch.Generator().manual_seed(seed),
                        record_every=1, every=ramp)[::10]
    final = data.evaluate(model, split.x_train, split.y_train)[0]
    return (final if math.isfinite(final) and not optimizer.skipped_steps else math.inf), losses


def tune(ctx: Context) -> dict:
    split = data.digits(ctx.seed)
    steps = steps_for(split, ctx.full)
    records = {}
    for variant, (_, ramped, rates) in VARIANTS.items():
        axes = [tuning.lr_axis(*rates)] + ([] if ramped else [tuning.momentum_axis(*MOMENTUM_GRID)])
        score = tuning.one_at_a_time(lambda lr, momentum=None, v=variant: train(split, ctx.seed, v, lr, momentum,
                                                                                steps)[0])
        records[variant] = tuning.search(score, axes, metric=f"final full training loss after {steps} steps")
    return records


def run(ctx: Context) -> Result:
    split = data.digits(ctx.seed)
    steps = steps_for(split, ctx.full)
    best, curves = {}, {}
    for variant in ctx.track(VARIANTS):
        setting = ctx.tuned[variant]["best"]
        best[variant], curves[variant] = train(split, ctx.seed, variant, setting["lr"], setting.get("momentum"), steps)
    nesterov_gain = best["heavy ball"] / best["Nesterov"]
    schedule_gain = best["EMA, constant μ"] / best["EMA, μ 0.5 → 0.99"]
    if ctx.figures_wanted:
        figure, axis = plt.subplots(figsize=(7.5, 4.4))
        for variant, curve in curves.items():
            setting = ctx.tuned[variant]["best"]
            label = f"{variant} (lr {setting['lr']:g}" + (f", μ {setting['momentum']:g})" if "momentum" in setting
                                                           else ")")
            axis.semilogy([10 * i for i in range(len(curve))], curve, color=ctx.color(variant), label=label)
        axis.set_xlabel(f"step ({EPOCHS['full' if ctx.full else 'quick']} epochs)")
        axis.set_ylabel("mini-batch training loss (cross-entropy, nats)")
        axis.set_title("MLP on digits, each variant at its best lr and μ"), axis.legend(fontsize=8)
        ctx.save(figure, "curves", caption="Nesterov against heavy ball (velocity form), and the 0.5 → 0.99 momentum "
                 "ramp against a constant momentum (averaged form, so the ramp does not multiply the step by ten), "
                 "each at its own tuned setting.", claims=[c.id for c in CLAIMS])
    summary = (f"Final full training loss after {steps} steps: " + ", ".join(f"{k} {v:.4f}" for k, v in best.items())
               + f". Heavy ball / Nesterov = {nesterov_gain:.3f}; constant / ramped momentum = {schedule_gain:.3f}.")
    return Result({"nesterov-slightly-better-than-heavy-ball": nesterov_gain,
                   "momentum-schedule-helps-a-little": schedule_gain}, summary,
                  {"final_training_loss": best, "steps": steps, "ramp": RAMP})
