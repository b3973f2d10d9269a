"""Momentum as an average (EMA form) and as an accumulator (velocity form); its variance; Rosenbrock (Fig. 4.1)."""
from __future__ import annotations

from functools import lru_cache

import matplotlib.pyplot as plt
import numpy as np
import torch

import descend

from .. import data, plots, style
from ..claims import ASSIGNMENT, LECTURE, PREPARATION, QUIZ, Claim
from ..core import Context, Result
from .landscapes import rosenbrock, rosenbrock_gradient

NAME = "momentum-forms"
TITLE = "Momentum: an average of the gradients, its variance, and its acceleration on Rosenbrock"
ORDER = 3  # beside the lab's experiment on the same topic (ties sort by NAME)

BETA = 0.9
CONSTANT_STEPS = 200  # steps of a constant gradient; β²⁰⁰ ≈ 7e-10, so every buffer has settled
ROSENBROCK_BETAS = (0.0, 0.5, 0.9)  # Fig. 4.1 of seed 002: α = 0.001/(1 − β)
ROSENBROCK_START = (-1.2, 1.0)

COST = {"run": 0.4}

CLAIMS = [
    Claim(id="momentum-ema-form-stays-at-gradient", source=f"{LECTURE}, §4.1, eqs. (4.1) and (4.3)",
          statement="The momentum v ← βv + (1−β)∇C is an exponential smoothing (a weighted average) of the "
                    "gradients, so under a constant gradient g it settles at g.",
          quote="paraphrase", kind="worked check",
          measurement=f"v/g after {CONSTANT_STEPS} steps of a constant gradient, β = {BETA} "
                      "(descend.SGD(momentum=β, dampening=β), its momentum_buffer)",
          criterion="v/g between 0.99 and 1.01", threshold=(0.99, 1.01), direction="between", scale="ratio",
          deterministic=True),
    Claim(id="momentum-velocity-form-grows", source=f"{QUIZ}, question 1 (b), “Momentum update”",
          statement="The velocity form v = mu * v - learning_rate * dx accumulates the gradients: under a constant "
                    "gradient its size grows to α·g/(1−μ), ten times the plain step for μ = 0.9.",
          quote="paraphrase", kind="worked check",
          measurement=f"b(1−μ)/g after {CONSTANT_STEPS} steps, μ = {BETA} (descend.SGD(momentum=μ), its buffer "
                      "b = −v/α)",
          criterion="b(1−μ)/g between 0.99 and 1.01", threshold=(0.99, 1.01), direction="between", scale="ratio",
          deterministic=True),
    Claim(id="answer-ema-is-g-over-one-minus-beta", source=f"{ASSIGNMENT}, answer to (a) i",
          statement="This trick uses the exponential weighted average, the m calculated by this formula is "
                    "approximately equal to gradient/(1−β₁).",
          quote="paraphrase", kind="worked check",
          measurement=f"m(1−β₁)/g after {CONSTANT_STEPS} steps of a constant gradient, β₁ = {BETA} "
                      "(descend.Adam, its exp_avg)",
          criterion="m(1−β₁)/g between 0.95 and 1.05 (m within 5% of g/(1−β₁))", threshold=(0.95, 1.05),
          direction="between", scale="ratio", deterministic=True),
    Claim(id="momentum-lowers-update-variance", source=f"{ASSIGNMENT}, question (a) i; {PREPARATION}, answer to "
          "question 1",
          statement="SGD with momentum overcomes this by denoising gradients using exponential weighting average.",
          quote="verbatim",
          measurement="variance of the update Δθ over 200 mini-batches, 800 with --full (logistic regression on "
                      "digits, batch 16, θ held fixed), EMA momentum β = 0.9 divided by plain SGD at the same α",
          criterion="ratio < 1", threshold=1.0, direction="<", scale="ratio"),
    Claim(id="momentum-accelerates-on-rosenbrock", source=f"{LECTURE}, §4.1, Figure 4.1",
          statement="We observe that for large β, the momentum method accelerates as it takes downward steps.",
          quote="verbatim",
          measurement="distance to the minimum (1, 1) of Rosenbrock's function after the same number of steps "
                      "with α = 0.001/(1−β) (Figure 4.1's setting): β = 0 (gradient descent) divided by β = 0.9",
          criterion="ratio > 1 (β = 0.9 ends closer)", threshold=1.0, direction=">", scale="ratio",
          deterministic=True),
]


