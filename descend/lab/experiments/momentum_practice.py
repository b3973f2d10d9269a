"""Momentum in practice (seed 003): Nesterov against heavy ball, and a momentum schedule 0.5 → 0.99."""
from __future__ import annotations

import matplotlib.pyplot as plt
import torch

import descend

from .. import data
from ..claims import Claim
from ..core import Context, Result

NAME = "momentum-practice"
TITLE = "Momentum in practice: Nesterov vs heavy ball, and a momentum schedule"
ORDER = 4  # beside the lab's experiment on the same topic (ties sort by NAME)

LR_GRID = (0.03, 0.1, 0.3, 1.0)  # every variant is run at its best rate of this grid
MOMENTUM = 0.9
STEPS = {"quick": 150, "full": 600}

CLAIMS = [
    Claim(id="nesterov-slightly-better-than-heavy-ball", source="seed 003, Nesterov momentum",
          statement="Nesterov momentum enjoys stronger guarantees for convex functions and in practice it "
                    "consistently works slightly better than standard momentum.",
          measurement="final full training loss of heavy ball divided by Nesterov's (MLP 64-64-10 on digits, "
                      f"μ = {MOMENTUM}, velocity form, each at its best lr of {LR_GRID})",
          criterion="ratio > 1 (Nesterov lower)", threshold=1.0, direction=">"),
    Claim(id="momentum-schedule-helps-a-little", source="seed 003, momentum update",
          statement="Optimization can sometimes benefit a little from momentum schedules, where the momentum is "
                    "increased in later stages of learning: start at about 0.5 and anneal to 0.99.",
          measurement="final full training loss with constant μ = 0.9 divided by the loss with μ ramped linearly "
                      f"0.5 → 0.99 over the run (descend.MomentumSchedule; each at its best lr of {LR_GRID})",
          criterion="ratio > 1 (the schedule lower)", threshold=1.0, direction=">"),
]

VARIANTS = {"heavy ball": dict(nesterov=False), "Nesterov": dict(nesterov=True),
            "heavy ball, μ 0.5 → 0.99": dict(nesterov=False, schedule=True)}


def train(split, seed: int, lr: float, steps: int, nesterov: bool, schedule: bool = False):
    torch.manual_seed(seed)
    model = data.mlp(64, 64, 10, depth=1)
    optimizer = descend.SGD(model.parameters(), lr=lr, momentum=MOMENTUM, nesterov=nesterov, nonfinite="skip")
    ramp = descend.MomentumSchedule(optimizer, descend.linear_ramp(0.5, 0.99, steps)) if schedule else None
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps // 10):
        losses += data.train(model, optimizer, split, 10, generator=generator, record_every=10)
        for _ in range(10 if ramp else 0):
            ramp.step()
    final = data.evaluate(model, split.x_train, split.y_train)[0]
    return final, losses


def run(ctx: Context) -> Result:
    split = data.digits(ctx.seed)
    steps = STEPS["full" if ctx.full else "quick"]
    best: dict[str, dict] = {}
    runs = [(name, lr) for name in VARIANTS for lr in LR_GRID]
    for name, lr in ctx.track(runs):
        final, losses = train(split, ctx.seed, lr, steps, **VARIANTS[name])
        if name not in best or final < best[name]["final_training_loss"]:
            best[name] = {"lr": lr, "final_training_loss": final, "curve": losses,
                          "lr_at_grid_edge": lr in (LR_GRID[0], LR_GRID[-1])}
    loss = {name: b["final_training_loss"] for name, b in best.items()}
    nesterov_gain = loss["heavy ball"] / loss["Nesterov"]
    schedule_gain = loss["heavy ball"] / loss["heavy ball, μ 0.5 → 0.99"]
    if ctx.figures_wanted:
        figure, axis = plt.subplots(figsize=(7, 4.4))
        for name, b in best.items():
            axis.semilogy([10 * i for i in range(len(b["curve"]))], b["curve"], color=ctx.color(name),
                          label=f"{name} (lr {b['lr']:g})")
        axis.set_xlabel("step"), axis.set_ylabel("mini-batch training loss (cross-entropy, nats)")
        axis.set_title(f"MLP on digits, each at its best lr of {LR_GRID}"), axis.legend(fontsize=8)
        ctx.save(figure, "curves", caption="Nesterov and the 0.5 → 0.99 momentum ramp against plain heavy-ball "
                 "momentum, each at its own best learning rate: the course promises a small gain for both.")
    edges = [name for name, b in best.items() if b["lr_at_grid_edge"]]
    summary = (f"Final training loss after {steps} steps: " + ", ".join(f"{k} {v:.4f} (lr {best[k]['lr']:g})"
                                                                     for k, v in loss.items())
               + f". Heavy ball / Nesterov = {nesterov_gain:.3f}; constant / scheduled momentum = {schedule_gain:.3f}. "
               "(The velocity form's steady step is α/(1−μ): the ramp ends at μ = 0.99, ten times the step of μ = 0.9, "
               "so one lr has to serve both ends of the ramp.)"
               + (f" Best lr at a grid edge for: {', '.join(edges)}." if edges else ""))
    numbers = {name: {k: v for k, v in b.items() if k != "curve"} for name, b in best.items()}
    numbers.update(steps=steps, lr_grid=LR_GRID)
    return Result({"nesterov-slightly-better-than-heavy-ball": nesterov_gain,
                   "momentum-schedule-helps-a-little": schedule_gain}, summary, numbers)
