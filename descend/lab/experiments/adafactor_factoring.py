"""Adafactor's factored second moment (seed 004, Alg. 2): exact for a rank-one G², and Adam's training curve."""
from __future__ import annotations

import math
from functools import lru_cache

import matplotlib.pyplot as plt
import numpy as np
import torch

import descend

from .. import data, tuning
from ..claims import SLIDES, Claim
from ..core import Context, Result

NAME = "adafactor-factoring"
TITLE = "Adafactor's factored V̂ against Adam's v (Algorithm 2 of the slides)"
ORDER = 14  # beside the lab's experiment on the same topic (ties sort by NAME)
COST = {"tune": 2.0, "run": 0.4}

ROWS, COLS, STEPS = 12, 7, 50
TRAIN_STEPS = {"quick": 150, "full": 1000}
LR_GRID = (1e-3, 3e-3, 1e-2)
VARIANTS = ("Adam, β₁ = 0", "Algorithm 2 as written", "descend.Adafactor")
_ALG2 = f"{SLIDES}, Algorithm 2 (“Adam for a matrix parameter X with factored second moments and first moment decay "\
        "parameter β₁ = 0”)"

CLAIMS = [
    Claim(id="adafactor-factored-exact-for-rank-one", source=f"{_ALG2}, line 7",
          statement="V̂_t = R_t C_t / 1ᵀR_t rebuilds Adam's second moment from its row and column sums; it is exact "
                    "when G² is rank one.",
          quote="paraphrase", kind="worked check",
          measurement=f"largest relative |V̂ − v| over a {ROWS}×{COLS} matrix after {STEPS} steps of gradients "
                      "G_t = s_t·abᵀ (random s_t), where v is the unfactored second moment kept for the same gradients "
                      "(descend.Adafactor on the flattened matrix, same β̂₂ schedule), and after 1 step against "
                      "descend.Adam's bias-corrected v̂",
          criterion="< 1e-6", threshold=1e-6, direction="<", scale="nonnegative", deterministic=True),
    Claim(id="adafactor-tracks-adam-training", source=_ALG2,
          statement="Adam for a matrix parameter with factored second moments and β₁ = 0 (Algorithm 2) trains like "
                    "Adam with β₁ = 0.",
          quote="paraphrase",
          measurement=f"final full training loss of Algorithm 2 as the slide writes it (constant β₂ = 0.999 with bias "
                      f"correction, written out; unfactored v for the biases) divided by Adam's with β₁ = 0 (MLP "
                      f"64-64-10 on digits, {TRAIN_STEPS['quick']} steps, each at its best lr of a grid widened until "
                      "the best is inside)",
          criterion="ratio between 0.8 and 1.25 (trains alike)", threshold=(0.8, 1.25), direction="between",
          scale="ratio", compares=("Adam, β₁ = 0", "Algorithm 2 as written")),
    Claim(id="descend-adafactor-is-algorithm-2", source=_ALG2,
          statement="descend.Adafactor (without update clipping and relative step) is the slide's Algorithm 2, up to "
                    "its second-moment decay: Shazeer & Stern's β̂₂ₜ = 1 − t^−0.8 in place of a constant β₂ with bias "
                    "correction.",
          quote="paraphrase",
          measurement="final full training loss of descend.Adafactor divided by Algorithm 2's as written (same task, "
                      "each at its best lr)",
          criterion="ratio between 0.8 and 1.25 (trains alike)", threshold=(0.8, 1.25), direction="between",
          scale="ratio", compares=("Algorithm 2 as written", "descend.Adafactor")),
]


