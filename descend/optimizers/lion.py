"""Lion: sign momentum."""
from __future__ import annotations


import torch

from ..adapter.optimizer import ChainOptimizer
from ..plan.hyper import (
    check_nonnegative,
)
from ..steps import (
    LionInterpolation,
    ScaleByLearningRate,
    SignUpdate,
    Transform,
)
from .common import check_betas, with_decay


class Lion(ChainOptimizer):
    r"""Lion, EvoLved Sign Momentum (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms", Alg. 2).

    .. math::
        c_t &\leftarrow \beta_1 m_{t-1} + (1-\beta_1)\,g_t \\
        \theta_t &\leftarrow \theta_{t-1} - \alpha\,\big(\mathrm{sign}(c_t) + \lambda\theta_{t-1}\big)
            \;=\; (1-\alpha\lambda)\,\theta_{t-1} - \alpha\,\mathrm{sign}(c_t) \\
        m_t &\leftarrow \beta_2 m_{t-1} + (1-\beta_2)\,g_t, \qquad m_0 = 0

    Every coordinate moves by exactly ``α`` (plus the decay), so Lion wants a learning rate 3–10× smaller
    than AdamW's and a weight decay 3–10× larger, as the paper advises.  It keeps one state tensor,
    ``exp_avg`` (``m``), as lucidrains' lion-pytorch does; torch.optim has no Lion.  The chain is
    ``[LionInterpolation, SignUpdate, ScaleByLearningRate, DecoupledWeightDecay]``.
    """

    state_keys = frozenset({"exp_avg"})


    def __init__(
        self,
        params,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        maximize: bool = False,
        *,
        nonfinite: str = "raise",
        fused: bool | None = None,
        foreach: bool | None = None,
        state_dtype: torch.dtype | None = None,
        max_grad_norm: float | None = None,
    ):
        defaults = dict(lr=lr, betas=betas, weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults, nonfinite, fused, foreach, state_dtype, max_grad_norm)

    def validate(self, group):
        owner = type(self).__name__
        check_nonnegative(owner, "lr", group["lr"])
        check_nonnegative(owner, "weight_decay", group["weight_decay"])
        check_betas(owner, group["betas"], closed=True)

    def chain(self, group):
        beta1, beta2 = group["betas"]
        steps: list[Transform] = [LionInterpolation(beta1, beta2), SignUpdate(), ScaleByLearningRate(group["lr"])]
        return with_decay(group, steps, decoupled=True)
