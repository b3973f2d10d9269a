"""SAM finds flatter minima: the top Hessian eigenvalue, measured by power iteration (seed 004, SAM slide)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

import descend

from .. import data, tuning
from ..claims import BEYOND, SLIDES, Claim
from ..core import Context, Result

NAME = "sam-flatness"
ORDER = 13
TITLE = "SAM finds flatter minima"
COST = {"tune": 3.0, "run": 0.8}
STEPS = {"quick": 200, "full": 1000}
RHO = 0.05  # Foret et al.'s usual ρ
LR_GRID = (0.01, 0.03, 0.1)
CLAIMS = [Claim(
    id="sam-finds-flatter-minimum",
    source=f"{BEYOND}: Foret et al., Sharpness-Aware Minimization (ICLR 2021); the course shows the SAM problem in "
           f"{SLIDES}, slide “Optimization for Better Generalization?” (eq. (1): min_w max_‖ε‖≤ρ L_S(w + ε))",
    statement="Minimizing the worst loss in a ρ-ball around w (sharpness-aware minimization) selects flat minima.",
    quote="paraphrase", beyond_course=True,
    measurement=f"top eigenvalue of the training-loss Hessian (power iteration) after SGD divided by the one after "
                f"SAM(SGD, ρ = {RHO}) (MLP on digits, {STEPS['quick']} steps, momentum 0.9, each at its best lr by "
                "final training loss, from a grid widened until the best is inside)",
    criterion="ratio > 1 (SAM's minimum is flatter)", threshold=1.0, direction=">", scale="ratio",
    compares=("SGD", "SAM"))]


def train(split: data.Split, seed: int, name: str, lr: float, steps: int, device=None):
    torch.manual_seed(seed)
    model = data.mlp(64, 64, 10, depth=2)
    if device is not None:
        model = model.to(device)
    kwargs = dict(lr=lr, momentum=0.9, nonfinite="skip")
    optimizer = (descend.SAM(model.parameters(), descend.SGD, rho=RHO, **kwargs) if name == "SAM"
                 else descend.SGD(model.parameters(), **kwargs))
    curve = data.train(model, optimizer, split, steps, generator=torch.Generator().manual_seed(seed), record_every=5)
    return model, curve


def tune(ctx: Context) -> dict:
    split = data.digits(ctx.seed)
    steps = STEPS["full" if ctx.full else "quick"]

    def final_loss(name):
        def loss(lr):
            value = data.evaluate(train(split, ctx.seed, name, lr, steps)[0], split.x_train, split.y_train)[0]
            return value if value == value else float("inf")
        return tuning.one_at_a_time(loss)

    return {name: tuning.search(final_loss(name), [tuning.lr_axis(*LR_GRID)],
                                metric=f"final full training loss after {steps} steps") for name in ("SGD", "SAM")}


def top_hessian_eigenvalue(model, x, y, iterations: int, generator) -> float:
    """Power iteration with Hessian-vector products (double backward) on the full training loss."""
    params = [p for p in model.parameters() if p.requires_grad]
    x, y = x.to(params[0].device), y.to(params[0].device)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    gradients = torch.autograd.grad(loss, params, create_graph=True)
    vector = [torch.randn(p.shape, generator=generator).to(p.device) for p in params]
    eigenvalue = 0.0
    for _ in range(iterations):
        norm = torch.sqrt(sum((v * v).sum() for v in vector))
        vector = [v / norm for v in vector]
        product = torch.autograd.grad(gradients, params, grad_outputs=vector, retain_graph=True)
        eigenvalue = sum((h * v).sum() for h, v in zip(product, vector)).item()
        vector = [h.detach() for h in product]
    return eigenvalue


def draw_landscapes(ctx: Context, models: dict, split) -> None:
    """The two minima as pictures (descend.landscape): the loss on the line from SGD's solution to SAM's, and
    the surface around each along two filter-normalized random directions (Li et al. 2018), on one scale."""
    loss_fn = torch.nn.functional.cross_entropy
    batch = (split.x_train, split.y_train)
    line = descend.landscape(models["SGD"], loss_fn, batch, "interpolate", target=models["SAM"], steps=41,
                             progress=False)
    surfaces = {name: descend.landscape(model, loss_fn, batch, "filter", steps=21, span=1.0, seed=ctx.seed,
                                        progress=False) for name, model in models.items()}
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    axes[0].plot(line.x, line.loss, color="black")
    for name, t in (("SGD", 0.0), ("SAM", 1.0)):
        axes[0].axvline(t, color=ctx.color(name), linestyle="--", label=f"{name}'s solution")
    axes[0].set_yscale("log"), axes[0].set_xlabel("t on θ = (1−t)·θ_SGD + t·θ_SAM")
    axes[0].set_ylabel("training cross-entropy (nats, log)"), axes[0].legend()
    axes[0].set_title("from SGD's minimum to SAM's")
    logs = {name: np.log10(np.maximum(surface.loss, 1e-12)) for name, surface in surfaces.items()}
    levels = np.linspace(min(v.min() for v in logs.values()), max(v.max() for v in logs.values()), 16)
    for axis, (name, surface) in zip(axes[1:], surfaces.items()):
        contour = axis.contourf(surface.x, surface.y, logs[name], levels=levels, cmap="viridis")
        axis.plot(0, 0, marker="*", color=ctx.color(name), markersize=14, markeredgecolor="white")
        axis.set_title(f"around {name}'s minimum")
        axis.set_xlabel("α along filter-normalized δ"), axis.set_ylabel("β along filter-normalized η")
    figure.subplots_adjust(wspace=0.38, right=0.9, left=0.07)
    figure.colorbar(contour, ax=axes[1:], label="log₁₀ training cross-entropy (one scale for both)")
    ctx.save(figure, "landscape", tight=False, caption="The loss between and around the two solutions "
             "(descend.landscape, Li et al. 2018 directions): compare the width of the dark basins on one colour scale; "
             "the Hessian eigenvalue above is the number.", claims=["sam-finds-flatter-minimum"])


def run(ctx: Context) -> Result:
    split = data.digits(ctx.seed)
    steps = STEPS["full" if ctx.full else "quick"]
    numbers, curves, models = {}, {}, {}
    for name in ctx.track(["SGD", "SAM"]):
        model, curves[name] = train(split, ctx.seed, name, ctx.tuned[name]["best"]["lr"], steps, ctx.device)
        model.eval()
        models[name] = model
        numbers[name] = {
            "top_hessian_eigenvalue": top_hessian_eigenvalue(model, split.x_train, split.y_train, 12, ctx.generator(7)),
            "train_loss": data.evaluate(model, split.x_train, split.y_train)[0],
            "test_accuracy": data.evaluate(model, split.x_test, split.y_test)[1],
        }
    sgd, sam = numbers["SGD"], numbers["SAM"]
    if ctx.figures_wanted:
        figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.3))
        for name, losses in curves.items():
            left.plot([5 * i for i in range(len(losses))], losses, label=name, color=ctx.color(name))
        left.set_yscale("log"), left.set_title("training loss (MLP on digits)"), left.set_xlabel("step")
        left.set_ylabel("mini-batch cross-entropy (nats, log)"), left.legend()
        names = list(numbers)
        right.bar(names, [numbers[n]["top_hessian_eigenvalue"] for n in names], color=[ctx.color(n) for n in names])
        right.set_title("top Hessian eigenvalue at the end (lower = flatter)")
        right.set_ylabel("λ_max of ∇²L (nats per unit² of θ)")
        ctx.save(figure, "sharpness", caption="Each at its tuned learning rate: the training loss (left) and the top "
                 "Hessian eigenvalue where each ends (right; lower = flatter).", claims=["sam-finds-flatter-minimum"])
        draw_landscapes(ctx, models, split)
    summary = (f"Top Hessian eigenvalue: SGD {sgd['top_hessian_eigenvalue']:.2f} (lr {ctx.tuned['SGD']['best']['lr']:g}),"
               f" SAM {sam['top_hessian_eigenvalue']:.2f} (lr {ctx.tuned['SAM']['best']['lr']:g}). Test accuracy: SGD "
               f"{sgd['test_accuracy']:.3f}, SAM {sam['test_accuracy']:.3f}. Gradient descent at rate α cannot settle "
               "where the top eigenvalue exceeds 2/α, so the two rates bound the sharpness each can end at.")
    return Result({"sam-finds-flatter-minimum": sgd["top_hessian_eigenvalue"] / sam["top_hessian_eigenvalue"]},
                  summary, numbers)
