"""What the playground page asks for, as plain Python: the landscapes, the optimizers and their
hyperparameters, and the trajectories that descend's own optimizer classes take on a landscape.

The web server (``descend.playground.server``) only turns these calls into JSON.

Example::

    from descend.playground import api
    run = api.trajectory("rosenbrock", "SGD momentum (EMA form)", {"lr": 1e-2, "momentum": 0.9},
                         start=(-1.2, 1.0), steps=500)
    run.points[-1], run.losses[-1], run.diverged_at
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import math
import random
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

import descend

from .landscapes import LANDSCAPES, Landscape, make_landscape

MAX_STEPS = 5000
MAX_RUNS = 8

# --- hyperparameters ---------------------------------------------------------------------------
# How a slider moves each known hyperparameter.  "log": the slider moves log10(value) between
# low and high; "decay": a rate β in [0, 1) whose slider moves log10(1 − β) (so 0.9, 0.99, 0.999
# are evenly spaced); "linear"; "bool": a checkbox.  ``zero``: the slider's left end is 0 (off).
# Names not listed get a log slider two decades either side of their default (see ``_slider``).
SLIDERS: dict[str, dict[str, Any]] = {
    "lr": dict(scale="log", low=1e-5, high=10.0),
    "momentum": dict(scale="decay", low=0.0, high=0.999),
    "dampening": dict(scale="linear", low=0.0, high=1.0),
    "weight_decay": dict(scale="log", low=1e-4, high=1.0, zero=True),
    "eps": dict(scale="log", low=1e-12, high=1.0),
    "eps[0]": dict(scale="log", low=1e-40, high=1e-3),
    "eps[1]": dict(scale="log", low=1e-6, high=1.0),
    "alpha": dict(scale="decay", low=0.0, high=0.9999),
    "rho": dict(scale="decay", low=0.0, high=0.9999),
    "betas[0]": dict(scale="decay", low=0.0, high=0.999),
    "betas[1]": dict(scale="decay", low=0.0, high=0.9999),
    "beta1": dict(scale="decay", low=0.0, high=0.999),
    "lr_decay": dict(scale="log", low=1e-5, high=1.0, zero=True),
    "initial_accumulator_value": dict(scale="log", low=1e-4, high=10.0, zero=True),
    "clip_threshold": dict(scale="log", low=0.01, high=100.0),
    "decay_rate": dict(scale="linear", low=-1.0, high=0.0),
    "SAM.rho": dict(scale="log", low=1e-3, high=1.0),
}
# never shown: the page always descends; the rest are implementation choices (``capturable`` and
# ``differentiable`` are torch's flags, which descend refuses when True; ``state_dtype`` is not a number)
HIDDEN = {"self", "params", "maximize", "nonfinite", "fused", "foreach", "base_optimizer", "capturable",
          "differentiable", "state_dtype", "max_grad_norm"}


@dataclass(frozen=True)
class Variant:
    """A named way of using a class: some hyperparameters fixed, some tied to others."""

    label: str
    cls_name: str
    fixed: dict[str, Any] = field(default_factory=dict)
    tied: dict[str, str] = field(default_factory=dict)  # {"dampening": "momentum"}: dampening = momentum
    defaults: dict[str, Any] = field(default_factory=dict)
    base: str | None = None  # for SAM: the base optimizer's class name
    note: str = ""


# where a class takes a hyperparameter without a default (LARS's lr, as optax.lars), the page starts it here
STARTS: dict[str, dict[str, Any]] = {"LARS": {"lr": 1.0}}

# the forms the course material (seeds 002 and 003) contrasts; every other public class appears as itself
VARIANTS = (
    Variant("SGD momentum (velocity form)", "SGD", fixed={"nesterov": False, "dampening": 0.0},
            defaults={"momentum": 0.9}, note="v ← μv − αg, θ ← θ + v (dampening = 0)"),
    Variant("SGD momentum (EMA form)", "SGD", fixed={"nesterov": False}, tied={"dampening": "momentum"},
            defaults={"momentum": 0.9}, note="v ← βv + (1−β)g, θ ← θ − αv (dampening = momentum)"),
    Variant("Nesterov (reformulated)", "SGD", fixed={"nesterov": True, "dampening": 0.0}, defaults={"momentum": 0.9},
            note="θ ← θ − μv_{t−1} + (1+μ)v_t (nesterov=True)"),
    Variant("Nesterov (look-ahead)", "SGD", fixed={"nesterov": True}, tied={"dampening": "momentum"},
            defaults={"momentum": 0.9},
            note="θ ← θ − α(βv_{t+1} + (1−β)g) (nesterov=True, dampening=momentum)"),
    Variant("Adam (no bias correction)", "Adam", fixed={"bias_correction": False},
            note="θ ← θ − αm_t/(√v_t + ε)"),
    Variant("SAM (SGD)", "SAM", base="SGD", note="SGD steps with the gradient at θ + ρ g/‖g‖"),
    Variant("SAM (Adam)", "SAM", base="Adam", note="Adam steps with the gradient at θ + ρ g/‖g‖"),
)


# classes a landscape's θ (one dense vector) cannot show: MuonWithAuxAdamW needs groups marked use_muon (a model's
# matrices and the rest), and on one vector it would be AdamW
NOT_ON_A_LANDSCAPE = frozenset({"MuonWithAuxAdamW"})


def public_optimizer_classes() -> dict[str, type]:
    """descend's public optimizer classes: the ``ChainOptimizer`` subclasses in ``descend.__all__`` (but those that
    take sparse gradients only, or matrices only, and ``NOT_ON_A_LANDSCAPE``: a landscape's θ is one dense
    vector), then SAM."""
    classes = {}
    for name in descend.__all__:
        obj = getattr(descend, name, None)
        if isinstance(obj, type) and issubclass(obj, descend.ChainOptimizer) and obj is not descend.ChainOptimizer \
                and not obj.sparse_gradients and not obj.matrices_only and name not in NOT_ON_A_LANDSCAPE:
            classes[name] = obj
    classes["SAM"] = descend.SAM
    return classes


def _slider(owner: str, name: str, default: Any) -> dict[str, Any] | None:
    """The slider for one hyperparameter, or None when the page cannot set it (left at its default)."""
    if isinstance(default, bool):
        return dict(scale="bool")
    known = SLIDERS.get(f"{owner}.{name}") or SLIDERS.get(name)
    if known is not None:
        return dict(known)
    if isinstance(default, (int, float)) and math.isfinite(default):
        if default > 0:
            return dict(scale="log", low=default / 100, high=default * 100)
        if default == 0:
            return dict(scale="log", low=1e-4, high=1.0, zero=True)
        return dict(scale="linear", low=2 * default, high=0.0)
    return None


def _parameters(cls: type) -> list[tuple[str, Any]]:
    """(name, default) of the hyperparameters in ``cls.__init__``, pairs split into ``name[0]``, ``name[1]``."""
    found = []
    for parameter in inspect.signature(cls.__init__).parameters.values():
        if parameter.name in HIDDEN or parameter.kind in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL):
            continue
        default = parameter.default
        if isinstance(default, tuple):
            found += [(f"{parameter.name}[{i}]", value) for i, value in enumerate(default)]
        else:
            found.append((parameter.name, default))
    return found


def _hyperparameters(cls: type, variant: Variant) -> list[dict[str, Any]]:
    owner = cls.__name__
    listed = [(name, default, owner) for name, default in _parameters(cls)]
    if variant.base is not None:
        base = public_optimizer_classes()[variant.base]
        listed += [(name, default, base.__name__) for name, default in _parameters(base)]
    entries = []
    for name, default, where in listed:
        if name in variant.fixed or name in variant.tied or name.split("[")[0] in variant.fixed:
            continue
        optional = default is None
        slider = _slider(where, name, default)
        if slider is None and optional:  # e.g. Adafactor's lr and beta1: off unless switched on
            slider = _slider(where, name, 1e-2 if name == "lr" else 0.9)
        if slider is None:
            continue
        value = variant.defaults.get(name, default)
        entries.append({"name": name, "default": value, "optional": optional, **slider})
    return entries


@functools.cache
def optimizer_catalog() -> dict[str, dict[str, Any]]:
    """Every optimizer the page offers: each public class under its own name, then the named variants.

    Each entry: ``class``, ``note``, and ``hyperparameters`` (name, default, slider scale and range).
    """
    classes = public_optimizer_classes()
    catalog = {}
    plain = [Variant(name, name, defaults=STARTS.get(name, {})) for name in classes]
    for variant in plain + [v for v in VARIANTS if v.cls_name in classes and (v.base is None or v.base in classes)]:
        if variant.cls_name == "SAM" and variant.base is None:
            continue  # SAM needs a base optimizer: offered as its variants
        cls = classes[variant.cls_name]
        doc = (inspect.getdoc(cls) or "").splitlines()
        catalog[variant.label] = {
            "class": variant.cls_name,
            "base": variant.base,
            "note": variant.note or (doc[0] if doc else ""),
            "fixed": variant.fixed,
            "tied": variant.tied,
            "hyperparameters": _hyperparameters(cls, variant),
        }
    return catalog


def _variant(name: str) -> Variant:
    for variant in VARIANTS:
        if variant.label == name:
            return variant
    return Variant(name, name)


def optimizer_kwargs(name: str, hyperparameters: dict[str, Any]) -> tuple[type, dict[str, Any]]:
    """The class and keyword arguments that the catalog entry ``name`` with these slider values means.

    Values not given keep the entry's defaults; pairs come back together (``betas[0]``, ``betas[1]``
    → ``betas``).  Range checks are the class's own: constructing it raises its ValueError.
    """
    catalog = optimizer_catalog()
    if not isinstance(name, str) or name not in catalog:
        raise ValueError(f"unknown optimizer {name!r}; the optimizers are {', '.join(catalog)}")
    entry, variant = catalog[name], _variant(name)
    allowed = {h["name"]: h for h in entry["hyperparameters"]}
    unknown = sorted(set(hyperparameters) - set(allowed))
    if unknown:
        raise ValueError(f"{name}: unknown hyperparameter {', '.join(unknown)}; it takes {', '.join(allowed)}")
    values = {n: hyperparameters.get(n, h["default"]) for n, h in allowed.items()}
    values.update(variant.fixed)
    for target, source in variant.tied.items():
        values[target] = values[source]
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if "[" in key:  # one entry of a tuple argument: collected by index, made a tuple below
            base_name, index = key[:-1].split("[")
            kwargs.setdefault(base_name, {})[int(index)] = value
        else:
            kwargs[key] = value
    kwargs = {k: tuple(v[i] for i in sorted(v)) if isinstance(v, dict) else v for k, v in kwargs.items()}
    classes = public_optimizer_classes()
    if variant.base is not None:
        kwargs["base_optimizer"] = classes[variant.base]
    return classes[entry["class"]], kwargs


# --- trajectories ------------------------------------------------------------------------------


@dataclass
class Trajectory:
    """The points ``θ_0 … θ_T`` an optimizer visited and the full loss ``f(θ_t)`` at each.

    ``diverged_at``: the index ``k`` of the first point ``θ_k`` that would not be finite (its
    parameters or loss are not, or ``θ_{k−1}``'s gradient is not); the trajectory is cut there, so
    ``len(points) == diverged_at``.  None when all ``steps`` steps stayed finite.
    """

    points: list[list[float]]
    losses: list[float]
    diverged_at: int | None = None


def _finite(*numbers: float) -> bool:
    return all(math.isfinite(n) for n in numbers)


def _loss(landscape: Landscape, x: float, y: float) -> float | None:
    """f(x, y), or None when it is not finite (or overflows)."""
    try:
        value = float(landscape.value(x, y))
    except (OverflowError, ZeroDivisionError):
        return None
    return value if math.isfinite(value) else None


def _evaluate(landscape: Landscape, x: float, y: float, sample: Any) -> tuple[float, float, float] | None:
    """(f, ∂f/∂x, ∂f/∂y) with the sampled gradient, or None when any is not finite (or overflows)."""
    try:
        value = float(landscape.value(x, y))
        gx, gy = landscape.sampled_gradient(x, y, sample)
        gx, gy = float(gx), float(gy)
    except (OverflowError, ZeroDivisionError):
        return None
    return (value, gx, gy) if _finite(value, gx, gy) else None


_threads = {"lock": threading.Lock(), "running": 0, "previous": 1}


@contextlib.contextmanager
def _one_thread():
    """Torch on one thread: a 2-element step gains nothing from threads, and on a busy machine the
    kernels' thread teams wait for each other (measured 5x slower with 2 threads under load).
    The setting is process-wide: the last trajectory to finish (the server runs several at once)
    puts back the count that was there before the first began."""
    with _threads["lock"]:
        if _threads["running"] == 0:
            _threads["previous"] = torch.get_num_threads()
            torch.set_num_threads(1)
        _threads["running"] += 1
    try:
        yield
    finally:
        with _threads["lock"]:
            _threads["running"] -= 1
            if _threads["running"] == 0:
                torch.set_num_threads(_threads["previous"])


def trajectory(
    landscape: Landscape | str,
    optimizer_name: str,
    hyperparameters: dict[str, Any] | None = None,
    start: tuple[float, float] | None = None,
    steps: int = 500,
    seed: int = 0,
) -> Trajectory:
    """Runs the optimizer ``optimizer_name`` (a catalog entry) for ``steps`` steps on ``landscape``.

    The parameter is one float64 tensor ``θ = (x, y)``; each step sets ``θ.grad`` to the landscape's
    exact gradient (a mini-batch gradient on stochastic landscapes, drawn from ``seed``) and calls the
    optimizer's ``step``; SAM's closure evaluates the gradient where SAM asks for it.
    Raises the optimizer's own ValueError (or TypeError) for hyperparameters it does not accept.
    """
    if isinstance(landscape, str):
        landscape = make_landscape(landscape)
    if isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be a whole number in [0, {MAX_STEPS}], got {steps!r}")
    start = landscape.start if start is None else start
    numbers = isinstance(start, (list, tuple)) and len(start) == 2 \
        and all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in start)
    if not numbers or not _finite(*start):
        raise ValueError(f"start must be two finite numbers (x, y), got {start!r}")
    cls, kwargs = optimizer_kwargs(optimizer_name, hyperparameters or {})
    with _one_thread():
        return _run(landscape, cls, kwargs, start, steps, seed)


def _run(landscape: Landscape, cls: type, kwargs: dict[str, Any], start, steps: int, seed: int) -> Trajectory:
    theta = torch.tensor([float(start[0]), float(start[1])], dtype=torch.float64, requires_grad=True)
    optimizer = cls([theta], **kwargs)
    if callable(getattr(optimizer, "train", None)):  # schedule-free: steps in train mode (the path is y's)
        optimizer.train()
    rng = random.Random(seed)
    points, losses = [[float(start[0]), float(start[1])]], []
    gradient = np.zeros(2)  # θ.grad shares this memory: writing two floats is cheaper than a new tensor
    gradient_tensor = torch.from_numpy(gradient)
    sample = None

    def closure():
        x, y = theta.tolist()
        evaluated = _evaluate(landscape, x, y, sample)
        if evaluated is None:
            raise FloatingPointError
        gradient[0], gradient[1] = evaluated[1], evaluated[2]
        theta.grad = gradient_tensor  # SAM's zero_grad sets it to None between its two passes
        return evaluated[0]

    first = _loss(landscape, *points[0])
    if first is None:
        return Trajectory([], [], diverged_at=0)
    losses.append(first)
    for step in range(steps):
        sample = landscape.sample(rng)
        try:
            if isinstance(optimizer, descend.SAM):
                optimizer.step(closure)
            else:
                closure()
                optimizer.step()
        except FloatingPointError:
            return Trajectory(points, losses, diverged_at=step + 1)  # θ_step had no finite gradient
        x, y = theta.tolist()
        loss = _loss(landscape, x, y) if _finite(x, y) else None
        if loss is None:
            return Trajectory(points, losses, diverged_at=step + 1)
        points.append([x, y])
        losses.append(loss)
    return Trajectory(points, losses)


# --- what the page asks for --------------------------------------------------------------------


def surface(landscape: Landscape, resolution: int = 121) -> dict[str, Any]:
    """The landscape on a ``resolution``² grid over its window, for the contours and the 3-D surface.

    ``height`` is what is drawn: ``f``, or ``log10(1 + f − f*)`` for landscapes spanning many decades.
    """
    (x0, x1), (y0, y1) = landscape.window
    xs, ys = np.linspace(x0, x1, resolution), np.linspace(y0, y1, resolution)
    grid_x, grid_y = np.meshgrid(xs, ys)
    with np.errstate(over="ignore", invalid="ignore"):
        values = np.asarray(landscape.value(grid_x, grid_y), dtype=float)
    heights = np.round(height(landscape, values), 5)  # 5 decimals: a third of the JSON, nothing visible lost
    return {"x": xs.tolist(), "y": ys.tolist(), "height": np.where(np.isfinite(heights), heights, None).tolist()}


def height(landscape: Landscape, values):
    """What the plots draw for loss values: ``f``, or ``log10(1 + f − f*)`` on log-scale landscapes."""
    values = np.asarray(values, dtype=float)
    if not landscape.log_scale:
        return values
    return np.log10(1.0 + np.maximum(values - landscape.minimum_value(), 0.0))


def catalog() -> dict[str, Any]:
    """Everything the page needs to build its controls."""
    return {
        "landscapes": {name: cls().describe() for name, cls in LANDSCAPES.items()},
        "optimizers": optimizer_catalog(),
        "max_steps": MAX_STEPS,
        "max_runs": MAX_RUNS,
    }


class SetupError(ValueError):
    """A request the page can fix: the message is shown to the user (``run`` is the optimizer it concerns)."""

    def __init__(self, message: str, run: int | None = None):
        super().__init__(message)
        self.run = run


def _check_numbers(setup: dict[str, Any]) -> None:
    """SetupError for an integer no float can hold (JSON numbers may have any number of digits), naming
    its place in the setup (``runs[0].hyperparameters.lr``) and, under ``runs``, the run it belongs to."""
    pending: deque[tuple[str, Any, int | None]] = deque((str(key), value, None) for key, value in setup.items())
    while pending:
        where, value, run = pending.popleft()
        if isinstance(value, dict):
            pending.extend((f"{where}.{key}", item, run) for key, item in value.items())
        elif isinstance(value, (list, tuple)):
            pending.extend((f"{where}[{index}]", item, index if where == "runs" else run)
                           for index, item in enumerate(value))
        elif isinstance(value, int) and not isinstance(value, bool):
            try:
                float(value)
            except OverflowError:
                digits = int(value.bit_length() * math.log10(2)) + 1
                raise SetupError(f"{where}: an integer of about {digits} digits is too large for a number "
                                 f"(the largest is about {sys.float_info.max:.2g})", run) from None


def run_setup(setup: dict[str, Any]) -> dict[str, Any]:
    """Computes one page setup: a landscape, a start, a step count and up to ``MAX_RUNS`` optimizers.

    ``setup = {"landscape": "quadratic", "landscape_params": {"condition": 10}, "start": [x, y],
    "steps": 500, "seed": 0, "runs": [{"optimizer": "SGD", "hyperparameters": {"lr": 0.1}}, ...],
    "surface": true}``.  Raises SetupError with a message for the page.
    """
    if not isinstance(setup, dict):
        raise SetupError("the setup must be a JSON object")
    _check_numbers(setup)
    try:
        landscape = make_landscape(setup.get("landscape", "quadratic"), setup.get("landscape_params") or {})
    except (ValueError, TypeError, OverflowError) as error:
        raise SetupError(str(error)) from None
    runs = setup.get("runs") or []
    if not isinstance(runs, list) or len(runs) > MAX_RUNS:
        raise SetupError(f"runs must be a list of at most {MAX_RUNS} optimizers")
    steps, seed = setup.get("steps", 500), setup.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise SetupError(f"seed must be a whole number, got {seed!r}")
    results = []
    for index, run in enumerate(runs):
        if not isinstance(run, dict) or not isinstance(run.get("hyperparameters", {}), dict):
            raise SetupError("each run must be {optimizer, hyperparameters}", index)
        try:
            own = landscape
            if run.get("batch") is not None and "batch" in landscape.params:  # e.g. gradient descent beside SGD
                own = make_landscape(landscape.name, {**landscape.params, "batch": run["batch"]})
            path = trajectory(own, run.get("optimizer"), run.get("hyperparameters", {}),
                              setup.get("start"), steps, seed)
        except (ValueError, TypeError, OverflowError, NotImplementedError) as error:
            raise SetupError(str(error), index) from None
        results.append({
            "optimizer": run.get("optimizer"),
            "points": path.points,
            "losses": path.losses,
            "gaps": (np.asarray(path.losses) - landscape.minimum_value()).tolist(),
            "heights": height(landscape, path.losses).tolist(),
            "diverged_at": path.diverged_at,
        })
    answer = {"landscape": landscape.describe(), "params": landscape.params, "runs": results,
              "minimum_value": landscape.minimum_value()}
    if setup.get("surface", True):
        answer["surface"] = surface(landscape)
    return answer
