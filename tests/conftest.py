"""A small nonconvex problem shared by the tests: a tanh network plus a double well.

Its parameters cover the shapes optimizers treat differently: matrices, a
vector, a 3-D tensor (Adafactor factors its last two dims) and a 0-d scalar.
"""
from __future__ import annotations

import torch


def make_params(dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(5, 4), (4,), (4, 3), (2, 3, 4), ()]
    return [(0.5 * torch.randn(shape, generator=g, dtype=torch.float64)).to(dtype) for shape in shapes]


def _data(dtype):
    g = torch.Generator().manual_seed(1)
    return torch.randn(16, 5, generator=g, dtype=torch.float64).to(dtype), torch.randn(16, 3, generator=g, dtype=torch.float64).to(dtype)


def nonconvex_loss(params):
    w1, b1, w2, kernel, scale = params
    x, y = _data(w1.dtype)
    prediction = torch.tanh(x @ w1 + b1) @ w2 + kernel.sum(dim=(0, 2)) * 0.1
    return ((prediction - y) ** 2).mean() + 0.1 * torch.cos(kernel).sum() + 0.1 * (scale**2 - 1) ** 2


def run_optimizer(optimizer_class, params, steps, loss_fn=nonconvex_loss, **kwargs):
    """Trains copies of ``params`` for ``steps`` steps; returns them and the optimizer."""
    params = [p.detach().clone().requires_grad_() for p in params]
    optimizer = optimizer_class(params, **kwargs)
    for _ in range(steps):
        optimizer.zero_grad()
        loss_fn(params).backward()
        optimizer.step()
    return [p.detach() for p in params], optimizer
