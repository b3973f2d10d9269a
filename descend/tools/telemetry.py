"""Optimizer telemetry: what every step did, per param group, for any descend or torch.optim optimizer.

``Telemetry(optimizer)`` attaches through torch's own step hooks (``register_step_pre_hook`` /
``register_step_post_hook``): nothing runs when it is not attached, and ``close()`` detaches it.
"""
from __future__ import annotations

import csv
import math
from typing import Any

import torch
from torch import Tensor

METRICS = ("lr", "grad_norm", "param_norm", "update_norm", "update_ratio", "effective_lr_mean", "effective_lr_std",
           "snr_mean", "skipped_fraction")


def _norm(tensors: list[Tensor]) -> float:
    return math.sqrt(sum(float(t.double().square().sum()) for t in tensors))


def _number(value: Any) -> float | None:
    """A group's value as a Python float (a tensor lr, a numpy scalar), None when it is None."""
    if value is None:
        return None
    if isinstance(value, Tensor):
        return float(value.item())
    return float(value)


def _is_sgd(optimizer: torch.optim.Optimizer) -> bool:
    """SGD (descend's or torch's, or SAM over one): its step is α·g, so its effective lr is α also
    where it keeps no state (momentum 0)."""
    from ..optimizers import SGD

    return isinstance(getattr(optimizer, "base_optimizer", optimizer), (SGD, torch.optim.SGD))


def _skipped_steps(optimizer: torch.optim.Optimizer) -> int:
    return int(getattr(optimizer, "skipped_steps", 0) or 0)


def _effective_lr(group: dict[str, Any], state: dict[str, Tensor]) -> Tensor | None:
    """α/(√v̂ + ε) per element for the adaptive methods (Adadelta: α·√(d+ε)/√(s+ε)); α for SGD;
    None where the optimizer keeps no per-element second moment (Adafactor's is factored)."""
    lr = _number(group["lr"])
    step = float(state["step"]) if "step" in state else 1.0
    if "exp_avg_sq" in state and "betas" in group:  # Adam, AdamW
        second = state["max_exp_avg_sq"] if group.get("amsgrad") else state["exp_avg_sq"]
        if group.get("bias_correction", True):
            second = second / (1 - group["betas"][1] ** step)
        return lr / (second.sqrt() + group["eps"])
    if "acc_delta" in state:  # Adadelta
        return lr * (state["acc_delta"] + group["eps"]).sqrt() / (state["square_avg"] + group["eps"]).sqrt()
    if "square_avg" in state:  # RMSprop
        second = state["square_avg"] - state["grad_avg"] ** 2 if "grad_avg" in state else state["square_avg"]
        return lr / (second.clamp(min=0).sqrt() + group["eps"])
    if "sum" in state:  # Adagrad
        return lr / (1 + (step - 1) * group.get("lr_decay", 0.0)) / (state["sum"].sqrt() + group["eps"])
    if "exp_avg_sq_row" in state or "exp_avg_sq" in state:
        return None
    return torch.full((1,), lr, dtype=torch.float64) if lr is not None else None  # SGD: α everywhere


def _signal_to_noise(group: dict[str, Any], state: dict[str, Tensor]) -> Tensor | None:
    """Adam's |m̂|/√v̂ per element (None for other optimizers)."""
    if not ("exp_avg" in state and "exp_avg_sq" in state and "betas" in group):
        return None
    beta1, beta2 = group["betas"]
    step = float(state["step"])
    m, v = state["exp_avg"], state["exp_avg_sq"]
    if group.get("bias_correction", True):
        m, v = m / (1 - beta1**step), v / (1 - beta2**step)
    return m.abs() / (v.sqrt() + group["eps"])


