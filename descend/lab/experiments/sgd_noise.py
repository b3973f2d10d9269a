"""What SGD's noise does (seed 002 §4.2): escapes a saddle GD is stuck on, biases the mean iterate when the
gradient is non-linear, and vanishes when every sample shares the minimizer (Fig. 4.2b)."""
from __future__ import annotations

import math
from functools import lru_cache

import matplotlib.pyplot as plt
import numpy as np
import torch

import descend

from .. import data, plots, tuning
from ..claims import LECTURE, Claim
from ..core import Context, Result

NAME = "sgd-noise"
TITLE = "SGD's noise: saddle escape, a biased mean, and identical minimizers"
ORDER = 8  # beside the lab's experiment on the same topic (ties sort by NAME)

COST = {"tune": 0.6, "run": 0.4}

SADDLE_SAMPLES, SADDLE_STEPS, SADDLE_TOLERANCE = 10, 300, 0.1
SADDLE_GRID = (0.03, 0.1, 0.3)
CHAINS, BIAS_LR, BIAS_STEPS = 20_000, 0.02, 30
HULL_LR, HULL_STEPS = 0.1, 500

CLAIMS = [
    Claim(id="sgd-escapes-saddle-gd-stuck", source=f"{LECTURE}, §4.2",
          statement="Such noisy trajectories may initially appear like a drawback, yet one advantage is that they "
                    "enable the algorithm to escape flat regions, saddle points, and local minima.",
          quote="verbatim",
          measurement=f"steps to within {SADDLE_TOLERANCE} of a minimum (0, ±1) of C = x² − y² + y⁴/2 + mean of bᵢy "
                      f"over {SADDLE_SAMPLES} samples (Σbᵢ = 0), from (1, y₀) with |y₀| = 1e-6 (next to the saddle's "
                      "stable line): full-batch GD divided by SGD (one sample per step), each at its best α of a grid "
                      f"widened until the best is inside; not arrived in {SADDLE_STEPS} steps counts as "
                      f"{SADDLE_STEPS + 1}",
          criterion="ratio > 1 (SGD leaves the saddle sooner)", threshold=1.0, direction=">", scale="ratio",
          compares=("GD", "SGD")),
    Claim(id="sgd-step-unbiased-at-fixed-theta", source=f"{LECTURE}, §4.2, eq. (4.12)",
          statement="With Iₜ uniform over {1, …, n}, E[∇C_{Iₜ}(θ)] = (1/n) Σᵢ ∇Cᵢ(θ) = ∇C(θ) for a fixed θ: the "
                    "stochastic step is “on average correct”.",
          quote="paraphrase", kind="worked check",
          measurement="largest |mean over all n samples of ∇Cᵢ(θ) − ∇C(θ)| relative to the largest |∇C(θ)|, per-sample "
                      "gradients by autograd (float64 logistic regression on digits, n = 1347, random θ)",
          criterion="< 1e-12", threshold=1e-12, direction="<", scale="nonnegative", deterministic=True),
    Claim(id="sgd-mean-differs-from-gd-nonlinear", source=f"{LECTURE}, §4.2, footnote 3",
          statement="The reader might be tempted to conclude that E[θ_SGD(t)] = θ_GD(t) for all time t; however, in "
                    "general this is not correct when ∇C(θ) is non-linear in θ.",
          quote="paraphrase",
          measurement=f"|mean of {CHAINS} SGD chains − θ_GD| after {BIAS_STEPS} steps, in standard errors of the "
                      "mean, for Cᵢ(θ) = (θ − uᵢ)⁴/4 (gradient cubic in θ)",
          criterion="> 3 standard errors", threshold=3.0, direction=">"),
    Claim(id="sgd-mean-equals-gd-linear", source=f"{LECTURE}, §4.2, footnote 3 and eq. (4.12)",
          statement="When ∇C is linear in θ (quadratic Cᵢ), SGD's step is unbiased and E[θ_SGD(t)] = θ_GD(t).",
          quote="paraphrase", kind="worked check",
          measurement="the same gap in standard errors for Cᵢ(θ) = aᵢ(θ − uᵢ)²/2",
          criterion="< 3 standard errors", threshold=3.0, direction="<", scale="nonnegative"),
    Claim(id="sgd-converges-identical-minimizers", source=f"{LECTURE}, §4.2, Figure 4.2 (b)",
          statement="When the minimizers u₁ … uₙ of the Cᵢ are identical, the convex hull is one point: SGD's "
                    "noise vanishes there and it converges like gradient descent.",
          quote="paraphrase", kind="worked check",
          measurement=f"distance of constant-step SGD (α = {HULL_LR}) to the common minimizer after {HULL_STEPS} "
                      "steps, Cᵢ = aᵢ(θ₁ − u₁)² + (θ₂ − u₂)² (eq. 4.13)",
          criterion="< 1e-6", threshold=1e-6, direction="<", scale="nonnegative"),
]


