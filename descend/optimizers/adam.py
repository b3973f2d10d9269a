"""Adam and its family: Adam, AdamW, NAdam, RAdam."""
from __future__ import annotations


import torch

from ..adapter.optimizer import ChainOptimizer
from ..plan.hyper import (
    check_nonnegative,
    check_unit_interval,
)
from ..steps import (
    BiasCorrection,
    DecoupledWeightDecay,
    EmaOfSquares,
    Momentum,
    NesterovMomentumCorrection,
    RectifiedScale,
    RunningMax,
    ScaleByInverseRms,
    ScaleByLearningRate,
    TrackEma,
    Transform,
)
from .common import check_betas, with_coupled_decay, with_decay


class Adam(ChainOptimizer):
    r"""Adam (Kingma & Ba 2015, Algorithm 1), with coupled L2 weight decay.

    .. math::
        g_t &\leftarrow \nabla f(\theta_{t-1}) + \lambda\theta_{t-1} \\
        m_t &\leftarrow \beta_1 m_{t-1} + (1-\beta_1)\,g_t \\
        v_t &\leftarrow \beta_2 v_{t-1} + (1-\beta_2)\,g_t^2
            \qquad (\text{amsgrad: } v_t \leftarrow \max(v_t, v^{\max}_{t-1})) \\
        \hat m_t &\leftarrow m_t / (1-\beta_1^t), \qquad \hat v_t \leftarrow v_t / (1-\beta_2^t) \\
        \theta_t &\leftarrow \theta_{t-1} - \alpha\,\hat m_t / (\sqrt{\hat v_t} + \epsilon)

    ``ε`` sits outside the root.  ``bias_correction=False`` drops the two
    corrections: ``θ ← θ − αm_t/(√v_t + ε)``.  ``decoupled_weight_decay=True``
    decays as AdamW does (``θ ← θ(1 − αλ)``, no ``λθ`` in ``g``), as in
    torch.optim.Adam.  With the defaults this is torch.optim.Adam.
    """

    state_keys = frozenset({"exp_avg", "exp_avg_sq", "max_exp_avg_sq"})

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
        bias_correction: bool = True,
        nonfinite: str = "raise",
        state_dtype: torch.dtype | None = None,
        max_grad_norm: float | None = None,
    ):
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            capturable=capturable,
            differentiable=differentiable,
            decoupled_weight_decay=decoupled_weight_decay,
            bias_correction=bias_correction,
        )
        super().__init__(params, defaults, nonfinite, fused, foreach, state_dtype, max_grad_norm)

    def validate(self, group):
        owner = type(self).__name__
        for name in ("lr", "eps", "weight_decay"):
            check_nonnegative(owner, name, group[name])
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"{owner}: betas must be a pair (beta1, beta2), got {betas!r}")
        check_unit_interval(owner, "betas[0]", betas[0])
        check_unit_interval(owner, "betas[1]", betas[1])

    def chain(self, group):
        beta1, beta2 = group["betas"]
        corrected = group["bias_correction"]
        second_moment = "max_exp_avg_sq" if group["amsgrad"] else "exp_avg_sq"
        steps: list[Transform] = [EmaOfSquares(beta2, "exp_avg_sq")]
        if group["amsgrad"]:
            steps.append(RunningMax("exp_avg_sq", "max_exp_avg_sq"))
        steps.append(Momentum(beta1, dampening=beta1, key="exp_avg"))
        if corrected:
            steps.append(BiasCorrection(beta1))
        steps.append(ScaleByInverseRms(second_moment, group["eps"], debias_beta=beta2 if corrected else None))
        steps.append(ScaleByLearningRate(group["lr"]))
        if group["decoupled_weight_decay"]:
            return steps + ([DecoupledWeightDecay(group["weight_decay"], group["lr"])] if group["weight_decay"] else [])
        return with_coupled_decay(group, steps)


