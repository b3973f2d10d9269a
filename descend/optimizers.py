"""The classic optimizers, each a chain of the named steps in ``descend.transforms``.

Signatures and defaults follow torch.optim where it has the class; every class
adds ``nonfinite`` (see ``ChainOptimizer``).
"""
from __future__ import annotations

import math
from typing import Any

import torch

from . import native
from .optimizer import (
    ChainOptimizer,
    check_closed_interval,
    check_nonnegative,
    check_positive,
    check_unit_interval,
)
from .transforms import (
    AdadeltaUnitCorrection,
    AdafactorStepSize,
    AddWeightDecay,
    BiasCorrection,
    ClipByRms,
    DecoupledWeightDecay,
    EmaOfSquares,
    FactoredSecondMoment,
    LionInterpolation,
    LrDecay,
    Momentum,
    NesterovMomentumCorrection,
    RectifiedScale,
    RunningMax,
    ScaleByInverseRms,
    ScaleByLearningRate,
    SignUpdate,
    SumOfSquares,
    TrackEma,
    Transform,
    adafactor_step_size,
)


def _pointers(states, key):
    """The state tensors under ``key``, as a C pointer array (NULL when the chain keeps no such entry)."""
    return native.pointers([state[key] for state in states]) if key in states[0] else None


def _with_coupled_decay(group: dict[str, Any], steps: list[Transform]) -> list[Transform]:
    weight_decay = group["weight_decay"]
    return ([AddWeightDecay(weight_decay)] if weight_decay else []) + steps


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

    counts_steps = False  # no formula here uses t; like torch.optim.SGD, the state is the momentum buffer

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
    ):
        defaults = dict(
            lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
            maximize=maximize, differentiable=differentiable,
        )
        super().__init__(params, defaults, nonfinite, fused, foreach, state_dtype)

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
        return _with_coupled_decay(group, steps + [ScaleByLearningRate(group["lr"])])


class Adagrad(ChainOptimizer):
    r"""AdaGrad (Duchi et al. 2011): every coordinate's step shrinks with its gradient history.

    .. math::
        g_t &\leftarrow \nabla f(\theta_{t-1}) + \lambda\theta_{t-1} \\
        s_t &\leftarrow s_{t-1} + g_t^2, \qquad s_0 = \text{initial\_accumulator\_value} \\
        \theta_t &\leftarrow \theta_{t-1} - \frac{\alpha}{1 + (t-1)\,\eta}\,
            \frac{g_t}{\sqrt{s_t} + \epsilon} \qquad (\eta = \text{lr\_decay})
    """

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
        super().__init__(params, defaults, nonfinite, fused, foreach, state_dtype)

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
        return _with_coupled_decay(group, steps + [ScaleByLearningRate(group["lr"])])


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
        super().__init__(params, defaults, nonfinite, fused, foreach, state_dtype)

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
        return _with_coupled_decay(group, steps + [ScaleByLearningRate(group["lr"])])


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
    ):
        defaults = dict(
            lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, capturable=capturable, maximize=maximize,
            differentiable=differentiable,
        )
        super().__init__(params, defaults, nonfinite, fused, foreach, state_dtype)

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
        return _with_coupled_decay(group, steps)


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
        super().__init__(params, defaults, nonfinite, fused, foreach, state_dtype)

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
        return _with_coupled_decay(group, steps)


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
    ):
        super().__init__(
            params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize, capturable=capturable,
            differentiable=differentiable, fused=fused, decoupled_weight_decay=True, bias_correction=bias_correction,
            nonfinite=nonfinite, state_dtype=state_dtype,
        )


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
        super().__init__(params, defaults, nonfinite, fused, foreach, state_dtype)

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
        size = adafactor_step_size(step, group["lr"], group["warmup_init"])
        if group["scale_parameter"]:
            param = next((p for p in group["params"] if self.state.get(p) is state), None)
            rms = 0.0 if param is None else float(param.detach().double().square().mean().sqrt())
            size *= max(group["eps"][1], rms)
        return size

    def chain(self, group):
        eps1, eps2 = group["eps"]
        steps: list[Transform] = [
            FactoredSecondMoment(group["decay_rate"], eps1),
            ClipByRms(group["clip_threshold"]),
            AdafactorStepSize(group["lr"], eps2, group["scale_parameter"], group["warmup_init"]),
        ]
        if group["beta1"] is not None:
            steps.append(Momentum(group["beta1"], dampening=group["beta1"], key="exp_avg"))
        if group["weight_decay"]:
            steps.append(DecoupledWeightDecay(group["weight_decay"]))
        return steps

    def kernel_chain(self, group):
        """The chain ``fused_step`` computes (``_kernels.c``): Adafactor's own, whatever a subclass's is."""
        return Adafactor.chain(self, group)

    def fused_step(self, group, params, grads, states, steps):
        eps1, eps2 = group["eps"]
        shapes, rows, cols, full = [], [], [], []
        for param, state in zip(params, states):
            shape = param.shape
            if FactoredSecondMoment.factored(param):
                shapes += (math.prod(shape[:-2]), shape[-2], shape[-1])
                rows.append(state["exp_avg_sq_row"]), cols.append(state["exp_avg_sq_col"]), full.append(None)
            else:
                shapes += (1, 1, param.numel())
                rows.append(None), cols.append(None), full.append(state["exp_avg_sq"])
        has_first_moment = group["beta1"] is not None
        return native.kernel("adafactor", params[0].dtype)(
            len(params), native.pointers(params), native.pointers(grads), native.pointers(rows),
            native.pointers(cols), native.pointers(full), _pointers(states, "exp_avg") if has_first_moment else None,
            native.int64s(shapes), steps, group["decay_rate"], eps1, eps2,
            -1.0 if group["lr"] is None else group["lr"], group["warmup_init"], group["scale_parameter"],
            group["clip_threshold"], group["beta1"] if has_first_moment else 0.0, group["weight_decay"],
            group["maximize"], native.threads(),
        )


