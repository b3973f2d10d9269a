"""SAM's promise (seed 004): not only a flatter minimum but better generalization."""
from __future__ import annotations

import matplotlib.pyplot as plt
import torch

import descend

from .. import data
from ..claims import Claim
from ..core import Context, Result

NAME = "sam-generalization"
TITLE = "SAM generalizes better, not only flatter"
ORDER = 13  # beside the lab's experiment on the same topic (ties sort by NAME)

TRAIN_SIZE, RHO, LR = 300, 0.1, 0.05
STEPS = {"quick": 200, "full": 1000}

CLAIMS = [
    Claim(id="sam-generalizes-better", source="seed 004, 'Optimization for Better Generalization?' (SAM, eq. 1)",
          statement="Minimizing the sharpness-aware loss max_{‖ε‖≤ρ} L_S(w + ε) selects parameters that generalize "
                    "better than minimizing L_S(w).",
          measurement=f"test accuracy of SAM(SGD, ρ = {RHO}) minus plain SGD's, in percentage points (MLP 64-64-10 on "
                      f"{TRAIN_SIZE} training digits, 450 test digits, same lr {LR}, momentum 0.9, batch 32 and steps)",
          criterion="> 0 points", threshold=0.0, direction=">"),
]


def run(ctx: Context) -> Result:
    full = data.digits(ctx.seed)
    split = data.Split(full.x_train[:TRAIN_SIZE], full.y_train[:TRAIN_SIZE], full.x_test, full.y_test)
    steps = STEPS["full" if ctx.full else "quick"]
    numbers, curves = {}, {}
    for name in ("SGD", "SAM"):
        torch.manual_seed(ctx.seed)
        model = data.mlp(64, 64, 10, depth=1)
        kwargs = dict(lr=LR, momentum=0.9)
        optimizer = (descend.SAM(model.parameters(), descend.SGD, rho=RHO, **kwargs) if name == "SAM"
                     else descend.SGD(model.parameters(), **kwargs))
        curves[name] = data.train(model, optimizer, split, steps, batch_size=32,
                                  generator=torch.Generator().manual_seed(ctx.seed), record_every=5)
        train_loss, train_accuracy = data.evaluate(model, split.x_train, split.y_train)
        test_loss, test_accuracy = data.evaluate(model, split.x_test, split.y_test)
        numbers[name] = {"train_loss": train_loss, "train_accuracy": train_accuracy, "test_loss": test_loss,
                         "test_accuracy": test_accuracy}
    gain = 100 * (numbers["SAM"]["test_accuracy"] - numbers["SGD"]["test_accuracy"])
    if ctx.figures_wanted:
        figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
        for name, losses in curves.items():
            left.semilogy([5 * i for i in range(len(losses))], losses, color=ctx.color(name), label=name)
        left.set_xlabel("step"), left.set_ylabel("mini-batch training loss (nats)"), left.legend(fontsize=8)
        left.set_title(f"MLP on {TRAIN_SIZE} digits")
        names = list(numbers)
        for offset, key in ((-0.2, "train_accuracy"), (0.2, "test_accuracy")):
            right.bar([i + offset for i in range(len(names))], [numbers[n][key] for n in names], 0.4,
                      color=[ctx.color(n) for n in names], alpha=1.0 if key == "test_accuracy" else 0.45,
                      label=key.replace("_", " "))
        right.set_xticks(range(len(names)), names), right.set_ylim(0.8, 1.005)
        right.set_ylabel("accuracy (fraction of digits)"), right.legend(fontsize=8)
        right.set_title("train (pale) and test (solid) accuracy")
        ctx.save(figure, "generalization", caption="SAM against plain SGD with the same settings: both fit the small "
                 "training set; the claim is about the test accuracy (solid bars).")
    summary = (f"Test accuracy: SGD {numbers['SGD']['test_accuracy']:.3f}, SAM {numbers['SAM']['test_accuracy']:.3f} "
               f"({gain:+.1f} points); test loss {numbers['SGD']['test_loss']:.3f} against "
               f"{numbers['SAM']['test_loss']:.3f}; train accuracy {numbers['SGD']['train_accuracy']:.3f} and "
               f"{numbers['SAM']['train_accuracy']:.3f}. The flatness half of the claim is sam-flatness's.")
    return Result({"sam-generalizes-better": gain}, summary, {**numbers, "steps": steps, "rho": RHO})
