"""Weight decay in Adam: coupled L2 against decoupled decay (AdamW)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import torch

import descend

from .. import data
from ..core import Context, Result

NAME = "weight-decay"
TITLE = "11. L2 in Adam vs decoupled weight decay (AdamW)"
CLAIM = ("L2 regularization inside Adam is not weight decay: at equal λ the two leave different weight norms (coupled "
         "decay is divided by √v̂), and with λ tuned on a grid AdamW reaches at least the test accuracy of Adam + L2 "
         "(Loshchilov & Hutter 2019).")

LAMBDAS = {"Adam + L2": (1e-4, 1e-3, 1e-2), "AdamW": (1e-2, 1e-1, 1.0)}
SHARED = (1e-2,)  # λ run by both, for the equal-λ comparison


def run(ctx: Context) -> Result:
    split = data.digits(ctx.seed)
    steps = 1500 if ctx.full else 600
    results = {name: {} for name in LAMBDAS}
    runs = [(name, lam) for name, grid in LAMBDAS.items() for lam in sorted(set(grid) | set(SHARED))]
    for name, lam in ctx.track(runs):
        torch.manual_seed(ctx.seed)
        model = ctx.place(data.mlp(64, 128, 10, depth=2))
        optimizer = (descend.Adam if name == "Adam + L2" else descend.AdamW)(model.parameters(), lr=1e-3,
                                                                             weight_decay=lam)
        data.train(model, optimizer, split, steps, generator=ctx.generator())
        norm = torch.cat([p.detach().flatten() for p in model.parameters()]).norm().item()
        results[name][lam] = {"weight_norm": norm, "test_accuracy": data.evaluate(model, split.x_test, split.y_test)[1]}

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.3))
    for name, by_lambda in results.items():
        lambdas = sorted(by_lambda)
        left.semilogx(lambdas, [by_lambda[lam]["weight_norm"] for lam in lambdas], "o-", label=name)
        right.semilogx(lambdas, [by_lambda[lam]["test_accuracy"] for lam in lambdas], "o-", label=name)
    left.set_title("final weight norm"), right.set_title("test accuracy")
    for axis in (left, right):
        axis.set_xlabel("λ"), axis.legend()
    ctx.save(figure, "decay")

    best = {name: max(results[name][lam]["test_accuracy"] for lam in LAMBDAS[name]) for name in LAMBDAS}
    equal = SHARED[0]
    norms = {name: results[name][equal]["weight_norm"] for name in LAMBDAS}
    held = abs(norms["Adam + L2"] - norms["AdamW"]) / norms["AdamW"] > 0.05 and best["AdamW"] >= best["Adam + L2"]
    summary = (f"At λ = {equal}: weight norm {norms['Adam + L2']:.2f} with Adam + L2 and {norms['AdamW']:.2f} with "
               f"AdamW. Best test accuracy over the grids {LAMBDAS}: Adam + L2 {best['Adam + L2']:.3f}, AdamW "
               f"{best['AdamW']:.3f}.")
    return Result(held, summary, {"runs": results, "best_test_accuracy": best, "norms_at_equal_lambda": norms})
