"""Weight decay in Adam: coupled L2 against decoupled decay (AdamW) (seed 002 §4.5)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import torch

import descend

from .. import data
from ..claims import Claim
from ..core import Context, Result

NAME = "weight-decay"
ORDER = 11
TITLE = "L2 in Adam vs decoupled weight decay (AdamW)"
CLAIMS = [
    Claim(id="l2-in-adam-is-not-weight-decay",
          source="seed 002 §4.5, eq. 4.26 and the closing remark (“add an additional step which incorporates "
                 "multiplying the weights by a constant”)",
          statement="For gradient descent an L2 penalty is the same as multiplying the weights by (1 − αλ); inside "
                    "Adam the penalty's gradient is divided by √v̂, so it is not the same as decaying the weights.",
          measurement="relative difference of the final weight norms of Adam + L2 and AdamW at the same λ = 0.01 "
                      "(MLP on digits, 200 steps)",
          criterion="> 0.05", threshold=0.05, direction=">"),
    Claim(id="adamw-tuned-at-least-matches-adam-l2",
          source="seed 002 §4.5 (weight decay as an extra step of ADAM); Loshchilov & Hutter 2019",
          statement="With λ tuned on a grid, decoupled weight decay (AdamW) reaches at least the test accuracy of "
                    "Adam with an L2 penalty.",
          measurement="best test accuracy over λ ∈ {0.01, 0.1, 1} for AdamW minus the best over λ ∈ {1e-4, 1e-3, "
                      "0.01} for Adam + L2",
          criterion="difference > −0.01 (AdamW no worse than one accuracy point)", threshold=-0.01, direction=">"),
]

LAMBDAS = {"Adam + L2": (1e-4, 1e-3, 1e-2), "AdamW": (1e-2, 1e-1, 1.0)}
SHARED = 1e-2  # λ run by both, for the equal-λ comparison


def run(ctx: Context) -> Result:
    split = data.digits(ctx.seed)
    steps = 1000 if ctx.full else 200
    results: dict[str, dict[float, dict]] = {name: {} for name in LAMBDAS}
    runs = [(name, lam) for name, grid in LAMBDAS.items() for lam in grid]
    for name, lam in ctx.track(runs):
        torch.manual_seed(ctx.seed)
        model = ctx.place(data.mlp(64, 64, 10, depth=2))
        optimizer = (descend.Adam if name == "Adam + L2" else descend.AdamW)(model.parameters(), lr=1e-3,
                                                                             weight_decay=lam)
        data.train(model, optimizer, split, steps, generator=ctx.generator())
        norm = torch.cat([p.detach().flatten() for p in model.parameters()]).norm().item()
        results[name][lam] = {"weight_norm": norm, "test_accuracy": data.evaluate(model, split.x_test, split.y_test)[1]}
    best = {name: max(v["test_accuracy"] for v in results[name].values()) for name in LAMBDAS}
    norms = {name: results[name][SHARED]["weight_norm"] for name in LAMBDAS}
    if ctx.figures_wanted:
        figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.3))
        for name, by_lambda in results.items():
            lambdas = sorted(by_lambda)
            left.semilogx(lambdas, [by_lambda[lam]["weight_norm"] for lam in lambdas], "o-", label=name,
                          color=ctx.color("Adam" if name == "Adam + L2" else name))
            right.semilogx(lambdas, [by_lambda[lam]["test_accuracy"] for lam in lambdas], "o-", label=name,
                           color=ctx.color("Adam" if name == "Adam + L2" else name))
        left.set_title("final weight norm"), left.set_ylabel("‖θ‖₂ (all parameters)")
        right.set_title("test accuracy"), right.set_ylabel("accuracy (fraction correct)")
        for axis in (left, right):
            axis.set_xlabel("λ (log scale)"), axis.legend()
        ctx.save(figure, "decay", caption="At the shared λ = 0.01 the two leave different weight norms (left): "
                 "coupled L2 is not decay. Each tuned over its own λ grid, they reach similar test accuracy (right).")
    summary = (f"At λ = {SHARED}: weight norm {norms['Adam + L2']:.2f} with Adam + L2 and {norms['AdamW']:.2f} with "
               f"AdamW. Best test accuracy over the grids {LAMBDAS}: Adam + L2 {best['Adam + L2']:.3f}, AdamW "
               f"{best['AdamW']:.3f}.")
    return Result({"l2-in-adam-is-not-weight-decay": abs(norms["Adam + L2"] - norms["AdamW"]) / norms["AdamW"],
                   "adamw-tuned-at-least-matches-adam-l2": best["AdamW"] - best["Adam + L2"]}, summary,
                  {"runs": results, "best_test_accuracy": best, "norms_at_equal_lambda": norms})