class Algorithm2:
    """The slide's Algorithm 2, line by line: R ← β₂R + (1−β₂)(G²)1, C ← β₂C + (1−β₂)1ᵀ(G²),
    V̂ = (RC/1ᵀR)/(1 − β₂ᵗ), X ← X − αG/(√V̂ + ε); a vector (a bias) keeps its unfactored v the same way."""

    def __init__(self, params, lr: float, beta2: float = 0.999, eps: float = 1e-8):
        self.params, self.lr, self.beta2, self.eps, self.t = list(params), lr, beta2, eps, 0
        self.state = [(torch.zeros(p.shape[0]), torch.zeros(p.shape[1])) if p.dim() == 2 else (torch.zeros_like(p),)
                      for p in self.params]
        self.skipped_steps = 0

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, closure):
        with torch.enable_grad():
            loss = closure()
        self.t += 1
        b2 = self.beta2
        for p, state in zip(self.params, self.state):
            square = p.grad**2
            if p.dim() == 2:
                row, col = state
                row.mul_(b2).add_((1 - b2) * square.sum(1))
                col.mul_(b2).add_((1 - b2) * square.sum(0))
                v_hat = torch.outer(row, col) / row.sum() / (1 - b2**self.t)
            else:
                state[0].mul_(b2).add_((1 - b2) * square)
                v_hat = state[0] / (1 - b2**self.t)
            p -= self.lr * p.grad / (v_hat.sqrt() + self.eps)
        return loss


def rebuilt(state) -> torch.Tensor:
    row, col = state["exp_avg_sq_row"], state["exp_avg_sq_col"]
    return torch.outer(row, col) / row.mean()


@lru_cache(maxsize=1)
def factoring_errors() -> dict[str, float]:
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(ROWS, generator=generator, dtype=torch.float64) + 0.1
    b = torch.randn(COLS, generator=generator, dtype=torch.float64)
    general = torch.randn(STEPS, ROWS, COLS, generator=generator, dtype=torch.float64)
    scales = torch.rand(STEPS, generator=generator, dtype=torch.float64) * 3
    errors = {}
    for name, gradients in {"rank-one G²": scales[:, None, None] * torch.outer(a, b), "general G": general}.items():
        matrix = torch.zeros(ROWS, COLS, dtype=torch.float64, requires_grad=True)
        flat = torch.zeros(ROWS * COLS, dtype=torch.float64, requires_grad=True)
        optimizer = descend.Adafactor([matrix, flat], lr=1e-3, relative_step=False, eps=(0.0, 1e-3))
        for g in gradients:
            matrix.grad, flat.grad = g.clone(), g.flatten().clone()
            optimizer.step()
        v = optimizer.state[flat]["exp_avg_sq"].view(ROWS, COLS)
        errors[name] = ((rebuilt(optimizer.state[matrix]) - v).abs() / v).max().item()
    # One step against Adam: v̂₁ = G₁² after bias correction.
    matrix = torch.zeros(ROWS, COLS, dtype=torch.float64, requires_grad=True)
    adam_param = torch.zeros(ROWS, COLS, dtype=torch.float64, requires_grad=True)
    adafactor = descend.Adafactor([matrix], lr=1e-3, relative_step=False, eps=(0.0, 1e-3))
    adam = descend.Adam([adam_param], betas=(0.0, 0.999))
    matrix.grad = adam_param.grad = torch.outer(a, b)
    adafactor.step(), adam.step()
    adam_v = adam.state[adam_param]["exp_avg_sq"] / (1 - 0.999)
    errors["rank-one G², one step, against Adam"] = ((rebuilt(adafactor.state[matrix]) - adam_v).abs() / adam_v).max().item()
    return errors


def training(split: data.Split, seed: int, name: str, lr: float, steps: int) -> tuple[float, list[float]]:
    torch.manual_seed(seed)
    model = data.mlp(64, 64, 10, depth=1)
    if name == "Adam, β₁ = 0":
        optimizer = descend.Adam(model.parameters(), lr=lr, betas=(0.0, 0.999))
    elif name == "Algorithm 2 as written":
        optimizer = Algorithm2(model.parameters(), lr=lr)
    else:
        optimizer = descend.Adafactor(model.parameters(), lr=lr, relative_step=False, scale_parameter=False,
                                      clip_threshold=1e9)
    curve = data.train(model, optimizer, split, steps, generator=torch.Generator().manual_seed(seed))
    loss = data.evaluate(model, split.x_train, split.y_train)[0]
    return (loss if math.isfinite(loss) else math.inf), curve