def _check_betas(owner: str, betas: Any, closed: bool = False) -> None:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"{owner}: betas must be a pair (beta1, beta2), got {betas!r}")
    for index, beta in enumerate(betas):
        if closed:
            check_closed_interval(owner, f"betas[{index}]", beta, 0.0, 1.0)
        else:
            check_unit_interval(owner, f"betas[{index}]", beta)


def _with_decay(group: dict[str, Any], steps: list[Transform], decoupled: bool) -> list[Transform]:
    """``steps`` with weight decay: coupled ``g ← g + λθ`` before them, or decoupled ``θ ← θ(1 − αλ)`` after."""
    if not decoupled:
        return _with_coupled_decay(group, steps)
    weight_decay = group["weight_decay"]
    return steps + ([DecoupledWeightDecay(weight_decay, group["lr"])] if weight_decay else [])


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

    counts_steps = False  # no formula uses t: the state is the momentum alone

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
    ):
        defaults = dict(lr=lr, betas=betas, weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults, nonfinite, fused, foreach, state_dtype)

    def validate(self, group):
        owner = type(self).__name__
        check_nonnegative(owner, "lr", group["lr"])
        check_nonnegative(owner, "weight_decay", group["weight_decay"])
        _check_betas(owner, group["betas"], closed=True)

    def chain(self, group):
        beta1, beta2 = group["betas"]
        steps: list[Transform] = [LionInterpolation(beta1, beta2), SignUpdate(), ScaleByLearningRate(group["lr"])]
        return _with_decay(group, steps, decoupled=True)


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
        super().__init__(params, defaults, nonfinite, fused, foreach, state_dtype)

    def validate(self, group):
        owner = type(self).__name__
        for name in ("lr", "eps", "weight_decay", "momentum_decay"):
            check_nonnegative(owner, name, group[name])
        _check_betas(owner, group["betas"])

    def chain(self, group):
        beta1, beta2 = group["betas"]
        steps: list[Transform] = [
            EmaOfSquares(beta2, "exp_avg_sq"),
            TrackEma(beta1, "exp_avg"),
            NesterovMomentumCorrection(beta1, group["momentum_decay"], source="exp_avg"),
            ScaleByInverseRms("exp_avg_sq", group["eps"], debias_beta=beta2),
            ScaleByLearningRate(group["lr"]),
        ]
        return _with_decay(group, steps, group["decoupled_weight_decay"])


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
        super().__init__(params, defaults, nonfinite, fused, foreach, state_dtype)

    def validate(self, group):
        owner = type(self).__name__
        for name in ("lr", "eps", "weight_decay"):
            check_nonnegative(owner, name, group[name])
        _check_betas(owner, group["betas"])

    def chain(self, group):
        beta1, beta2 = group["betas"]
        steps: list[Transform] = [
            EmaOfSquares(beta2, "exp_avg_sq"),
            Momentum(beta1, dampening=beta1, key="exp_avg"),
            BiasCorrection(beta1),
            RectifiedScale(beta2, group["eps"], source="exp_avg_sq"),
            ScaleByLearningRate(group["lr"]),
        ]
        return _with_decay(group, steps, group["decoupled_weight_decay"])
