"""The named steps every descend optimizer is composed from.

An optimizer step turns the gradient ``g`` of one parameter ``θ`` into a signed
change ``u`` and applies ``θ ← θ + u``.  Each step below is one transformation
``u ← f(u, θ, state)`` from the textbooks, in the spirit of optax's
``scale_by_adam`` / ``add_decayed_weights`` / ``scale_by_learning_rate``:

    SGD        = [AddWeightDecay, Momentum, ScaleByLearningRate]
    Adam       = [AddWeightDecay, EmaOfSquares, Momentum(EMA), BiasCorrection,
                  ScaleByInverseRms, ScaleByLearningRate]
    AdamW      = Adam without AddWeightDecay, then DecoupledWeightDecay
    ...

Most steps are ``Elementwise``: their ``formula`` is the textbook line itself
(``s ← βs + (1−β)u²`` is ``state[k] = β * state[k] + (1 - β) * (u * u)``), and it is
the only place the formula is written.  The same code runs on tensors (the
reference path), on lists of tensors (torch's ``_foreach_*`` ops, one launch per
op for a whole list on CUDA) and on symbols, from which ``descend.codegen``
generates one fused C or Triton kernel for a whole chain.  The others (Adafactor's
factored second moment, update clipping and step size, which reduce over whole
matrices) are written as tensor code, with a hand-written kernel for Adafactor's
chain (``_kernels.c``).

A step may keep per-parameter state (a momentum buffer, a running average of
squared gradients); it names its entries in ``state_keys`` (by default its ``key``
field) and creates them in ``init``; a step may read the entries an earlier step
keeps (``ScaleByInverseRms(source=...)``), and the tracer checks that some step of
the chain keeps every entry read.  Entry names follow torch.optim (``exp_avg``,
``square_avg``, ...), so a torch.optim checkpoint loads into the matching descend
optimizer.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .formula import maximum, sign, sqrt, where


@dataclass
class Shards:
    """How a parameter is split across ranks (FSDP2): this rank holds a slice along ``dim``.

    Steps that reduce over a sharded dimension sum their partial results across ``group``.
    """

    dim: int
    full_shape: torch.Size
    group: object  # torch.distributed ProcessGroup

    def sum(self, tensor: Tensor) -> Tensor:
        """In place: the sum of ``tensor`` over the ranks."""
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=self.group)
        return tensor


@dataclass
class StepContext:
    """What one parameter's step knows besides its tensors."""

    step: int  # t, counted from 1
    lr: float | None = None  # the learning rate the update was scaled by, once known
    shards: Shards | None = None  # None: this rank holds the whole parameter


class Transform:
    """One named step ``u ← f(u, θ, state)``; subclasses are small dataclasses."""

    stateful = False  # True for a step that keeps per-parameter state

    def state_keys(self, param: Tensor) -> tuple[str, ...]:
        return (self.key,) if hasattr(self, "key") else ()

    def init(self, param: Tensor) -> dict[str, Tensor]:
        return {key: torch.zeros_like(param, memory_format=torch.preserve_format) for key in self.state_keys(param)}

    def ensure_state(self, param: Tensor, state: dict) -> None:
        """Creates this step's state entries that are missing (first step, or a step added later)."""
        if not all(key in state for key in self.state_keys(param)):
            for key, value in self.init(param).items():
                state.setdefault(key, value)

    def __call__(self, u: Tensor, param: Tensor, state: dict, ctx: StepContext) -> Tensor:
        raise NotImplementedError

    def many(self, us: list[Tensor], params: list[Tensor], states: list[dict], ctxs: list[StepContext]) -> list[Tensor]:
        """``__call__`` for each parameter of a list (one device and dtype)."""
        return [self(u, param, state, ctx) for u, param, state, ctx in zip(us, params, states, ctxs)]


def ema_(average: Tensor, value: Tensor, decay: float, weight: float) -> Tensor:
    """In place ``average ← decay·average + weight·value`` (weight = 1 − decay for an EMA)."""
    return average.mul_(decay).add_(value, alpha=weight)