class Telemetry:
    """Records per step (every ``every`` steps) and per param group:

    ``lr``; ``grad_norm`` ‖g‖; ``param_norm`` ‖θ‖ after the step; ``update_norm`` ‖Δθ‖ and
    ``update_ratio`` ‖Δθ‖/‖θ‖; ``effective_lr_mean`` / ``_std`` of α/(√v̂+ε) over the group's
    elements (adaptive methods; α for SGD, with or without momentum; empty for Adafactor);
    ``snr_mean`` of Adam's |m̂|/√v̂; ``skipped_fraction``: the share of the steps since Telemetry was
    attached (recorded or not, with ``every``) that the optimizer skipped for non-finite gradients
    (steps it skipped before, e.g. in a run this one resumes, do not count). Numbers are Python
    floats (a tensor lr is recorded as its value).

    Rows go to ``records`` (a list of dicts), to a TensorBoard ``SummaryWriter`` given as
    ``writer`` (tags ``descend/group{i}/{metric}``), and to a CSV file at ``csv_path``.
    Cost while attached: a copy of the parameters before each recorded step, and a few norms.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, every: int = 1, writer: Any = None, csv_path: Any = None):
        if every < 1:
            raise ValueError(f"Telemetry: every must be >= 1, got {every}")
        self.optimizer, self.every, self.writer = optimizer, every, writer
        self.records: list[dict[str, Any]] = []
        self.steps = 0  # steps taken since attached
        self.skipped = 0  # of them, the steps the optimizer skipped
        self._skipped_before_step = 0
        self._before: list[list[Tensor]] | None = None
        self._csv_file = open(csv_path, "w", newline="") if csv_path is not None else None  # noqa: SIM115
        self._csv = csv.DictWriter(self._csv_file, ["step", "group", *METRICS]) if self._csv_file else None
        if self._csv:
            self._csv.writeheader()
        self._handles = [optimizer.register_step_pre_hook(self._pre), optimizer.register_step_post_hook(self._post)]

    def _pre(self, optimizer, args, kwargs) -> None:
        self.steps += 1
        self._skipped_before_step = _skipped_steps(optimizer)
        self._before = None
        if self.steps % self.every == 0:
            self._before = [[p.detach().clone() for p in group["params"]] for group in optimizer.param_groups]

    @torch.no_grad()
    def _post(self, optimizer, args, kwargs) -> None:
        if _skipped_steps(optimizer) > self._skipped_before_step:
            self.skipped += 1
        if self._before is None:
            return
        skipped = self.skipped / self.steps
        sgd = _is_sgd(optimizer)
        for index, (group, before) in enumerate(zip(optimizer.param_groups, self._before)):
            params = list(group["params"])
            with_grad = [p for p in params if p.grad is not None]
            row: dict[str, Any] = {"step": self.steps, "group": index, "lr": _number(group.get("lr"))}
            row["grad_norm"] = _norm([p.grad for p in with_grad])
            row["param_norm"] = _norm([p.detach() for p in params])
            row["update_norm"] = _norm([p.detach() - b for p, b in zip(params, before)])
            row["update_ratio"] = row["update_norm"] / row["param_norm"] if row["param_norm"] else math.nan
            states = [optimizer.state[p] for p in with_grad if optimizer.state.get(p)]
            rates = [r for r in (_effective_lr(group, s) for s in states) if r is not None]
            if sgd and not states and with_grad and row["lr"] is not None:  # plain SGD keeps no state: α
                rates = [torch.full((1,), row["lr"], dtype=torch.float64)]
            if rates:
                flat = torch.cat([r.flatten().double() for r in rates])
                row["effective_lr_mean"], row["effective_lr_std"] = flat.mean().item(), flat.std(correction=0).item()
            snr = [r for r in (_signal_to_noise(group, s) for s in states) if r is not None]
            if snr:
                row["snr_mean"] = torch.cat([r.flatten().double() for r in snr]).mean().item()
            row["skipped_fraction"] = skipped
            self._emit(row)

    def _emit(self, row: dict[str, Any]) -> None:
        self.records.append(row)
        if self.writer is not None:
            for name in METRICS:
                if row.get(name) is not None:
                    self.writer.add_scalar(f"descend/group{row['group']}/{name}", row[name], row["step"])
        if self._csv:
            self._csv.writerow({k: row.get(k) for k in ("step", "group", *METRICS)})

    def series(self, metric: str, group: int = 0) -> tuple[list[int], list[float]]:
        rows = [r for r in self.records if r["group"] == group and r.get(metric) is not None]
        return [r["step"] for r in rows], [r[metric] for r in rows]

    def plot(self, metrics: tuple[str, ...] = ("grad_norm", "update_ratio", "effective_lr_mean", "snr_mean")):
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4))
        for axis, metric in zip(axes, metrics):
            groups = sorted({r["group"] for r in self.records})
            for group in groups:
                steps, values = self.series(metric, group)
                axis.plot(steps, values, label=f"group {group}")
            axis.set_title(metric), axis.set_xlabel("step"), axis.set_yscale("log")
            if len(groups) > 1:
                axis.legend(fontsize=7)
        figure.tight_layout()
        return figure

    def close(self) -> None:
        """Detaches from the optimizer and closes the CSV file."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if self._csv_file:
            self._csv_file.close()
            self._csv_file, self._csv = None, None

    def __enter__(self) -> Telemetry:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