def buffer_history(optimizer_class, key: str, **kwargs) -> list[float]:
    """The optimizer's buffer entry ``key`` after each of CONSTANT_STEPS steps of the constant gradient g = 1."""
    theta = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = optimizer_class([theta], lr=1e-3, **kwargs)
    history = []
    for _ in range(CONSTANT_STEPS):
        theta.grad = torch.ones(1, dtype=torch.float64)
        optimizer.step()
        history.append(optimizer.state[theta][key].item())
    return history


def update_variances(seed: int, draws: int) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Total variance of the update Δθ at a fixed θ, fed by mini-batch gradients, with and without momentum; and
    the updates' norms step by step."""
    split = data.digits(0)
    torch.manual_seed(seed)
    model = torch.nn.Linear(64, 10)
    start = [p.detach().clone() for p in model.parameters()]
    variances, norms = {}, {}
    for name, kwargs in {"SGD": {}, "SGD+momentum": dict(momentum=BETA, dampening=BETA)}.items():
        for p, p0 in zip(model.parameters(), start):
            p.data.copy_(p0)
        optimizer = descend.SGD(model.parameters(), lr=0.1, **kwargs)
        generator = torch.Generator().manual_seed(seed)
        updates = []
        for step in range(draws + 30):  # the first 30 let the momentum buffer fill
            index = torch.randint(0, len(split.y_train), (16,), generator=generator)
            optimizer.step(data.cross_entropy_closure(model, optimizer, split.x_train[index], split.y_train[index]))
            with torch.no_grad():
                moved = torch.cat([(p - p0).flatten() for p, p0 in zip(model.parameters(), start)])
                for p, p0 in zip(model.parameters(), start):
                    p.copy_(p0)  # θ held fixed: only the gradient noise varies
            if step >= 30:
                updates.append(moved)
        updates = torch.stack(updates)
        variances[name] = updates.var(0).sum().item()
        norms[name] = updates.norm(dim=1).numpy()
    return variances, norms


@lru_cache(maxsize=8)
def rosenbrock_path(beta: float, steps: int) -> np.ndarray:
    theta = torch.tensor(ROSENBROCK_START, dtype=torch.float64, requires_grad=True)
    kwargs = dict(momentum=beta, dampening=beta) if beta else {}
    optimizer = descend.SGD([theta], lr=0.001 / (1 - beta), **kwargs)  # EMA form (4.1)-(4.2)
    path = [theta.detach().numpy().copy()]
    for _ in range(steps):
        theta.grad = torch.tensor(rosenbrock_gradient(*theta.tolist()), dtype=torch.float64)
        optimizer.step()
        path.append(theta.detach().numpy().copy())
    return np.array(path)


def run(ctx: Context) -> Result:
    histories = {"EMA form": buffer_history(descend.SGD, "momentum_buffer", momentum=BETA, dampening=BETA),
                 "velocity form": buffer_history(descend.SGD, "momentum_buffer", momentum=BETA),
                 "Adam's m": buffer_history(descend.Adam, "exp_avg", betas=(BETA, 0.999))}
    ema, velocity, adam_m = (h[-1] for h in histories.values())
    variances, update_norms = update_variances(ctx.seed, 800 if ctx.full else 200)
    variance_ratio = variances["SGD+momentum"] / variances["SGD"]
    steps = 3000 if ctx.full else 1500
    paths = {f"β = {beta}": rosenbrock_path(beta, steps) for beta in ROSENBROCK_BETAS}
    distances = {label: np.linalg.norm(path - 1.0, axis=1) for label, path in paths.items()}
    final = {label: float(d[-1]) for label, d in distances.items()}
    acceleration = final["β = 0.0"] / final[f"β = {BETA}"]

    effects = {
        "momentum-ema-form-stays-at-gradient": ema,
        "momentum-velocity-form-grows": velocity * (1 - BETA),
        "answer-ema-is-g-over-one-minus-beta": adam_m * (1 - BETA),
        "momentum-lowers-update-variance": variance_ratio,
        "momentum-accelerates-on-rosenbrock": acceleration,
    }
    if ctx.figures_wanted:
        draw(ctx, paths, distances, histories, steps)
        figure, axis = plt.subplots(figsize=(7, 4))
        for name, norm in update_norms.items():
            axis.plot(norm, color=ctx.color(name), label=f"{name}: variance of Δθ {variances[name]:.2e}")
        axis.set_xlabel("mini-batch (θ held fixed)"), axis.set_ylabel("‖Δθ‖ of the update (weight units)")
        axis.set_title("logistic regression on digits, batch 16, α = 0.1"), axis.legend(fontsize=8)
        ctx.save(figure, "variance", caption="At a fixed θ, the update from each new mini-batch: plain SGD's jumps "
                 "with the batch, the EMA momentum update varies far less.", claims=["momentum-lowers-update-variance"])
    summary = (f"Under a constant gradient g = 1 the EMA buffer settles at {ema:.4f} (= g) and the velocity buffer at "
               f"{velocity:.3f} (= g/(1−β)); Adam's m settles at {adam_m:.4f}, so m(1−β₁)/g = {adam_m * (1 - BETA):.2f}, "
               "not 1: the assignment's answer confuses the EMA with the velocity form — its own sum "
               "Σ 0.1·0.9ⁱ·g has weights adding up to 1, not 10. "
               f"Update variance with momentum / without: {variance_ratio:.3f} (independent noise predicts "
               f"(1−β)/(1+β) = {(1 - BETA) / (1 + BETA):.3f}). Rosenbrock after {steps} steps with α = 0.001/(1−β), "
               "distance to (1, 1): " + ", ".join(f"{k} {v:.3g}" for k, v in final.items()) + ".")
    numbers = {"ema_buffer": ema, "velocity_buffer": velocity, "adam_exp_avg": adam_m, "beta": BETA,
               "update_variance": variances, "variance_ratio": variance_ratio,
               "variance_ratio_independent_noise": (1 - BETA) / (1 + BETA),
               "rosenbrock_final_distance": final, "rosenbrock_steps": steps}
    return Result(effects, summary, numbers)


