"""Adamax: Adam with the infinity norm."""
from __future__ import annotations

import torch

from ..adapter.optimizer import ChainOptimizer
from ..plan.hyper import check_nonnegative
from ..steps import AddWeightDecay, Transform
from ..steps.torch_rest import CorrectedStepSize, DivideBy, InfinityNorm, LerpMomentum
from .common import check_betas


class Adamax(ChainOptimizer):
    r"""Adamax (Kingma & Ba 2015, §7.1, Algorithm 2), as torch.optim.Adamax computes it.

    .. math::
        g_t &\leftarrow \nabla f(\theta_{t-1}) + \lambda\theta_{t-1} \\
        m_t &\leftarrow \beta_1 m_{t-1} + (1-\beta_1)\,g_t \\
        u_t &\leftarrow \max(\beta_2 u_{t-1},\ |g_t| + \epsilon) \\
        \theta_t &\leftarrow \theta_{t-1} - \frac{\alpha}{1-\beta_1^t}\,\frac{m_t}{u_t}

    Adam's ``L²`` norm of past gradients generalised to ``L^p`` and taken to ``p → ∞``: the divisor is a
    decaying maximum of ``|g|``, which needs no bias correction, so the step is bounded by ``α/(1−β₁ᵗ)``
    (``ε`` sits inside the max, as in torch).  State as torch's: ``step``, ``exp_avg`` (``m``),
    ``exp_inf`` (``u``); a torch.optim.Adamax checkpoint loads and back.  The chain is
    ``[AddWeightDecay, InfinityNorm, LerpMomentum, CorrectedStepSize, DivideBy]`` (the step size before the
    division, as torch rounds ``−α/(1−β₁ᵗ)·m / u``).
    """

    state_keys = frozenset({"exp_avg", "exp_inf"})

    def __init__(
        self,
        params,
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        capturable: bool = False,
        fused: bool | None = None,
        nonfinite: str = "raise",
        state_dtype: torch.dtype | None = None,
        max_grad_norm: float | None = None,
    ):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize,
                        differentiable=differentiable, capturable=capturable)
        super().__init__(params, defaults, nonfinite, fused, foreach, state_dtype, max_grad_norm)

    def validate(self, group):
        owner = type(self).__name__
        for name in ("lr", "eps", "weight_decay"):
            check_nonnegative(owner, name, group[name])
        check_betas(owner, group["betas"])

    def chain(self, group):
        beta1, beta2 = group["betas"]
        steps: list[Transform] = [
            InfinityNorm(beta2, group["eps"]),
            LerpMomentum(beta1, "exp_avg"),
            CorrectedStepSize(group["lr"], beta1),
            DivideBy("exp_inf"),
        ]
        if not group["weight_decay"]:
            return steps
        return [AddWeightDecay(group["weight_decay"], fused=True)] + steps  # g + λθ rounded once, as torch
