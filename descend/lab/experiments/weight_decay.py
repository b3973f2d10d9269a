"""Weight decay in Adam (the lecture's §4.5 closing remark): coupled L2 against decoupled decay (AdamW)."""
from __future__ import annotations

from functools import lru_cache

import matplotlib.pyplot as plt
import torch

import descend

from .. import data, tuning
from ..claims import BEYOND, LECTURE, Claim
from ..core import Context, Result

NAME = "weight-decay"
ORDER = 11
TITLE = "L2 in Adam vs decoupled weight decay (AdamW)"
COST = {"tune": 2.0, "run": 0.4}

TRAIN, VALIDATION = 200, 200  # small enough to overfit, so that regularization can matter; λ chosen on validation
STEPS = {"quick": 200, "full": 1000}
LR = 1e-3  # Adam's default (Algorithm 1), for both: the claims are about λ
LAMBDAS = {"Adam + L2": (1e-4, 1e-3, 1e-2), "AdamW": (1e-2, 1e-1, 1.0)}
SHARED = 1e-2  # λ run by both, for the equal-λ comparison
_DECOUPLED = f"{LECTURE}, §4.5, the closing remark"

CLAIMS = [
    Claim(id="l2-in-adam-is-not-weight-decay",
          source=f"{BEYOND}: Loshchilov & Hutter, Decoupled Weight Decay Regularization (ICLR 2019), §2; the decay "
                 f"step itself: {_DECOUPLED}",
          statement="For gradient descent an L2 penalty is the same as multiplying the weights by (1 − αλ); inside "
                    "Adam the penalty's gradient is divided by √v̂, so it is not the same as decaying the weights.",
          quote="paraphrase", beyond_course=True,
          measurement=f"relative difference of the final weight norms of Adam + L2 and AdamW at the same λ = {SHARED} "
                      f"(MLP 64-64-64-10 on {TRAIN} digits, {STEPS['quick']} steps, lr {LR})",
          criterion="> 0.05", threshold=0.05, direction=">", scale="nonnegative", deterministic=True),
    Claim(id="adamw-tuned-at-least-matches-adam-l2",
          source=f"{BEYOND}: Loshchilov & Hutter (2019); the decay step added to ADAM: {_DECOUPLED}",
          statement="For example we may consider popular gradient based algorithms such as ADAM, and in each case add "
                    "an additional step which incorporates multiplying the weights by a constant less than but close "
                    "to unity: with λ tuned, this decoupled decay (AdamW) generalizes at least as well as an L2 "
                    "penalty in Adam.",
          quote="paraphrase", beyond_course=True,
          measurement=f"test cross-entropy of Adam + L2 divided by AdamW's, each at its best λ (chosen on "
                      f"{VALIDATION} validation digits from a grid widened until the best is inside; MLP on {TRAIN} "
                      "training digits, which it overfits without regularization)",
          criterion="ratio > 0.95 (AdamW's test loss at most 5% above Adam + L2's)", threshold=0.95, direction=">",
          scale="ratio", compares=tuple(LAMBDAS)),
]


def splits(seed: int) -> tuple[data.Split, data.Split]:
    full = data.digits(seed)
    train_x, train_y = full.x_train[:TRAIN], full.y_train[:TRAIN]
    held_x, held_y = full.x_train[TRAIN:TRAIN + VALIDATION], full.y_train[TRAIN:TRAIN + VALIDATION]
    return (data.Split(train_x, train_y, full.x_test, full.y_test), data.Split(train_x, train_y, held_x, held_y))


def train(split: data.Split, seed: int, name: str, lam: float, steps: int) -> dict:
    torch.manual_seed(seed)
    model = data.mlp(64, 64, 10, depth=2)
    optimizer = (descend.Adam if name == "Adam + L2" else descend.AdamW)(model.parameters(), lr=LR, weight_decay=lam)
    data.train(model, optimizer, split, steps, generator=torch.Generator().manual_seed(seed))
    norm = torch.cat([p.detach().flatten() for p in model.parameters()]).norm().item()
    test_loss, test_accuracy = data.evaluate(model, split.x_test, split.y_test)
    return {"weight_norm": norm, "test_loss": test_loss, "test_accuracy": test_accuracy,
            "train_loss": data.evaluate(model, split.x_train, split.y_train)[0]}


@lru_cache(maxsize=2)
def equal_lambda_norms(full: bool) -> dict[str, dict]:
    """Both at the shared λ on seed 0: deterministic, computed once per process."""
    test, _ = splits(0)
    return {name: train(test, 0, name, SHARED, STEPS["full" if full else "quick"]) for name in LAMBDAS}


def tune(ctx: Context) -> dict:
    steps = STEPS["full" if ctx.full else "quick"]
    _, validation = splits(ctx.seed)
    return {name: tuning.search(tuning.one_at_a_time(
        lambda weight_decay, name=name: train(validation, ctx.seed, name, weight_decay, steps)["test_loss"]),
        [tuning.Axis("weight_decay", grid, kind="log0")], metric=f"validation cross-entropy after {steps} steps")
        for name, grid in LAMBDAS.items()}


def run(ctx: Context) -> Result:
    steps = STEPS["full" if ctx.full else "quick"]
    test, _ = splits(ctx.seed)
    tuned = {name: train(test, ctx.seed, name, ctx.tuned[name]["best"]["weight_decay"], steps) for name in LAMBDAS}
    shared = equal_lambda_norms(ctx.full)
    norms = {name: shared[name]["weight_norm"] for name in LAMBDAS}
    if ctx.figures_wanted:
        figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.3))
        for name in LAMBDAS:
            record = ctx.tuned[name]
            grid = record["grid"]["weight_decay"]
            scores = {row["weight_decay"]: row["score"] for row in record["scores"]}
            right.semilogx(grid, [scores[lam] for lam in grid], "o-", label=f"{name} (validation)",
                           color=ctx.color("Adam" if name == "Adam + L2" else name))
        left.bar(list(norms), list(norms.values()), color=[ctx.color("Adam"), ctx.color("AdamW")])
        left.set_title(f"final weight norm at the same λ = {SHARED}"), left.set_ylabel("‖θ‖₂ (all parameters)")
        right.set_title("validation loss against λ (tuning seed)"), right.set_ylabel("validation cross-entropy (nats)")
        right.set_xlabel("λ (log scale)"), right.legend(fontsize=8)
        ctx.save(figure, "decay", caption="Left: at the same λ the two leave different weight norms: coupled L2 is not "
                 "decay. Right: each one's validation loss over its own λ grid; the claim compares their test losses "
                 "at the best λ of each.", claims=[c.id for c in CLAIMS])
    summary = (f"At λ = {SHARED}: weight norm {norms['Adam + L2']:.2f} with Adam + L2 and {norms['AdamW']:.2f} with "
               "AdamW. At each one's best λ: " + ", ".join(
                   f"{name} λ {ctx.tuned[name]['best']['weight_decay']:g}: test loss {r['test_loss']:.3f}, accuracy "
                   f"{r['test_accuracy']:.3f}" for name, r in tuned.items()) + ".")
    return Result({"l2-in-adam-is-not-weight-decay": abs(norms["Adam + L2"] - norms["AdamW"]) / norms["AdamW"],
                   "adamw-tuned-at-least-matches-adam-l2": tuned["Adam + L2"]["test_loss"] / tuned["AdamW"]["test_loss"]},
                  summary, {"tuned": tuned, "norms_at_equal_lambda": norms})
