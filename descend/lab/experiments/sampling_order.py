"""The order of the mini-batches (the lecture's §4.2): shuffled anew every epoch, one fixed order, or drawn with
replacement, each at its best constant learning rate."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

import descend

from .. import data, plots, tuning
from ..claims import BEYOND, LECTURE, Claim
from ..core import Context, Result

NAME = "sampling-order"
ORDER = 8
TITLE = "Mini-batch order: reshuffled every epoch, a fixed order, or with replacement"
COST = {"tune": 1.5, "run": 0.4}

EPOCHS = {"quick": 10, "full": 30}
BATCH = 64
LR_GRID = (0.003, 0.01, 0.03)
SCHEMES = ("reshuffled every epoch", "one fixed order", "with replacement")
METRIC = "excess full training loss over the least-squares optimum at the end of the last epoch"

CLAIMS = [
    Claim(id="reshuffling-beats-a-fixed-order",
          source=f"{LECTURE}, §4.2, “Working with Mini-batches and the Concept of Epochs”",
          statement="Note that one may also randomly shuffle the data (assign new mini-batches) after every epoch to "
                    "reduce the correlation between the epochs and reduce bias in the optimization process.",
          quote="verbatim",
          measurement=f"{METRIC} ({EPOCHS['quick']} epochs of SGD, batch {BATCH}, least squares from digits' pixels to "
                      "one-hot labels): one order shuffled once and kept, divided by a new order every epoch, each at "
                      "its best constant lr of a grid widened until the best is inside",
          criterion="ratio > 1 (reshuffling ends closer to the optimum)", threshold=1.0, direction=">", scale="ratio",
          compares=SCHEMES[:2]),
    Claim(id="reshuffling-beats-sampling-with-replacement",
          source=f"{BEYOND}: random reshuffling converges faster than sampling with replacement (Gürbüzbalaban, "
                 "Ozdaglar & Parrilo, Why random reshuffling beats stochastic gradient descent, Math. Programming "
                 f"2021); the course's mini-batches are distinct subsets of a shuffled order, {LECTURE}, §4.2",
          statement="Passing over a new random order every epoch ends closer to the optimum than drawing every "
                    "mini-batch independently, with replacement.",
          quote="paraphrase", beyond_course=True,
          measurement=f"the same excess loss: mini-batches drawn with replacement divided by a new order every epoch",
          criterion="ratio > 1", threshold=1.0, direction=">", scale="ratio", compares=(SCHEMES[0], SCHEMES[2])),
]


def problem(seed: int):
    split = data.digits(seed)
    x, y = split.x_train, torch.nn.functional.one_hot(split.y_train, 10).float()
    optimum = torch.linalg.lstsq(x.double(), y.double(), driver="gelsd").solution.float()  # some pixels are always 0
    floor = ((x @ optimum - y) ** 2).sum(1).mean().item()
    return x, y, floor


def order_of(scheme: str, n: int, epochs: int, generator: torch.Generator) -> torch.Tensor:
    """The sample indices in the order SGD visits them, epoch after epoch."""
    if scheme == "with replacement":
        return torch.randint(0, n, (epochs * n,), generator=generator)
    if scheme == "one fixed order":
        return torch.randperm(n, generator=generator).repeat(epochs)
    return torch.cat([torch.randperm(n, generator=generator) for _ in range(epochs)])


def train(seed: int, scheme: str, lr: float, epochs: int, curve: bool = False) -> tuple[float, list[float]]:
    """(excess loss at the end, the excess loss at every epoch's end when ``curve``)."""
    x, y, floor = problem(seed)
    n = len(x)
    per_epoch = n // BATCH  # the last, partial batch of an epoch is left out, the same for every scheme
    order = order_of(scheme, n, epochs, torch.Generator().manual_seed(seed)).view(epochs, n)[:, :per_epoch * BATCH]
    w = torch.zeros(64, 10, requires_grad=True)
    optimizer = descend.SGD([w], lr=lr, nonfinite="ignore")
    excess = []
    for done, epoch in enumerate(order, start=1):
        for index in epoch.view(per_epoch, BATCH):
            optimizer.zero_grad()
            ((x[index] @ w - y[index]) ** 2).sum(1).mean().backward()
            optimizer.step()
        if curve or done == epochs:
            with torch.no_grad():
                excess.append(((x @ w - y) ** 2).sum(1).mean().item() - floor)
    final = excess[-1]
    return (final if np.isfinite(final) else float("inf")), excess


def tune(ctx: Context) -> dict:
    epochs = EPOCHS["full" if ctx.full else "quick"]
    return {scheme: tuning.search(tuning.one_at_a_time(lambda lr, scheme=scheme: train(ctx.seed, scheme, lr,
                                                                                        epochs)[0]),
                                  [tuning.lr_axis(*LR_GRID)], metric=METRIC) for scheme in SCHEMES}


def run(ctx: Context) -> Result:
    epochs = EPOCHS["full" if ctx.full else "quick"]
    results = {scheme: train(ctx.seed, scheme, ctx.tuned[scheme]["best"]["lr"], epochs, curve=ctx.figures_wanted)
               for scheme in SCHEMES}
    excess = {scheme: value[0] for scheme, value in results.items()}
    if ctx.figures_wanted:
        figure, axis = plt.subplots(figsize=(7.5, 4.4))
        for scheme, (_, curve) in results.items():
            axis.semilogy(range(1, len(curve) + 1), curve, "o-", color=ctx.color(scheme),
                          label=f"{scheme} (lr {ctx.tuned[scheme]['best']['lr']:g})")
        axis.set_xlabel("epoch"), axis.set_ylabel("excess training loss over the optimum (log)")
        axis.set_title(f"least squares on digits, SGD batch {BATCH}, each at its best lr"), axis.legend(fontsize=8)
        ctx.save(figure, "order", caption="The same SGD with three orders of the mini-batches, each at its own best "
                 "learning rate: how far above the least-squares optimum each stands at every epoch's end.",
                 claims=[c.id for c in CLAIMS])
        ctx.interactive(plots.curves({scheme: (list(range(1, len(c) + 1)), c) for scheme, (_, c) in results.items()},
                                     "excess training loss at each epoch's end", "epoch", "excess loss", log_y=True),
                        "order-interactive", caption="The same curves, interactive.", claims=[c.id for c in CLAIMS])
    summary = (f"Excess training loss after {epochs} epochs: "
               + ", ".join(f"{scheme} {value:.3g} (lr {ctx.tuned[scheme]['best']['lr']:g})"
                           for scheme, value in excess.items()) + ".")
    return Result({"reshuffling-beats-a-fixed-order": excess["one fixed order"] / excess["reshuffled every epoch"],
                   "reshuffling-beats-sampling-with-replacement":
                       excess["with replacement"] / excess["reshuffled every epoch"]}, summary, {"excess": excess})
