"""Adafactor: factored second moments, O(n + m) state for an n×m matrix."""
from __future__ import annotations

import torch

from ..adapter.optimizer import ChainOptimizer
from ..plan.hyper import (
    check_closed_interval,
    check_nonnegative,
    check_positive,
    check_unit_interval,
)
from ..steps import (
    AdafactorStepSize,
    AdafactorWeightDecay,
    ClipByRms,
    FactoredSecondMoment,
    Momentum,
    Negate,
    Transform,
)
from ..steps.adafactor import relative_step_size


class Adafactor(ChainOptimizer):
    r"""Adafactor (Shazeer & Stern 2018): Adam-like steps with O(n + m) state for an n×m matrix.

    .. math::
        \hat\beta_{2t} &= 1 - t^{c} \qquad (c = \text{decay\_rate}) \\
        R_t &\leftarrow \hat\beta_{2t} R_{t-1} + (1-\hat\beta_{2t})\,
            \mathrm{mean}_{\text{cols}}(G_t^2 + \epsilon_1) \\
        C_t &\leftarrow \hat\beta_{2t} C_{t-1} + (1-\hat\beta_{2t})\,
            \mathrm{mean}_{\text{rows}}(G_t^2 + \epsilon_1) \\
        \hat V_t &= R_t C_t^\top / \mathrm{mean}(R_t)
            \qquad (\text{= } R C^\top / 1^\top R \text{ for row/column sums}) \\
        U_t &= G_t / \sqrt{\hat V_t}, \qquad
        \hat U_t = U_t / \max(1, \mathrm{RMS}(U_t) / d) \\
        \alpha_t &= \max(\epsilon_2, \mathrm{RMS}(\theta_{t-1}))\,\rho_t, \qquad
        \rho_t = \min(10^{-2}, 1/\sqrt t) \\
        m_t &\leftarrow \beta_1 m_{t-1} + (1-\beta_1)\,\alpha_t \hat U_t
            \qquad (\text{only with beta1; else } m_t = \alpha_t \hat U_t) \\
        \theta_t &\leftarrow \theta_{t-1} - m_t - \alpha_t \lambda\,\theta_{t-1}

    Tensors of more than two dims are factored over their last two; vectors and
    scalars keep the full ``V``.  ``lr`` given (with ``relative_step=False``)
    replaces ``ρ_t``; ``scale_parameter=False`` drops the ``RMS(θ)`` factor;
    ``warmup_init`` uses ``ρ_t = min(10⁻⁶·t, 1/√t)``.  ``d`` is
    ``clip_threshold``; ``(ε₁, ε₂)`` is ``eps``.  Follows the paper and the
    Hugging Face implementation (torch.optim.Adafactor differs: it clamps
    ``V̂`` at ``ε₁²`` instead of adding ``ε₁`` to ``G²``, and has no ``beta1``).

    While ``relative_step=True`` the step size is computed, ``lr`` is None in the
    param groups, and lr schedulers do not apply; give ``lr`` with
    ``relative_step=False`` to schedule it.
    """

    elementwise = False  # row/column statistics and RMS values span the whole matrix
    state_keys = frozenset({"exp_avg_sq_row", "exp_avg_sq_col", "exp_avg_sq", "exp_avg"})  # exp_avg: with beta1
    ignored_state_keys = frozenset({"RMS"})  # Hugging Face's Adafactor keeps RMS(θ) of the last step; not needed

    def __init__(
        self,
        params,
        lr: float | None = None,
        eps: tuple[float, float] = (1e-30, 1e-3),
        clip_threshold: float = 1.0,
        decay_rate: float = -0.8,
        beta1: float | None = None,
        weight_decay: float = 0.0,
        scale_parameter: bool = True,
        relative_step: bool = True,
        warmup_init: bool = False,
        maximize: bool = False,
        *,
        nonfinite: str = "raise",
        fused: bool | None = None,
        foreach: bool | None = None,
        state_dtype: torch.dtype | None = None,
        max_grad_norm: float | None = None,
    ):
        defaults = dict(
            lr=lr,
            eps=eps,
            clip_threshold=clip_threshold,
            decay_rate=decay_rate,
            beta1=beta1,
            weight_decay=weight_decay,
            scale_parameter=scale_parameter,
            relative_step=relative_step,
            warmup_init=warmup_init,
            maximize=maximize,
        )
        super().__init__(params, defaults, nonfinite, fused, foreach, state_dtype, max_grad_norm)

    def validate(self, group):
        owner = type(self).__name__
        if group["relative_step"]:
            if group["lr"] is not None:
                raise ValueError(f"{owner}: lr must be None while relative_step=True (the step size is computed)")
        else:
            if group["lr"] is None:
                raise ValueError(f"{owner}: relative_step=False needs an lr > 0")
            check_positive(owner, "lr", group["lr"])
            if group["warmup_init"]:
                raise ValueError(f"{owner}: warmup_init=True needs relative_step=True")
        eps = group["eps"]
        if not isinstance(eps, (tuple, list)) or len(eps) != 2:
            raise ValueError(f"{owner}: eps must be a pair (eps1, eps2), got {eps!r}")
        check_nonnegative(owner, "eps[0]", eps[0])
        check_nonnegative(owner, "eps[1]", eps[1])
        check_positive(owner, "clip_threshold", group["clip_threshold"])
        check_nonnegative(owner, "weight_decay", group["weight_decay"])
        check_closed_interval(owner, "decay_rate", group["decay_rate"], -1.0, 0.0)
        if group["beta1"] is not None:
            check_unit_interval(owner, "beta1", group["beta1"])

    def _numbers(self, group):
        """As Hugging Face's Adafactor: while ``relative_step`` the step size is computed and the group's
        ``lr`` is ignored (``transformers.optimization.AdafactorSchedule`` writes 0.0 there)."""
        values = super()._numbers(group)
        if values["relative_step"]:
            values["lr"] = None
        return values

    def _get_lr(self, group, state) -> float:
        """The step size ``α_t`` of the last step of the parameter whose state is ``state``, as Hugging
        Face's ``Adafactor._get_lr`` (``AdafactorSchedule`` reports it to the trainer's logs)."""
        group = self._numbers(group)
        step = state.get("step", 0)
        step = int(step.item() if hasattr(step, "item") else step)
        if step == 0:
            return 0.0
        size = float(relative_step_size(float(step), group["lr"], group["warmup_init"]))
        if group["scale_parameter"]:
            param = next((p for p in group["params"] if self.state.get(p) is state), None)
            rms = 0.0 if param is None else float(param.detach().double().square().mean().sqrt())
            size *= max(group["eps"][1], rms)
        return size

    def chain(self, group):
        eps1, eps2 = group["eps"]
        lr, scale, warmup = group["lr"], group["scale_parameter"], group["warmup_init"]
        steps: list[Transform] = [
            FactoredSecondMoment(group["decay_rate"], eps1),
            ClipByRms(group["clip_threshold"]),
            AdafactorStepSize(lr, eps2, scale, warmup),
        ]
        if group["beta1"] is not None:
            steps.append(Momentum(group["beta1"], dampening=group["beta1"], key="exp_avg"))
        if group["weight_decay"]:
            steps.append(AdafactorWeightDecay(group["weight_decay"], lr, eps2, scale, warmup))
        return steps + [Negate()]