class Elementwise(Transform):
    """A step whose new value of each element depends on that element alone, written once as ``formula``.

    ``formula(u, param, state, t)`` returns the new ``u``; it reads ``state[key]`` and assigns
    ``state[key] = ...`` for the entries it updates, with ``t`` the step count.  It is plain arithmetic
    with the functions of ``descend.formula`` (``sqrt``, ``maximum``, ``where`` ...), so the same code runs
    on tensors (the reference path), on lists of tensors (``_foreach_*`` ops), and on symbols, from which
    descend generates one fused C or Triton kernel for the whole chain.  Numeric attributes (``float``,
    ``int``, one-element tensors) are the step's hyperparameters, passed to a kernel at run time; booleans,
    strings and ``None`` are its structure (a kernel is specialised on them).

    ``scalar_state`` names per-tensor numbers kept in ``state`` (0-dim tensors, e.g. NAdam's product of
    momentum coefficients); ``prepare(state, t)`` updates them once per tensor and step, before the formula,
    and the formula reads them as numbers.
    """

    scalar_state: tuple[str, ...] = ()

    def formula(self, u, param, state, t):
        raise NotImplementedError

    def prepare(self, state: dict, t: float) -> None:
        """Per-tensor scalar work before ``formula`` (updates the ``scalar_state`` entries)."""

    def __call__(self, u, param, state, ctx):
        self.prepare(state, ctx.step)
        view = _Values(state, self.scalar_state, lambda value: value.item())
        u = self.formula(u, param, view, float(ctx.step))
        for key, value in view.stored.items():
            store_state(state[key], value, ctx.step, key)
        return u

    def many(self, us, params, states, ctxs):
        from .formula import ScalarList, TensorList

        for state, ctx in zip(states, ctxs):
            self.prepare(state, ctx.step)
        view = _ListValues(states, self.scalar_state, ScalarList, TensorList)
        us = self.formula(TensorList(us), TensorList(params), view, ScalarList(float(c.step) for c in ctxs))
        for key, values in view.stored.items():
            targets = _entries(states, key)
            if targets[0].dtype == torch.bfloat16:
                for target, value, ctx in zip(targets, values, ctxs):
                    store_state(target, value, ctx.step, key)
            else:
                torch._foreach_copy_(targets, values)
        return us


class _Values(dict):
    """A parameter's state as a formula sees it: reads give the current value, assignments are collected."""

    def __init__(self, state: dict, scalar_keys, as_number):
        super().__init__()
        self.state, self.scalar_keys, self.as_number = state, scalar_keys, as_number
        self.stored: dict[str, Any] = {}

    def __missing__(self, key):
        value = self.state[key]
        if key in self.scalar_keys:
            return self.as_number(value)
        return value.float() if value.dtype in _SIXTEEN_BIT else value  # 16-bit state computes in float32

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self.stored[key] = value


class _ListValues(_Values):
    """``_Values`` for a list of parameters: each entry is a ``TensorList`` (or a ``ScalarList``)."""

    def __init__(self, states: list[dict], scalar_keys, scalar_list, tensor_list):
        super().__init__({}, scalar_keys, None)
        self.states, self.scalar_list, self.tensor_list = states, scalar_list, tensor_list

    def __missing__(self, key):
        if key in self.scalar_keys:
            return self.scalar_list(state[key].item() for state in self.states)
        values = _entries(self.states, key)
        return self.tensor_list(v.float() if v.dtype in _SIXTEEN_BIT else v for v in values)


def store_state(target: Tensor, value, step: float, key: str) -> None:
    """``target ← value``; into bfloat16 state (``state_dtype=torch.bfloat16``) with stochastic rounding.

    Round-to-nearest would bias a slow average: with β = 0.999, ``0.999·v`` rounds back to ``v`` in
    bfloat16 and the average never decays.  Adding 16 random bits below the kept ones before truncating
    rounds up with probability equal to the dropped fraction, so the stored value is unbiased.  The bits
    hash the element's memory offset, the step and the entry's name (``_prelude.h``'s ``sr_bits``), so this
    reference and the kernels store the same bits.
    """
    if target.dtype != torch.bfloat16 or not isinstance(value, Tensor) or value.dtype == torch.bfloat16:
        target.copy_(value)
        return
    value = torch.as_tensor(value, dtype=torch.float32).expand(target.shape)
    bits = value.float().contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    offsets = torch.arange(target.numel(), dtype=torch.int64, device=target.device).as_strided(
        target.shape, target.stride()) if target.numel() else torch.zeros(target.shape, dtype=torch.int64)
    random = _sr_bits(offsets, _sr_seed(zlib.crc32(key.encode()), step))
    rounded = ((bits + (random & 0xFFFF)) & 0xFFFF0000).to(torch.int32)
    nan = torch.isnan(value)
    result = rounded.view(torch.float32).masked_fill(nan, float("nan"))
    target.copy_(result)  # exact: the low 16 bits are zero