@lru_cache(maxsize=1)
def unbiased_gap() -> float:
    split = data.digits(0)
    x, y = split.x_train.double(), split.y_train
    weight = torch.randn(64, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64, requires_grad=True)
    full, = torch.autograd.grad(torch.nn.functional.cross_entropy(x @ weight, y), weight)
    per_sample = torch.func.vmap(torch.func.grad(lambda w, xi, yi: torch.nn.functional.cross_entropy(xi @ w, yi)),
                                 in_dims=(None, 0, 0))(weight.detach(), x, y)
    gap = ((per_sample.mean(0) - full).abs().max() / full.abs().max()).item()
    return gap, full.flatten().numpy(), per_sample.mean(0).flatten().numpy()


def saddle_path(seed: int, name: str, lr: float) -> np.ndarray:
    """GD or SGD on C = x² − y² + y⁴/2 + mean(bᵢ)y from (1, ±1e-6), until within the tolerance of a minimum."""
    generator = torch.Generator().manual_seed(seed)
    b = torch.randn(SADDLE_SAMPLES, generator=generator, dtype=torch.float64)
    b = b - b.mean()  # Σbᵢ = 0: the full gradient has no bᵢ term
    start = 1e-6 * (1 if torch.rand(1, generator=generator).item() < 0.5 else -1)
    order = torch.randint(0, SADDLE_SAMPLES, (SADDLE_STEPS,), generator=generator)
    theta = torch.tensor([1.0, start], dtype=torch.float64, requires_grad=True)
    optimizer = descend.SGD([theta], lr=lr, nonfinite="ignore")
    path = [theta.detach().numpy().copy()]
    for step in range(SADDLE_STEPS):
        x, y = theta.tolist()
        noise = 0.0 if name == "GD" else b[order[step]].item()
        theta.grad = torch.tensor([2 * x, -2 * y + 2 * y**3 + noise], dtype=torch.float64)
        optimizer.step()
        path.append(theta.detach().numpy().copy())
        if not np.all(np.isfinite(path[-1])) or np.abs(path[-1]).max() > 1e6:
            break
        if math.hypot(path[-1][0], abs(path[-1][1]) - 1) < SADDLE_TOLERANCE:
            break
    return np.array(path)


def arrival(path: np.ndarray) -> float:
    """Steps to the tolerance; SADDLE_STEPS + 1 when not there, inf when diverged."""
    last = path[-1]
    if not np.all(np.isfinite(last)) or np.abs(last).max() > 1e6:
        return math.inf
    return len(path) - 1 if math.hypot(last[0], abs(last[1]) - 1) < SADDLE_TOLERANCE else SADDLE_STEPS + 1


def tune(ctx: Context) -> dict:
    return {name: tuning.search(tuning.one_at_a_time(lambda lr, name=name: arrival(saddle_path(ctx.seed, name, lr))),
                                [tuning.lr_axis(*SADDLE_GRID)],
                                metric=f"steps to within {SADDLE_TOLERANCE} of a minimum") for name in ("GD", "SGD")}


def mean_gap(seed: int, gradient) -> tuple[float, np.ndarray, float]:
    """(|mean θ_SGD − θ_GD| in standard errors, the chains' final θ, θ_GD), for per-sample gradient(θ, i)."""
    generator = torch.Generator().manual_seed(seed)
    chains = torch.full((CHAINS,), 2.0, dtype=torch.float64, requires_grad=True)  # one SGD chain per coordinate
    single = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
    sgd, gd = descend.SGD([chains], lr=BIAS_LR), descend.SGD([single], lr=BIAS_LR)
    samples = torch.arange(len(U))
    for _ in range(BIAS_STEPS):
        index = torch.randint(0, len(U), (CHAINS,), generator=generator)
        chains.grad = gradient(chains.detach(), index)
        single.grad = gradient(single.detach()[:, None], samples[None, :]).mean(1)
        sgd.step(), gd.step()
    final = chains.detach()
    gap = (final.mean() - single.detach()[0]).abs() / (final.std() / CHAINS**0.5)
    return gap.item(), final.numpy(), single.item()


