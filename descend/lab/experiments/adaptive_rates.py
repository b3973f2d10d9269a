"""Per-coordinate learning rates (seed 002 §4.3, seed 003): who gets the smaller rate, why AdaGrad needs its
square root, and whether Adadelta's step carries the units of θ."""
from __future__ import annotations

import math
from functools import lru_cache

import matplotlib.pyplot as plt
import numpy as np
import torch

import descend

from .. import data
from ..claims import Claim
from ..core import Context, Result, fitted_slope

NAME = "adaptive-rates"
TITLE = "Per-coordinate rates: steep coordinates, AdaGrad's square root, Adadelta's units"
ORDER = 5  # beside the lab's experiment on the same topic (ties sort by NAME)

FEATURE_SCALES = (1.0, 10.0)  # the second coordinate's curvature is 100× the first's
UNIT_SCALES = (1.0, 10.0, 100.0)  # θ is rescaled to cθ; the optimum lies √2·c away, out of reach in 200 steps for c ≥ 10
SQRT_GRIDS = {"AdaGrad": (0.3, 1.0, 3.0, 10.0), "AdaGrad without √": (1e-4, 1e-3, 1e-2)}

CLAIMS = [
    Claim(id="adagrad-steep-coordinate-smaller-rate", source="seed 002, eqs. 4.16–4.18",
          statement="r_i = 1/(√s_i + ε) is roughly the inverse of the magnitude of the derivative: it is low when the "
                    "changes for coordinate i are steep (AdaGrad).",
          measurement="effective rate α/(√s+ε) of the steep coordinate divided by the flat one's, mean over the "
                      "second half of 400 steps (noisy linear regression, feature scales 1 and 10)",
          criterion="ratio < 1", threshold=1.0, direction="<"),
    Claim(id="rmsprop-steep-coordinate-smaller-rate", source="seed 002, eqs. 4.16–4.18",
          statement="The same holds for RMSprop: the steep coordinate gets the smaller rate.",
          measurement="as for AdaGrad, with descend.RMSprop (γ = 0.99)",
          criterion="ratio < 1", threshold=1.0, direction="<"),
    Claim(id="adagrad-square-root-matters", source="seed 003, Adagrad",
          statement="The square root operation turns out to be very important and without it the algorithm "
                    "performs much worse.",
          measurement="final full training loss (logistic regression on digits, 150 steps) of AdaGrad without the "
                      "square root (cache += g²; θ −= α·g/(cache + ε), written out) divided by descend.Adagrad's, "
                      "each at its best lr of a grid",
          criterion="ratio > 2 (much worse)", threshold=2.0, direction=">"),
    Claim(id="adadelta-step-carries-units-of-theta", source="seed 002, eq. 4.20",
          statement="Adadelta's descent step keeps the units of θ: rescale θ by c and its steps scale by c.",
          measurement=f"exponent k in mean |Δθ| ∝ c^k, fitted over c ∈ {UNIT_SCALES} (200 steps of descend.Adadelta "
                      "with its default ε = 1e-6 on a 2-D quadratic written in units cθ)",
          criterion="k > 0.5 (closer to 1, units of θ, than to 0, unitless)", threshold=0.5, direction=">",
          deterministic=True),
    Claim(id="rmsprop-step-is-unitless", source="seed 002, §4.3 Adadelta",
          statement="RMSprop's (and AdaGrad's) descent step is unit-less: it does not scale with θ.",
          measurement="the same exponent k for descend.RMSprop (lr 0.01)",
          criterion="k < 0.5", threshold=0.5, direction="<", deterministic=True),
]


