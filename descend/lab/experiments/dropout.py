"""Dropout (the assignment's (b), the lecture's §4.4): the 1/(1−p) scaling keeps the expected activation, and in a
regime that overfits, training with dropout lowers the test loss."""
from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from torch import nn

import descend

from .. import data, style, tuning
from ..claims import ASSIGNMENT, LECTURE, Claim
from ..core import Context, Result

NAME = "dropout"
ORDER = 9
TITLE = "Dropout's 1/(1−p) scaling, and dropout against overfitting"
COST = {"tune": 1.5, "run": 0.5}

RATES = (0.1, 0.3, 0.5, 0.8)
TRAIN, VALIDATION = 200, 200  # a small training set, so that the MLP overfits; p is chosen on the validation digits
STEPS = {"quick": 200, "full": 1000}  # batches of 64: 200 steps are 64 epochs of the 200 digits
LR = 1e-3  # Adam's default (Algorithm 1), for both: the claim is about p
P_GRID = (0.2, 0.5, 0.8)

CLAIMS = [
    Claim(id="dropout-scaling-keeps-expected-activation", source=f"{ASSIGNMENT}, question (b) i; {LECTURE}, "
          "§4.4, eq. (4.24)",
          statement="γ is chosen such that the expected value of h_drop is h: γ = 1/(1 − p_drop).",
          quote="paraphrase", kind="worked check",
          measurement="largest |mean in training / mean at test − 1| of torch.nn.Dropout over p ∈ {0.1, 0.3, 0.5, "
                      "0.8}, 10⁶ activations",
          criterion="deviation < 0.01", threshold=0.01, direction="<", scale="nonnegative"),
    Claim(id="dropout-lowers-test-loss", source=f"{ASSIGNMENT}, answer to (b) ii; {LECTURE}, §4.4",
          statement="We use dropout in training to avoid over fitting and make the model more generalized.",
          quote="verbatim",
          measurement=f"test cross-entropy without dropout divided by the test cross-entropy with dropout (MLP "
                      f"64-128-128-10 trained on {TRAIN} digits to overfitting, {STEPS['quick']} Adam steps at lr {LR}; "
                      f"p chosen on {VALIDATION} validation digits from a grid widened until the best is inside)",
          criterion="ratio > 1 (dropout lowers the test loss)", threshold=1.0, direction=">", scale="ratio",
          compares=("dropout",)),
]


def splits(seed: int) -> tuple[data.Split, data.Split]:
    """(training on TRAIN digits and testing on the test split, the same training set against VALIDATION digits)."""
    full = data.digits(seed)
    train_x, train_y = full.x_train[:TRAIN], full.y_train[:TRAIN]
    held_x, held_y = full.x_train[TRAIN:TRAIN + VALIDATION], full.y_train[TRAIN:TRAIN + VALIDATION]
    return (data.Split(train_x, train_y, full.x_test, full.y_test), data.Split(train_x, train_y, held_x, held_y))


def train(split: data.Split, seed: int, p: float, steps: int, curve: bool = False) -> dict:
    """Trains with dropout p; returns the final train and test (or validation) loss and accuracy, and every 25 steps
    the test loss when ``curve``."""
    torch.manual_seed(seed)
    model = data.mlp(64, 128, 10, depth=2, dropout=p)
    optimizer = descend.Adam(model.parameters(), lr=LR)
    held = []

    def record(done: int) -> None:
        if curve:
            held.append(data.evaluate(model, split.x_test, split.y_test)[0])

    data.train(model, optimizer, split, steps, batch_size=64, generator=torch.Generator().manual_seed(seed),
               record_every=25, every=record)
    train_loss, train_accuracy = data.evaluate(model, split.x_train, split.y_train)
    test_loss, test_accuracy = data.evaluate(model, split.x_test, split.y_test)
    return {"train_loss": train_loss, "train_accuracy": train_accuracy, "test_loss": test_loss,
            "test_accuracy": test_accuracy, "curve": held}


def tune(ctx: Context) -> dict:
    steps = STEPS["full" if ctx.full else "quick"]
    _, validation = splits(ctx.seed)
    score = tuning.one_at_a_time(lambda p: train(validation, ctx.seed, p, steps)["test_loss"])
    return {"dropout": tuning.search(score, [tuning.Axis("p", P_GRID, kind="momentum")],
                                     metric=f"validation cross-entropy after {steps} steps")}


