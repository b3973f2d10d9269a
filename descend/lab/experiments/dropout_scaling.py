"""Dropout as seed 002 §4.4 writes it: training pass (4.22) with test-time weight scaling (4.23), inverted dropout
(4.24)–(4.25), and what SGD and Adam do to the weights of a dropped unit."""
from __future__ import annotations

from functools import lru_cache

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

import descend

from .. import data
from ..claims import LECTURE, Claim
from ..core import Context, Result

NAME = "dropout-scaling"
TITLE = "Dropout: test-time weight scaling, inverted dropout, and a dropped unit's weights"
ORDER = 9  # beside the lab's experiment on the same topic (ties sort by NAME)

KEEP = 0.5  # p_keep of the hidden layer
HIDDEN = 128
MASKS = 200  # Monte-Carlo masks for the ensemble average

COST = {"run": 0.5}

CLAIMS = [
    Claim(id="dropout-weight-scaling-approximates-mask-average", source=f"{LECTURE}, §4.4, eqs. (4.22)–(4.23)",
          statement="At test time the weights after a dropout layer are scaled by p_keep (4.23); this production "
                    "pass serves as an approximation to the training pass (4.22).",
          quote="paraphrase",
          measurement=f"fraction of test digits where the class predicted by (4.23) equals the class of the softmax "
                      f"averaged over {MASKS} random masks of (4.22) (MLP 64-{HIDDEN}-10, p_keep = {KEEP})",
          criterion="> 0.95", threshold=0.95, direction=">", scale="fraction"),
    Claim(id="dropout-inverted-equals-weight-scaling", source=f"{LECTURE}, §4.4, eqs. (4.24)–(4.25)",
          statement="This form allows to use the resulting model normally in production without having to take "
                    "dropout into consideration at all.",
          quote="verbatim", kind="worked check",
          measurement="largest |logit difference| on the test set between (4.22)+(4.23) and (4.24)+(4.25) trained on "
                      "the same masks with descend.SGD (the layer after dropout at lr·p_keep², so that W̃ = p_keep·W "
                      "holds at every step)",
          criterion="< 1e-4 (float32 rounding)", threshold=1e-4, direction="<", scale="nonnegative",
          deterministic=True),
    Claim(id="dropout-sgd-leaves-dropped-weights", source=f"{LECTURE}, §4.4",
          statement="With a pure gradient descent optimizer this means that weights w_ij are not updated at all during "
                    "the given iteration",
          quote="paraphrase", kind="worked check",
          measurement="largest |Δw| of a dropped unit's outgoing weights over 30 steps of descend.SGD",
          criterion="< 1e-12 (exactly 0)", threshold=1e-12, direction="<", scale="nonnegative", deterministic=True),
    Claim(id="dropout-adam-moves-dropped-weights", source=f"{LECTURE}, §4.4",
          statement="Whereas with a momentum based optimizer such as ADAM it means that the descent step for those "
                    "weights has a smaller magnitude: they still move.",
          quote="paraphrase", kind="worked check",
          measurement="fraction of dropped units' outgoing weights that moved during the step (descend.Adam, 30 "
                      "steps after 20 of warm-up)",
          criterion="> 0.5", threshold=0.5, direction=">", scale="fraction"),
    Claim(id="dropout-adam-dropped-step-smaller", source=f"{LECTURE}, §4.4",
          statement="… whereas with a momentum based optimizer such as ADAM it means that the descent step for those "
                    "weights has a smaller magnitude.",
          quote="verbatim",
          measurement="mean |Δw| of dropped units' outgoing weights divided by that of kept units' (descend.Adam)",
          criterion="ratio < 1", threshold=1.0, direction="<", scale="ratio"),
]


class TwoLayer(nn.Module):
    """64 → HIDDEN (ReLU) → 10 with a dropout mask on the hidden layer, applied by hand in either convention."""

    def __init__(self):
        super().__init__()
        self.first, self.second = nn.Linear(64, HIDDEN), nn.Linear(HIDDEN, 10)

    def forward(self, x, mask=None, inverted=False, test_scale=1.0):
        hidden = torch.relu(self.first(x))
        if mask is not None:
            hidden = hidden * mask / (KEEP if inverted else 1.0)  # (4.24) or (4.22)
        return nn.functional.linear(hidden, test_scale * self.second.weight, self.second.bias)  # (4.23): p_keep·W


