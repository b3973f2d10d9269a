"""What several optimizer classes share: weight decay placed in a chain, and the check of a ``betas`` pair."""
from __future__ import annotations

from typing import Any

from ..plan.hyper import check_closed_interval, check_unit_interval
from ..steps import AddWeightDecay, DecoupledWeightDecay, Transform


def with_coupled_decay(group: dict[str, Any], steps: list[Transform]) -> list[Transform]:
    weight_decay = group["weight_decay"]
    return ([AddWeightDecay(weight_decay)] if weight_decay else []) + steps


def check_betas(owner: str, betas: Any, closed: bool = False) -> None:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"{owner}: betas must be a pair (beta1, beta2), got {betas!r}")
    for index, beta in enumerate(betas):
        if closed:
            check_closed_interval(owner, f"betas[{index}]", beta, 0.0, 1.0)
        else:
            check_unit_interval(owner, f"betas[{index}]", beta)


def with_decay(group: dict[str, Any], steps: list[Transform], decoupled: bool) -> list[Transform]:
    """``steps`` with weight decay: coupled ``g ← g + λθ`` before them, or decoupled ``θ ← θ(1 − αλ)`` after."""
    if not decoupled:
        return with_coupled_decay(group, steps)
    weight_decay = group["weight_decay"]
    return steps + ([DecoupledWeightDecay(weight_decay, group["lr"])] if weight_decay else [])
