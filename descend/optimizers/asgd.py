"""ASGD: stochastic gradient descent with Polyak–Juditsky averaging of the iterates."""
from __future__ import annotations

import math

import torch

from ..adapter.optimizer import ChainOptimizer
from ..plan.hyper import check_nonnegative, number
from ..steps import AddWeightDecay, Transform
from ..steps.torch_rest import AveragedSgd


class ASGD(ChainOptimizer):
    r"""Averaged SGD (Polyak & Juditsky 1992), with the step-size schedule of torch.optim.ASGD (Bottou 2012).

    .. math::
        g_t &\leftarrow \nabla f(\theta_{t-1}) + \lambda_{wd}\,\theta_{t-1} \\
        \theta_t &\leftarrow \theta_{t-1}\,(1 - \lambda\eta_{t-1}) - \eta_{t-1}\,g_t \\
        \bar\theta_t &\leftarrow \bar\theta_{t-1} + \mu_{t-1}\,(\theta_t - \bar\theta_{t-1})
            \qquad (\bar\theta_t \leftarrow \theta_t \text{ while } \mu_{t-1} = 1) \\
        \eta_t &= \frac{\text{lr}}{(1 + \lambda\,\text{lr}\,t)^{\alpha}}, \qquad
        \mu_t = \frac{1}{\max(1,\ t - t_0)}, \qquad \eta_0 = \text{lr},\ \mu_0 = 1

    The iterates ``θ`` train the model; ``θ̄`` (``state["ax"]``) is their running mean from step ``t₀`` on,
    which converges at the optimal rate for a decaying step size: evaluate with it by copying ``ax`` into the
    parameters.  ``λ`` (``lambd``) both decays the weights and sets the schedule's time scale.  As in
    torch's default (one-tensor) path, ``η`` and ``μ`` are kept per parameter as float32 0-dim tensors
    (``eta``, ``mu``; with ``step`` and ``ax`` torch's state keys, so checkpoints load both ways).  The chain
    is ``[AddWeightDecay, AveragedSgd]``.
    """

    state_keys = frozenset({"eta", "mu", "ax"})

    def __init__(
        self,
        params,
        lr: float = 1e-2,
        lambd: float = 1e-4,
        alpha: float = 0.75,
        t0: float = 1e6,
        weight_decay: float = 0.0,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        capturable: bool = False,
        *,
        fused: bool | None = None,
        nonfinite: str = "raise",
        state_dtype: torch.dtype | None = None,
        max_grad_norm: float | None = None,
    ):
        defaults = dict(lr=lr, lambd=lambd, alpha=alpha, t0=t0, weight_decay=weight_decay, maximize=maximize,
                        differentiable=differentiable, capturable=capturable)
        super().__init__(params, defaults, nonfinite, fused, foreach, state_dtype, max_grad_norm)

    def validate(self, group):
        owner = type(self).__name__
        for name in ("lr", "lambd", "alpha", "weight_decay"):
            check_nonnegative(owner, name, group[name])
        if math.isnan(number(owner, "t0", group["t0"])):
            raise ValueError(f"{owner}: t0 must be a number (inf: never average), got {group['t0']!r}")

    def chain(self, group):
        steps: list[Transform] = [AveragedSgd(group["lr"], group["lambd"], group["alpha"], group["t0"])]
        if not group["weight_decay"]:
            return steps
        return [AddWeightDecay(group["weight_decay"], fused=True)] + steps  # g + λθ rounded once, as torch
