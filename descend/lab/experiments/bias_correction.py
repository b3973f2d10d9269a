"""Adam's bias correction and step size (Quiz 7, the preparation answers, the lecture's Algorithm 1): the size of
the first steps, the bound |Δ| < α when (1−β₁) = √(1−β₂), and where ε sits."""
from __future__ import annotations

import matplotlib.pyplot as plt
import torch

import descend

from .. import data
from ..claims import LECTURE, PREPARATION, QUIZ, Claim
from ..core import Context, Result

NAME = "bias-correction"
ORDER = 6
TITLE = "Adam's bias correction, its step bound, and where ε sits"
COST = {"run": 0.5}

BETA1, LR = 0.9, 1e-3
BETA2S = (0.99, 0.999, 0.9999)
MATCHED = 0.99  # 1 − β₁ = √(1 − β₂) for β₁ = 0.9

CLAIMS = [
    Claim(id="uncorrected-adam-first-step-is-inflated", source=f"{QUIZ}, question 1, “Adam”",
          statement="The full Adam update also includes a bias correction mechanism, which compensates for the fact "
                    "that in the first few time steps the vectors m, v are both initialized and therefore biased at "
                    "zero, before they fully “warm up”.",
          quote="verbatim", kind="worked check",
          measurement="largest relative error between the median first-step |Δ|/α and (1−β₁)/√(1−β₂) (uncorrected: "
                      "3.2α for β₂ = 0.999, 10α for 0.9999) or 1 (corrected), over β₂ ∈ {0.99, 0.999, 0.9999}, MLP on "
                      "digits",
          criterion="relative error < 0.05", threshold=0.05, direction="<", scale="nonnegative", deterministic=True),
    Claim(id="corrected-adam-steps-stay-near-alpha", source=f"{PREPARATION}, answer to question 5",
          statement="When (1 − β₁) = √(1 − β₂), |m̂ₜ/√v̂ₜ| < 1, therefore |Δₜ| < α.",
          quote="paraphrase",
          measurement=f"largest |Δ|/α over every coordinate update of 60 steps of descend.Adam with β₁ = {BETA1}, "
                      f"β₂ = {MATCHED} (so that 1 − β₁ = √(1 − β₂)), bias-corrected, MLP on digits",
          criterion="largest < 1.0001 (a bound: no update above α)", threshold=1.0001, direction="<", scale="ratio"),
    Claim(id="adam-eps-inside-or-outside-the-root", source=f"{LECTURE}, §4.3, eq. (4.21) and Algorithm 1",
          statement="The key update formula for ADAM is θ ← θ − α·v̂/√(ŝ + ε) (4.21); Algorithm 1 updates "
                    "θ ← θ − α·v̂/(√ŝ + ε): the two describe the same step.",
          quote="paraphrase",
          measurement="final full training loss of Adam with ε inside the root (4.21), written out, divided by "
                      "descend.Adam's (Algorithm 1), ε = 1e-8, logistic regression on digits, 60 steps, lr 0.01",
          criterion="ratio between 0.95 and 1.05 (the same training)", threshold=(0.95, 1.05), direction="between",
          scale="ratio"),
]


class AdamEpsInside:
    """Adam as eq. (4.21) writes it, ε inside the square root (descend's Adam puts it outside, as Algorithm 1)."""

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params, self.lr, self.betas, self.eps, self.t = list(params), lr, betas, eps, 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.s = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, closure):
        with torch.enable_grad():
            loss = closure()
        self.t += 1
        (b1, b2), t = self.betas, self.t
        for p, m, s in zip(self.params, self.m, self.s):
            m.mul_(b1).add_((1 - b1) * p.grad)
            s.mul_(b2).add_((1 - b2) * p.grad**2)
            p -= self.lr * (m / (1 - b1**t)) / torch.sqrt(s / (1 - b2**t) + self.eps)
        return loss


def train_recording(ctx, split, beta2, corrected, steps, generator):
    """Loss curve and all |Δθ|/α of a run, per step."""
    torch.manual_seed(ctx.seed)
    model = ctx.place(data.mlp(64, 32, 10, depth=1))
    optimizer = descend.Adam(model.parameters(), lr=LR, betas=(BETA1, beta2), bias_correction=corrected)
    ratios, losses = [], []
    for _ in range(steps):
        before = [p.detach().clone() for p in model.parameters()]
        losses += data.train(model, optimizer, split, 1, generator=generator)
        moved = torch.cat([(p.detach() - b).abs().flatten() for p, b in zip(model.parameters(), before)]) / LR
        ratios.append(moved[moved > 0].cpu())
    return losses, ratios


