r"""The loss landscape of your own model: ``descend.landscape(model, loss_fn, data, directions=...)``.

Three pictures, all of ``L(θ) = mean loss of the model with parameters θ on data``:

* ``directions="interpolate", target=θ_b`` — the 1-D slice ``L((1−t)θ_a + tθ_b)`` between the
  model's parameters ``θ_a`` and another solution (e.g. SGD's and SAM's minima);
* ``directions="filter"`` — the 2-D surface ``L(θ + αδ + βη)`` around the model's parameters along
  two random directions, each *filter-normalized* (Li et al. 2018, "Visualizing the Loss Landscape
  of Neural Nets", §4): for every filter ``i`` (a row of a weight: one output unit or channel),
  ``δ_i ← δ_i ‖θ_i‖ / ‖δ_i‖``, so that the picture does not depend on the scale of each filter;
  1-D parameters (biases, norm scales) get a zero direction (the paper's ``ignore biasbn``);
* ``directions="pca", trajectory=[θ_0, …, θ_T]`` — the plane through the model's parameters spanned
  by the top-2 principal directions of ``θ_t − θ`` (the paper's §7), with the trajectory projected
  onto it.

A list of one or two parameter sets as ``directions`` uses them as given.  The grid is evaluated
in batches with ``torch.func.vmap`` over parameter sets (one forward pass per batch of grid points);
models that vmap cannot run fall back to one point at a time.  The model's parameters are never
written (``torch.func.functional_call``), and its train/eval flags are restored, also on error.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

@dataclass
class LossLandscape:
    """A computed landscape: ``loss[j, i]`` is the loss at ``(x[i], y[j])`` (``loss[i]`` at ``x[i]`` in 1-D).

    ``directions``: the direction(s) as lists of tensors shaped like the parameters; ``path``: the
    trajectory's coordinates in the plane (PCA only); ``explained_variance``: the share of the
    trajectory's variance along each PCA direction.
    """

    kind: str  # "1d" or "2d"
    method: str  # "interpolate", "filter", "pca" or "given"
    x: np.ndarray
    y: np.ndarray | None
    loss: np.ndarray
    directions: list[list[Tensor]] = field(repr=False)
    center_loss: float = math.nan
    path: np.ndarray | None = None
    explained_variance: tuple[float, ...] | None = None

    @property
    def labels(self) -> tuple[str, str]:
        if self.method == "interpolate":
            return "t  (0: the model, 1: the target)", ""
        if self.method == "pca":
            shares = self.explained_variance or (math.nan, math.nan)
            return f"PC1 ({shares[0]:.0%} of the variance)", f"PC2 ({shares[1]:.0%})"
        return "α (direction 1)", "β (direction 2)"

    @property
    def title(self) -> str:
        return {"interpolate": "loss along the line between two solutions",
                "filter": "loss around the solution, filter-normalized random directions (Li et al. 2018)",
                "pca": "loss on the top-2 PCA plane of the trajectory",
                "given": "loss along the given directions"}[self.method]

    def to_dict(self) -> dict[str, Any]:
        """The numbers as JSON-ready lists (what ``save`` writes and the playground opens)."""
        xlabel, ylabel = self.labels
        return {
            "format": "descend.landscape", "kind": self.kind, "method": self.method, "title": self.title,
            "xlabel": xlabel, "ylabel": ylabel, "x": self.x.tolist(),
            "y": None if self.y is None else self.y.tolist(),
            "loss": np.where(np.isfinite(self.loss), self.loss, None).tolist(),
            "center_loss": self.center_loss,
            "path": None if self.path is None else self.path.tolist(),
            "explained_variance": None if self.explained_variance is None else list(self.explained_variance),
        }

    def save(self, path: str | Path) -> Path:
        """Writes ``to_dict()`` as JSON; open it in ``descend playground`` ("open a saved landscape")."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict()))
        return path

    def plot(self, log: bool = False):
        """A matplotlib figure: the curve (1-D), or contours beside a 3-D surface (2-D)."""
        import matplotlib.pyplot as plt

        xlabel, ylabel = self.labels
        values = np.log10(self.loss) if log else self.loss
        zlabel = "log₁₀ loss" if log else "loss"
        if self.kind == "1d":
            figure, axes = plt.subplots(figsize=(6, 4))
            axes.plot(self.x, values)
            if self.method == "interpolate":
                for t in (0, 1):
                    axes.axvline(t, color="grey", linewidth=0.8, linestyle=":")
            axes.set(xlabel=xlabel, ylabel=zlabel, title=self.title)
            return figure
        figure = plt.figure(figsize=(12, 5))
        contour = figure.add_subplot(1, 2, 1)
        filled = contour.contourf(self.x, self.y, values, levels=30, cmap="viridis")
        contour.contour(self.x, self.y, values, levels=30, colors="white", linewidths=0.3)
        figure.colorbar(filled, ax=contour, label=zlabel)
        contour.plot(0, 0, marker="*", color="red", markersize=12)
        if self.path is not None:
            contour.plot(self.path[:, 0], self.path[:, 1], color="red", marker="o", markersize=3, linewidth=1)
        contour.set(xlabel=xlabel, ylabel=ylabel, title="contours")
        surface = figure.add_subplot(1, 2, 2, projection="3d")
        grid_x, grid_y = np.meshgrid(self.x, self.y)
        surface.plot_surface(grid_x, grid_y, values, cmap="viridis", linewidth=0, antialiased=True)
        surface.set(xlabel=xlabel, ylabel=ylabel, zlabel=zlabel, title="surface")
        figure.suptitle(self.title)
        return figure