U = torch.tensor([-1.0, 0.0, 0.5, 2.0], dtype=torch.float64)
A = torch.tensor([0.5, 1.0, 2.0, 1.5], dtype=torch.float64)


def quartic_gradient(theta, index):
    return (theta - U[index]) ** 3


def quadratic_gradient(theta, index):
    return A[index] * (theta - U[index])


def hull_distance(seed: int, identical: bool) -> np.ndarray:
    generator = torch.Generator().manual_seed(seed)
    u = torch.rand(5, 2, generator=generator, dtype=torch.float64) * 6 - 3
    if identical:
        u = u[:1].expand(5, 2)
    a = torch.rand(5, generator=generator, dtype=torch.float64) * 1.5 + 0.5
    minimum = torch.stack([(a * u[:, 0]).sum() / a.sum(), u[:, 1].mean()])
    theta = torch.tensor([-4.0, 4.0], dtype=torch.float64, requires_grad=True)
    optimizer = descend.SGD([theta], lr=HULL_LR)
    distance = []
    for i in torch.randint(0, 5, (HULL_STEPS,), generator=generator).tolist():
        t = theta.detach()
        theta.grad = torch.stack([2 * a[i] * (t[0] - u[i, 0]), 2 * (t[1] - u[i, 1])])
        optimizer.step()
        distance.append((theta.detach() - minimum).norm().item())
    return np.array(distance)


def run(ctx: Context) -> Result:
    paths = {name: saddle_path(ctx.seed, name, ctx.tuned[name]["best"]["lr"]) for name in ("GD", "SGD")}
    escape = arrival(paths["GD"]) / arrival(paths["SGD"])
    quartic_gap, quartic_chains, quartic_gd = mean_gap(ctx.seed, quartic_gradient)
    linear_gap, _, _ = mean_gap(ctx.seed + 7919, quadratic_gradient)
    identical, distinct = hull_distance(ctx.seed, True), hull_distance(ctx.seed, False)
    unbiased, full_gradient, mean_gradient = unbiased_gap()
    effects = {"sgd-escapes-saddle-gd-stuck": escape, "sgd-step-unbiased-at-fixed-theta": unbiased, "sgd-mean-differs-from-gd-nonlinear": quartic_gap,
               "sgd-mean-equals-gd-linear": linear_gap, "sgd-converges-identical-minimizers": float(identical[-1])}
    if ctx.figures_wanted:
        draw(ctx, paths, quartic_chains, quartic_gd, identical, distinct)
        figure, axis = plt.subplots(figsize=(5, 4.5))
        axis.plot(full_gradient, mean_gradient, ".", markersize=3, color=ctx.color("SGD"))
        axis.plot(*[[full_gradient.min(), full_gradient.max()]] * 2, "k--", linewidth=0.8, label="equal")
        axis.set_xlabel("∇C(θ), entry by entry"), axis.set_ylabel("mean over the n samples of ∇Cᵢ(θ)")
        axis.set_title(f"eq. (4.12) at a random θ: largest gap {unbiased:.1e}"), axis.legend(fontsize=8)
        ctx.save(figure, "unbiased", caption="Every entry of the mean per-sample gradient lies on the diagonal: the "
                 "uniformly drawn sample's gradient is on average the full gradient.",
                 claims=["sgd-step-unbiased-at-fixed-theta"])
    summary = (f"Mean per-sample gradient against the full gradient: relative gap {unbiased:.1e}. Saddle, steps to a "
               f"minimum from |y₀| = 1e-6: GD {arrival(paths['GD']):g} (α {ctx.tuned['GD']['best']['lr']:g}), SGD "
               f"{arrival(paths['SGD']):g} (α {ctx.tuned['SGD']['best']['lr']:g}). Mean of {CHAINS} SGD chains against GD after {BIAS_STEPS} steps: "
               f"{quartic_gap:.1f} standard errors apart for the quartic Cᵢ (mean {quartic_chains.mean():.4f}, GD "
               f"{quartic_gd:.4f}), {linear_gap:.1f} for the quadratic Cᵢ. Identical minimizers: SGD ends "
               f"{identical[-1]:.1e} from them; with distinct minimizers it still wanders {distinct[-100:].mean():.2f} "
               "from the minimum.")
    numbers = {"unbiased_relative_gap": unbiased, "saddle_steps": {k: arrival(v) for k, v in paths.items()},
               "quartic_gap_standard_errors": quartic_gap, "quartic_sgd_mean": float(quartic_chains.mean()),
               "quartic_gd": quartic_gd, "linear_gap_standard_errors": linear_gap,
               "identical_minimizers_final_distance": float(identical[-1]),
               "distinct_minimizers_mean_distance_last_100": float(distinct[-100:].mean())}
    return Result(effects, summary, numbers)