def eps_placement(split: data.Split, seed: int, steps: int = 60, lr: float = 0.01) -> dict[str, tuple]:
    """(final full training loss, curve) of logistic regression with ε outside (descend.Adam) and inside the root."""
    out = {}
    for name in ("ε outside the root (Algorithm 1)", "ε inside the root (4.21)"):
        torch.manual_seed(seed)
        model = torch.nn.Linear(64, 10)
        optimizer = (descend.Adam(model.parameters(), lr=lr) if "outside" in name
                     else AdamEpsInside(model.parameters(), lr=lr))
        curve = data.train(model, optimizer, split, steps, generator=torch.Generator().manual_seed(seed))
        out[name] = (data.evaluate(model, split.x_train, split.y_train)[0], curve)
    return out


def run(ctx: Context) -> Result:
    split = data.digits(ctx.seed)
    steps = 200 if ctx.full else 60
    numbers, curves, all_ratios = {}, {}, {}
    runs = [(b2, c) for b2 in BETA2S for c in (True, False)]
    for beta2, corrected in ctx.track(runs):
        losses, ratios = train_recording(ctx, split, beta2, corrected, steps, ctx.generator())
        label = f"β₂={beta2}, {'corrected' if corrected else 'uncorrected'}"
        curves[label] = losses
        predicted = 1.0 if corrected else (1 - BETA1) / (1 - beta2) ** 0.5
        numbers[label] = {"first_step_median_ratio": ratios[0].median().item(), "predicted": predicted,
                          "largest_ratio": torch.cat(ratios).max().item(), "final_loss": losses[-1]}
        if corrected:
            all_ratios[beta2] = torch.cat(ratios)
    first_error = max(abs(v["first_step_median_ratio"] - v["predicted"]) / v["predicted"] for v in numbers.values())
    largest = numbers[f"β₂={MATCHED}, corrected"]["largest_ratio"]
    placement = eps_placement(split, ctx.seed)
    (outside, outside_curve), (inside, inside_curve) = placement.values()
    if ctx.figures_wanted:
        draw(ctx, curves, all_ratios, placement)
    summary = ("Median first-step |Δ|/α, uncorrected: " + ", ".join(
        f"β₂={b}: {numbers[f'β₂={b}, uncorrected']['first_step_median_ratio']:.2f} "
        f"(predicted {numbers[f'β₂={b}, uncorrected']['predicted']:.2f})" for b in BETA2S)
        + f"; corrected: {numbers['β₂=0.999, corrected']['first_step_median_ratio']:.2f}. Largest corrected |Δ|/α: "
        + ", ".join(f"β₂ = {b}: {numbers[f'β₂={b}, corrected']['largest_ratio']:.2f}" for b in BETA2S)
        + f". ε placement (logistic regression, lr 0.01): final training loss {outside:.4f} outside the root, "
        f"{inside:.4f} inside; inside, ε = 1e-8 acts like ε' = √ε = 1e-4 outside for small ŝ.")
    return Result({"uncorrected-adam-first-step-is-inflated": first_error,
                   "corrected-adam-steps-stay-near-alpha": largest,
                   "adam-eps-inside-or-outside-the-root": inside / outside}, summary,
                  {**numbers, "eps_placement_final_loss": {name: value[0] for name, value in placement.items()}})


def draw(ctx: Context, curves: dict, ratios: dict, placement: dict) -> None:
    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(18, 4.5))
    for label, losses in curves.items():
        left.plot(losses[:60], "-" if "uncorrected" not in label else "--", label=label,
                  color=ctx.color(label.split(",")[0]))
    left.set_title("early training loss (MLP on digits); dashed: uncorrected"), left.set_xlabel("step")
    left.set_ylabel("mini-batch cross-entropy (nats)"), left.legend(fontsize=7)
    for beta2, values in ratios.items():
        middle.hist(values.clamp(max=3).numpy(), bins=60, log=True, histtype="step", linewidth=1.5,
                    color=ctx.color(f"β₂={beta2}"), label=f"β₂ = {beta2}: largest {values.max().item():.2f}")
    middle.axvline(1.0, color="black", linestyle="--", label="α")
    middle.set_xlabel("|Δθ|/α per coordinate update (clipped at 3)"), middle.set_ylabel("count (log scale)")
    middle.set_title(f"bias-corrected steps; β₂ = {MATCHED} is the answer's bounded case"), middle.legend(fontsize=7)
    for name, (loss, curve) in placement.items():
        right.semilogy(curve, color=ctx.color(name), label=f"{name}: final {loss:.4f}")
    right.set_xlabel("step"), right.set_ylabel("mini-batch cross-entropy (nats, log)"), right.legend(fontsize=7)
    right.set_title("logistic regression on digits, lr 0.01")
    ctx.save(figure, "steps", caption="Left: without correction the first steps are several α long and the loss jumps "
             "(dashed). Middle: even with 1 − β₁ = √(1 − β₂) some corrected updates exceed α. Right: ε inside or outside "
             "the square root.", claims=[c.id for c in CLAIMS])