# --- parameters and directions -----------------------------------------------------------------


def _trainable(model: nn.Module) -> tuple[list[str], list[Tensor]]:
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("landscape: the model has no trainable parameters")
    return [n for n, _ in named], [p.detach() for _, p in named]


def _as_tensors(snapshot: Any, names: list[str], like: list[Tensor], what: str) -> list[Tensor]:
    """A parameter set given as a state_dict, a module, a list of tensors or one flat vector."""
    if isinstance(snapshot, nn.Module):
        snapshot = dict(snapshot.named_parameters())
    if isinstance(snapshot, dict):
        missing = [n for n in names if n not in snapshot]
        if missing:
            raise ValueError(f"landscape: {what} lacks the parameter(s) {', '.join(missing[:5])}")
        tensors = [snapshot[n] for n in names]
    elif isinstance(snapshot, Tensor) and snapshot.dim() == 1 and len(like) > 0 \
            and snapshot.numel() == sum(p.numel() for p in like) and not (len(like) == 1 and like[0].dim() == 1):
        tensors = list(torch.split(snapshot, [p.numel() for p in like]))
    elif isinstance(snapshot, (list, tuple)):
        tensors = list(snapshot)
    elif isinstance(snapshot, Tensor) and len(like) == 1:
        tensors = [snapshot]
    else:
        raise TypeError(f"landscape: {what} must be a state_dict, a module, a list of tensors or one flat "
                        f"vector, got {type(snapshot).__name__}")
    if len(tensors) != len(like):
        raise ValueError(f"landscape: {what} has {len(tensors)} tensors, the model {len(like)} trainable parameters")
    out = []
    for name, tensor, p in zip(names, tensors, like):
        tensor = torch.as_tensor(tensor).detach()
        if tensor.numel() != p.numel():
            raise ValueError(f"landscape: {what}[{name!r}] has {tensor.numel()} values, the parameter {p.numel()}")
        out.append(tensor.reshape(p.shape).to(device=p.device, dtype=p.dtype))
    return out


def filter_normalized_direction(params: Sequence[Tensor], generator: torch.Generator) -> list[Tensor]:
    """A Gaussian direction with every filter rescaled to its parameter filter's norm (Li et al. 2018, eq. 2).

    A filter is a slice along dim 0 (an output unit of a Linear layer, an output channel of a
    convolution); 1-D and 0-D parameters (biases, norm scales) get zeros.
    """
    direction = []
    for p in params:
        if p.dim() <= 1:
            direction.append(torch.zeros_like(p))
            continue
        d = torch.randn(p.shape, generator=generator, dtype=torch.float64).to(device=p.device, dtype=p.dtype)
        filters_p, filters_d = p.reshape(p.shape[0], -1), d.reshape(p.shape[0], -1)
        scale = filters_p.norm(dim=1, keepdim=True) / (filters_d.norm(dim=1, keepdim=True) + 1e-10)
        direction.append((filters_d * scale).reshape(p.shape))
    return direction


