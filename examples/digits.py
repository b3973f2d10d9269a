"""Every descend optimizer trains the same MLP on scikit-learn's digits; prints a table of results.

    python examples/digits.py [--epochs 20] [--seed 0]
"""
from __future__ import annotations

import argparse
import time

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import descend

OPTIMIZERS = {
    "SGD": (descend.SGD, dict(lr=0.1)),
    "SGD+momentum (EMA form)": (descend.SGD, dict(lr=0.5, momentum=0.9, dampening=0.9)),
    "SGD+Nesterov": (descend.SGD, dict(lr=0.05, momentum=0.9, nesterov=True)),
    "Adagrad": (descend.Adagrad, dict(lr=0.05)),
    "RMSprop": (descend.RMSprop, dict(lr=1e-3)),
    "Adadelta": (descend.Adadelta, dict(lr=1.0)),
    "Adam": (descend.Adam, dict(lr=1e-3)),
    "AdamW": (descend.AdamW, dict(lr=1e-3, weight_decay=1e-2)),
    "Adafactor": (descend.Adafactor, dict()),
    "SAM(SGD+momentum)": (descend.SAM, dict(base_optimizer=descend.SGD, lr=0.05, momentum=0.9, rho=0.05)),
}


def digits_loaders(seed: int, batch_size: int = 64):
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)
    generator = torch.Generator().manual_seed(seed)
    train = DataLoader(TensorDataset(x_train, y_train), batch_size=batch_size, shuffle=True, generator=generator)
    return train, (x_train, y_train), (x_test, y_test)


def evaluate(model, data):
    x, y = data
    with torch.no_grad():
        logits = model(x)
    return nn.functional.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


def train_one(optimizer_class, kwargs, epochs: int, seed: int):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    optimizer = optimizer_class(model.parameters(), **kwargs)
    loader, train_data, test_data = digits_loaders(seed)
    start = time.perf_counter()
    for _ in range(epochs):
        for x, y in loader:
            def closure():
                optimizer.zero_grad()
                loss = nn.functional.cross_entropy(model(x), y)
                loss.backward()
                return loss

            optimizer.step(closure)
    seconds = time.perf_counter() - start
    return (*evaluate(model, train_data), *evaluate(model, test_data)[1:], seconds)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"MLP 64-64-10 on scikit-learn digits, {args.epochs} epochs, batch 64, seed {args.seed}\n")
    print(f"{'optimizer':26s} {'hyperparameters':52s} {'train loss':>10s} {'train acc':>9s} {'test acc':>8s} {'time':>6s}")
    for name, (cls, kwargs) in OPTIMIZERS.items():
        loss, train_acc, test_acc, seconds = train_one(cls, kwargs, args.epochs, args.seed)
        shown = ", ".join(f"{k}={getattr(v, '__name__', v)}" for k, v in kwargs.items()) or "defaults"
        print(f"{name:26s} {shown:52s} {loss:10.4f} {train_acc:9.3f} {test_acc:8.3f} {seconds:5.1f}s")


if __name__ == "__main__":
    main()
