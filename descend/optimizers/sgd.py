"""Stochastic gradient descent: vanilla, with momentum (velocity and EMA forms) and Nesterov momentum."""
from __future__ import annotations


import torch

from ..adapter.optimizer import ChainOptimizer
from ..plan.hyper import (
    check_closed_interval,
    check_nonnegative,
)
from ..steps import (
    Momentum,
    ScaleByLearningRate,
    Transform,
)
from .common import with_coupled_decay


class SGD(ChainOptimizer):
    r"""Stochastic gradient descent, with optional momentum and Nesterov momentum.

    .. math::
        g_t &\leftarrow \nabla f(\theta_{t-1}) + \lambda\theta_{t-1}
            \qquad (\text{negated when maximize}) \\
        b_t &\leftarrow \mu b_{t-1} + (1-d)\,g_t, \qquad b_0 = 0 \\
        \theta_t &\leftarrow \theta_{t-1} - \alpha\,b_t
            \quad\text{or, with nesterov,}\quad
            \theta_{t-1} - \alpha\,(\mu b_t + (1-d)\,g_t)

    * ``momentum=0``: vanilla (mini-batch) SGD ``θ ← θ − αg``; weight decay is then
      ``θ ← (1−αλ)θ − αg``.
    * ``dampening=0``: the velocity form ``v ← μv − αg, θ ← θ + v`` (``v = −αb``),
      identical to torch.optim.SGD.
    * ``dampening=momentum=β``: the EMA form ``v ← βv + (1−β)g, θ ← θ − αv``, exact
      from the first step because the buffer starts at zero.
    * ``nesterov=True, dampening=0``: reformulated Nesterov ``θ ← θ − μv_{t−1} + (1+μ)v_t``.
    * ``nesterov=True, dampening=β``: look-ahead momentum ``θ ← θ − α(βv_{t+1} + (1−β)g)``
      (torch.optim forbids this combination).
    """

    state_keys = frozenset({"momentum_buffer"})


    def __init__(
        self,
        params,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
        nonfinite: str = "raise",
        state_dtype: torch.dtype | None = None,
        max_grad_norm: float | None = None,
    ):
        defaults = dict(
            lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
            maximize=maximize, differentiable=differentiable,
        )
        super().__init__(params, defaults, nonfinite, fused, foreach, state_dtype, max_grad_norm)

    def validate(self, group):
        owner = type(self).__name__
        check_nonnegative(owner, "lr", group["lr"])
        check_nonnegative(owner, "momentum", group["momentum"])
        check_closed_interval(owner, "dampening", group["dampening"], 0.0, 1.0)
        check_nonnegative(owner, "weight_decay", group["weight_decay"])
        if group["nesterov"] and group["momentum"] <= 0:
            raise ValueError(f"{owner}: nesterov=True needs momentum > 0, got momentum={group['momentum']!r}")

    def chain(self, group):
        steps: list[Transform] = []
        if group["momentum"]:
            steps.append(Momentum(group["momentum"], group["dampening"], group["nesterov"]))
        return with_coupled_decay(group, steps + [ScaleByLearningRate(group["lr"])])
