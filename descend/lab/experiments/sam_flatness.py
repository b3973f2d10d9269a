"""SAM finds flatter minima: the top Hessian eigenvalue, measured by power iteration."""
from __future__ import annotations

import matplotlib.pyplot as plt
import torch

import descend

from .. import data
from ..core import Context, Result

NAME = "sam-flatness"
TITLE = "13. SAM finds flatter minima"
CLAIM = ("Sharpness-aware minimization (Foret et al. 2021) ends in a flatter minimum than its base optimizer: the top "
         "eigenvalue of the training-loss Hessian is lower after SAM than after plain SGD with the same settings.")


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


def run(ctx: Context) -> Result:
    split = data.digits(ctx.seed)
    steps = 1500 if ctx.full else 600
    numbers, curves = {}, {}
    for name in ctx.track(["SGD", "SAM(SGD)"]):
        torch.manual_seed(ctx.seed)
        model = ctx.place(data.mlp(64, 128, 10, depth=2))
        kwargs = dict(lr=0.05, momentum=0.9)
        optimizer = (descend.SAM(model.parameters(), descend.SGD, rho=0.1, **kwargs) if name.startswith("SAM")
                     else descend.SGD(model.parameters(), **kwargs))
        curves[name] = data.train(model, optimizer, split, steps, generator=ctx.generator(), record_every=5)
        model.eval()
        numbers[name] = {
            "top_hessian_eigenvalue": top_hessian_eigenvalue(model, split.x_train, split.y_train, 30, ctx.generator(7)),
            "train_loss": data.evaluate(model, split.x_train, split.y_train)[0],
            "test_accuracy": data.evaluate(model, split.x_test, split.y_test)[1],
        }

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.3))
    for name, losses in curves.items():
        left.plot([5 * i for i in range(len(losses))], losses, label=name)
    left.set_yscale("log"), left.set_title("training loss (MLP on digits)"), left.set_xlabel("step"), left.legend()
    names = list(numbers)
    right.bar(names, [numbers[n]["top_hessian_eigenvalue"] for n in names], color=["tab:blue", "tab:orange"])
    right.set_title("top Hessian eigenvalue at the end (lower = flatter)")
    ctx.save(figure, "sharpness")

    sgd, sam = numbers["SGD"], numbers["SAM(SGD)"]
    held = sam["top_hessian_eigenvalue"] < sgd["top_hessian_eigenvalue"]
    summary = (f"Top Hessian eigenvalue: SGD {sgd['top_hessian_eigenvalue']:.2f}, SAM {sam['top_hessian_eigenvalue']:.2f}"
               f". Test accuracy: SGD {sgd['test_accuracy']:.3f}, SAM {sam['test_accuracy']:.3f}.")
    return Result(held, summary, numbers)
