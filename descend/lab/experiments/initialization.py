"""Weight initialization of a deep ReLU network: constant, small random, 1/√n, √(2/n)."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch
from torch import nn

import descend

from .. import data
from ..core import Context, Result

NAME = "initialization"
TITLE = "10. Weight initialization of a deep ReLU MLP"
CLAIM = ("In a 10-layer ReLU MLP, √(2/n) (He) initialization keeps the activation scale within a factor 2 from the "
         "first to the last layer while 1/√n shrinks it by about √2 per layer and 0.01·N(0,1) makes it vanish; He "
         "init trains to a lower loss than constant or small random init; and constant init leaves all hidden units "
         "of a layer identical, even after training.")

DEPTH, WIDTH = 10, 256
INITS = {
    "constant 0.05": lambda w: nn.init.constant_(w, 0.05),
    "small random 0.01·N(0,1)": lambda w: nn.init.normal_(w, 0.0, 0.01),
    "1/√n": lambda w: nn.init.normal_(w, 0.0, 1 / math.sqrt(w.shape[1])),
    "√(2/n)": lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"),
}


def build(init) -> nn.Sequential:
    model = data.mlp(64, WIDTH, 10, depth=DEPTH)
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
    steps = 600 if ctx.full else 250
    numbers, curves, stds, grads = {}, {}, {}, {}
    for name, init in ctx.track(INITS.items(), total=len(INITS)):
        torch.manual_seed(ctx.seed)
        model = ctx.place(build(init))
        activations = hidden_activations(model, x)
        stds[name] = [a.std().item() for a in activations]
        nn.functional.cross_entropy(model(x), y).backward()
        grads[name] = [layer.weight.grad.norm().item() for layer in model if isinstance(layer, nn.Linear)]
        model.zero_grad()
        optimizer = descend.SGD(model.parameters(), lr=0.01, momentum=0.9)
        curves[name] = data.train(model, optimizer, split, steps, generator=ctx.generator())
        final_loss = data.evaluate(model, split.x_train, split.y_train)[0]
        last_hidden = hidden_activations(model, x)[-1]
        spread = (last_hidden - last_hidden[:, :1]).abs().max().item()  # 0 when all units are identical
        numbers[name] = {"activation_std_first": stds[name][0], "activation_std_last": stds[name][-1],
                         "std_ratio_last_over_first": stds[name][-1] / max(stds[name][0], 1e-30),
                         "final_train_loss": final_loss, "max_difference_between_units_after_training": spread}

    figure, axes = plt.subplots(1, 3, figsize=(16, 4.3))
    for name in INITS:
        axes[0].semilogy(range(1, DEPTH + 1), [max(s, 1e-30) for s in stds[name]], "o-", label=name)
        axes[1].semilogy(range(1, DEPTH + 2), [max(g, 1e-30) for g in grads[name]], "o-", label=name)
        axes[2].plot(curves[name], label=name)
    axes[0].set_title("activation std per hidden layer"), axes[0].set_xlabel("layer")
    axes[1].set_title("gradient norm per layer at init"), axes[1].set_xlabel("layer")
    axes[2].set_title("training loss (SGD, momentum 0.9)"), axes[2].set_xlabel("step"), axes[2].set_yscale("log")
    for axis in axes:
        axis.legend(fontsize=7)
    ctx.save(figure, "layers")

    he, lecun = numbers["√(2/n)"], numbers["1/√n"]
    small, constant = numbers["small random 0.01·N(0,1)"], numbers["constant 0.05"]
    halving = 2 ** (-(DEPTH - 1) / 2)  # ReLU halves E[h²] per layer when Var(w) = 1/n
    scale_claims = (0.5 <= he["std_ratio_last_over_first"] <= 2.0
                    and 0.5 <= lecun["std_ratio_last_over_first"] / halving <= 2.0
                    and small["std_ratio_last_over_first"] < 1e-6)
    trains_best = he["final_train_loss"] < min(small["final_train_loss"], constant["final_train_loss"])
    symmetric = constant["max_difference_between_units_after_training"] < 1e-5
    held = scale_claims and trains_best and symmetric
    summary = (f"Activation std last/first layer: √(2/n) {he['std_ratio_last_over_first']:.2f}, 1/√n "
               f"{lecun['std_ratio_last_over_first']:.3f} (√2 per layer predicts {halving:.3f}), small "
               f"random {small['std_ratio_last_over_first']:.1e}. Final train loss: "
               + ", ".join(f"{k} {v['final_train_loss']:.3f}" for k, v in numbers.items())
               + f". Constant init: hidden units differ by at most {constant['max_difference_between_units_after_training']:.1e}.")
    return Result(held, summary, numbers)
