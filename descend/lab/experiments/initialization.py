"""Weight initialization of a deep network (Quiz 7, question 2): constant, small random, 1/√n and √(2/n)."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch
from torch import nn

import descend

from .. import data, style, tuning
from ..claims import QUIZ, Claim
from ..core import Context, Result

NAME = "initialization"
ORDER = 10
TITLE = "Weight initialization of a deep MLP"
COST = {"tune": 3.0, "run": 0.6}

DEPTH, WIDTH = 10, 64  # the trained networks
STATISTICS_WIDTH = 256  # the activation statistics: wider, so one draw of the weights says more
STEPS = {"quick": 60, "full": 600}
LR_GRID = (0.003, 0.01, 0.03)
INITS = {
    "constant 0.05": lambda w: nn.init.constant_(w, 0.05),
    "small random 0.01·N(0,1)": lambda w: nn.init.normal_(w, 0.0, 0.01),
    "1/√n": lambda w: nn.init.normal_(w, 0.0, 1 / math.sqrt(w.shape[1])),
    "√(2/n)": lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"),
}
_Q = f"{QUIZ}, question 2"

CLAIMS = [
    Claim(id="he-init-keeps-activation-scale", source=f"{_Q} (c) hints",
          statement="A more recent paper on this topic, Delving Deep into Rectifiers: Surpassing Human-Level "
                    "Performance on ImageNet Classification by He et al., derives an initialization specifically for "
                    "ReLU neurons, reaching the conclusion that the variance of neurons in the network should be 2.0/n.",
          quote="verbatim",
          measurement=f"log₂(activation std of the last hidden layer / the first) in a {DEPTH}-layer, "
                      f"{STATISTICS_WIDTH}-wide ReLU MLP with √(2/n) initialization, on 256 digits",
          criterion="between −1 and 1 (within a factor 2)", threshold=(-1.0, 1.0), direction="between"),
    Claim(id="lecun-init-keeps-scale-for-zero-mean-units", source=f"{_Q} (c) hints",
          statement="It turns out that we can normalize the variance of each neuron's output to 1 by scaling its "
                    "weight vector by the square root of its fan-in (i.e. its number of inputs).",
          quote="verbatim",
          measurement=f"log₂(activation std of the last hidden layer / the first) in a {DEPTH}-layer, "
                      f"{STATISTICS_WIDTH}-wide tanh MLP (zero-mean units, as the derivation assumes) with 1/√n "
                      "initialization, on 256 digits",
          criterion="between −1 and 1 (within a factor 2)", threshold=(-1.0, 1.0), direction="between"),
    Claim(id="small-random-init-kills-the-signal", source=f"{_Q} (b) hints",
          statement="For example, a Neural Network layer that has very small weights will during backpropagation "
                    "compute very small gradients on its data (since this gradient is proportional to the value of "
                    "the weights).",
          quote="verbatim", kind="worked check",
          measurement=f"log₁₀ of the first layer's gradient norm with 0.01·N(0,1) initialization divided by its norm "
                      f"with √(2/n), {DEPTH}-layer ReLU MLP at initialization",
          criterion="< −6 (a millionth of the signal)", threshold=-6.0, direction="<"),
    Claim(id="constant-init-keeps-units-identical", source=f"{_Q} (a) hints",
          statement="In other words, there is no source of asymmetry between neurons if their weights are "
                    "initialized to be the same.",
          quote="verbatim", kind="worked check",
          measurement="log₁₀ of the largest difference between two units of the last hidden layer after training "
                      "(constant 0.05 init; 1e-30 added)",
          criterion="< −5", threshold=-5.0, direction="<"),
    Claim(id="calibrated-init-trains-faster", source=f"{_Q} (c) hints",
          statement="This ensures that all neurons in the network initially have approximately the same output "
                    "distribution and empirically improves the rate of convergence.",
          quote="verbatim",
          measurement=f"training loss after {STEPS['quick']} SGD steps (momentum 0.9): the better of constant and "
                      "small random divided by the worse of 1/√n and √(2/n), each at its best lr of a grid widened "
                      f"until the best is inside ({DEPTH}-layer, {WIDTH}-wide ReLU MLP on digits)",
          criterion="ratio > 1 (both calibrated inits lower)", threshold=1.0, direction=">", scale="ratio",
          compares=tuple(INITS)),
    Claim(id="he-init-recommended-for-relu", source=f"{_Q} (c) hints",
          statement="This gives the initialization w = np.random.randn(n) * sqrt(2.0/n), and is the current "
                    "recommendation for use in practice in the specific case of neural networks with ReLU neurons.",
          quote="verbatim",
          measurement="the same training loss with 1/√n divided by the loss with √(2/n) (each at its best lr)",
          criterion="ratio > 1 (√(2/n) lower)", threshold=1.0, direction=">", scale="ratio",
          compares=("1/√n", "√(2/n)")),
]


def build(init, width: int = WIDTH, activation=nn.ReLU) -> nn.Sequential:
    model = data.mlp(64, width, 10, depth=DEPTH)
    if activation is not nn.ReLU:
        model = nn.Sequential(*[activation() if isinstance(layer, nn.ReLU) else layer for layer in model])
    for layer in model:
        if isinstance(layer, nn.Linear):
            init(layer.weight)
            nn.init.zeros_(layer.bias)
    return model


def hidden_activations(model: nn.Sequential, x: torch.Tensor) -> list[torch.Tensor]:
    outputs = []
    for layer in model:
        x = layer(x)
        if isinstance(layer, (nn.ReLU, nn.Tanh)):
            outputs.append(x)
    return outputs


def train(split: data.Split, seed: int, name: str, lr: float, steps: int) -> tuple[float, list[float], nn.Module]:
    torch.manual_seed(seed)
    model = build(INITS[name])
    optimizer = descend.SGD(model.parameters(), lr=lr, momentum=0.9, nonfinite="skip")
    curve = data.train(model, optimizer, split, steps, generator=torch.Generator().manual_seed(seed))
    loss = data.evaluate(model, split.x_train, split.y_train)[0]
    return (loss if math.isfinite(loss) and not optimizer.skipped_steps else math.inf), curve, model


def tune(ctx: Context) -> dict:
    split = data.digits(ctx.seed)
    steps = STEPS["full" if ctx.full else "quick"]
    return {name: tuning.search(tuning.one_at_a_time(lambda lr, name=name: train(split, ctx.seed, name, lr, steps)[0]),
                                [tuning.lr_axis(*LR_GRID)], metric=f"final full training loss after {steps} steps")
            for name in INITS}


def run(ctx: Context) -> Result:
    split = data.digits(ctx.seed)
    x, y = split.x_train[:256], split.y_train[:256]
    steps = STEPS["full" if ctx.full else "quick"]
    numbers, curves, stds, grads = {}, {}, {}, {}
    for name, init in ctx.track(INITS.items(), total=len(INITS)):
        torch.manual_seed(ctx.seed)
        with torch.no_grad():
            stds[name] = [a.std().item() for a in hidden_activations(build(init, STATISTICS_WIDTH), x)]
        torch.manual_seed(ctx.seed)
        fresh = build(init)
        nn.functional.cross_entropy(fresh(x), y).backward()
        grads[name] = [layer.weight.grad.norm().item() for layer in fresh if isinstance(layer, nn.Linear)]
        final_loss, curves[name], model = train(split, ctx.seed, name, ctx.tuned[name]["best"]["lr"], steps)
        with torch.no_grad():
            last_hidden = hidden_activations(model, x)[-1]
        spread = (last_hidden - last_hidden[:, :1]).abs().max().item()  # 0 when all units are identical
        numbers[name] = {"activation_std_first": stds[name][0], "activation_std_last": stds[name][-1],
                         "std_ratio_last_over_first": stds[name][-1] / max(stds[name][0], 1e-30),
                         "first_layer_gradient_norm": grads[name][0], "final_train_loss": final_loss,
                         "max_difference_between_units_after_training": spread}
    torch.manual_seed(ctx.seed + 1)  # other draws than the ReLU statistics: a measurement of its own
    with torch.no_grad():
        tanh_stds = [a.std().item() for a in hidden_activations(build(INITS["1/√n"], STATISTICS_WIDTH, nn.Tanh), x)]
    if ctx.figures_wanted:
        draw(ctx, {**stds, "1/√n, tanh": tanh_stds}, grads, curves)
    he, lecun = numbers["√(2/n)"], numbers["1/√n"]
    small, constant = numbers["small random 0.01·N(0,1)"], numbers["constant 0.05"]
    summary = (f"Activation std last/first hidden layer: √(2/n) (ReLU) {he['std_ratio_last_over_first']:.2f}, 1/√n "
               f"(ReLU) {lecun['std_ratio_last_over_first']:.3f} (it loses √2 per layer), 1/√n (tanh) "
               f"{tanh_stds[-1] / tanh_stds[0]:.2f}, small random {small['std_ratio_last_over_first']:.1e}. Final train "
               "loss at each one's best lr: " + ", ".join(
                   f"{k} {v['final_train_loss']:.3f} (lr {ctx.tuned[k]['best']['lr']:g})" for k, v in numbers.items())
               + f". Constant init: hidden units differ by at most "
                 f"{constant['max_difference_between_units_after_training']:.1e}.")
    effects = {
        "he-init-keeps-activation-scale": math.log2(he["std_ratio_last_over_first"]),
        "lecun-init-keeps-scale-for-zero-mean-units": math.log2(tanh_stds[-1] / tanh_stds[0]),
        "small-random-init-kills-the-signal": math.log10(max(small["first_layer_gradient_norm"], 1e-300)
                                                         / he["first_layer_gradient_norm"]),
        "constant-init-keeps-units-identical": math.log10(constant["max_difference_between_units_after_training"]
                                                          + 1e-30),
        "calibrated-init-trains-faster": min(small["final_train_loss"], constant["final_train_loss"])
        / max(he["final_train_loss"], lecun["final_train_loss"]),
        "he-init-recommended-for-relu": lecun["final_train_loss"] / he["final_train_loss"],
    }
    return Result(effects, summary, {**numbers, "tanh_lecun_std_ratio": tanh_stds[-1] / tanh_stds[0]})


def draw(ctx: Context, stds: dict, grads: dict, curves: dict) -> None:
    figure, axes = plt.subplots(1, 3, figsize=(16, 4.3))
    colours = style.distinct([*INITS, *stds])  # the tanh network never wears a ReLU init's colour
    for name, values in stds.items():
        axes[0].semilogy(range(1, DEPTH + 1), [max(s, 1e-30) for s in values], "o-" if "tanh" not in name else "s--",
                         label=name, color=colours[name])
    for name in INITS:
        axes[1].semilogy(range(1, DEPTH + 2), [max(g, 1e-30) for g in grads[name]], "o-", label=name,
                         color=colours[name])
        axes[2].plot(curves[name], label=f"{name} (lr {ctx.tuned[name]['best']['lr']:g})", color=colours[name])
    axes[0].set_title("activation std per hidden layer (ReLU, and 1/√n with tanh)"), axes[0].set_xlabel("hidden layer")
    axes[0].set_ylabel("standard deviation of activations (log)")
    axes[1].set_title("gradient norm per layer at init (ReLU)"), axes[1].set_xlabel("linear layer")
    axes[1].set_ylabel("‖∂loss/∂W‖ (log)")
    axes[2].set_title("training loss, each at its best lr (SGD, momentum 0.9)"), axes[2].set_xlabel("step")
    axes[2].set_yscale("log"), axes[2].set_ylabel("mini-batch cross-entropy (nats, log)")
    for axis in axes:
        axis.legend(fontsize=7)
    ctx.save(figure, "layers", caption="√(2/n) keeps a ReLU network's activation scale flat across 10 layers and 1/√n "
             "keeps a tanh network's; 1/√n with ReLU loses √2 per layer, 0.01·N(0,1) collapses the activations and "
             "the gradients; the calibrated inits train fastest.", claims=[c.id for c in CLAIMS])