def run(ctx: Context) -> Result:
    activations = torch.rand(1_000_000, generator=ctx.generator()) + 0.5
    torch.manual_seed(ctx.seed)
    scaled = {p: (nn.Dropout(p).train()(activations).mean() / activations.mean()).item() for p in RATES}
    unscaled = {p: ((nn.Dropout(p).train()(activations) != 0).float() * activations).mean().item()
                / activations.mean().item() for p in RATES}
    steps = STEPS["full" if ctx.full else "quick"]
    test, _ = splits(ctx.seed)
    best_p = ctx.tuned["dropout"]["best"]["p"]
    runs = {p: train(test, ctx.seed, p, steps, curve=ctx.figures_wanted) for p in ctx.track((0.0, best_p))}
    if ctx.figures_wanted:
        draw(ctx, scaled, unscaled, runs, steps)
    deviation = max(abs(v - 1) for v in scaled.values())
    plain, dropped = runs[0.0], runs[best_p]
    summary = (f"Mean activation ratio train/test with Dropout: {', '.join(f'p={p}: {v:.4f}' for p, v in scaled.items())}"
               f" (mask only: {', '.join(f'{v:.2f}' for v in unscaled.values())}). {TRAIN} training digits, {steps} "
               f"steps: without dropout train loss {plain['train_loss']:.3f}, test loss {plain['test_loss']:.3f}, test "
               f"accuracy {plain['test_accuracy']:.3f}; with p = {best_p:g} (chosen on validation digits) "
               f"{dropped['train_loss']:.3f}, {dropped['test_loss']:.3f}, {dropped['test_accuracy']:.3f}.")
    return Result({"dropout-scaling-keeps-expected-activation": deviation,
                   "dropout-lowers-test-loss": plain["test_loss"] / dropped["test_loss"]}, summary,
                  {"scaled_ratio": scaled, "unscaled_ratio": unscaled, "best_p": best_p,
                   "runs": {f"p={p:g}": {k: v for k, v in r.items() if k != "curve"} for p, r in runs.items()}})


def draw(ctx: Context, scaled: dict, unscaled: dict, runs: dict, steps: int) -> None:
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    x = range(len(RATES))
    labels = {p: "no dropout" if p == 0 else f"dropout p = {p:g}" for p in runs}
    colours = style.distinct(["scaled by 1/(1−p)", "mask only", *labels.values()])  # one meaning per colour
    left.bar([i - 0.2 for i in x], list(scaled.values()), 0.4, label="torch.nn.Dropout (scaled by 1/(1−p))",
             color=colours["scaled by 1/(1−p)"])
    left.bar([i + 0.2 for i in x], list(unscaled.values()), 0.4, label="mask only (no scaling)",
             color=colours["mask only"])
    left.axhline(1.0, color="k", linestyle="--"), left.set_xticks(list(x), [f"p={p}" for p in RATES])
    left.set_xlabel("drop probability p"), left.set_ylabel("mean activation in training / at test (ratio)")
    left.legend(fontsize=8), left.set_title("expected activation with and without the 1/(1−p) factor")
    for p, result in runs.items():
        label = labels[p]
        right.plot([25 * (i + 1) for i in range(len(result["curve"]))], result["curve"], color=colours[label],
                   label=f"{label}: train loss {result['train_loss']:.3f}, test {result['test_loss']:.3f}")
    right.set_xlabel("step (batches of 64)"), right.set_ylabel("test cross-entropy (nats)"), right.legend(fontsize=8)
    right.set_title(f"MLP 64-128-128-10 on {TRAIN} digits, first seed")
    ctx.save(figure, "dropout", caption="Left: with the 1/(1−p) factor the mean activation is unchanged; the mask "
             "alone shrinks it to 1−p. Right: the test loss on the first seed without dropout and with the "
             "p chosen on validation digits, beside each one's final training loss (the gap dropout should close); "
             "the claim compares the final test losses over all seeds.", claims=[c.id for c in CLAIMS])
