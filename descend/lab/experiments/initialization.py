"""Weight initialization of a deep ReLU network: constant, small random, 1/√n, √(2/n) (seed 003, question 2)."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch
from torch import nn

import descend

from .. import data
from ..claims import Claim
from ..core import Context, Result

NAME = "initialization"
ORDER = 10
TITLE = "Weight initialization of a deep ReLU MLP"
CLAIMS = [
    Claim(id="he-init-keeps-activation-scale",
          source="seed 003, question 2 (c) (He et al.: variance 2/n for ReLU)",
          statement="Initializing with w = randn(n)·√(2/n) keeps the output distribution of the neurons of a ReLU "
                    "network the same from layer to layer.",
          measurement="|log₂(activation std of the last hidden layer / the first)| in a 10-layer, 256-wide ReLU MLP "
                      "at initialization, on 512 digits",
          criterion="< 1 (within a factor 2)", threshold=1.0, direction="<"),
    Claim(id="lecun-init-halves-relu-variance-per-layer",
          source="seed 003, question 2 (c) (“ReLU units will have a positive mean”: the 1/√n derivation assumes "
                 "zero-mean inputs)",
          statement="Var(s) = n·Var(w)·Var(x) gives w = randn(n)/√n, which holds for zero-mean units; after a ReLU "
                    "half the variance is lost, so the scale shrinks by √2 per layer.",
          measurement="|log₂((std last / std first) / 2^(−9/2))| with 1/√n init, 10 layers",
          criterion="< 1 (within a factor 2 of the √2-per-layer prediction)", threshold=1.0, direction="<"),
    Claim(id="small-random-init-kills-the-signal",
          source="seed 003, question 2 (b) (“could greatly diminish the gradient signal”)",
          statement="A network with very small weights (0.01·N(0,1)) computes very small activations and gradients "
                    "in deep layers.",
          measurement="log₁₀(activation std of the last hidden layer / the first) with 0.01·N(0,1) init, 10 layers",
          criterion="< −6", threshold=-6.0, direction="<"),
    Claim(id="constant-init-keeps-units-identical",
          source="seed 003, question 2 (a) (“there is no source of asymmetry between neurons”)",
          statement="If every neuron computes the same output they compute the same gradients and undergo the same "
                    "updates: constant initialization never breaks the symmetry.",
          measurement="log₁₀ of the largest difference between two units of the last hidden layer after training "
                      "(constant 0.05 init; 1e-30 added)",
          criterion="< −5", threshold=-5.0, direction="<"),
    Claim(id="he-init-trains-better-than-constant-or-small",
          source="seed 003, question 2 (c) (“empirically improves the rate of convergence”)",
          statement="Calibrated initialization trains faster than constant or small random initialization.",
          measurement="training loss after 100 SGD steps: the better of constant and small random minus √(2/n) "
                      "(nats)",
          criterion="difference > 0", threshold=0.0, direction=">"),
]

DEPTH, WIDTH = 10, 64  # the trained networks
STATISTICS_WIDTH = 256  # the activation statistics: wider, so one draw of the weights says more
INITS = {
    "constant 0.05": lambda w: nn.init.constant_(w, 0.05),
    "small random 0.01·N(0,1)": lambda w: nn.init.normal_(w, 0.0, 0.01),
    "1/√n": lambda w: nn.init.normal_(w, 0.0, 1 / math.sqrt(w.shape[1])),
    "√(2/n)": lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"),
}


def build(init, width: int = WIDTH) -> nn.Sequential:
    model = data.mlp(64, width, 10, depth=DEPTH)
    for layer in model:
        if isinstance(layer, nn.Linear):
            init(layer.weight)
            nn.init.zeros_(layer.bias)
    return model


def hidden_activations(model: nn.Sequential, x: torch.Tensor) -> list[torch.Tensor]:
    outputs = []
    for layer in model:
        x = layer(x)
        if isinstance(layer, nn.ReLU):
            outputs.append(x)
    return outputs


def run(ctx: Context) -> Result:
    split = data.digits(ctx.seed)
    x, y = split.x_train[:512].to(ctx.device), split.y_train[:512].to(ctx.device)
    steps = 600 if ctx.full else 100
    numbers, curves, stds, grads = {}, {}, {}, {}
    for name, init in ctx.track(INITS.items(), total=len(INITS)):
        torch.manual_seed(ctx.seed)
        with torch.no_grad():
            stds[name] = [a.std().item() for a in hidden_activations(ctx.place(build(init, STATISTICS_WIDTH)), x)]
        model = ctx.place(build(init))
        nn.functional.cross_entropy(model(x), y).backward()
        grads[name] = [layer.weight.grad.norm().item() for layer in model if isinstance(layer, nn.Linear)]
        model.zero_grad()
        optimizer = descend.SGD(model.parameters(), lr=0.01, momentum=0.9)
        curves[name] = data.train(model, optimizer, split, steps, generator=ctx.generator())
        final_loss = data.evaluate(model, split.x_train, split.y_train)[0]
        with torch.no_grad():
            last_hidden = hidden_activations(model, x)[-1]
        spread = (last_hidden - last_hidden[:, :1]).abs().max().item()  # 0 when all units are identical
        numbers[name] = {"activation_std_first": stds[name][0], "activation_std_last": stds[name][-1],
                         "std_ratio_last_over_first": stds[name][-1] / max(stds[name][0], 1e-30),
                         "final_train_loss": final_loss, "max_difference_between_units_after_training": spread}
    if ctx.figures_wanted:
        draw(ctx, stds, grads, curves)
    he, lecun = numbers["√(2/n)"], numbers["1/√n"]
    small, constant = numbers["small random 0.01·N(0,1)"], numbers["constant 0.05"]
    halving = 2 ** (-(DEPTH - 1) / 2)  # ReLU halves E[h²] per layer when Var(w) = 1/n
    summary = (f"Activation std last/first layer: √(2/n) {he['std_ratio_last_over_first']:.2f}, 1/√n "
               f"{lecun['std_ratio_last_over_first']:.3f} (√2 per layer predicts {halving:.3f}), small "
               f"random {small['std_ratio_last_over_first']:.1e}. Final train loss: "
               + ", ".join(f"{k} {v['final_train_loss']:.3f}" for k, v in numbers.items())
               + f". Constant init: hidden units differ by at most "
                 f"{constant['max_difference_between_units_after_training']:.1e}.")
    effects = {
        "he-init-keeps-activation-scale": abs(math.log2(he["std_ratio_last_over_first"])),
        "lecun-init-halves-relu-variance-per-layer": abs(math.log2(lecun["std_ratio_last_over_first"] / halving)),
        "small-random-init-kills-the-signal": math.log10(max(small["std_ratio_last_over_first"], 1e-300)),
        "constant-init-keeps-units-identical": math.log10(constant["max_difference_between_units_after_training"]
                                                          + 1e-30),
        "he-init-trains-better-than-constant-or-small": min(small["final_train_loss"], constant["final_train_loss"])
        - he["final_train_loss"],
    }
    return Result(effects, summary, numbers)


def draw(ctx: Context, stds: dict, grads: dict, curves: dict) -> None:
    figure, axes = plt.subplots(1, 3, figsize=(16, 4.3))
    for name in INITS:
        color = ctx.color(name)
        axes[0].semilogy(range(1, DEPTH + 1), [max(s, 1e-30) for s in stds[name]], "o-", label=name, color=color)
        axes[1].semilogy(range(1, DEPTH + 2), [max(g, 1e-30) for g in grads[name]], "o-", label=name, color=color)
        axes[2].plot(curves[name], label=name, color=color)
    axes[0].set_title("activation std per hidden layer"), axes[0].set_xlabel("hidden layer")
    axes[0].set_ylabel("standard deviation of activations (log)")
    axes[1].set_title("gradient norm per layer at init"), axes[1].set_xlabel("linear layer")
    axes[1].set_ylabel("‖∂loss/∂W‖ (log)")
    axes[2].set_title("training loss (SGD, momentum 0.9)"), axes[2].set_xlabel("step"), axes[2].set_yscale("log")
    axes[2].set_ylabel("mini-batch cross-entropy (nats, log)")
    for axis in axes:
        axis.legend(fontsize=7)
    ctx.save(figure, "layers", caption="√(2/n) keeps the activation scale flat across 10 ReLU layers, 1/√n loses "
             "√2 per layer, 0.01·N(0,1) collapses to nothing; only the calibrated inits train quickly.")