def draw(ctx: Context, paths, chains, gd_final, identical, distinct) -> None:
    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(17, 4.6))
    xs, ys = np.meshgrid(np.linspace(-1.2, 1.2, 150), np.linspace(-1.5, 1.5, 150))
    zs = xs**2 - ys**2 + ys**4 / 2
    left.contour(xs, ys, zs, levels=20, cmap="Greys", linewidths=0.6)
    for name, path in paths.items():
        left.plot(path[:, 0], path[:, 1], color=ctx.color(name), linewidth=1.8, label=name)
    left.plot(0, 0, "kx", markersize=10, label="saddle (0, 0)")
    left.set_xlabel("x"), left.set_ylabel("y"), left.legend(fontsize=8)
    left.set_title("C = x² − y² + y⁴/2 from (1, ±1e-6): GD crawls off the saddle")
    middle.hist(chains, bins=80, color=ctx.color("SGD"), alpha=0.7, label=f"{len(chains)} SGD chains")
    middle.axvline(chains.mean(), color=ctx.color("SGD"), linestyle="--", label=f"SGD mean {chains.mean():.3f}")
    middle.axvline(gd_final, color=ctx.color("GD"), linewidth=2, label=f"GD {gd_final:.3f}")
    middle.set_xlabel(f"θ after {BIAS_STEPS} steps"), middle.set_ylabel("number of chains"), middle.legend(fontsize=8)
    middle.set_title("Cᵢ = (θ − uᵢ)⁴/4: E[θ_SGD] ≠ θ_GD")
    right.semilogy(identical, color=ctx.color("SGD"), label="identical minimizers (Fig. 4.2b)")
    right.semilogy(distinct, color=ctx.color("SGD"), linestyle=":", label="distinct minimizers (Fig. 4.2a)")
    right.set_xlabel("step"), right.set_ylabel("distance to the minimum of C"), right.legend(fontsize=8)
    right.set_title(f"constant-step SGD, α = {HULL_LR}")
    ctx.save(figure, "noise", caption="Left: started a hair off the saddle's stable line, GD (each at its best "
             "α) lingers at the saddle before it leaves, while SGD's noise pushes it off at once. Middle: with a cubic gradient the SGD chains' mean sits "
             "away from GD's iterate. Right: SGD's noise vanishes only when all samples share the minimizer.",
             claims=[c.id for c in CLAIMS if c.id != "sgd-step-unbiased-at-fixed-theta"])
    xs, ys = np.meshgrid(np.linspace(-1.2, 1.2, 100), np.linspace(-1.5, 1.5, 100))
    spec = plots.trajectories(paths, "GD and SGD from (1, ±1e-6) on C = x² − y² + y⁴/2",
                              contour=(xs, ys, xs**2 - ys**2 + ys**4 / 2), x_title="x", y_title="y",
                              bounds=((-1.2, 1.2), (-1.5, 1.5)))
    ctx.interactive(spec, "saddle", caption="Slide through the steps: GD heads for the saddle at (0, 0) and waits "
                    "there until the tiny offset grows; SGD's noise tips it off y = 0 at once and it rolls down to a "
                    "minimum at y = ±1.", claims=["sgd-escapes-saddle-gd-stuck"])
