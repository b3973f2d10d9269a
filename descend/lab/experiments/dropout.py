"""Dropout: the 1/(1−p) scaling keeps the expected activation, and dropout narrows the train/test gap."""
from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from torch import nn

import descend

from .. import data
from ..core import Context, Result

NAME = "dropout"
TITLE = "9. Dropout's 1/(1−p) scaling and the train/test gap"
CLAIM = ("torch.nn.Dropout scales kept units by 1/(1−p), so the mean activation in training equals the one at test "
         "time (within 1%), and training with dropout narrows the gap between train and test accuracy.")

RATES = (0.1, 0.3, 0.5, 0.8)


def run(ctx: Context) -> Result:
    activations = torch.rand(1_000_000, generator=ctx.generator()) + 0.5
    scaled = {p: (nn.Dropout(p).train()(activations).mean() / activations.mean()).item() for p in RATES}
    unscaled = {p: ((nn.Dropout(p).train()(activations) != 0).float() * activations).mean().item()
                / activations.mean().item() for p in RATES}

    full = data.digits(ctx.seed)
    small = data.Split(full.x_train[:150], full.y_train[:150], full.x_test, full.y_test)  # small enough to overfit
    seeds = range(ctx.seed, ctx.seed + (5 if ctx.full else 3))
    gaps = {}
    for p in (0.0, 0.5):
        runs = []
        for seed in ctx.track(seeds, desc=f"{NAME} p={p}"):
            torch.manual_seed(seed)
            model = ctx.place(data.mlp(64, 256, 10, depth=2, dropout=p))
            data.train(model, descend.Adam(model.parameters(), lr=1e-3), small, 600,
                       generator=torch.Generator().manual_seed(seed))
            runs.append((data.evaluate(model, small.x_train, small.y_train)[1],
                         *data.evaluate(model, small.x_test, small.y_test)))
        train_accuracy, test_loss, test_accuracy = (sum(r[i] for r in runs) / len(runs) for i in range(3))
        gaps[p] = {"train_accuracy": train_accuracy, "test_accuracy": test_accuracy, "test_loss": test_loss,
                   "gap": train_accuracy - test_accuracy, "seeds": len(runs)}

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    x = range(len(RATES))
    left.bar([i - 0.2 for i in x], list(scaled.values()), 0.4, label="torch.nn.Dropout (scaled by 1/(1−p))")
    left.bar([i + 0.2 for i in x], list(unscaled.values()), 0.4, label="mask only (no scaling)")
    left.axhline(1.0, color="k", linestyle="--"), left.set_xticks(list(x), [f"p={p}" for p in RATES])
    left.set_ylabel("mean in training / mean at test"), left.legend(fontsize=8)
    labels = ["no dropout", "dropout p=0.5"]
    right.bar([0, 1], [gaps[0.0]["train_accuracy"], gaps[0.5]["train_accuracy"]], 0.35, label="train")
    right.bar([0.35, 1.35], [gaps[0.0]["test_accuracy"], gaps[0.5]["test_accuracy"]], 0.35, label="test")
    right.set_xticks([0.17, 1.17], labels), right.set_ylim(0.8, 1.01), right.legend()
    right.set_title(f"MLP 64-256-256-10 on 150 digits, mean of {len(seeds)} seeds")
    ctx.save(figure, "dropout")

    expectation_kept = all(abs(v - 1) < 0.01 for v in scaled.values())
    held = expectation_kept and gaps[0.5]["gap"] < gaps[0.0]["gap"]
    summary = (f"Mean activation ratio train/test with Dropout: {', '.join(f'p={p}: {v:.4f}' for p, v in scaled.items())}"
               f" (mask only: {', '.join(f'{v:.2f}' for v in unscaled.values())}). Train−test accuracy gap: "
               f"{gaps[0.0]['gap']:.3f} without dropout, {gaps[0.5]['gap']:.3f} with p = 0.5 (test loss "
               f"{gaps[0.0]['test_loss']:.3f} against {gaps[0.5]['test_loss']:.3f}; mean of {len(seeds)} seeds).")
    return Result(held, summary, {"scaled_ratio": scaled, "unscaled_ratio": unscaled, "accuracy": gaps})