class AdamW(Adam):
    r"""Adam with decoupled weight decay (Loshchilov & Hutter 2019).

    .. math::
        \theta_t \leftarrow (1 - \alpha\lambda)\,\theta_{t-1}
            - \alpha\,\hat m_t / (\sqrt{\hat v_t} + \epsilon)

    where ``m̂, v̂`` are Adam's moments of the plain gradient (no ``λθ`` in it).
    Identical to torch.optim.AdamW.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        bias_correction: bool = True,
        nonfinite: str = "raise",
        state_dtype: torch.dtype | None = None,
        max_grad_norm: float | None = None,
    ):
        super().__init__(
            params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize, capturable=capturable,
            differentiable=differentiable, fused=fused, decoupled_weight_decay=True, bias_correction=bias_correction,
            nonfinite=nonfinite, state_dtype=state_dtype, max_grad_norm=max_grad_norm,
        )


class NAdam(ChainOptimizer):
    r"""NAdam: Adam with Nesterov momentum (Dozat 2016), as torch.optim.NAdam computes it.

    .. math::
        g_t &\leftarrow \nabla f(\theta_{t-1}) + \lambda\theta_{t-1}
            \qquad (\text{coupled decay; decoupled: } \theta_{t-1} \leftarrow (1-\alpha\lambda)\theta_{t-1}) \\
        \mu_t &= \beta_1\big(1 - \tfrac12\,0.96^{t\psi}\big), \qquad
            \Pi_t = \textstyle\prod_{i\le t} \mu_i \qquad (\psi = \text{momentum\_decay}) \\
        m_t &\leftarrow \beta_1 m_{t-1} + (1-\beta_1)\,g_t, \qquad
            v_t \leftarrow \beta_2 v_{t-1} + (1-\beta_2)\,g_t^2, \qquad \hat v_t = v_t / (1-\beta_2^t) \\
        \theta_t &\leftarrow \theta_{t-1} - \alpha\,\Big(\frac{1-\mu_t}{1-\Pi_t}\,g_t
            + \frac{\mu_{t+1}}{1-\Pi_t\,\mu_{t+1}}\,m_t\Big) \Big/ \big(\sqrt{\hat v_t} + \epsilon\big)

    The first term is the bias-corrected gradient, the second the bias-corrected momentum of the *next*
    step: Nesterov's look-ahead applied to Adam's first moment.  The schedule ``μ_t`` warms the momentum
    up from ``β₁/2`` (Dozat's "momentum caching").  State as torch's: ``step``, ``mu_product`` (``Π_t``, a
    0-dim tensor of the default dtype), ``exp_avg``, ``exp_avg_sq``; a torch.optim.NAdam checkpoint
    loads.  ``decoupled_weight_decay=True`` is NAdamW.  The chain is
    ``[AddWeightDecay, EmaOfSquares, TrackEma, NesterovMomentumCorrection, ScaleByInverseRms,
    ScaleByLearningRate]`` (``DecoupledWeightDecay`` last instead of ``AddWeightDecay`` first when decoupled).
    """

    state_keys = frozenset({"exp_avg", "exp_avg_sq", "mu_product"})

    def __init__(
        self,
        params,
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum_decay: float = 4e-3,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        nonfinite: str = "raise",
        state_dtype: torch.dtype | None = None,
        max_grad_norm: float | None = None,
    ):
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            momentum_decay=momentum_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            maximize=maximize,
            capturable=capturable,
            differentiable=differentiable,
        )
        super().__init__(params, defaults, nonfinite, fused, foreach, state_dtype, max_grad_norm)

    def validate(self, group):
        owner = type(self).__name__
        for name in ("lr", "eps", "weight_decay", "momentum_decay"):
            check_nonnegative(owner, name, group[name])
        check_betas(owner, group["betas"])

    def chain(self, group):
        beta1, beta2 = group["betas"]
        steps: list[Transform] = [
            EmaOfSquares(beta2, "exp_avg_sq"),
            TrackEma(beta1, "exp_avg"),
            NesterovMomentumCorrection(beta1, group["momentum_decay"], source="exp_avg"),
            ScaleByInverseRms("exp_avg_sq", group["eps"], debias_beta=beta2),
            ScaleByLearningRate(group["lr"]),
        ]
        return with_decay(group, steps, group["decoupled_weight_decay"])


class RAdam(ChainOptimizer):
    r"""RAdam, rectified Adam (Liu et al. 2020, Algorithm 2), as torch.optim.RAdam computes it.

    .. math::
        g_t &\leftarrow \nabla f(\theta_{t-1}) + \lambda\theta_{t-1}
            \qquad (\text{coupled decay; decoupled: } \theta_{t-1} \leftarrow (1-\alpha\lambda)\theta_{t-1}) \\
        m_t &\leftarrow \beta_1 m_{t-1} + (1-\beta_1)\,g_t, \qquad
            v_t \leftarrow \beta_2 v_{t-1} + (1-\beta_2)\,g_t^2, \qquad \hat m_t = m_t / (1-\beta_1^t) \\
        \rho_\infty &= \frac{2}{1-\beta_2} - 1, \qquad
            \rho_t = \rho_\infty - \frac{2t\,\beta_2^t}{1-\beta_2^t} \\
        \theta_t &\leftarrow \theta_{t-1} - \alpha\, r_t\, \hat m_t\,
            \frac{\sqrt{1-\beta_2^t}}{\sqrt{v_t} + \epsilon},
            \quad r_t = \sqrt{\frac{(\rho_t-4)(\rho_t-2)\,\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\,\rho_t}}
            \qquad \text{if } \rho_t > 5 \\
        \theta_t &\leftarrow \theta_{t-1} - \alpha\,\hat m_t \qquad \text{otherwise}

    While too few gradients have been averaged for the variance of the adaptive rate to be finite
    (``ρ_t ≤ 5``: the first 5 steps with ``β₂ = 0.999``) the step is SGD with bias-corrected momentum;
    afterwards ``r_t`` rectifies that variance.  State as torch's: ``step``, ``exp_avg``,
    ``exp_avg_sq``.  ``decoupled_weight_decay=True`` decays as AdamW.  The chain is
    ``[AddWeightDecay, EmaOfSquares, Momentum(EMA), BiasCorrection, RectifiedScale, ScaleByLearningRate]``.
    """

    state_keys = frozenset({"exp_avg", "exp_avg_sq"})

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        nonfinite: str = "raise",
        state_dtype: torch.dtype | None = None,
        max_grad_norm: float | None = None,
    ):
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            maximize=maximize,
            capturable=capturable,
            differentiable=differentiable,
        )
        super().__init__(params, defaults, nonfinite, fused, foreach, state_dtype, max_grad_norm)

    def validate(self, group):
        owner = type(self).__name__
        for name in ("lr", "eps", "weight_decay"):
            check_nonnegative(owner, name, group[name])
        check_betas(owner, group["betas"])

    def chain(self, group):
        beta1, beta2 = group["betas"]
        steps: list[Transform] = [
            EmaOfSquares(beta2, "exp_avg_sq"),
            Momentum(beta1, dampening=beta1, key="exp_avg"),
            BiasCorrection(beta1),
            RectifiedScale(beta2, group["eps"], source="exp_avg_sq"),
            ScaleByLearningRate(group["lr"]),
        ]
        return with_decay(group, steps, group["decoupled_weight_decay"])