def masks(generator, steps, rows):
    return [(torch.rand(rows, HIDDEN, generator=generator) < KEEP).float() for _ in range(steps)]


def train(model, optimizer, split, batches, step_masks, inverted):
    for index, mask in zip(batches, step_masks):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(split.x_train[index], mask, inverted), split.y_train[index]).backward()
        optimizer.step()


def batches_of(split, generator, steps, size=64):
    return [torch.randint(0, len(split.y_train), (size,), generator=generator) for _ in range(steps)]


def ensemble_agreement(seed: int, steps: int) -> dict[str, float]:
    split = data.digits(seed)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = TwoLayer()
    optimizer = descend.SGD(model.parameters(), lr=0.05, momentum=0.9)
    train(model, optimizer, split, batches_of(split, generator, steps), masks(generator, steps, 64), inverted=False)
    with torch.no_grad():
        scaled = model(split.x_test, test_scale=KEEP)
        average = torch.stack([model(split.x_test, mask).softmax(1)
                               for mask in masks(generator, MASKS, len(split.y_test))]).mean(0)
        unscaled = model(split.x_test)
    accuracy = lambda out: (out.argmax(1) == split.y_test).float().mean().item()  # noqa: E731
    loss = lambda p: nn.functional.nll_loss(p.log(), split.y_test).item()  # noqa: E731
    return {"agreement": (scaled.argmax(1) == average.argmax(1)).float().mean().item(),
            "test_accuracy_scaled_4_23": accuracy(scaled), "test_accuracy_mask_average": accuracy(average),
            "test_loss_scaled_4_23": loss(scaled.softmax(1)), "test_loss_mask_average": loss(average),
            "test_loss_unscaled_weights": loss(unscaled.softmax(1))}


@lru_cache(maxsize=1)
def inverted_gap(steps: int = 100) -> float:
    split = data.digits(0)
    generator = torch.Generator().manual_seed(0)
    batches, step_masks = batches_of(split, generator, steps), masks(generator, steps, 64)
    torch.manual_seed(0)
    scaled = TwoLayer()
    inverted = TwoLayer()
    inverted.load_state_dict(scaled.state_dict())
    with torch.no_grad():
        inverted.second.weight.mul_(KEEP)  # W̃ = p_keep·W
    lr = 0.05
    train(scaled, descend.SGD(scaled.parameters(), lr=lr), split, batches, step_masks, inverted=False)
    groups = [{"params": inverted.first.parameters()}, {"params": [inverted.second.bias]},
              {"params": [inverted.second.weight], "lr": lr * KEEP**2}]  # ∂L/∂W̃ = (∂L/∂W)/p_keep
    train(inverted, descend.SGD(groups, lr=lr), split, batches, step_masks, inverted=True)
    with torch.no_grad():
        return (scaled(split.x_test, test_scale=KEEP) - inverted(split.x_test)).abs().max().item()


def dropped_unit_steps(seed: int, optimizer_class, lr: float, warmup: int = 20, steps: int = 30) -> dict[str, float]:
    """|Δw| of the outgoing weights (columns of the second layer) of dropped and of kept hidden units.

    One mask per step for the whole batch, so that a unit is dropped for every sample of the step."""
    split = data.digits(seed)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = TwoLayer()
    optimizer = optimizer_class(model.parameters(), lr=lr)
    dropped_moves, kept_moves = [], []
    for step in range(warmup + steps):
        index = torch.randint(0, len(split.y_train), (64,), generator=generator)
        mask = (torch.rand(1, HIDDEN, generator=generator) < KEEP).float()
        before = model.second.weight.detach().clone()
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(split.x_train[index], mask, inverted=True), split.y_train[index]).backward()
        optimizer.step()
        if step >= warmup:
            moved = (model.second.weight.detach() - before).abs()
            dropped_moves.append(moved[:, mask[0] == 0].flatten())
            kept_moves.append(moved[:, mask[0] == 1].flatten())
    dropped, kept = torch.cat(dropped_moves), torch.cat(kept_moves)
    return {"largest_dropped_step": dropped.max().item(), "fraction_dropped_moved": (dropped > 0).float().mean().item(),
            "mean_dropped_step": dropped.mean().item(), "mean_kept_step": kept.mean().item(),
            "dropped_over_kept": (dropped.mean() / kept.mean()).item()}


