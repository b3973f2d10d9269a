"""SAM's promise (the slide “Optimization for Better Generalization?”): better generalization, each optimizer tuned."""
from __future__ import annotations

import matplotlib.pyplot as plt
import torch

import descend

from .. import data, tuning
from ..claims import BEYOND, SLIDES, Claim
from ..core import Context, Result

NAME = "sam-generalization"
TITLE = "SAM generalizes better, not only flatter"
ORDER = 13  # beside the lab's experiment on the same topic (ties sort by NAME)
COST = {"tune": 3.0, "run": 0.4}

TRAIN, VALIDATION = 300, 200
STEPS = {"quick": 150, "full": 1000}
LR_GRID, RHO_GRID = (0.01, 0.03, 0.1), (0.03, 0.1, 0.3)

CLAIMS = [
    Claim(id="sam-generalizes-better",
          source=f"{BEYOND}: Foret et al., Sharpness-Aware Minimization (ICLR 2021); the course asks it in {SLIDES}, "
                 "slide “Optimization for Better Generalization?” (the SAM problem, eq. (1))",
          statement="Minimizing the sharpness-aware loss max_{‖ε‖≤ρ} L_S(w + ε) selects parameters that generalize "
                    "better than minimizing L_S(w).",
          quote="paraphrase", beyond_course=True,
          measurement=f"test accuracy of SAM(SGD) minus plain SGD's, in percentage points (MLP 64-64-10 on {TRAIN} "
                      f"training digits, 450 test digits, momentum 0.9, batch 32, {STEPS['quick']} steps; SGD's lr, and "
                      f"SAM's lr and ρ, chosen on {VALIDATION} validation digits from grids widened until the best is "
                      "inside)",
          criterion="> 0 points", threshold=0.0, direction=">", compares=("SGD", "SAM")),
]


def splits(seed: int) -> tuple[data.Split, data.Split]:
    full = data.digits(seed)
    train_x, train_y = full.x_train[:TRAIN], full.y_train[:TRAIN]
    held_x, held_y = full.x_train[TRAIN:TRAIN + VALIDATION], full.y_train[TRAIN:TRAIN + VALIDATION]
    return (data.Split(train_x, train_y, full.x_test, full.y_test), data.Split(train_x, train_y, held_x, held_y))


def train(split: data.Split, seed: int, name: str, lr: float, rho: float | None, steps: int):
    torch.manual_seed(seed)
    model = data.mlp(64, 64, 10, depth=1)
    kwargs = dict(lr=lr, momentum=0.9, nonfinite="skip")
    optimizer = (descend.SAM(model.parameters(), descend.SGD, rho=rho, **kwargs) if name == "SAM"
                 else descend.SGD(model.parameters(), **kwargs))
    curve = data.train(model, optimizer, split, steps, batch_size=32, generator=torch.Generator().manual_seed(seed),
                       record_every=5)
    train_loss, train_accuracy = data.evaluate(model, split.x_train, split.y_train)
    test_loss, test_accuracy = data.evaluate(model, split.x_test, split.y_test)
    return {"train_loss": train_loss, "train_accuracy": train_accuracy, "test_loss": test_loss,
            "test_accuracy": test_accuracy}, curve


def tune(ctx: Context) -> dict:
    steps = STEPS["full" if ctx.full else "quick"]
    _, validation = splits(ctx.seed)

    def score(name):
        def validation_loss(lr, rho=None):
            loss = train(validation, ctx.seed, name, lr, rho, steps)[0]["test_loss"]
            return loss if loss == loss else float("inf")
        return tuning.one_at_a_time(validation_loss)

    metric = f"validation cross-entropy after {steps} steps"
    return {"SGD": tuning.search(score("SGD"), [tuning.lr_axis(*LR_GRID)], metric),
            "SAM": tuning.search(score("SAM"), [tuning.lr_axis(*LR_GRID), tuning.Axis("rho", RHO_GRID)], metric)}


def run(ctx: Context) -> Result:
    test, _ = splits(ctx.seed)
    steps = STEPS["full" if ctx.full else "quick"]
    numbers, curves = {}, {}
    for name in ("SGD", "SAM"):
        best = ctx.tuned[name]["best"]
        numbers[name], curves[name] = train(test, ctx.seed, name, best["lr"], best.get("rho"), steps)
    gain = 100 * (numbers["SAM"]["test_accuracy"] - numbers["SGD"]["test_accuracy"])
    if ctx.figures_wanted:
        figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
        for name, losses in curves.items():
            left.semilogy([5 * i for i in range(len(losses))], losses, color=ctx.color(name),
                          label=f"{name} ({', '.join(f'{k} {v:g}' for k, v in ctx.tuned[name]['best'].items())})")
        left.set_xlabel("step"), left.set_ylabel("mini-batch training loss (nats)"), left.legend(fontsize=8)
        left.set_title(f"MLP on {TRAIN} digits, each at its tuned setting")
        names = list(numbers)
        for offset, key in ((-0.2, "train_accuracy"), (0.2, "test_accuracy")):
            right.bar([i + offset for i in range(len(names))], [numbers[n][key] for n in names], 0.4,
                      color=[ctx.color(n) for n in names], alpha=1.0 if key == "test_accuracy" else 0.45,
                      label=key.replace("_", " "))
        right.set_xticks(range(len(names)), names), right.set_ylim(0.8, 1.005)
        right.set_ylabel("accuracy (fraction of digits)"), right.legend(fontsize=8)
        right.set_title("train (pale) and test (solid) accuracy, first seed")
        ctx.save(figure, "generalization", caption="SAM against plain SGD, each at the setting its validation loss "
                 "chose: both fit the small training set; the claim is about the test accuracy (solid bars).",
                 claims=["sam-generalizes-better"])
    summary = (f"Test accuracy: SGD {numbers['SGD']['test_accuracy']:.3f}, SAM {numbers['SAM']['test_accuracy']:.3f} "
               f"({gain:+.1f} points); test loss {numbers['SGD']['test_loss']:.3f} against "
               f"{numbers['SAM']['test_loss']:.3f}; train accuracy {numbers['SGD']['train_accuracy']:.3f} and "
               f"{numbers['SAM']['train_accuracy']:.3f}. The flatness half of the claim is sam-flatness's.")
    return Result({"sam-generalizes-better": gain}, summary, {**numbers, "steps": steps})
