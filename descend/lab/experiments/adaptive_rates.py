"""Per-coordinate learning rates (seed 002 §4.3, seed 003): who gets the smaller rate, why AdaGrad needs its
square root, and whether Adadelta's step carries the units of θ."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import torch

import descend

from .. import data, tuning
from ..claims import BEYOND, LECTURE, PREPARATION, QUIZ, Claim
from ..core import Context, Result, fitted_slope

NAME = "adaptive-rates"
TITLE = "Per-coordinate rates: steep coordinates, the square root, Adadelta's units"
ORDER = 5  # beside the lab's experiment on the same topic (ties sort by NAME)
COST = {"tune": 2.5, "run": 0.4}

FEATURE_SCALES = (1.0, 10.0)  # the second coordinate's curvature is 100× the first's
UNIT_SCALES = (1.0, 10.0, 100.0)  # θ is written in units cθ
UNIT_STEPS = (10, 100, 1000, 3000)  # k is fitted from the mean |Δ| over the first T steps
ROOT_STEPS = {"quick": 150, "full": 600}
# name: (optimizer factory, starting lr grid)
ROOT_VARIANTS = {
    "AdaGrad": (lambda params, lr: descend.Adagrad(params, lr=lr), (0.1, 0.3, 1.0)),
    "AdaGrad without √": (lambda params, lr: WithoutRoot(params, lr=lr, decay=None), (1e-4, 1e-3, 1e-2)),
    "RMSprop": (lambda params, lr: descend.RMSprop(params, lr=lr), (1e-3, 3e-3, 1e-2)),
    "RMSprop as in the answer (no √)": (lambda params, lr: WithoutRoot(params, lr=lr, decay=0.99), (1e-6, 1e-5, 1e-4)),
    "RMSprop, γ = 0.999": (lambda params, lr: descend.RMSprop(params, lr=lr, alpha=0.999), (1e-3, 3e-3, 1e-2)),
}
_STEEP = "Hence, r_i is roughly the inverse of the magnitude of the derivative, and r_i is low when the changes for " \
         "coordinate i are steep and vise-versa."

CLAIMS = [
    Claim(id="adagrad-steep-coordinate-smaller-rate", source=f"{LECTURE}, §4.3, eqs. (4.16)–(4.18)",
          statement=_STEEP, quote="verbatim", kind="worked check",
          measurement="AdaGrad's effective rate α/(√s+ε) on the steep coordinate divided by the flat one's, mean over "
                      "the second half of 400 steps (noisy linear regression, feature scales 1 and 10)",
          criterion="ratio < 1", threshold=1.0, direction="<", scale="ratio"),
    Claim(id="rmsprop-steep-coordinate-smaller-rate", source=f"{LECTURE}, §4.3, eqs. (4.16)–(4.18)",
          statement=_STEEP, quote="verbatim", kind="worked check",
          measurement="the same ratio for descend.RMSprop (γ = 0.99)",
          criterion="ratio < 1", threshold=1.0, direction="<", scale="ratio"),
    Claim(id="adagrad-square-root-matters", source=f"{QUIZ}, question 1 (d), “Adagrad”",
          statement="Amusingly, the square root operation turns out to be very important and without it the algorithm "
                    "performs much worse.",
          quote="verbatim",
          measurement=f"final full training loss (logistic regression on digits, {ROOT_STEPS['quick']} steps) of "
                      "AdaGrad without the square root (cache += g²; θ −= α·g/(cache + ε), written out) divided by "
                      "descend.Adagrad's, each at its best lr of a grid widened until the best is inside",
          criterion="ratio > 2 (much worse)", threshold=2.0, direction=">", scale="ratio",
          compares=("AdaGrad", "AdaGrad without √")),
    Claim(id="answer-rmsprop-without-square-root", source=f"{PREPARATION}, answer to question 3 (its formula)",
          statement="RMSprop's update is w_t = w_(t−1) − η/E[g²]_t · ∂L/∂w, with E[g²]_t = βE[g²]_(t−1) + "
                    "(1 − β)(∂L/∂w)² (the answer's formula, without the square root its own text names).",
          quote="paraphrase",
          measurement="final full training loss of the answer's formula (written out, β = 0.99) divided by "
                      "descend.RMSprop's (same task, each at its best lr): the formula is RMSprop if they train alike",
          criterion="ratio between 0.8 and 1.25 (trains like RMSprop)", threshold=(0.8, 1.25), direction="between",
          scale="ratio", compares=("RMSprop", "RMSprop as in the answer (no √)")),
    Claim(id="rmsprop-typical-gamma-0999", source=f"{LECTURE}, §4.3, after eq. (4.18)",
          statement="RMSprop is also parameterized by a decay parameter γ ∈ [0,1) with typical values at γ = 0.999 "
                    "implying that for RMSprop the sequence {sᵢ} is a relatively slow exponential smoothing of the "
                    "square of the derivative.",
          quote="paraphrase",
          measurement="final full training loss of descend.RMSprop with γ = 0.999 divided by its loss with the "
                      "library's (and torch's) default γ = 0.99 (logistic regression on digits, each at its best lr)",
          criterion="ratio < 1.1 (γ = 0.999 at most 10% worse: a fine typical value)", threshold=1.1, direction="<",
          scale="ratio", compares=("RMSprop", "RMSprop, γ = 0.999")),
    Claim(id="adadelta-step-has-units-of-gradient", source=f"{LECTURE}, §4.3, “Adadelta”, before eq. (4.20)",
          statement="With Adadelta, the update equation (4.17) is modified so that the descent step maintains the "
                    "same units of the gradient",
          quote="verbatim",
          measurement=f"exponent k in mean |Δθ| ∝ c^k over steps {UNIT_STEPS[-1] // 2}–{UNIT_STEPS[-1]} of "
                      f"descend.Adadelta (default ε = 1e-6) on a 2-D quadratic written in units cθ, c ∈ {UNIT_SCALES}, "
                      "at its optimum with unit gradient noise (stationary: the units cannot be confused with "
                      "arriving sooner): the gradient's units give k = −1",
          criterion="k between −1.5 and −0.5", threshold=(-1.5, -0.5), direction="between", deterministic=True),
    Claim(id="adadelta-step-carries-units-of-theta",
          source=f"{BEYOND}: Zeiler, ADADELTA (2012), §3.2, “the units of Δx match the units of x”; the course's "
                 f"motivation is {LECTURE}, §4.3, “Adadelta”",
          statement="Adadelta's √(E[Δθ²] + ε)/√(E[g²] + ε) gives its step the units of θ: rescale θ by c and its "
                    "steps scale by c.",
          quote="paraphrase", beyond_course=True,
          measurement=f"the same exponent k (the figure shows it after {', '.join(map(str, UNIT_STEPS))} steps, and "
                      "on the way to the optimum from afar)",
          criterion="k > 0.5 (closer to 1, units of θ, than to 0, unitless)", threshold=0.5, direction=">",
          deterministic=True),
    Claim(id="rmsprop-step-is-unitless", source=f"{LECTURE}, §4.3, “Adadelta”",
          statement="A key motivation for Adadelta is the observation that the update equation (4.17) for RMSprop "
                    "or Adagrad uses a unit-less quantity as the descent step.",
          quote="verbatim",
          measurement="the same exponent k for descend.RMSprop (lr 0.01)",
          criterion="k between −0.25 and 0.25", threshold=(-0.25, 0.25), direction="between", deterministic=True),
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


class WithoutRoot:
    """The updates without the square root, written out (descend has no such class): ``decay=None`` is AdaGrad's
    cache += g² (Quiz 7 warns against it), a number γ the answer's RMSprop cache ← γ·cache + (1−γ)g²; then
    θ −= α·g/(cache + ε)."""

    def __init__(self, params, lr: float, decay: float | None, eps: float = 1e-10):
        self.params, self.lr, self.decay, self.eps = list(params), lr, decay, eps
        self.cache = [torch.zeros_like(p) for p in self.params]
        self.skipped_steps = 0

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, closure):
        with torch.enable_grad():
            loss = closure()
        for p, cache in zip(self.params, self.cache):
            if self.decay is None:
                cache += p.grad**2
            else:
                cache.mul_(self.decay).add_((1 - self.decay) * p.grad**2)
            p -= self.lr * p.grad / (cache + self.eps)
        return loss


def root_run(split: data.Split, seed: int, name: str, lr: float, steps: int) -> tuple[float, list[float]]:
    """(final full training loss, mini-batch loss every 5 steps) of logistic regression on digits."""
    torch.manual_seed(seed)
    model = torch.nn.Linear(64, 10)
    optimizer = ROOT_VARIANTS[name][0](model.parameters(), lr)
    curve = data.train(model, optimizer, split, steps, generator=torch.Generator().manual_seed(seed), record_every=5)
    loss = data.evaluate(model, split.x_train, split.y_train)[0]
    return (loss if math.isfinite(loss) else math.inf), curve


def unit_exponents(noisy: bool) -> dict[str, dict[int, float]]:
    """Fitted k in mean|Δθ| ∝ c^k, for each T of UNIT_STEPS, when f(θ) = ½Σλᵢ(θᵢ − θ*ᵢ)² is optimized in the
    variable φ = cθ. Every c runs in one tensor: these optimizers act elementwise.

    ``noisy=False``: from φ = 0 towards the optimum, k from the mean step over the first T steps (every run slows
    as it arrives, the c = 1 run first). ``noisy=True``: started at the optimum with unit gradient noise, k from the
    mean step over the second half of the first T steps (a stationary state: no arrival to confound the units)."""
    curvature = torch.tensor([1.0, 10.0], dtype=torch.float64).repeat(len(UNIT_SCALES))
    target = torch.tensor([1.0, -1.0], dtype=torch.float64).repeat(len(UNIT_SCALES))
    c = torch.tensor(UNIT_SCALES, dtype=torch.float64).repeat_interleave(2)
    makers = {"Adadelta": lambda p: descend.Adadelta([p]), "RMSprop": lambda p: descend.RMSprop([p], lr=0.01)}
    exponents = {}
    for name, make in makers.items():
        generator = torch.Generator().manual_seed(0)
        phi = (c * target if noisy else torch.zeros(len(c), dtype=torch.float64)).requires_grad_(True)
        optimizer = make(phi)
        moves = []
        exponents[name] = {}
        for step in range(1, UNIT_STEPS[-1] + 1):
            before = phi.detach().clone()
            noise = torch.randn(2, generator=generator, dtype=torch.float64).repeat(len(UNIT_SCALES)) if noisy else 0.0
            phi.grad = (curvature * (phi.detach() / c - target) + noise) / c  # ∂f(φ/c)/∂φ, noise in θ's gradient units
            optimizer.step()
            moves.append((phi.detach() - before).view(-1, 2).norm(dim=1))
            if step in UNIT_STEPS:
                window = torch.stack(moves[step // 2 if noisy else 0:]).mean(0)
                exponents[name][step] = fitted_slope(UNIT_SCALES, window.tolist())
    return exponents


def tune(ctx: Context) -> dict:
    split = data.digits(ctx.seed)
    steps = ROOT_STEPS["full" if ctx.full else "quick"]
    records = {name: tuning.search(tuning.one_at_a_time(lambda lr, name=name: root_run(split, ctx.seed, name, lr,
                                                                                        steps)[0]),
                                   [tuning.lr_axis(*grid)], metric=f"final full training loss after {steps} steps")
               for name, (_, grid) in ROOT_VARIANTS.items()}
    # seed-independent, and a few seconds: computed once here rather than in every seed's run
    records["_units"] = {"noisy": unit_exponents(True), "deterministic": unit_exponents(False)}
    return records


def run(ctx: Context) -> Result:
    adagrad_ratio, adagrad_rates = steep_rates(ctx.seed, descend.Adagrad, 0.1)
    rmsprop_ratio, rmsprop_rates = steep_rates(ctx.seed, descend.RMSprop, 0.01)
    split = data.digits(ctx.seed)
    steps = ROOT_STEPS["full" if ctx.full else "quick"]
    roots = {name: root_run(split, ctx.seed, name, ctx.tuned[name]["best"]["lr"], steps) for name in ROOT_VARIANTS}
    loss = {name: value[0] for name, value in roots.items()}
    units = {kind: {name: {int(t): k for t, k in by_t.items()} for name, by_t in value.items()}
             for kind, value in ctx.tuned["_units"].items()}  # JSON keys are strings
    exponents, last = units["noisy"], UNIT_STEPS[-1]
    effects = {"adagrad-steep-coordinate-smaller-rate": adagrad_ratio,
               "rmsprop-steep-coordinate-smaller-rate": rmsprop_ratio,
               "adagrad-square-root-matters": loss["AdaGrad without √"] / loss["AdaGrad"],
               "answer-rmsprop-without-square-root": loss["RMSprop as in the answer (no √)"] / loss["RMSprop"],
               "rmsprop-typical-gamma-0999": loss["RMSprop, γ = 0.999"] / loss["RMSprop"],
               "adadelta-step-has-units-of-gradient": exponents["Adadelta"][last],
               "adadelta-step-carries-units-of-theta": exponents["Adadelta"][last],
               "rmsprop-step-is-unitless": exponents["RMSprop"][last]}
    if ctx.figures_wanted:
        draw(ctx, {"AdaGrad": adagrad_rates, "RMSprop": rmsprop_rates}, roots, units)
    summary = (f"Steep / flat coordinate's effective rate: AdaGrad {adagrad_ratio:.3f}, RMSprop {rmsprop_ratio:.3f} "
               f"(feature scales {FEATURE_SCALES}). Final training loss, each at its best lr: "
               + ", ".join(f"{name} {value:.3f} (lr {ctx.tuned[name]['best']['lr']:g})" for name, value in loss.items())
               + ". Mean step ∝ c^k when θ is written in units cθ, c ∈ {}, after {} steps: ".format(
                   UNIT_SCALES, ", ".join(map(str, UNIT_STEPS)))
               + "; ".join(f"{kind}, {name} k = " + ", ".join(f"{v:.2f}" for v in by_t.values())
                           for kind, value in units.items() for name, by_t in value.items())
               + ". Adadelta's √(d+ε)/√(s+ε) could carry θ's units only once d ≫ ε: at the noise floor d stays near ε "
               "and the step near √ε, whatever the units of θ; on the way to the optimum k rises with T for RMSprop "
               "as much as for Adadelta, because the runs in small units arrive first. Never the gradient's units "
               "(k = −1) the lecture names.")
    numbers = {"steep_over_flat_rate": {"AdaGrad": adagrad_ratio, "RMSprop": rmsprop_ratio},
               "square_root_final_loss": loss, "unit_scales": UNIT_SCALES, "unit_exponents": units}
    return Result(effects, summary, numbers)


def draw(ctx: Context, rates: dict[str, np.ndarray], roots: dict[str, tuple], exponents: dict) -> None:
    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(18, 4.4))
    for name, series in rates.items():
        left.semilogy(series[:, 0], color=ctx.color(name), label=f"{name}, flat coordinate (scale 1)")
        left.semilogy(series[:, 1], color=ctx.color(name), linestyle="--", label=f"{name}, steep coordinate (scale 10)")
    left.set_xlabel("step"), left.set_ylabel("effective rate α/(√s + ε) (θ units per gradient unit)")
    left.set_title("noisy linear regression: the steep coordinate gets the smaller rate"), left.legend(fontsize=7)
    for (name, (_, curve)), style in zip(roots.items(), ("-", "--", "-", "--", ":")):
        middle.semilogy([5 * i for i in range(len(curve))], curve, linestyle=style,
                        color=ctx.color(name.split(" ")[0]),
                        label=f"{name} (best lr {ctx.tuned[name]['best']['lr']:g})")
    middle.set_xlabel("step"), middle.set_ylabel("mini-batch training loss (cross-entropy, nats)")
    middle.set_title("logistic regression on digits: with and without √"), middle.legend(fontsize=7)
    for kind, value in exponents.items():
        for name, by_steps in value.items():
            right.semilogx(list(by_steps), list(by_steps.values()), "o-" if kind == "noisy" else "s:",
                           color=ctx.color(name), label=f"{name}, {'at the noise floor' if kind == 'noisy' else 'from afar'}")
    for level, text in ((1, "units of θ (Zeiler)"), (0, "unitless"), (-1, "units of the gradient (the lecture)")):
        right.axhline(level, color="gray", linestyle=":", linewidth=0.8)
        right.text(UNIT_STEPS[0], level + 0.05, text, fontsize=7, color="gray")
    right.set_xlabel("steps T (log scale)"), right.set_ylabel("k in mean |Δθ| ∝ c^k over the first T steps")
    right.set_title(f"units of the step, θ written as cθ, c ∈ {UNIT_SCALES}"), right.legend(fontsize=8)
    right.set_ylim(-1.2, 1.2)
    ctx.save(figure, "rates", caption="Left: AdaGrad and RMSprop hand the steep coordinate (dashed) a smaller rate. "
             "Middle: without the square root (dashed) AdaGrad and the answer's RMSprop learn less, even at their "
             "best learning rates; RMSprop with γ = 0.999 (dotted) beside the default 0.99. Right: at the noise floor both Adadelta's and RMSprop's steps stay unitless (k ≈ 0); "
             "from afar k rises for both as the runs in small units arrive first; never the gradient's units.", claims=[c.id for c in CLAIMS])
