"""Mini-batch gradient noise: variance ∝ 1/batch size."""
from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from torch.func import functional_call, grad, vmap

import descend

from .. import data
from ..claims import Claim
from ..core import Context, Result, fitted_slope

NAME = "gradient-noise"
ORDER = 7
TITLE = "Gradient-noise variance ∝ 1/batch size"
CLAIMS = [Claim(
    id="minibatch-gradient-variance-falls-as-one-over-batch",
    source="seed 002 §4.2, eqs. 4.12 and 4.14 (mini-batches: the middle ground between noisy SGD and exact GD)",
    statement="The mini-batch gradient (4.14) is an unbiased estimate of ∇C whose noise shrinks as the batch "
              "grows: its variance falls as 1/n_b.",
    measurement="|fitted log-log slope + 1| of E‖g_B − ∇f‖² against B = 1 … 128 (MLP on digits, 300 batches per size)",
    criterion="|slope + 1| < 0.15", threshold=0.15, direction="<")]


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
        index = torch.stack([torch.randperm(n, generator=generator)[:batch] for _ in range(draws)])
        samples = flat[index].mean(1)
        variances.append(((samples - full) ** 2).sum(1).mean().item())
    slope = fitted_slope(batches, variances)
    per_sample_variance = ((flat - full) ** 2).sum(1).mean().item()
    theory = [per_sample_variance / b * (n - b) / (n - 1) for b in batches]  # sampling without replacement
    if ctx.figures_wanted:
        figure, axis = plt.subplots(figsize=(6.5, 4.5))
        axis.loglog(batches, variances, "o-", label=f"measured, slope {slope:.2f}", color=ctx.color("SGD"))
        axis.loglog(batches, theory, "k--", label="σ²/B · (N−B)/(N−1)")
        axis.set_xlabel("batch size B (samples)"), axis.set_ylabel("E‖g_B − ∇f‖² (squared gradient norm)")
        axis.legend(), axis.set_title(f"MLP on digits, N = {n}, {draws} batches per size")
        ctx.save(figure, "variance", caption="The measured variance of the mini-batch gradient follows σ²/B (dashed) "
                 "over two decades of batch size.")
    summary = (f"Fitted slope {slope:.3f} over B = {batches[0]}…{batches[-1]}; variance at B = 1: {variances[0]:.3g}, "
               f"at B = {batches[-1]}: {variances[-1]:.3g} (theory {theory[-1]:.3g}).")
    return Result({"minibatch-gradient-variance-falls-as-one-over-batch": abs(slope + 1)}, summary,
                  {"batch_sizes": batches, "variance": variances, "theory": theory, "slope": slope})