_U32 = 0xFFFFFFFF
_SIXTEEN_BIT = (torch.bfloat16, torch.float16)


def _sr_seed(salt: int, step: float) -> int:
    return (salt * 0x27D4EB2F + (int(step) & _U32) * 0x165667B1) & _U32


def _sr_bits(offsets: Tensor, seed: int) -> Tensor:
    x = ((offsets & _U32) * 0x9E3779B1 + seed) & _U32
    x ^= x >> 16
    x = (x * 0x85EBCA6B) & _U32
    x ^= x >> 13
    x = (x * 0xC2B2AE35) & _U32
    return x ^ (x >> 16)


def _entries(states: list[dict], key: str) -> list[Tensor]:
    return [state[key] for state in states]


# --- gradient transformations ------------------------------------------------------------


@dataclass
class AddWeightDecay(Elementwise):
    """Coupled L2 penalty: ``g ← g + λθ`` (the gradient of ``λ/2·‖θ‖²``)."""

    weight_decay: float

    def formula(self, u, param, state, t):
        return u + self.weight_decay * param


@dataclass
class Momentum(Elementwise):
    """Momentum buffer ``b ← μb + (1−d)u`` with ``b₀ = 0``; emits ``b``.

    ``d = 0`` is the velocity form (``v = −αb`` gives ``v ← μv − αg, θ ← θ + v``);
    ``d = μ`` is the exponential moving average ``b ← βb + (1−β)g``.
    With ``nesterov`` it emits ``μb + (1−d)u`` instead: the same average taken once
    more with the current gradient.  For ``d = 0`` this is the reformulated
    Nesterov step ``θ ← θ − μv_prev + (1+μ)v`` (Sutskever et al. 2013, eq. 4
    in the velocity variables); for ``d = μ = β`` the look-ahead step
    ``θ ← θ − α(βb_{t+1} + (1−β)g)``.
    """

    stateful = True

    momentum: float
    dampening: float = 0.0
    nesterov: bool = False
    key: str = "momentum_buffer"

    def formula(self, u, param, state, t):
        buffer = state[self.key] = self.momentum * state[self.key] + (1.0 - self.dampening) * u
        if self.nesterov:
            return self.momentum * buffer + (1.0 - self.dampening) * u
        return buffer


@dataclass
class TrackEma(Elementwise):
    """Keeps ``ḡ ← γḡ + (1−γ)u`` (for the centred RMSprop) and passes ``u`` on."""

    stateful = True

    decay: float
    key: str = "grad_avg"

    def formula(self, u, param, state, t):
        state[self.key] = self.decay * state[self.key] + (1.0 - self.decay) * u
        return u


@dataclass
class SumOfSquares(Elementwise):
    """AdaGrad's accumulator ``s ← s + u²`` (starting at ``initial``); passes ``u`` on."""

    stateful = True

    initial: float = 0.0
    key: str = "sum"

    def init(self, param):
        return {self.key: torch.full_like(param, self.initial, memory_format=torch.preserve_format)}

    def formula(self, u, param, state, t):
        state[self.key] = state[self.key] + u * u
        return u


@dataclass
class EmaOfSquares(Elementwise):
    """Running average of squares ``s ← γs + (1−γ)u²``; passes ``u`` on."""

    stateful = True

    decay: float
    key: str = "square_avg"

    def formula(self, u, param, state, t):
        state[self.key] = self.decay * state[self.key] + (1.0 - self.decay) * (u * u)
        return u


@dataclass
class RunningMax(Elementwise):
    """AMSGrad: ``v_max ← max(v_max, v)`` of another step's state; passes ``u`` on."""

    stateful = True

    source: str = "exp_avg_sq"
    key: str = "max_exp_avg_sq"

    def formula(self, u, param, state, t):
        state[self.key] = maximum(state[self.key], state[self.source])
        return u


@dataclass
class BiasCorrection(Elementwise):
    """Adam's first-moment correction ``u ← u / (1 − β^t)`` (Kingma & Ba, Alg. 1)."""

    beta: float

    def formula(self, u, param, state, t):
        return u / (1.0 - self.beta**t)


