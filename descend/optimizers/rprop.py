"""Rprop: resilient backpropagation, one adaptive step size per coordinate from the gradient's sign."""
from __future__ import annotations

import math

import torch

from ..adapter.optimizer import ChainOptimizer
from ..plan.hyper import check_nonnegative, number
from ..steps import Negate
from ..steps.torch_rest import ResilientStepSize


class Rprop(ChainOptimizer):
    r"""Rprop (Riedmiller & Braun 1993), as torch.optim.Rprop computes it (without weight-backtracking).

    .. math::
        p_t &= g_t\, g_{t-1} \qquad (g_0 = 0) \\
        s_t &\leftarrow \mathrm{clamp}\big(s_{t-1}\cdot\{\eta_+ \text{ if } p_t > 0;\ \eta_- \text{ if }
            p_t < 0;\ 1 \text{ otherwise}\},\ s_{\min},\ s_{\max}\big), \qquad s_0 = \text{lr} \\
        g_t &\leftarrow 0 \quad\text{where } p_t < 0 \\
        \theta_t &\leftarrow \theta_{t-1} - s_t\,\mathrm{sign}(g_t)

    Only the sign of the gradient is used: each coordinate's step grows by ``η₊`` while its gradient keeps
    its sign and shrinks by ``η₋`` when it flips (a minimum was jumped over; that step is not taken, and the
    next one compares with 0).  Meant for full-batch training: mini-batch noise flips signs at random.
    State as torch's: ``step``, ``prev`` (``g_{t−1}``), ``step_size`` (``s``); a torch.optim.Rprop
    checkpoint loads and back.  The chain is ``[ResilientStepSize, Negate]``.
    """

    state_keys = frozenset({"prev", "step_size"})

    def __init__(
        self,
        params,
        lr: float = 1e-2,
        etas: tuple[float, float] = (0.5, 1.2),
        step_sizes: tuple[float, float] = (1e-6, 50),
        *,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        nonfinite: str = "raise",
        state_dtype: torch.dtype | None = None,
        max_grad_norm: float | None = None,
    ):
        defaults = dict(lr=lr, etas=etas, step_sizes=step_sizes, maximize=maximize, differentiable=differentiable,
                        capturable=capturable)
        super().__init__(params, defaults, nonfinite, fused, foreach, state_dtype, max_grad_norm)

    def validate(self, group):
        owner = type(self).__name__
        check_nonnegative(owner, "lr", group["lr"])
        etas, sizes = group["etas"], group["step_sizes"]
        if not isinstance(etas, (tuple, list)) or len(etas) != 2:
            raise ValueError(f"{owner}: etas must be a pair (etaminus, etaplus), got {etas!r}")
        etaminus, etaplus = (number(owner, f"etas[{i}]", eta) for i, eta in enumerate(etas))
        if not 0.0 < etaminus < 1.0 < etaplus < math.inf:
            raise ValueError(f"{owner}: etas must satisfy 0 < etaminus < 1 < etaplus, got {etas!r}")
        if not isinstance(sizes, (tuple, list)) or len(sizes) != 2:
            raise ValueError(f"{owner}: step_sizes must be a pair (min, max), got {sizes!r}")
        low, high = (number(owner, f"step_sizes[{i}]", size) for i, size in enumerate(sizes))
        if not 0.0 <= low <= high:  # high may be inf: no upper bound
            raise ValueError(f"{owner}: step_sizes must satisfy 0 <= min <= max, got {sizes!r}")

    def chain(self, group):
        (etaminus, etaplus), (low, high) = group["etas"], group["step_sizes"]
        return [ResilientStepSize(etaminus, etaplus, low, high, group["lr"]), Negate()]