def tune(ctx: Context) -> dict:
    split = data.digits(ctx.seed)
    steps = TRAIN_STEPS["full" if ctx.full else "quick"]
    return {name: tuning.search(tuning.one_at_a_time(lambda lr, name=name: training(split, ctx.seed, name, lr,
                                                                                     steps)[0]),
                                [tuning.lr_axis(*LR_GRID)], metric=f"final full training loss after {steps} steps")
            for name in VARIANTS}


def smooth(values, width=10):
    values = np.asarray(values)
    return np.convolve(values, np.ones(width) / width, mode="valid")


def run(ctx: Context) -> Result:
    errors = factoring_errors()
    exact = max(errors["rank-one G²"], errors["rank-one G², one step, against Adam"])
    split = data.digits(ctx.seed)
    steps = TRAIN_STEPS["full" if ctx.full else "quick"]
    runs = {name: training(split, ctx.seed, name, ctx.tuned[name]["best"]["lr"], steps) for name in VARIANTS}
    loss = {name: value[0] for name, value in runs.items()}
    if ctx.figures_wanted:
        figure, axis = plt.subplots(figsize=(7.5, 4.4))
        for name, (final, curve) in runs.items():
            smoothed = smooth(curve)
            axis.semilogy(np.arange(len(smoothed)) + 10, smoothed, color=ctx.color(name),
                          label=f"{name} (lr {ctx.tuned[name]['best']['lr']:g}): final {final:.4f}")
        axis.set_xlabel("step"), axis.set_ylabel("mini-batch training loss, 10-step mean (nats)")
        axis.set_title("MLP on digits, each at its best lr"), axis.legend(fontsize=8)
        ctx.save(figure, "curves", caption="Adam with its full second moment, the slide's Algorithm 2 with the "
                 "factored V̂ = RC/1ᵀR, and descend.Adafactor (all without momentum) at their tuned rates.",
                 claims=["adafactor-tracks-adam-training", "descend-adafactor-is-algorithm-2"])
        figure, axis = plt.subplots(figsize=(6, 3.8))
        axis.bar(list(errors), [max(v, 1e-18) for v in errors.values()], color=ctx.color("Adafactor"))
        axis.set_yscale("log"), axis.set_ylabel("largest relative |V̂ − v|"), axis.tick_params(axis="x", labelsize=7)
        axis.set_title("factored against unfactored second moment")
        ctx.save(figure, "factoring", caption="The factored V̂ is exact (float64 rounding) when G² is rank one, and an "
                 "approximation for a general G.", claims=["adafactor-factored-exact-for-rank-one"])
    summary = (f"Relative |V̂ − v|: rank-one G² over {STEPS} steps {errors['rank-one G²']:.1e}, one step against "
               f"Adam's v̂ {errors['rank-one G², one step, against Adam']:.1e}; a general G {errors['general G']:.2f} "
               "(the factoring is an approximation there). Final training loss at each one's best lr: "
               + ", ".join(f"{name} {value:.4f} (lr {ctx.tuned[name]['best']['lr']:g})" for name, value in loss.items())
               + ". descend.Adafactor has no option for the slide's constant β₂ with bias correction: the lab writes "
               "Algorithm 2 out to test it.")
    return Result({"adafactor-factored-exact-for-rank-one": exact,
                   "adafactor-tracks-adam-training": loss["Algorithm 2 as written"] / loss["Adam, β₁ = 0"],
                   "descend-adafactor-is-algorithm-2": loss["descend.Adafactor"] / loss["Algorithm 2 as written"]},
                  summary, {"factoring_relative_error": errors, "final_training_loss": loss})
