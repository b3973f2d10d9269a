"""Mini-batch gradient noise: variance ∝ 1/batch size."""
from __future__ import annotations

import time
from functools import lru_cache

import matplotlib.pyplot as plt
import torch
from torch.func import functional_call, grad, vmap

import descend

from .. import data
from ..claims import LECTURE, Claim
from ..core import Context, Result, fitted_slope

NAME = "gradient-noise"
ORDER = 7
TITLE = "Mini-batches: gradient-noise variance ∝ 1/batch size, and the hardware"
COST = {"run": 1.0}
THROUGHPUT_BATCHES = (1, 8, 64, 256)
CLAIMS = [
    Claim(id="minibatch-gradient-variance-falls-as-one-over-batch",
          source=f"{LECTURE}, §4.2, “Working with Mini-batches and the Concept of Epochs”",
          statement="Since Var(∇C_I) is the variance of the gradient for an arbitrary data sample, we see that "
                    "mini-batch gradient descent has n_b times smaller variance than that of stochastic gradient "
                    "descent.",
          quote="paraphrase", kind="worked check",
          measurement="fitted log-log slope of E‖g_B − ∇f‖² against B = 1 … 128 (MLP on digits, 300 batches per size, "
                      "drawn without replacement)",
          criterion="slope between −1.15 and −0.85", threshold=(-1.15, -0.85), direction="between",
          deterministic=True),
    Claim(id="minibatches-use-the-hardware-better",
          source=f"{LECTURE}, §4.2, “Working with Mini-batches and the Concept of Epochs”",
          statement="This generally makes computation more efficient in comparison to stochastic gradient descent "
                    "which cannot take full advantage of parallel computing or GPUs since the gradient evaluation "
                    "for a single observation index I_t is not easy to parallelize.",
          quote="verbatim",
          measurement="training samples per second (forward, backward and descend.SGD step of an MLP 64-128-10) at "
                      "batch 64 divided by batch 1, on this machine's CPU with one thread, as the lab's workers run; "
                      "a timing, so it varies with the machine and its load",
          criterion="ratio > 2", threshold=2.0, direction=">", scale="ratio"),
]


def throughput(batch: int, seconds: float = 0.05) -> float:
    """Training samples per second at ``batch`` (after a warm-up), timed over at least ``seconds``."""
    model = data.mlp(64, 128, 10, depth=1)
    optimizer = descend.SGD(model.parameters(), lr=0.01)
    x, y = torch.rand(batch, 64), torch.randint(0, 10, (batch,))
    closure = data.cross_entropy_closure(model, optimizer, x, y)
    for _ in range(5):
        optimizer.step(closure)
    steps, begin = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - begin) < seconds or steps < 5:
        optimizer.step(closure)
        steps += 1
    return steps * batch / elapsed


@lru_cache(maxsize=2)
def variances_by_batch(full_mode: bool) -> tuple[list[int], list[float], float, int]:
    """(batch sizes, E‖g_B − ∇f‖² per size, the per-sample variance σ², N): seed-independent (seed 0), computed once
    per process. The gradient at a point reached by 50 steps of SGD, per-sample gradients by vmap."""
    split = data.digits(0)
    torch.manual_seed(0)
    model = data.mlp(64, 32, 10, depth=1)
    data.train(model, descend.SGD(model.parameters(), lr=0.1), split, 50, generator=torch.Generator().manual_seed(0))
    params = {name: p.detach() for name, p in model.named_parameters()}

    def loss(p, x, y):
        return torch.nn.functional.cross_entropy(functional_call(model, p, (x[None],)), y[None])

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))(params, split.x_train, split.y_train)
    flat = torch.cat([g.flatten(1) for g in per_sample.values()], dim=1)  # N × parameters
    full = flat.mean(0)
    n = flat.shape[0]
    batches = [1, 2, 4, 8, 16, 32, 64, 128]
    draws = 800 if full_mode else 300
    generator = torch.Generator().manual_seed(1)
    variances = []
    for batch in batches:
        index = torch.stack([torch.randperm(n, generator=generator)[:batch] for _ in range(draws)])
        samples = flat[index].mean(1)
        variances.append(((samples - full) ** 2).sum(1).mean().item())
    return batches, variances, ((flat - full) ** 2).sum(1).mean().item(), n


def run(ctx: Context) -> Result:
    batches, variances, per_sample_variance, n = variances_by_batch(ctx.full)
    draws = 800 if ctx.full else 300
    slope = fitted_slope(batches, variances)
    theory = [per_sample_variance / b * (n - b) / (n - 1) for b in batches]  # sampling without replacement
    rates = {batch: throughput(batch) for batch in THROUGHPUT_BATCHES}
    if ctx.figures_wanted:
        figure, (axis, right) = plt.subplots(1, 2, figsize=(12, 4.5))
        right.loglog(list(rates), list(rates.values()), "o-", color=ctx.color("SGD"))
        right.set_xlabel("batch size B (samples)"), right.set_ylabel("training samples per second (one CPU thread)")
        right.set_title("MLP 64-128-10: forward, backward and step")
        axis.loglog(batches, variances, "o-", label=f"measured, slope {slope:.2f}", color=ctx.color("SGD"))
        axis.loglog(batches, theory, "k--", label="σ²/B · (N−B)/(N−1)")
        axis.set_xlabel("batch size B (samples)"), axis.set_ylabel("E‖g_B − ∇f‖² (squared gradient norm)")
        axis.legend(), axis.set_title(f"MLP on digits, N = {n}, {draws} batches per size")
        ctx.save(figure, "variance", caption="Left: the measured variance of the mini-batch gradient follows σ²/B "
                 "(dashed) over two decades of batch size. Right: samples per second grow with the batch, one thread "
                 "only: the gain is from vectorized arithmetic and fewer calls, before any parallel hardware.",
                 claims=[c.id for c in CLAIMS])
    summary = (f"Fitted slope {slope:.3f} over B = {batches[0]}…{batches[-1]}; variance at B = 1: {variances[0]:.3g}, "
               f"at B = {batches[-1]}: {variances[-1]:.3g} (theory {theory[-1]:.3g}). Training samples per second: "
               + ", ".join(f"B = {b}: {r:.3g}" for b, r in rates.items()) + ".")
    return Result({"minibatch-gradient-variance-falls-as-one-over-batch": slope,
                   "minibatches-use-the-hardware-better": rates[64] / rates[1]}, summary,
                  {"batch_sizes": batches, "variance": variances, "theory": theory, "slope": slope,
                   "samples_per_second": rates})