def _flat(tensors: Sequence[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1).to(torch.float64).cpu() for t in tensors])


def _pca_plane(center: list[Tensor], snapshots: list[list[Tensor]]):
    """Top-2 principal directions of ``θ_t − θ``, the trajectory's coordinates in them, variance shares."""
    offsets = torch.stack([_flat(s) - _flat(center) for s in snapshots])  # (T, n)
    if offsets.shape[0] < 2:
        raise ValueError("landscape: directions='pca' needs a trajectory of at least 2 parameter sets")
    _, singular, vh = torch.linalg.svd(offsets, full_matrices=False)
    if vh.shape[0] < 2 or singular[1] <= 1e-12 * max(singular[0].item(), 1e-300):
        raise ValueError("landscape: the trajectory spans fewer than 2 directions; PCA needs a plane")
    # a sign convention, so that the same trajectory always gives the same picture
    axes = [v if v[v.abs().argmax()] >= 0 else -v for v in vh[:2]]
    coordinates = offsets @ torch.stack(axes).T
    variance = singular**2 / (singular**2).sum()
    sizes = [p.numel() for p in center]
    directions = [[piece.reshape(p.shape).to(device=p.device, dtype=p.dtype)
                   for piece, p in zip(torch.split(axis, sizes), center)] for axis in axes]
    return directions, coordinates.numpy(), (float(variance[0]), float(variance[1]))


# --- evaluation --------------------------------------------------------------------------------


def _inputs_and_targets(batch: Any) -> tuple[Any, Any]:
    """The default ``batch_to_inputs``: a batch is ``(inputs, targets)``."""
    if isinstance(batch, Mapping):
        keys = ", ".join(repr(k) for k in list(batch)[:6])
        raise ValueError(f"landscape: a batch is a dict (keys {keys}); pass batch_to_inputs=lambda batch: (inputs, "
                         "targets) to say what goes to the model (a tensor, a tuple of arguments or a dict of keyword "
                         "arguments) and what to loss_fn")
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        raise TypeError(f"landscape: a batch must be (inputs, targets), got {type(batch).__name__}; pass "
                        "batch_to_inputs=lambda batch: (inputs, targets) to read another kind")
    return batch[0], batch[1]


