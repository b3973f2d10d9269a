"""Layer-wise trust-ratio optimizers for large batches: LAMB and LARS (You et al. 2017, 2019), as optax has them."""
from __future__ import annotations

import torch

from ..adapter.optimizer import ChainOptimizer
from ..plan.hyper import check_nonnegative
from ..steps import (
    AddWeightDecay,
    BiasCorrection,
    EmaOfSquares,
    Momentum,
    ScaleByInverseRms,
    ScaleByLearningRate,
    Transform,
)
from ..steps.clip import ScaleByTrustRatio
from .common import check_betas


class LAMB(ChainOptimizer):
    r"""LAMB, layer-wise adaptive moments (You et al. 2019, "Large Batch Optimization for Deep Learning:
    Training BERT in 76 minutes", Algorithm 2), as ``optax.lamb``.

    .. math::
        m_t &\leftarrow \beta_1 m_{t-1} + (1-\beta_1)\,g_t, \qquad
        v_t \leftarrow \beta_2 v_{t-1} + (1-\beta_2)\,g_t^2 \\
        u_t &= \frac{m_t/(1-\beta_1^t)}{\sqrt{v_t/(1-\beta_2^t)} + \epsilon} + \lambda\theta_{t-1} \\
        r_t &= \frac{\lVert\theta_{t-1}\rVert_2}{\lVert u_t\rVert_2}
            \quad(r_t = 1 \text{ where either norm is } 0) \\
        \theta_t &\leftarrow \theta_{t-1} - \alpha\, r_t\, u_t

    Norms are per parameter tensor (each tensor is a "layer").  The chain is optax's
    ``chain(scale_by_adam, add_decayed_weights, scale_by_trust_ratio, scale_by_learning_rate)``:
    ``[EmaOfSquares, Momentum(EMA), BiasCorrection, ScaleByInverseRms, AddWeightDecay?, ScaleByTrustRatio,
    ScaleByLearningRate]``.  The generated kernel makes two passes over the data: the two norms, then the
    update.  State: ``exp_avg``, ``exp_avg_sq`` and ``step``, as torch's Adam keeps them.  To exclude biases
    and normalisation weights from decay, put them in a param group with ``weight_decay=0``.
    """

    state_keys = frozenset({"exp_avg", "exp_avg_sq"})

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        nonfinite: str = "raise",
        fused: bool | None = None,
        foreach: bool | None = None,
        state_dtype: torch.dtype | None = None,
        max_grad_norm: float | None = None,
    ):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize)
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
            ScaleByInverseRms("exp_avg_sq", group["eps"], debias_beta=beta2),
        ]
        if group["weight_decay"]:
            steps.append(AddWeightDecay(group["weight_decay"]))
        return steps + [ScaleByTrustRatio(), ScaleByLearningRate(group["lr"])]


class LARS(ChainOptimizer):
    r"""LARS, layer-wise adaptive rate scaling (You et al. 2017, "Large Batch Training of Convolutional
    Networks"), as ``optax.lars``.

    .. math::
        u_t &= g_t + \lambda\theta_{t-1} \\
        r_t &= \frac{\kappa\,\lVert\theta_{t-1}\rVert_2}{\lVert u_t\rVert_2 + \epsilon}
            \quad(r_t = 1 \text{ where either norm is } 0) \\
        b_t &\leftarrow \mu b_{t-1} - \alpha\, r_t\, u_t, \qquad b_0 = 0 \\
        \theta_t &\leftarrow \theta_{t-1} + b_t
            \quad\text{or, with nesterov,}\quad \theta_{t-1} + \mu b_t - \alpha\, r_t\, u_t

    ``κ`` is ``trust_coefficient``.  Norms are per parameter tensor.  As in optax, momentum is taken last,
    of the scaled step (optax's ``trace``): the buffer ``momentum_buffer`` holds ``b``, a change of ``θ``;
    ``momentum=0`` keeps no state.  The chain is ``[AddWeightDecay?, ScaleByTrustRatio, ScaleByLearningRate,
    Momentum?]``; the generated kernel makes two passes over the data (the norms, then the update).  To
    exclude biases and normalisation weights from decay, put them in a param group with ``weight_decay=0``.
    """

    state_keys = frozenset({"momentum_buffer"})

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 1e-3,
        eps: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        nonfinite: str = "raise",
        fused: bool | None = None,
        foreach: bool | None = None,
        state_dtype: torch.dtype | None = None,
        max_grad_norm: float | None = None,
    ):
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=trust_coefficient,
                        eps=eps, nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults, nonfinite, fused, foreach, state_dtype, max_grad_norm)

    def validate(self, group):
        owner = type(self).__name__
        for name in ("lr", "momentum", "weight_decay", "trust_coefficient", "eps"):
            check_nonnegative(owner, name, group[name])
        if group["nesterov"] and group["momentum"] <= 0:
            raise ValueError(f"{owner}: nesterov=True needs momentum > 0, got momentum={group['momentum']!r}")

    def chain(self, group):
        steps: list[Transform] = [AddWeightDecay(group["weight_decay"])] if group["weight_decay"] else []
        steps += [ScaleByTrustRatio(group["trust_coefficient"], group["eps"]), ScaleByLearningRate(group["lr"])]
        if group["momentum"]:
            steps.append(Momentum(group["momentum"], nesterov=group["nesterov"]))
        return steps
