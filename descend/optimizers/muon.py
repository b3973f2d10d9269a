"""Muon, and Muon with AdamW for the parameters that are not hidden matrices (one optimizer for a whole model)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..adapter.optimizer import ChainOptimizer
from ..adapter.options import group_numbers
from ..plan.hyper import check_nonnegative, number
from ..steps import Transform
from ..steps.muon import ADJUST_LR_FNS, MuonMomentum, NewtonSchulz, OrthogonalUpdate
from .adam import Adam, AdamW

MUON_DEFAULTS = dict(lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True, ns_coefficients=(3.4445, -4.7750, 2.0315),
                     eps=1e-7, ns_steps=5, adjust_lr_fn=None)  # torch.optim.Muon's
ADAMW_DEFAULTS = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
                      maximize=False)  # torch.optim.AdamW's


def check_muon_group(owner: str, group: dict[str, Any]) -> None:
    """torch.optim.Muon's checks of a group (with its words where code may match on them)."""
    for name in ("lr", "weight_decay", "momentum", "eps"):
        check_nonnegative(owner, name, group[name])
    if group["adjust_lr_fn"] not in ADJUST_LR_FNS:
        raise ValueError(f"Adjust learning rate function {group['adjust_lr_fn']} is not supported")
    coefficients = group["ns_coefficients"]
    if not isinstance(coefficients, (tuple, list)) or len(coefficients) != 3:
        raise ValueError("Coefficients must be a tuple of exactly 3 values")
    for index, value in enumerate(coefficients):
        number(owner, f"ns_coefficients[{index}]", value)
    steps = group["ns_steps"]
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"{owner}: ns_steps must be an integer >= 0, got {steps!r}")
    if steps >= 100:
        raise ValueError("Number of steps must be less than 100 for computational efficiency")
    for param in group["params"]:
        if isinstance(param, torch.Tensor) and param.ndim != 2:  # (a checkpoint's groups hold indices)
            raise ValueError(f"Muon only supports 2D parameters whereas we found a parameter with size: {param.size()}")


def check_muon_gradients(group: dict[str, Any]) -> None:
    """torch.optim.Muon's refusals at step time, in its words."""
    for param in group["params"]:
        if not isinstance(param, torch.Tensor) or param.grad is None:
            continue
        if torch.is_complex(param):
            raise RuntimeError("Muon does not support complex parameters")
        if param.grad.is_sparse:
            raise RuntimeError("Muon does not support sparse gradients")


def muon_chain(group: dict[str, Any]) -> list[Transform]:
    return [MuonMomentum(group["momentum"], bool(group["nesterov"])),
            NewtonSchulz(tuple(group["ns_coefficients"]), group["eps"], group["ns_steps"]),
            OrthogonalUpdate(group["lr"], group["weight_decay"], group["adjust_lr_fn"], group.get("lr_tensor", False))]


def muon_numbers(optimizer, group: dict[str, Any]) -> dict[str, Any]:
    """The group's numbers, and whether its lr is a tensor (torch.optim.Muon then rounds its scalars to float32)."""
    return {**group_numbers(optimizer, group, Muon), "lr_tensor": isinstance(group["lr"], torch.Tensor)}


class Muon(ChainOptimizer):
    r"""Muon, MomentUm Orthogonalized by Newton–Schulz (Jordan et al. 2024), as torch.optim.Muon computes it,
    for 2-D parameters (the hidden layers' weight matrices).

    .. math::
        B_t &\leftarrow B_{t-1} + (1-\mu)(g_t - B_{t-1}), \qquad B_0 = 0 \\
        U_t &\leftarrow g_t + \mu(B_t - g_t) \quad (\text{nesterov}), \quad\text{else } U_t \leftarrow B_t \\
        X_0 &\leftarrow U_t / \max(\lVert U_t\rVert_F, \epsilon), \qquad
            X_{k+1} \leftarrow aX_k + \big(bX_kX_k^\top + c(X_kX_k^\top)^2\big)X_k \quad (k < \text{ns\_steps}) \\
        \theta_t &\leftarrow \theta_{t-1}(1 - \alpha\lambda) - \alpha\,r(A, B)\,X_{\text{ns\_steps}}

    on the transpose where the ``A × B`` matrix is tall, in bfloat16.  ``r = √max(1, A/B)``
    (``adjust_lr_fn=None`` or ``"original"``) or ``0.2·√max(A, B)`` (``"match_rms_adamw"``).  The iteration
    drives every singular value of ``U`` towards 1 (to roughly ``[0.7, 1.2]`` with the default coefficients),
    so the step is the nearest semi-orthogonal matrix.  State: ``momentum_buffer`` only, as torch's (a
    torch.optim.Muon checkpoint loads, and back).  The chain is ``[MuonMomentum, NewtonSchulz,
    OrthogonalUpdate]``: the products of all same-shape matrices of a group run as one batched call.  Use
    AdamW for embeddings, the output head, biases and norms: ``MuonWithAuxAdamW`` is both in one optimizer.
    """

    state_keys = frozenset({"momentum_buffer"})
    matrices_only = True

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: tuple[float, float, float] = (3.4445, -4.7750, 2.0315),
        eps: float = 1e-7,
        ns_steps: int = 5,
        adjust_lr_fn: str | None = None,
        *,
        nonfinite: str = "raise",
        fused: bool | None = None,
        foreach: bool | None = None,
        state_dtype: torch.dtype | None = None,
        max_grad_norm: float | None = None,
    ):
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                        ns_coefficients=ns_coefficients, eps=eps, ns_steps=ns_steps, adjust_lr_fn=adjust_lr_fn)
        super().__init__(params, defaults, nonfinite, fused, foreach, state_dtype, max_grad_norm)

    def validate(self, group):
        check_muon_group(type(self).__name__, group)

    def _numbers(self, group):
        return muon_numbers(self, group)

    def chain(self, group):
        check_muon_group(type(self).__name__, group)  # a value edited after construction, before anything moves
        check_muon_gradients(group)
        return muon_chain(group)