def run(ctx: Context) -> Result:
    agreement = ensemble_agreement(ctx.seed, 800 if ctx.full else 120)
    gap = inverted_gap()
    sgd = dropped_unit_steps(ctx.seed, descend.SGD, 0.1)
    adam = dropped_unit_steps(ctx.seed, descend.Adam, 1e-3)
    effects = {"dropout-weight-scaling-approximates-mask-average": agreement["agreement"],
               "dropout-inverted-equals-weight-scaling": gap,
               "dropout-sgd-leaves-dropped-weights": sgd["largest_dropped_step"],
               "dropout-adam-moves-dropped-weights": adam["fraction_dropped_moved"],
               "dropout-adam-dropped-step-smaller": adam["dropped_over_kept"]}
    if ctx.figures_wanted:
        draw(ctx, agreement, sgd, adam)
    summary = (f"(4.23) and the average over {MASKS} masks of (4.22) predict the same class for "
               f"{agreement['agreement']:.1%} of test digits (test accuracy {agreement['test_accuracy_scaled_4_23']:.3f}"
               f" against {agreement['test_accuracy_mask_average']:.3f}; test loss {agreement['test_loss_scaled_4_23']:.3f} "
               f"against {agreement['test_loss_mask_average']:.3f}, and {agreement['test_loss_unscaled_weights']:.3f} "
               "when the p_keep scaling is forgotten). (4.22)+(4.23) and (4.24)+(4.25) on the same masks "
               f"differ by at most {gap:.1e} in the logits (p_keep = 0.5 is a power of two, so every rescaling is exact). Dropped units' outgoing weights: SGD moves them by at most "
               f"{sgd['largest_dropped_step']:.1e}; Adam moves {adam['fraction_dropped_moved']:.0%} of them, by "
               f"{adam['dropped_over_kept']:.2f}× the mean step of kept units' weights.")
    return Result(effects, summary, {"ensemble": agreement, "inverted_logit_gap": gap, "keep": KEEP,
                                     "dropped_unit_steps": {"SGD": sgd, "Adam": adam}})


def draw(ctx: Context, agreement, sgd, adam) -> None:
    figure, (left, right) = plt.subplots(1, 2, figsize=(14, 4.6))
    labels = ["(4.23): one pass\nwith p_keep·W", f"(4.22) averaged\nover {MASKS} masks"]
    values = [agreement["test_loss_scaled_4_23"], agreement["test_loss_mask_average"]]
    left.bar(labels, values, color=[ctx.color(label) for label in labels])
    left.set_ylabel("test loss (cross-entropy, nats)")
    left.set_title(f"trained with (4.22), p_keep = {KEEP}: same class for {agreement['agreement']:.1%} of test digits",
                   fontsize=10)
    x = np.arange(2)
    for offset, (name, steps) in zip((-0.2, 0.2), (("SGD", sgd), ("Adam", adam))):
        right.bar(x + offset, [steps["mean_kept_step"], steps["mean_dropped_step"]], 0.4, color=ctx.color(name),
                  label=name)
    right.set_xticks(x, ["kept units' weights", "dropped units' weights"]), right.set_yscale("symlog", linthresh=1e-7)
    right.set_ylim(0, 3 * max(sgd["mean_kept_step"], adam["mean_kept_step"]))
    right.set_ylabel("mean |Δw| per step (weight units)"), right.legend(fontsize=8)
    right.set_title("in a step that drops the unit: SGD 0, Adam still moves its weights", fontsize=10)
    ctx.save(figure, "dropout", caption="Left: one production pass with the weights scaled by p_keep predicts the class of "
             "the average over dropout masks and comes close to its test loss (an approximation, not an identity). Right: in a step where a unit is dropped, "
             "SGD leaves its outgoing weights exactly in place while Adam's momentum still moves them, by less.",
             claims=[c.id for c in CLAIMS])