@dataclass
class ScaleByInverseRms(Elementwise):
    """Divides by the root of the running second moment ``s`` an earlier step keeps in ``source``.

    ``u ← u / (√(ŝ − ḡ²) + ε)`` with ``ŝ = s / (1 − β^t)`` when ``debias_beta``
    is given (Adam's second-moment correction), ``ḡ`` the running mean of
    gradients when ``center_key`` is given (centred RMSprop), and ``ε`` inside
    the root instead, ``u / √(s + ε)``, when ``eps_inside_sqrt`` (Adadelta).
    """

    source: str
    eps: float
    eps_inside_sqrt: bool = False
    center_key: str | None = None
    debias_beta: float | None = None

    def formula(self, u, param, state, t):
        second_moment = state[self.source]
        if self.center_key is not None:  # s − ḡ² ≥ 0 exactly, but rounding can dip below 0 (then √ is NaN)
            center = state[self.center_key]
            second_moment = maximum(second_moment - center * center, 0.0)
        if self.eps_inside_sqrt:
            return u / sqrt(second_moment + self.eps)
        denominator = sqrt(second_moment)
        if self.debias_beta is not None:
            denominator = denominator / sqrt(1.0 - self.debias_beta**t)
        return u / (denominator + self.eps)


@dataclass
class AdadeltaUnitCorrection(Elementwise):
    """Zeiler 2012, Alg. 1: ``Δ ← √(d + ε)·u`` then ``d ← ρd + (1−ρ)Δ²``; emits ``Δ``.

    Multiplying by the RMS of past updates gives the step the units of ``θ``.
    """

    stateful = True

    rho: float
    eps: float
    key: str = "acc_delta"

    def formula(self, u, param, state, t):
        delta = u * sqrt(state[self.key] + self.eps)
        state[self.key] = self.rho * state[self.key] + (1.0 - self.rho) * (delta * delta)
        return delta


@dataclass
class LrDecay(Elementwise):
    """AdaGrad's learning-rate decay ``u ← u / (1 + (t−1)·decay)`` (as torch.optim.Adagrad)."""

    decay: float

    def formula(self, u, param, state, t):
        return u / (1.0 + (t - 1.0) * self.decay)


def _rms(tensor: Tensor, shards: Shards | None = None) -> float:
    """Root mean square over the whole parameter (all shards)."""
    squares = tensor.double().square().sum().reshape(1)
    numel = tensor.numel()
    if shards is not None:
        shards.sum(squares)
        numel = math.prod(shards.full_shape)
    return math.sqrt(squares.item() / numel) if numel else 0.0


@dataclass
class FactoredSecondMoment(Transform):
    """Adafactor's preconditioner (Shazeer & Stern 2018, Alg. 4 and 5): ``u ← u / √V̂``.

    With ``β̂₂ₜ = 1 − t^c`` (``c = decay_rate``) and ``G² + ε₁``:
    a tensor of two or more dims, ``n × m`` in its last two, keeps only the row
    and column averages ``R ← β̂₂ₜR + (1−β̂₂ₜ)·mean_cols(G²+ε₁)``,
    ``C ← β̂₂ₜC + (1−β̂₂ₜ)·mean_rows(G²+ε₁)`` and rebuilds
    ``V̂ = R Cᵀ / mean(R)`` (the paper's ``R Cᵀ / 1ᵀR`` written with averages);
    a vector or scalar keeps the full ``V ← β̂₂ₜV + (1−β̂₂ₜ)(G²+ε₁)``.
    State: ``n + m`` floats per matrix instead of ``n·m``.
    """

    stateful = True

    decay_rate: float
    eps1: float

    @staticmethod
    def factored(param: Tensor) -> bool:
        return param.dim() >= 2

    def init(self, param):
        if self.factored(param):
            return {
                "exp_avg_sq_row": param.new_zeros(param.shape[:-1]),
                "exp_avg_sq_col": param.new_zeros(param.shape[:-2] + param.shape[-1:]),
            }
        return {"exp_avg_sq": torch.zeros_like(param)}

    def state_keys(self, param):
        return ("exp_avg_sq_row", "exp_avg_sq_col") if self.factored(param) else ("exp_avg_sq",)

    def __call__(self, u, param, state, ctx):
        beta2 = adafactor_beta2(ctx.step, self.decay_rate)
        squares = u.square().add_(self.eps1)
        if "exp_avg_sq_row" in state:
            row, col = state["exp_avg_sq_row"], state["exp_avg_sq_col"]
            shards = ctx.shards
            rows_split = shards is not None and shards.dim == param.dim() - 2
            rows = shards.full_shape[-2] if rows_split else param.shape[-2]
            column_sums = squares.sum(dim=-2)
            if rows_split:  # the rows of this matrix are spread over the ranks: add up their column sums
                shards.sum(column_sums)
            ema_(row, squares.mean(dim=-1), beta2, 1.0 - beta2)
            ema_(col, column_sums.div_(rows), beta2, 1.0 - beta2)
            row_total = row.sum(dim=-1, keepdim=True)
            if rows_split:
                shards.sum(row_total)
            row_factor = (row / row_total.div_(rows)).rsqrt_().unsqueeze(-1)
            col_factor = col.rsqrt().unsqueeze(-2)
            return u.mul_(row_factor).mul_(col_factor)
        ema_(state["exp_avg_sq"], squares, beta2, 1.0 - beta2)
        return u.mul_(state["exp_avg_sq"].rsqrt())