class MuonWithAuxAdamW(ChainOptimizer):
    r"""Muon for the hidden matrices and AdamW for the rest of a model, in one optimizer (Keller Jordan's
    ``MuonWithAuxAdam`` convention): each param group says ``use_muon=True`` (Muon's hyperparameters:
    ``lr, weight_decay, momentum, nesterov, ns_coefficients, eps, ns_steps, adjust_lr_fn``) or
    ``use_muon=False`` (AdamW's: ``lr, betas, eps, weight_decay, amsgrad, maximize``); what a group leaves out
    takes torch.optim.Muon's or torch.optim.AdamW's default.

    A Muon group computes torch.optim.Muon's numbers, an AdamW group torch.optim.AdamW's (see ``Muon`` and
    ``AdamW`` for the formulas); one ``state_dict`` holds both (``momentum_buffer``; ``step``, ``exp_avg``,
    ``exp_avg_sq``).  ``muon_param_groups(model)`` splits a model into the two kinds of group.

    ``nonfinite``, ``fused``, ``foreach``, ``state_dtype``, ``max_grad_norm``: as for every descend optimizer,
    for all groups (``max_grad_norm`` clips over every group at once).
    """

    state_keys = frozenset({"momentum_buffer", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"})

    def __init__(self, param_groups, *, nonfinite: str = "raise", fused: bool | None = None,
                 foreach: bool | None = None, state_dtype: torch.dtype | None = None,
                 max_grad_norm: float | None = None):
        super().__init__(param_groups, {}, nonfinite, fused, foreach, state_dtype, max_grad_norm)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """A group with ``use_muon`` and the defaults of its kind for what it leaves out."""
        if not isinstance(param_group, dict) or "use_muon" not in param_group:
            raise ValueError("MuonWithAuxAdamW: every param group says use_muon=True (Muon) or use_muon=False (AdamW), "
                             "e.g. descend.muon_param_groups(model)")
        if param_group["use_muon"] not in (True, False):
            raise ValueError(f"MuonWithAuxAdamW: use_muon must be True or False, got {param_group['use_muon']!r}")
        defaults = MUON_DEFAULTS if param_group["use_muon"] else ADAMW_DEFAULTS
        super().add_param_group({**defaults, **param_group})

    def validate(self, group):
        if group["use_muon"]:
            check_muon_group(type(self).__name__, group)
        else:
            Adam.validate(self, group)

    def _numbers(self, group):
        return muon_numbers(self, group) if group["use_muon"] else group_numbers(self, group, AdamW)

    def chain(self, group):
        if group["use_muon"]:
            self.validate(group)
            check_muon_gradients(group)
            return muon_chain(group)
        return Adam.chain(self, {**group, "decoupled_weight_decay": True, "bias_correction": True})


def muon_param_groups(model: nn.Module, head: str | list[str] | None = None, muon: dict | None = None,
                      adamw: dict | None = None) -> list[dict[str, Any]]:
    """``model``'s parameters as the two param groups of ``MuonWithAuxAdamW``.

    The rule: a parameter goes to Muon (``use_muon=True``) when it is a 2-D matrix of a hidden layer, that
    is, a 2-D parameter of neither an embedding (``nn.Embedding``, ``nn.EmbeddingBag``) nor the output head;
    everything else goes to AdamW: embeddings, the head, biases and norms' weights (1-D), and parameters of
    other shapes (convolution kernels: torch.optim.Muon takes matrices only).  The head is the module(s) named
    by ``head`` (``"lm_head"``), by default the last ``nn.Linear`` the model registers.  A parameter shared
    by several modules (a head tied to the embedding) counts once, where it is first met, and goes to AdamW
    if any of its modules is an embedding or the head.  ``muon`` and ``adamw`` are the groups'
    hyperparameters (``muon_param_groups(model, muon=dict(lr=0.02), adamw=dict(lr=3e-4))``); a group without
    parameters is left out.
    """
    modules = dict(model.named_modules())
    if head is None:
        linears = [name for name, module in modules.items() if isinstance(module, nn.Linear)]
        heads = set(linears[-1:])
    else:
        heads = {head} if isinstance(head, str) else set(head)
        unknown = sorted(heads - set(modules))
        if unknown:
            raise ValueError(f"muon_param_groups: the model has no module named {unknown}")
    auxiliary: set[int] = set()
    for name, module in modules.items():
        if name in heads or isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
            auxiliary.update(id(p) for p in module.parameters(recurse=False))
    hidden, rest = [], []
    for param in model.parameters():  # each shared parameter once
        (hidden if param.ndim == 2 and id(param) not in auxiliary else rest).append(param)
    groups = [dict(params=hidden, use_muon=True, **(muon or {})), dict(params=rest, use_muon=False, **(adamw or {}))]
    return [group for group in groups if group["params"]]
