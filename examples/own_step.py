"""Write your own step: Lion's sign update (Chen et al. 2023) as a new elementwise step, an optimizer
built from it, and the fused CPU kernel descend generates for it. A few lines of Python; no C.

    python examples/own_step.py
"""
from dataclasses import dataclass

import torch

import descend
from descend.steps import sign
from descend.steps import DecoupledWeightDecay, ScaleByLearningRate


@dataclass
class LionSign(descend.Elementwise):
    """u ← sign(β₁m + (1−β₁)u), then m ← β₂m + (1−β₂)u."""

    stateful = True  # keeps state["exp_avg"], zeros at the first step
    beta1: float  # numbers are hyperparameters: one kernel serves every value
    beta2: float
    key: str = "exp_avg"  # strings, booleans and None shape the kernel

    def formula(self, u, param, state, t):
        m = state[self.key]
        state[self.key] = self.beta2 * m + (1 - self.beta2) * u
        return sign(self.beta1 * m + (1 - self.beta1) * u)


MyLion = descend.make_optimizer(
    "MyLion",
    lambda group: [LionSign(*group["betas"]), ScaleByLearningRate(group["lr"]),
                   DecoupledWeightDecay(group["weight_decay"], group["lr"])],
    defaults=dict(lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0),
)


def train(optimizer_class, steps=50, **kwargs):
    """A small MLP regression; returns the final loss, the parameters and the seconds per step."""
    from time import perf_counter

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 128), torch.nn.Tanh(), torch.nn.Linear(128, 1))
    x = torch.randn(256, 32)
    y = torch.sin(x[:, :1] * 2) + 0.1 * x[:, 1:2]
    optimizer = optimizer_class(model.parameters(), **kwargs)
    seconds = 0.0
    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        start = perf_counter()
        optimizer.step()
        seconds += perf_counter() - start
    return loss.item(), [p.detach() for p in model.parameters()], seconds / steps, optimizer


if __name__ == "__main__":
    hyper = dict(lr=3e-4, weight_decay=0.1)
    loss, params, per_step, optimizer = train(MyLion, **hyper)
    info = optimizer.kernel_info()[0]
    print(f"MyLion: {info}")
    source = info.c_source(torch.float32).splitlines()
    loop = source[next(i for i, line in enumerate(source) if "for (int64_t j" in line):]
    print("its loop over elements (float32), generated from the formulas:\n" + "\n".join(loop[:loop.index("    }")]))
    _, reference, reference_per_step, _ = train(MyLion, fused=False, **hyper)
    _, builtin, _, _ = train(descend.Lion, **hyper)
    print(f"final loss {loss:.4f}; step {per_step * 1e6:.0f} µs fused, {reference_per_step * 1e6:.0f} µs reference")
    same = all(torch.allclose(a, b, rtol=1e-6, atol=1e-6) for a, b in zip(params, reference))
    print("fused kernel == reference chain:", same)
    print("same as descend.Lion:", all(torch.equal(a, b) for a, b in zip(params, builtin)))
