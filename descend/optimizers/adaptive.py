"""Per-coordinate step sizes from the gradient history: AdaGrad, RMSprop, Adadelta."""
from __future__ import annotations


import torch

from ..adapter.optimizer import ChainOptimizer
from ..plan.hyper import (
    check_nonnegative,
    check_unit_interval,
)
from ..steps import (
    AdadeltaUnitCorrection,
    EmaOfSquares,
    LrDecay,
    Momentum,
    ScaleByInverseRms,
    ScaleByLearningRate,
    SumOfSquares,
    TrackEma,
    Transform,
)
from .common import with_coupled_decay


class Adagrad(ChainOptimizer):
    r"""AdaGrad (Duchi et al. 2011): every coordinate's step shrinks with its gradient history.

    .. math::
        g_t &\leftarrow \nabla f(\theta_{t-1}) + \lambda\theta_{t-1} \\
        s_t &\leftarrow s_{t-1} + g_t^2, \qquad s_0 = \text{initial\_accumulator\_value} \\
        \theta_t &\leftarrow \theta_{t-1} - \frac{\alpha}{1 + (t-1)\,\eta}\,
            \frac{g_t}{\sqrt{s_t} + \epsilon} \qquad (\eta = \text{lr\_decay})
    """

    state_keys = frozenset({"sum"})

    def __init__(
        self,
        params,
        lr: float = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        nonfinite: str = "raise",
        state_dtype: torch.dtype | None = None,
        max_grad_norm: float | None = None,
    ):
        defaults = dict(
            lr=lr,
            lr_decay=lr_decay,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            eps=eps,
            maximize=maximize,
            differentiable=differentiable,
        )
        super().__init__(params, defaults, nonfinite, fused, foreach, state_dtype, max_grad_norm)

    def validate(self, group):
        owner = type(self).__name__
        for name in ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps"):
            check_nonnegative(owner, name, group[name])

    def chain(self, group):
        steps: list[Transform] = [
            SumOfSquares(group["initial_accumulator_value"]),
            ScaleByInverseRms("sum", group["eps"]),
        ]
        if group["lr_decay"]:
            steps.append(LrDecay(group["lr_decay"]))
        return with_coupled_decay(group, steps + [ScaleByLearningRate(group["lr"])])


class RMSprop(ChainOptimizer):
    r"""RMSprop (Hinton, Lecture 6e): divide by a running RMS of recent gradients.

    .. math::
        g_t &\leftarrow \nabla f(\theta_{t-1}) + \lambda\theta_{t-1} \\
        s_t &\leftarrow \gamma s_{t-1} + (1-\gamma)\,g_t^2 \\
        \bar g_t &\leftarrow \gamma \bar g_{t-1} + (1-\gamma)\,g_t
            \qquad (\text{centered only; } s_t - \bar g_t^2 \text{ replaces } s_t) \\
        u_t &\leftarrow g_t / (\sqrt{s_t} + \epsilon) \\
        b_t &\leftarrow \mu b_{t-1} + u_t \quad (\text{momentum} > 0,\ b_0 = 0;\ u_t \leftarrow b_t) \\
        \theta_t &\leftarrow \theta_{t-1} - \alpha\,u_t

    ``γ`` is ``alpha``; identical to torch.optim.RMSprop.
    """

    state_keys = frozenset({"square_avg", "grad_avg", "momentum_buffer"})

    def __init__(
        self,
        params,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        *,
        fused: bool | None = None,
        nonfinite: str = "raise",
        state_dtype: torch.dtype | None = None,
        max_grad_norm: float | None = None,
    ):
        defaults = dict(
            lr=lr,
            alpha=alpha,
            eps=eps,
            weight_decay=weight_decay,
            momentum=momentum,
            centered=centered,
            capturable=capturable,
            maximize=maximize,
            differentiable=differentiable,
        )
        super().__init__(params, defaults, nonfinite, fused, foreach, state_dtype, max_grad_norm)

    def validate(self, group):
        owner = type(self).__name__
        for name in ("lr", "eps", "weight_decay", "momentum"):
            check_nonnegative(owner, name, group[name])
        check_unit_interval(owner, "alpha", group["alpha"])

    def chain(self, group):
        alpha, centered = group["alpha"], group["centered"]
        steps: list[Transform] = [EmaOfSquares(alpha, "square_avg")]
        if centered:
            steps.append(TrackEma(alpha, "grad_avg"))
        steps.append(ScaleByInverseRms("square_avg", group["eps"], center_key="grad_avg" if centered else None))
        if group["momentum"]:
            steps.append(Momentum(group["momentum"]))
        return with_coupled_decay(group, steps + [ScaleByLearningRate(group["lr"])])


class Adadelta(ChainOptimizer):
    r"""Adadelta (Zeiler 2012, Algorithm 1): RMSprop with the units fixed by past updates.

    .. math::
        g_t &\leftarrow \nabla f(\theta_{t-1}) + \lambda\theta_{t-1} \\
        s_t &\leftarrow \rho s_{t-1} + (1-\rho)\,g_t^2 \\
        \Delta_t &\leftarrow \frac{\sqrt{d_{t-1} + \epsilon}}{\sqrt{s_t + \epsilon}}\,g_t \\
        d_t &\leftarrow \rho d_{t-1} + (1-\rho)\,\Delta_t^2 \\
        \theta_t &\leftarrow \theta_{t-1} - \alpha\,\Delta_t

    Identical to torch.optim.Adadelta.
    """

    state_keys = frozenset({"square_avg", "acc_delta"})

    def __init__(
        self,
        params,
        lr: float = 1.0,
        rho: float = 0.9,
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        foreach: bool | None = None,
        *,
        capturable: bool = False,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        nonfinite: str = "raise",
        state_dtype: torch.dtype | None = None,
        max_grad_norm: float | None = None,
    ):
        defaults = dict(
            lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, capturable=capturable, maximize=maximize,
            differentiable=differentiable,
        )
        super().__init__(params, defaults, nonfinite, fused, foreach, state_dtype, max_grad_norm)

    def validate(self, group):
        owner = type(self).__name__
        for name in ("lr", "eps", "weight_decay"):
            check_nonnegative(owner, name, group[name])
        check_unit_interval(owner, "rho", group["rho"])

    def chain(self, group):
        rho, eps = group["rho"], group["eps"]
        steps = [
            EmaOfSquares(rho, "square_avg"),
            ScaleByInverseRms("square_avg", eps, eps_inside_sqrt=True),
            AdadeltaUnitCorrection(rho, eps),
            ScaleByLearningRate(group["lr"]),
        ]
        return with_coupled_decay(group, steps)
