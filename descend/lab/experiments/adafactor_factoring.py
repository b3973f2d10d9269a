"""Adafactor's factored second moment (seed 004, Alg. 2): exact for a rank-one G², and Adam's training curve."""
from __future__ import annotations

import math
from functools import lru_cache

import matplotlib.pyplot as plt
import numpy as np
import torch

import descend

from .. import data
from ..claims import Claim
from ..core import Context, Result

NAME = "adafactor-factoring"
TITLE = "Adafactor's factored V̂ against Adam's v (Alg. 2)"
ORDER = 14  # beside the lab's experiment on the same topic (ties sort by NAME)

ROWS, COLS, STEPS = 12, 7, 50
LR = 3e-3
TRAIN_STEPS = {"quick": 200, "full": 1000}

CLAIMS = [
    Claim(id="adafactor-factored-exact-for-rank-one", source="seed 004, Algorithm 2 (line 7)",
          statement="V̂_t = R_t C_t / 1ᵀR_t rebuilds Adam's second moment from its row and column sums; it is exact "
                    "when G² is rank one.",
          measurement=f"largest relative |V̂ − v| over a {ROWS}×{COLS} matrix after {STEPS} steps of gradients "
                      "G_t = s_t·abᵀ (random s_t), where v is the unfactored second moment kept for the same gradients "
                      "(descend.Adafactor on the flattened matrix, same β̂₂ schedule), and after 1 step against "
                      "descend.Adam's bias-corrected v̂",
          criterion="< 1e-6", threshold=1e-6, direction="<", deterministic=True),
    Claim(id="adafactor-tracks-adam-training", source="seed 004, Algorithm 2",
          statement="Adam for a matrix parameter with factored second moments and β₁ = 0 trains like Adam.",
          measurement="mean over the run of |ln(loss_Adafactor / loss_Adam(β₁ = 0))|, mini-batch losses smoothed "
                      f"over 10 steps (MLP 64-64-10 on digits, lr {LR} for both, Adafactor without update clipping "
                      "or relative step)",
          criterion="< 0.25 (curves within about 28% of each other)", threshold=0.25, direction="<"),
]


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


def smooth(values, width=10):
    values = np.asarray(values)
    return np.convolve(values, np.ones(width) / width, mode="valid")


def training(seed: int, steps: int) -> dict[str, list[float]]:
    split = data.digits(seed)
    curves = {}
    for name in ("Adam", "Adafactor"):
        torch.manual_seed(seed)
        model = data.mlp(64, 64, 10, depth=1)
        optimizer = (descend.Adam(model.parameters(), lr=LR, betas=(0.0, 0.999)) if name == "Adam" else
                     descend.Adafactor(model.parameters(), lr=LR, relative_step=False, scale_parameter=False,
                                       clip_threshold=1e9))
        curves[name] = data.train(model, optimizer, split, steps, generator=torch.Generator().manual_seed(seed))
    return curves


def run(ctx: Context) -> Result:
    errors = factoring_errors()
    exact = max(errors["rank-one G²"], errors["rank-one G², one step, against Adam"])
    steps = TRAIN_STEPS["full" if ctx.full else "quick"]
    curves = training(ctx.seed, steps)
    adam, adafactor = smooth(curves["Adam"]), smooth(curves["Adafactor"])
    gap = float(np.abs(np.log(adafactor / adam)).mean())
    if ctx.figures_wanted:
        figure, axis = plt.subplots(figsize=(7, 4.4))
        for name, curve in (("Adam", adam), ("Adafactor", adafactor)):
            axis.semilogy(np.arange(len(curve)) + 10, curve, color=ctx.color(name),
                          label="Adam, β₁ = 0" if name == "Adam" else "Adafactor (factored V̂, β₁ = 0)")
        axis.set_xlabel("step"), axis.set_ylabel("mini-batch training loss, 10-step mean (nats)")
        axis.set_title(f"MLP on digits, lr {LR}: mean |ln ratio| {gap:.3f}"), axis.legend(fontsize=8)
        ctx.save(figure, "curves", caption="Adam with its full second moment and Adafactor with the factored "
                 "V̂ = RC/1ᵀR (both without momentum) follow nearly the same training curve.")
    summary = (f"Relative |V̂ − v|: rank-one G² over {STEPS} steps {errors['rank-one G²']:.1e}, one step against "
               f"Adam's v̂ {errors['rank-one G², one step, against Adam']:.1e}; a general G {errors['general G']:.2f} "
               f"(the factoring is an approximation there). Training: mean |ln(Adafactor/Adam)| = {gap:.3f}, final "
               f"smoothed losses {adafactor[-1]:.4f} and {adam[-1]:.4f}. descend.Adafactor's β̂₂ₜ = 1 − t^−0.8 replaces "
               "Alg. 2's constant β₂ with bias correction.")
    return Result({"adafactor-factored-exact-for-rank-one": exact, "adafactor-tracks-adam-training": gap}, summary,
                  {"factoring_relative_error": errors, "mean_abs_log_loss_ratio": gap,
                   "final_smoothed_loss": {"Adam": float(adam[-1]), "Adafactor": float(adafactor[-1])}, "lr": LR})