@dataclass
class ClipByRms(Transform):
    """Adafactor's update clipping ``Û = U / max(1, RMS(U)/d)`` (Shazeer & Stern, eq. 9)."""

    threshold: float

    def __call__(self, u, param, state, ctx):
        return u.div_(max(1.0, _rms(u, ctx.shards) / self.threshold))


# --- learning rate and decoupled decay ----------------------------------------------------


@dataclass
class ScaleByLearningRate(Elementwise):
    """``u ← −α·u``: from here on ``u`` is the signed change added to ``θ``."""

    lr: float

    def formula(self, u, param, state, t):
        return u * -self.lr


@dataclass
class AdafactorStepSize(Transform):
    """Adafactor's step size, then ``u ← −α_t·u``.

    ``ρ_t = min(10⁻², 1/√t)`` (``min(10⁻⁶·t, 1/√t)`` with warm-up init) when
    ``lr`` is None, else ``ρ_t = lr``; with ``scale_parameter``
    ``α_t = max(ε₂, RMS(θ))·ρ_t``, else ``α_t = ρ_t``.
    """

    lr: float | None
    eps2: float
    scale_parameter: bool
    warmup_init: bool

    def __call__(self, u, param, state, ctx):
        step_size = adafactor_step_size(ctx.step, self.lr, self.warmup_init)
        if self.scale_parameter:
            step_size *= max(self.eps2, _rms(param, ctx.shards))
        ctx.lr = step_size
        return u.mul_(-step_size)


def adafactor_beta2(step: int, decay_rate: float) -> float:
    """``β̂₂ₜ = 1 − t^c``: 0 at the first step, so the first statistics are the first squares."""
    return 1.0 - step**decay_rate


def adafactor_step_size(step: int, lr: float | None, warmup_init: bool) -> float:
    """``ρ_t``: ``lr`` when given, else ``min(10⁻², 1/√t)`` (``min(10⁻⁶·t, 1/√t)`` with warm-up init)."""
    if lr is not None:
        return lr
    return min(1e-6 * step if warmup_init else 1e-2, 1.0 / math.sqrt(step))


@dataclass
class DecoupledWeightDecay(Elementwise):
    """Decoupled decay (Loshchilov & Hutter 2019): ``θ ← θ(1 − αλ) + u``, i.e. ``u ← u − αλθ``.

    ``lr`` is the ``α`` of that product; ``None`` takes the step size an earlier step of the chain computed
    for this parameter (``AdafactorStepSize``, which varies per parameter), and runs on the reference path.
    """

    weight_decay: float
    lr: float | None = None

    def formula(self, u, param, state, t):
        if self.lr is None:
            from .formula import NotTraceable

            raise NotTraceable("DecoupledWeightDecay(lr=None) takes the step size of an earlier step")
        return u - (self.lr * self.weight_decay) * param

    def __call__(self, u, param, state, ctx):
        if self.lr is not None:
            return super().__call__(u, param, state, ctx)
        if ctx.lr is None:
            raise RuntimeError("DecoupledWeightDecay(lr=None) needs an earlier step that sets the step size "
                               "(AdafactorStepSize); give lr= otherwise")
        return u.add_(param, alpha=-ctx.lr * self.weight_decay)

    def many(self, us, params, states, ctxs):
        if self.lr is not None:
            return super().many(us, params, states, ctxs)
        return [self(u, param, state, ctx) for u, param, state, ctx in zip(us, params, states, ctxs)]


# --- Lion, NAdam and RAdam ---------------------------------------------------------------


