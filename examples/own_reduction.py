"""A step of your own that reduces: gradient centralization (Yong et al. 2020) as a `Reduction` step, an SGD
built from it, and the C kernel descend generates for it: one pass over the data, which sums each row and
then, the row still in the cache, walks it again to update it (its tail). No C.

    python examples/own_reduction.py
"""
from dataclasses import dataclass

import torch

import descend
from descend.steps import Momentum, ScaleByLearningRate, mean, per_row


@dataclass
class CentralizeGradient(descend.Reduction):
    """For a weight matrix, u ← u − (the mean of u over its row), laid beside each row; other tensors pass."""

    def formula(self, u, param, state, t):
        if param.ndim != 2:  # the number of dims is structure: one kernel per kind of tensor
            return u
        return u - per_row(mean(u, axis=-1))


CentralizedSGD = descend.make_optimizer(
    "CentralizedSGD",
    lambda group: [CentralizeGradient(), Momentum(group["momentum"]), ScaleByLearningRate(group["lr"])],
    defaults=dict(lr=0.1, momentum=0.9),
)


def train(make, steps=30, centralize_by_hand=False):
    """A small MLP regression; returns the final loss, the parameters and the optimizer."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1))
    x = torch.randn(128, 16)
    y = torch.sin(x[:, :1]) + 0.1 * x[:, 1:2]
    optimizer = make(model.parameters())
    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        if centralize_by_hand:  # the paper's own code, for matrices
            for p in model.parameters():
                if p.dim() == 2:
                    p.grad -= p.grad.mean(dim=1, keepdim=True)
        optimizer.step()
    return loss.item(), [p.detach() for p in model.parameters()], optimizer


if __name__ == "__main__":
    loss, params, optimizer = train(lambda p: CentralizedSGD(p, lr=0.05))
    info = optimizer.kernel_info()[0]  # the first group's first parameter is a matrix
    print(f"CentralizedSGD: {info}")
    source = info.c_source(torch.float32).splitlines()
    print("its pass sums each row of u:", next(line.strip() for line in source if "row0[l] +=" in line))
    row_mean = next(line.strip() for line in source if line.strip().startswith("T1[r] ="))
    print("then, at the row's end, its mean:", row_mean)
    print("and the tail updates the row:", next(line.strip() for line in source if line.strip().startswith("P[j] =")))
    _, reference, _ = train(lambda p: CentralizedSGD(p, lr=0.05, fused=False))
    _, by_hand, _ = train(lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9), centralize_by_hand=True)
    print(f"final loss {loss:.4f}")
    print("generated kernel == reference chain:",
          all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(params, reference)))
    print("same as torch.optim.SGD on centralized gradients:",
          all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(params, by_hand)))