def draw(ctx: Context, paths, distances, histories, steps: int) -> None:
    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(16, 4.4))
    t = np.arange(1, 41)
    colours = style.distinct([*paths, *histories])  # the β's of the middle panel never share a colour with a form
    labels = {"EMA form": "SGD EMA form: v → g", "velocity form": "SGD velocity form: b → g/(1−β)",
              "Adam's m": "Adam's m (the answer's EMA)"}
    for (name, history), marker in zip(histories.items(), "osx"):
        left.plot(t, history[:40], marker=marker, color=ctx.color("Adam") if name == "Adam's m" else colours[name],
                  markersize=4, linewidth=1, label=labels[name])
    left.axhline(1 / (1 - BETA), color="gray", linestyle=":", label="g/(1−β) (the assignment's answer)")
    left.set_xlabel("step t"), left.set_ylabel("measured buffer / g (dimensionless)")
    left.set_title(f"constant gradient g, β = {BETA}"), left.legend(fontsize=8)

    xs, ys = np.meshgrid(np.linspace(-1.5, 1.5, 200), np.linspace(-0.5, 2.0, 200))
    middle.contour(xs, ys, np.log1p(rosenbrock(xs, ys)), levels=25, cmap="Greys", linewidths=0.6)
    for (label, path), width in zip(paths.items(), (5, 3, 1.5)):  # wide to narrow: overlapping paths stay visible
        middle.plot(path[:, 0], path[:, 1], color=ctx.color(label), linewidth=width, label=label)
    middle.plot(1, 1, "k*", markersize=12)
    middle.set_xlabel("θ₁"), middle.set_ylabel("θ₂"), middle.legend(fontsize=8)
    middle.set_title("Rosenbrock, α = 0.001/(1−β) (lecture notes, Fig. 4.1)")
    for label, d in distances.items():
        right.semilogy(d, color=ctx.color(label), label=label)
    right.set_xlabel("step"), right.set_ylabel("distance to the minimum (1, 1)"), right.legend(fontsize=8)
    right.set_title(f"{steps} steps from {ROSENBROCK_START}")
    ctx.save(figure, "forms", caption="Left: the EMA buffer settles at the gradient and the velocity buffer at "
             "g/(1−β); middle and right: with α = 0.001/(1−β), larger β runs further down Rosenbrock's valley.",
             claims=[c.id for c in CLAIMS if c.id != "momentum-lowers-update-variance"])
    xs, ys = np.meshgrid(np.linspace(-1.5, 1.5, 120), np.linspace(-0.5, 2.0, 120))
    runs = [plots.playground_run("SGD momentum (EMA form)", lr=0.001 / (1 - beta), momentum=beta)
            for beta in ROSENBROCK_BETAS]
    setup = plots.playground_setup("rosenbrock", ROSENBROCK_START, steps, runs)
    spec = plots.trajectories(paths, "Momentum on Rosenbrock, α = 0.001/(1−β)", contour=(xs, ys, np.log1p(rosenbrock(xs, ys))),
                              minimum=(1.0, 1.0), bounds=((-1.5, 1.5), (-0.5, 2.0)), playground=setup)
    ctx.interactive(spec, "rosenbrock", caption="Move the step slider: β = 0.9 races down the valley while "
                    "β = 0 (gradient descent) is still crawling; click a legend entry to hide a path.",
                    claims=["momentum-accelerates-on-rosenbrock"])