def _batches(data: Any, batch_to_inputs: Callable[[Any], tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    if isinstance(data, Mapping) or (isinstance(data, (tuple, list)) and len(data) == 2
                                     and isinstance(data[0], Tensor)):
        data = [data]  # one batch given as the whole data
    if isinstance(data, Iterable):
        batches = []
        for batch in data:
            pair = batch_to_inputs(batch)
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise TypeError(f"landscape: batch_to_inputs must return (inputs, targets), got {type(pair).__name__}")
            batches.append((pair[0], pair[1]))
        if batches:
            return batches
    raise TypeError("landscape: data must be (inputs, targets) tensors or an iterable of such batches")


def _tensors_in(value: Any) -> list[Tensor]:
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in _tensors_in(item)]
    return []


def _batch_size(inputs: Any, targets: Any) -> float:
    """The number of samples in a batch: the first dimension of its first input tensor (or of its targets)."""
    for tensor in _tensors_in(inputs) + _tensors_in(targets):
        if tensor.dim() > 0:
            return float(tensor.shape[0])
    return 1.0


def _call_arguments(inputs: Any) -> tuple[tuple, dict]:
    """model(inputs) for a tensor, model(*inputs) for a tuple, model(**inputs) for a dict."""
    if isinstance(inputs, Mapping):
        return (), dict(inputs)
    if isinstance(inputs, tuple):
        return inputs, {}
    return (inputs,), {}


def _one_number(value: Any) -> Tensor:
    """The batch's loss as a 0-dim tensor; a one-line error for anything that is not one number."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"landscape: loss_fn returned a tensor of shape {tuple(value.shape)}, not one number: "
                             "it must return the batch's mean loss (a per-sample loss, reduction='none', must be "
                             "averaged: reduction='mean', or .mean() in loss_fn)")
        return value.reshape(())
    if isinstance(value, Real) and not isinstance(value, bool):
        return torch.tensor(float(value), dtype=torch.float64)
    raise TypeError(f"landscape: loss_fn returned {type(value).__name__}, not a number: it must return the batch's "
                    "mean loss (a tensor or a Python number)")


class _Evaluator:
    """Mean loss for a stack of parameter sets: vmap over them, or one at a time when vmap cannot run."""

    def __init__(self, model: nn.Module, loss_fn: Callable, names: list[str], data: Any,
                 batch_to_inputs: Callable[[Any], tuple[Any, Any]]):
        self.model, self.loss_fn, self.names = model, loss_fn, names
        self.batches = _batches(data, batch_to_inputs)
        self.weights = [_batch_size(inputs, targets) for inputs, targets in self.batches]
        self.vectorized: bool | None = None  # decided on the first call

    def _loss(self, params: dict[str, Tensor], x, y) -> Tensor:
        args, kwargs = _call_arguments(x)
        return _one_number(self.loss_fn(functional_call(self.model, params, args, kwargs), y))

    def _mean(self, compute) -> Tensor:
        total = sum(w * compute(x, y).to(torch.float64) for w, (x, y) in zip(self.weights, self.batches))
        return total / sum(self.weights)

    def __call__(self, stacked: list[Tensor]) -> np.ndarray:
        if self.vectorized is not False:
            try:
                batched = vmap(self._loss, in_dims=(0, None, None))
                values = self._mean(lambda x, y: batched(dict(zip(self.names, stacked)), x, y))
                self.vectorized = True
                return values.cpu().numpy()
            except Exception:
                if self.vectorized:  # vmap worked before: this is a real error
                    raise
                self.vectorized = False  # e.g. an op without a batching rule: go point by point
        count = stacked[0].shape[0]
        one = [self._mean(lambda x, y: self._loss({n: s[k] for n, s in zip(self.names, stacked)}, x, y)).item()
               for k in range(count)]
        return np.asarray(one, dtype=np.float64)


def _span(span, default):
    span = default if span is None else span
    if isinstance(span, (int, float)):
        if not (math.isfinite(span) and span > 0):
            raise ValueError(f"landscape: span must be a number > 0 or a pair (low, high), got {span!r}")
        return -float(span), float(span)
    low, high = (float(v) for v in span)
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"landscape: span must be a pair (low, high) with low < high, got {span!r}")
    return low, high


def landscape(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    data: Any,
    directions: str | Sequence[Any] = "filter",
    *,
    target: Any = None,
    trajectory: Sequence[Any] | None = None,
    steps: int = 41,
    span: float | tuple[float, float] | None = None,
    seed: int = 0,
    points_per_batch: int | None = None,
    progress: bool = True,
    batch_to_inputs: Callable[[Any], tuple[Any, Any]] | None = None,
) -> LossLandscape:
    """The loss of ``model`` around its current parameters (see the module docstring for the three kinds).

    ``loss_fn(model(inputs), targets)`` must return the mean loss of a batch (a tensor of one element
    or a Python number); ``data`` is ``(inputs, targets)`` or an iterable of such batches (a
    DataLoader), averaged by batch size (the first dimension of the first input tensor).  Batches of
    another kind, such as Hugging Face's dicts, need ``batch_to_inputs(batch) -> (inputs, targets)``:
    ``inputs`` is a tensor (``model(inputs)``), a tuple (``model(*inputs)``) or a dict of keyword
    arguments (``model(**inputs)``), e.g. ``lambda b: ({"input_ids": b["input_ids"]}, b["labels"])``.
    ``steps`` points per axis, evaluated ``points_per_batch`` at a time (default: 64, fewer for
    models above a million parameters); ``span``: the coordinate range, a number ``s`` for ``[−s, s]`` or a
    pair (defaults: ``[−1, 1]`` for "filter" and given directions, ``[−0.25, 1.25]`` for
    "interpolate", the trajectory's extent plus a margin for "pca").  The model is evaluated in
    eval mode (no dropout); its parameters are not touched.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"landscape: steps must be a whole number >= 2, got {steps!r}")
    if points_per_batch is not None and (isinstance(points_per_batch, bool) or not isinstance(points_per_batch, int)
                                         or points_per_batch < 1):
        raise ValueError(f"landscape: points_per_batch must be a whole number >= 1, got {points_per_batch!r}")
    names, center = _trainable(model)
    if points_per_batch is None:  # 64 points, or fewer so that the stacked parameter copies stay near 2**26 numbers
        points_per_batch = max(1, min(64, 2**26 // sum(p.numel() for p in center)))
    path = explained = None
    if isinstance(directions, str):
        if directions == "filter":
            generator = torch.Generator().manual_seed(seed)
            chosen = [filter_normalized_direction(center, generator), filter_normalized_direction(center, generator)]
            method, ranges = "filter", [_span(span, 1.0)] * 2
        elif directions == "interpolate":
            if target is None:
                raise ValueError("landscape: directions='interpolate' needs target= (the other parameter set)")
            other = _as_tensors(target, names, center, "target")
            chosen = [[b - a for a, b in zip(center, other)]]
            method, ranges = "interpolate", [_span(span, (-0.25, 1.25))]
        elif directions == "pca":
            if trajectory is None:
                raise ValueError("landscape: directions='pca' needs trajectory= (a list of parameter sets)")
            snapshots = [_as_tensors(s, names, center, f"trajectory[{i}]") for i, s in enumerate(trajectory)]
            chosen, path, explained = _pca_plane(center, snapshots)
            method = "pca"
            if span is None:
                ranges = []
                for axis in range(2):
                    low, high = min(path[:, axis].min(), 0.0), max(path[:, axis].max(), 0.0)
                    margin = 0.15 * (high - low) + 1e-12
                    ranges.append((low - margin, high + margin))
            else:
                ranges = [_span(span, 1.0)] * 2
        else:
            raise ValueError(f"landscape: directions must be 'filter', 'interpolate', 'pca' or a list of 1 or 2 "
                             f"parameter sets, got {directions!r}")
    else:
        if not isinstance(directions, (list, tuple)) or len(directions) not in (1, 2):
            raise ValueError("landscape: directions given as a list must hold 1 or 2 parameter sets")
        chosen = [_as_tensors(d, names, center, f"directions[{i}]") for i, d in enumerate(directions)]
        method, ranges = "given", [_span(span, 1.0)] * len(chosen)

    axes = [np.linspace(low, high, steps) for low, high in ranges]
    if len(chosen) == 1:
        coordinates = axes[0][:, None]
    else:
        grid_x, grid_y = np.meshgrid(axes[0], axes[1])  # row j: y[j]; column i: x[i]
        coordinates = np.stack([grid_x.ravel(), grid_y.ravel()], axis=1)

    evaluate = _Evaluator(model, loss_fn, names, data, batch_to_inputs or _inputs_and_targets)
    training = {module: module.training for module in model.modules()}
    values = np.empty(len(coordinates))
    from tqdm.auto import tqdm

    try:
        model.eval()
        with torch.no_grad(), tqdm(total=len(coordinates), desc="loss landscape", unit="point",
                                   disable=not progress) as bar:
            for begin in range(0, len(coordinates), points_per_batch):
                chunk = torch.as_tensor(coordinates[begin:begin + points_per_batch])
                stacked = []
                for k, p in enumerate(center):
                    weights = chunk.to(device=p.device, dtype=p.dtype)
                    moved = p.unsqueeze(0).expand(len(chunk), *p.shape).clone()
                    for axis, direction in enumerate(chosen):
                        moved += weights[:, axis].reshape(-1, *([1] * p.dim())) * direction[k]
                    stacked.append(moved)
                values[begin:begin + len(chunk)] = evaluate(stacked)
                bar.update(len(chunk))
            center_loss = float(evaluate([p.unsqueeze(0) for p in center])[0])
    finally:
        for module, flag in training.items():
            module.training = flag

    loss = values if len(chosen) == 1 else values.reshape(steps, steps)
    return LossLandscape(
        kind="1d" if len(chosen) == 1 else "2d", method=method, x=axes[0], y=axes[1] if len(axes) > 1 else None,
        loss=loss, directions=chosen, center_loss=center_loss, path=path, explained_variance=explained,
    )