@dataclass
class LionInterpolation(Elementwise):
    """Lion's two averages (Chen et al. 2023, Alg. 2): emits ``c = β₁m + (1−β₁)u``, then keeps
    ``m ← β₂m + (1−β₂)u``.

    The update direction interpolates with ``β₁``; the momentum that is kept decays with ``β₂``
    (``β₂ > β₁`` by default): the current gradient weighs more in the step than in the memory.
    """

    stateful = True

    beta1: float
    beta2: float
    key: str = "exp_avg"

    def formula(self, u, param, state, t):
        momentum = state[self.key]
        state[self.key] = self.beta2 * momentum + (1.0 - self.beta2) * u
        return self.beta1 * momentum + (1.0 - self.beta1) * u


@dataclass
class SignUpdate(Elementwise):
    """``u ← sign(u)``: every coordinate moves by the same magnitude (signSGD, Lion)."""

    def formula(self, u, param, state, t):
        return sign(u)


@dataclass
class NesterovMomentumCorrection(Elementwise):
    """NAdam's Nesterov step (Dozat 2016, with torch.optim.NAdam's momentum schedule).

    With ``μ_t = β₁(1 − ½·0.96^{tψ})`` (``ψ`` = ``momentum_decay``) and ``Π_t = ∏_{i≤t} μ_i`` kept in
    ``state["mu_product"]``, and ``m`` the first moment an earlier step keeps in ``source``:

        u ← (1 − μ_t)/(1 − Π_t) · u  +  μ_{t+1}/(1 − Π_t·μ_{t+1}) · m

    the bias-corrected gradient and the bias-corrected momentum of the next step, so the update looks
    one step ahead along the momentum.  ``Π`` is a 0-dim tensor of the default dtype, as in torch.
    """

    stateful = True
    scalar_state = ("mu_product",)

    beta1: float
    momentum_decay: float
    source: str = "exp_avg"

    def state_keys(self, param):
        return self.scalar_state

    def init(self, param):
        return {"mu_product": torch.tensor(1.0)}  # on the CPU, the default dtype: where torch.optim.NAdam keeps it

    def momentum_coefficient(self, t):
        """``μ_t = β₁(1 − ½·0.96^{tψ})``."""
        return self.beta1 * (1.0 - 0.5 * 0.96 ** (t * self.momentum_decay))

    def prepare(self, state, t):
        state["mu_product"].mul_(self.momentum_coefficient(t))  # Π_t ← Π_{t−1}·μ_t, in place as torch does

    def formula(self, u, param, state, t):
        mu, mu_next = self.momentum_coefficient(t), self.momentum_coefficient(t + 1.0)
        product = state["mu_product"]
        return u * ((1.0 - mu) / (1.0 - product)) + state[self.source] * (mu_next / (1.0 - product * mu_next))


@dataclass
class RectifiedScale(Elementwise):
    """RAdam's rectified adaptive step (Liu et al. 2020, Alg. 2), on the bias-corrected momentum ``u``.

    With ``ρ∞ = 2/(1−β₂) − 1`` and ``ρ_t = ρ∞ − 2tβ₂ᵗ/(1−β₂ᵗ)`` (the length of the approximated simple
    moving average), and ``s`` the second moment an earlier step keeps in ``source``:

        u ← r_t · √(1−β₂ᵗ) / (√s + ε) · u   where ρ_t > 5,
            r_t = √((ρ_t−4)(ρ_t−2)ρ∞ / ((ρ∞−4)(ρ∞−2)ρ_t))
        u ← u                                 otherwise (plain momentum SGD while the variance is intractable)
    """

    beta2: float
    eps: float
    source: str = "exp_avg_sq"

    def formula(self, u, param, state, t):
        beta2_t = self.beta2**t
        rho_inf = 2.0 / (1.0 - self.beta2) - 1.0
        rho_t = rho_inf - 2.0 * t * beta2_t / (1.0 - beta2_t)
        # r_t is only used where ρ_t > 5 (so ρ∞ > 5 too); the clamps keep the unused branch finite
        rho_tc, rho_infc = maximum(rho_t, 5.0), maximum(rho_inf, 5.0)
        rectification = sqrt((rho_tc - 4.0) * (rho_tc - 2.0) * rho_infc / ((rho_infc - 4.0) * (rho_infc - 2.0) * rho_tc))
        adaptive = u * (rectification * sqrt(1.0 - beta2_t)) / (sqrt(state[self.source]) + self.eps)
        return where(rho_t > 5.0, adaptive, u)