def steep_rates(seed: int, optimizer_class, lr: float, steps: int = 400) -> tuple[float, np.ndarray]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(512, 2, generator=generator) * torch.tensor(FEATURE_SCALES)
    y = x @ torch.tensor([1.0, 0.1]) + 0.5 * torch.randn(512, generator=generator)
    w = torch.zeros(2, requires_grad=True)
    optimizer = optimizer_class([w], lr=lr)
    key = "sum" if optimizer_class is descend.Adagrad else "square_avg"
    rates = []
    for _ in range(steps):
        index = torch.randint(0, 512, (16,), generator=generator)
        optimizer.zero_grad()
        ((x[index] @ w - y[index]) ** 2).mean().backward()
        optimizer.step()
        rates.append((lr / (optimizer.state[w][key].sqrt() + optimizer.param_groups[0]["eps"])).tolist())
    rates = np.array(rates)
    return float((rates[steps // 2:, 1] / rates[steps // 2:, 0]).mean()), rates


class AdagradWithoutRoot:
    """The variant seed 003 warns about, written out: cache += g²; θ −= α·g/(cache + ε). (descend has no such class.)"""

    def __init__(self, params, lr: float, eps: float = 1e-10):
        self.params, self.lr, self.eps = list(params), lr, eps
        self.cache = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, closure):
        with torch.enable_grad():
            loss = closure()
        for p, cache in zip(self.params, self.cache):
            cache += p.grad**2
            p -= self.lr * p.grad / (cache + self.eps)
        return loss


def square_root_runs(seed: int, steps: int) -> dict[str, dict]:
    split = data.digits(seed)
    best: dict[str, dict] = {}
    for name, grid in SQRT_GRIDS.items():
        for lr in grid:
            torch.manual_seed(seed)
            model = torch.nn.Linear(64, 10)
            optimizer = (descend.Adagrad(model.parameters(), lr=lr) if name == "AdaGrad"
                         else AdagradWithoutRoot(model.parameters(), lr=lr))
            curve = data.train(model, optimizer, split, steps, generator=torch.Generator().manual_seed(seed),
                               record_every=5)
            loss = data.evaluate(model, split.x_train, split.y_train)[0]
            loss = loss if math.isfinite(loss) else math.inf
            if name not in best or loss < best[name]["final_training_loss"]:
                best[name] = {"lr": lr, "final_training_loss": loss, "curve": curve,
                              "lr_at_grid_edge": lr in (grid[0], grid[-1])}
    return best


@lru_cache(maxsize=1)
def unit_exponents(steps: int = 200) -> dict[str, dict]:
    """Fitted k in mean|Δθ| ∝ c^k when f(θ) = ½Σλᵢ(θᵢ − θ*ᵢ)² is optimized in the variable φ = cθ."""
    curvature, target = torch.tensor([1.0, 10.0], dtype=torch.float64), torch.tensor([1.0, -1.0], dtype=torch.float64)
    makers = {"Adadelta": lambda p, c: descend.Adadelta(p),
              "RMSprop": lambda p, c: descend.RMSprop(p, lr=0.01)}
    exponents, remaining = {}, {}
    for name, make in makers.items():
        sizes, remaining[name] = [], []
        for c in UNIT_SCALES:
            phi = torch.zeros(2, dtype=torch.float64, requires_grad=True)
            optimizer = make([phi], c)
            moved = 0.0
            for _ in range(steps):
                before = phi.detach().clone()
                phi.grad = curvature * (phi.detach() / c - target) / c  # ∂f(φ/c)/∂φ
                optimizer.step()
                moved += (phi.detach() - before).norm().item() / steps
            sizes.append(moved)
            remaining[name].append(((phi.detach() / c - target).norm() / target.norm()).item())
        exponents[name] = fitted_slope(UNIT_SCALES, sizes)
    return {"exponent": exponents, "fraction_of_distance_left": remaining}


def run(ctx: Context) -> Result:
    adagrad_ratio, adagrad_rates = steep_rates(ctx.seed, descend.Adagrad, 0.1)
    rmsprop_ratio, rmsprop_rates = steep_rates(ctx.seed, descend.RMSprop, 0.01)
    steps = 600 if ctx.full else 150
    roots = square_root_runs(ctx.seed, steps)
    root_ratio = roots["AdaGrad without √"]["final_training_loss"] / roots["AdaGrad"]["final_training_loss"]
    units = unit_exponents()
    exponents, left = units["exponent"], units["fraction_of_distance_left"]
    effects = {"adagrad-steep-coordinate-smaller-rate": adagrad_ratio,
               "rmsprop-steep-coordinate-smaller-rate": rmsprop_ratio,
               "adagrad-square-root-matters": root_ratio,
               "adadelta-step-carries-units-of-theta": exponents["Adadelta"],
               "rmsprop-step-is-unitless": exponents["RMSprop"]}
    if ctx.figures_wanted:
        draw(ctx, {"AdaGrad": adagrad_rates, "RMSprop": rmsprop_rates}, roots)
    edges = [name for name, b in roots.items() if b["lr_at_grid_edge"]]
    summary = (f"Steep / flat coordinate's effective rate: AdaGrad {adagrad_ratio:.3f}, RMSprop {rmsprop_ratio:.3f} "
               f"(feature scales {FEATURE_SCALES}). Final training loss: AdaGrad {roots['AdaGrad']['final_training_loss']:.3f}"
               f" (lr {roots['AdaGrad']['lr']:g}), without the square root "
               f"{roots['AdaGrad without √']['final_training_loss']:.3f} (lr {roots['AdaGrad without √']['lr']:g}): "
               f"{root_ratio:.2f}×. Mean step ∝ c^k when θ is rescaled by c ∈ {UNIT_SCALES}: Adadelta k = "
               f"{exponents['Adadelta']:.2f}, RMSprop k = {exponents['RMSprop']:.2f}; fraction of the way to the "
               "optimum still left after 200 steps: Adadelta " + ", ".join(f"{v:.2f}" for v in left["Adadelta"])
               + ", RMSprop " + ", ".join(f"{v:.2f}" for v in left["RMSprop"]) + ". A method whose steps carried "
               "θ's units would leave the same fraction for every c. Adadelta's √(d+ε)/√(s+ε) has θ's units only "
               "once d ≫ ε; from d = 0 its steps start at √ε ≈ 1e-3 and grow slowly, whatever the units of θ." + (f" Best lr at a grid edge for: {', '.join(edges)}." if edges else ""))
    numbers = {"steep_over_flat_rate": {"AdaGrad": adagrad_ratio, "RMSprop": rmsprop_ratio},
               "square_root": {k: {n: v for n, v in b.items() if n != "curve"} for k, b in roots.items()},
               "square_root_grids": SQRT_GRIDS, "unit_scales": UNIT_SCALES, "units": units}
    return Result(effects, summary, numbers)


def draw(ctx: Context, rates: dict[str, np.ndarray], roots: dict[str, dict]) -> None:
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 4.4))
    for name, series in rates.items():
        left.semilogy(series[:, 0], color=ctx.color(name), label=f"{name}, flat coordinate (scale 1)")
        left.semilogy(series[:, 1], color=ctx.color(name), linestyle="--", label=f"{name}, steep coordinate (scale 10)")
    left.set_xlabel("step"), left.set_ylabel("effective rate α/(√s + ε) (θ units per gradient unit)")
    left.set_title("noisy linear regression: the steep coordinate gets the smaller rate"), left.legend(fontsize=7)
    for name, best in roots.items():
        right.semilogy([5 * i for i in range(len(best["curve"]))], best["curve"], color=ctx.color(name),
                       label=f"{name} (best lr {best['lr']:g})")
    right.set_xlabel("step"), right.set_ylabel("mini-batch training loss (cross-entropy, nats)")
    right.set_title("logistic regression on digits"), right.legend(fontsize=8)
    ctx.save(figure, "rates", caption="Left: AdaGrad and RMSprop hand the steep coordinate (dashed) a smaller rate "
             "than the flat one. Right: without the square root AdaGrad's rate falls like 1/t and it learns far "
             "less, even at its best learning rate.")
