"""Dropout: the 1/(1−p) scaling keeps the expected activation, and dropout narrows the train/test gap."""
from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from torch import nn

import descend

from .. import data
from ..claims import Claim
from ..core import Context, Result

NAME = "dropout"
ORDER = 9
TITLE = "Dropout's 1/(1−p) scaling and the train/test gap"
CLAIMS = [
    Claim(id="dropout-scaling-keeps-expected-activation",
          source="seed 000, (b) i (γ = 1/(1 − p_drop)); seed 002, eq. 4.24",
          statement="Multiplying the kept units by γ = 1/(1 − p_drop) makes the expected value of h_drop equal h.",
          measurement="largest |mean in training / mean at test − 1| of torch.nn.Dropout over p ∈ {0.1, 0.3, 0.5, "
                      "0.8}, 10⁶ activations",
          criterion="deviation < 0.01", threshold=0.01, direction="<"),
    Claim(id="dropout-narrows-train-test-gap",
          source="seed 002 §4.4 (“yields a form of regularization”); seed 000, (b) ii",
          statement="Dropout is a regularization technique: training with it reduces overfitting.",
          measurement="generalization gap (test − train cross-entropy, nats) without dropout minus the gap with "
                      "p = 0.5 (MLP 64-128-128-10 on 150 digits, Adam, 200 steps: about 85 epochs)",
          criterion="difference > 0 (the gap narrows)", threshold=0.0, direction=">"),
]

RATES = (0.1, 0.3, 0.5, 0.8)


def run(ctx: Context) -> Result:
    activations = torch.rand(1_000_000, generator=ctx.generator()) + 0.5
    torch.manual_seed(ctx.seed)
    scaled = {p: (nn.Dropout(p).train()(activations).mean() / activations.mean()).item() for p in RATES}
    unscaled = {p: ((nn.Dropout(p).train()(activations) != 0).float() * activations).mean().item()
                / activations.mean().item() for p in RATES}

    full = data.digits(ctx.seed)
    small = data.Split(full.x_train[:150], full.y_train[:150], full.x_test, full.y_test)  # small enough to overfit
    gaps = {}
    for p in ctx.track((0.0, 0.5)):
        torch.manual_seed(ctx.seed)
        model = ctx.place(data.mlp(64, 128, 10, depth=2, dropout=p))
        data.train(model, descend.Adam(model.parameters(), lr=1e-3), small, 800 if ctx.full else 200,
                   generator=ctx.generator(1))
        train_loss, train_accuracy = data.evaluate(model, small.x_train, small.y_train)
        test_loss, test_accuracy = data.evaluate(model, small.x_test, small.y_test)
        gaps[p] = {"train_accuracy": train_accuracy, "test_accuracy": test_accuracy, "train_loss": train_loss,
                   "test_loss": test_loss, "loss_gap": test_loss - train_loss}
    if ctx.figures_wanted:
        draw(ctx, scaled, unscaled, gaps)
    deviation = max(abs(v - 1) for v in scaled.values())
    summary = (f"Mean activation ratio train/test with Dropout: {', '.join(f'p={p}: {v:.4f}' for p, v in scaled.items())}"
               f" (mask only: {', '.join(f'{v:.2f}' for v in unscaled.values())}). Test − train cross-entropy: "
               f"{gaps[0.0]['loss_gap']:.3f} nats without dropout, {gaps[0.5]['loss_gap']:.3f} with p = 0.5 (test "
               f"accuracy {gaps[0.0]['test_accuracy']:.3f} against {gaps[0.5]['test_accuracy']:.3f}).")
    return Result({"dropout-scaling-keeps-expected-activation": deviation,
                   "dropout-narrows-train-test-gap": gaps[0.0]["loss_gap"] - gaps[0.5]["loss_gap"]}, summary,
                  {"scaled_ratio": scaled, "unscaled_ratio": unscaled, "accuracy": gaps})


def draw(ctx: Context, scaled: dict, unscaled: dict, gaps: dict) -> None:
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    x = range(len(RATES))
    left.bar([i - 0.2 for i in x], list(scaled.values()), 0.4, label="torch.nn.Dropout (scaled by 1/(1−p))",
             color=ctx.color("scaled by 1/(1−p)"))
    left.bar([i + 0.2 for i in x], list(unscaled.values()), 0.4, label="mask only (no scaling)",
             color=ctx.color("mask only"))
    left.axhline(1.0, color="k", linestyle="--"), left.set_xticks(list(x), [f"p={p}" for p in RATES])
    left.set_xlabel("drop probability p"), left.set_ylabel("mean activation in training / at test (ratio)")
    left.legend(fontsize=8), left.set_title("expected activation with and without the 1/(1−p) factor")
    right.bar([0, 1], [gaps[0.0]["train_loss"], gaps[0.5]["train_loss"]], 0.35, label="train",
              color=ctx.color("train"))
    right.bar([0.35, 1.35], [gaps[0.0]["test_loss"], gaps[0.5]["test_loss"]], 0.35, label="test",
              color=ctx.color("test"))
    right.set_xticks([0.17, 1.17], ["no dropout", "dropout p=0.5"]), right.legend()
    right.set_ylabel("cross-entropy (nats)"), right.set_title("MLP 64-128-128-10 on 150 digits, first seed")
    ctx.save(figure, "dropout", caption="Left: with the 1/(1−p) factor the mean activation is unchanged; the mask "
             "alone shrinks it to 1−p. Right: with dropout the train loss stays higher and the test loss lower: a "
             "narrower gap.")
