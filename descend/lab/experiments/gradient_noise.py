"""Mini-batch gradient noise: variance ∝ 1/batch size."""
from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from torch.func import functional_call, grad, vmap

import descend

from .. import data
from ..core import Context, Result, fitted_slope

NAME = "gradient-noise"
TITLE = "7. Gradient-noise variance ∝ 1/batch size"
CLAIM = ("The variance E‖g_B − ∇f‖² of a mini-batch gradient falls as 1/B: the fitted log-log slope against the "
         "batch size is −1 (within ±0.15).")


def run(ctx: Context) -> Result:
    split = data.digits(ctx.seed)
    torch.manual_seed(ctx.seed)
    model = ctx.place(data.mlp(64, 32, 10, depth=1))
    data.train(model, descend.SGD(model.parameters(), lr=0.1), split, 50, generator=ctx.generator())
    params = {name: p.detach() for name, p in model.named_parameters()}

    def loss(p, x, y):
        return torch.nn.functional.cross_entropy(functional_call(model, p, (x[None],)), y[None])

    x, y = split.x_train.to(ctx.device), split.y_train.to(ctx.device)
    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    flat = torch.cat([g.flatten(1) for g in per_sample.values()], dim=1).cpu()  # N × parameters
    full = flat.mean(0)
    n = flat.shape[0]
    batches = [1, 2, 4, 8, 16, 32, 64, 128]
    draws = 800 if ctx.full else 300
    generator = ctx.generator(1)
    variances = []
    for batch in ctx.track(batches):
        samples = torch.stack([flat[torch.randperm(n, generator=generator)[:batch]].mean(0) for _ in range(draws)])
        variances.append(((samples - full) ** 2).sum(1).mean().item())
    slope = fitted_slope(batches, variances)
    per_sample_variance = ((flat - full) ** 2).sum(1).mean().item()
    theory = [per_sample_variance / b * (n - b) / (n - 1) for b in batches]  # sampling without replacement

    figure, axis = plt.subplots(figsize=(6.5, 4.5))
    axis.loglog(batches, variances, "o-", label=f"measured, slope {slope:.2f}")
    axis.loglog(batches, theory, "k--", label="σ²/B · (N−B)/(N−1)")
    axis.set_xlabel("batch size B"), axis.set_ylabel("E‖g_B − ∇f‖²"), axis.legend()
    axis.set_title(f"MLP on digits, N = {n}, {draws} batches per size")
    ctx.save(figure, "variance")

    held = abs(slope + 1) <= 0.15
    summary = (f"Fitted slope {slope:.3f} over B = {batches[0]}…{batches[-1]}; variance at B = 1: {variances[0]:.3g}, "
               f"at B = {batches[-1]}: {variances[-1]:.3g} (theory {theory[-1]:.3g}).")
    return Result(held, summary, {"batch_sizes": batches, "variance": variances, "theory": theory, "slope": slope})
