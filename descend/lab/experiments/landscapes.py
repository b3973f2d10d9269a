"""Optimizer trajectories on classic 2-D loss landscapes (seed 004's contour and 3-D slides)."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import torch

import descend

from .. import plots, tuning
from ..claims import ASSIGNMENT, BEYOND, LECTURE, SLIDES, Claim
from ..core import Context, Result

NAME = "landscapes"
ORDER = 1
TITLE = "Trajectories on 2-D loss landscapes"
COST = {"run": 6.0}
CLAIMS = [
    Claim(id="momentum-beats-sgd-on-ill-conditioned-quadratic",
          source=f"{ASSIGNMENT}, answer to (a) i; the setting: {SLIDES}, slides “SGD without momentum”, “SGD with "
                 "momentum” and “Gradient Descent Paths on Quadratic Loss (New Hessian for Clear Zigzags)”",
          statement="If several gradients obtained in the past are averaged, the components in other directions "
                    "will be offset, and the components towards the optimal value will be larger and the update "
                    "speed will be faster.",
          quote="verbatim",
          measurement="steps to within 0.01 of the minimum of 0.1x² + 2y² (κ = 20) from (−5, −2): SGD divided by the "
                      "slower of SGD+momentum (velocity form) and Nesterov, each at its best lr and, for the momentum "
                      "methods, its best μ of a grid widened until the best is inside",
          criterion="ratio > 1 (both momentum methods need fewer steps than SGD)",
          threshold=1.0, direction=">", scale="ratio", deterministic=True,
          compares=("quadratic: SGD", "quadratic: SGD+momentum", "quadratic: Nesterov")),
    Claim(id="adaptive-methods-escape-saddle-faster",
          source=f"{BEYOND}: the lab's inference from {LECTURE}, §4.3, eqs. (4.16)–(4.18)",
          statement="Hence, r_i is roughly the inverse of the magnitude of the derivative, and r_i is low when the "
                    "changes for coordinate i are steep and vise-versa.",
          quote="verbatim", beyond_course=True,
          measurement="steps from (0.3, 0.001), near the saddle of x² − y² + y⁴/2, to within 0.01 of a minimum "
                      "(0, ±1): SGD divided by the slower of RMSprop and Adam, each at its best lr of a grid widened "
                      "until the best is inside (the flat y direction gets the large rate)",
          criterion="ratio > 1 (both adaptive methods arrive sooner)",
          threshold=1.0, direction=">", scale="ratio", deterministic=True,
          compares=("saddle: SGD", "saddle: RMSprop", "saddle: Adam")),
]


def quadratic(x, y):
    return 0.1 * x**2 + 2 * y**2


def rosenbrock(x, y):
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def beale(x, y):
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


def saddle(x, y):
    return x**2 - y**2 + y**4 / 2  # a saddle at the origin between the minima (0, ±1)


# Closed-form gradients (five times faster than autograd on two scalars; tests check them against autograd).
def quadratic_gradient(x, y):
    return 0.2 * x, 4 * y


def rosenbrock_gradient(x, y):
    return -2 * (1 - x) - 400 * x * (y - x**2), 200 * (y - x**2)


def beale_gradient(x, y):
    a, b, c = 1.5 - x + x * y, 2.25 - x + x * y**2, 2.625 - x + x * y**3
    return (2 * a * (y - 1) + 2 * b * (y**2 - 1) + 2 * c * (y**3 - 1),
            2 * a * x + 4 * b * x * y + 6 * c * x * y**2)


def saddle_gradient(x, y):
    return 2 * x, -2 * y + 2 * y**3


GRADIENTS = {quadratic: quadratic_gradient, rosenbrock: rosenbrock_gradient, beale: beale_gradient,
             saddle: saddle_gradient}


# name: (function, start, minima, steps quick/full, plot window, log colours)
LANDSCAPES = {
    "quadratic": (quadratic, (-5.0, -2.0), ((0.0, 0.0),), (300, 1000), ((-6, 6), (-3, 3)), False),
    "rosenbrock": (rosenbrock, (-1.2, 1.0), ((1.0, 1.0),), (600, 5000), ((-2, 2), (-1, 3)), True),
    "beale": (beale, (1.0, 1.5), ((3.0, 0.5),), (600, 3000), ((-0.5, 4.0), (-2.0, 2.5)), True),
    "saddle": (saddle, (0.3, 1e-3), ((0.0, 1.0), (0.0, -1.0)), (300, 1000), ((-1.5, 1.5), (-1.5, 1.5)), False),
}
MOMENTA = tuning.momentum_axis(0.1, 0.3, 0.5, 0.7, 0.9, per_decade=4)
TUNED_MOMENTUM = ("quadratic", "saddle")  # the claims' landscapes tune μ too; the others keep μ = 0.9 (Fig. 4.1's)
FINE = ("quadratic", "saddle")  # their lr grids have 8 values per decade: the claims compare step counts
# name: (class, fixed kwargs, starting lr grid, momentum axis or None); every landscape tunes its own best
OPTIMIZERS = {
    "SGD": (descend.SGD, {}, tuning.log_grid(1e-2, 1.0, 4), None),
    "SGD+momentum": (descend.SGD, dict(momentum=0.9), tuning.log_grid(1e-3, 1.0, 4), MOMENTA),
    "Nesterov": (descend.SGD, dict(momentum=0.9, nesterov=True), tuning.log_grid(1e-3, 1.0, 4), MOMENTA),
    "AdaGrad": (descend.Adagrad, {}, tuning.log_grid(1e-2, 1.0, 2), None),
    "RMSprop": (descend.RMSprop, {}, tuning.log_grid(1e-3, 0.1, 2), None),
    "Adadelta": (descend.Adadelta, {}, tuning.log_grid(0.1, 10.0, 2), None),
    "Adam": (descend.Adam, {}, tuning.log_grid(1e-3, 0.3, 2), None),
    "Adafactor": (descend.Adafactor, dict(relative_step=False, scale_parameter=False), tuning.log_grid(1e-3, 0.3, 2),
                  None),
}
# the playground's landscape with the same f as each of these (descend.playground.landscapes): "open in the playground"
PLAYGROUND = {
    "quadratic": ("quadratic", {"condition": 20.0, "angle": 0.0, "scale": 4.0, "span": 2.0}),  # ½(0.2x² + 4y²)
    "rosenbrock": ("rosenbrock", {}),
    "beale": ("beale", {}),
    "saddle": ("saddle", {"wall": saddle(0.0, 1.0) + 1.0}),  # x² − y² + c·y⁴, c read off f(0, 1) = c − 1
}
TOLERANCE = 1e-2  # distance to the nearest minimum
DIVERGED = 1e6    # |θ| beyond this, or a non-finite gradient: the run diverged


def nearest(points: np.ndarray, minima) -> np.ndarray:
    """Distance of each point (rows) to the nearest of ``minima``."""
    return np.min([np.hypot(points[..., 0] - m[0], points[..., 1] - m[1]) for m in minima], axis=0)


def score(path, minima):
    """(steps to the tolerance or None, final distance to the nearest minimum)."""
    distance = nearest(np.asarray(path), minima)
    reached = np.nonzero(distance < TOLERANCE)[0]
    final = float(distance[-1]) if np.isfinite(distance[-1]) else math.inf
    return (int(reached[0]) if len(reached) else None), final


def _rows(optimizer_class, kwargs, start, rates):
    """All learning rates in one (rates × 2) parameter: row i holds φᵢ = θᵢ/αᵢ and the optimizer runs at lr 1.

    Fed the gradient ∇f(αᵢφᵢ), row i moves by φᵢ ← φᵢ − u(g), i.e. θᵢ ← θᵢ − αᵢ·u(g): exactly the run at lr αᵢ,
    because these optimizers' step is α times a function of the gradients alone (elementwise, no clipping).
    """
    scale = np.array(rates)[:, None]
    phi = torch.tensor(np.array(start)[None, :] / scale, dtype=torch.float64, requires_grad=True)
    phi.grad = torch.zeros_like(phi)
    optimizer = optimizer_class([phi], lr=1.0, **kwargs)
    view, gradient = phi.detach().numpy(), phi.grad.numpy()

    def theta():
        return view * scale

    def set_gradient(g):
        gradient[:] = g

    return optimizer, theta, set_gradient


def _groups(optimizer_class, kwargs, start, rates):
    """One parameter group per learning rate (for optimizers whose step is not linear in α, like Adafactor)."""
    params = [torch.tensor(start, dtype=torch.float64, requires_grad=True) for _ in rates]
    for p in params:
        p.grad = torch.zeros(2, dtype=torch.float64)
    optimizer = optimizer_class([{"params": [p], "lr": lr} for p, lr in zip(params, rates)], **kwargs)
    views, gradients = [p.detach().numpy() for p in params], [p.grad.numpy() for p in params]

    def theta():
        return np.stack(views)

    def set_gradient(g):
        for row, target in zip(g, gradients):
            target[:] = row

    return optimizer, theta, set_gradient


def run_rates(land: str, name: str, rates, momentum: float | None, steps: int, stop_at_first: bool):
    """Every rate of ``rates`` at once; returns (paths, steps to the tolerance or None, final distances, diverged).

    ``stop_at_first``: all runs stop when the first one reaches the tolerance (the others cannot beat it then).
    A run whose gradient turns non-finite or whose |θ| passes 1e6 has diverged; it stops there.
    """
    function, start, minima = LANDSCAPES[land][:3]
    optimizer_class, kwargs = OPTIMIZERS[name][:2]
    kwargs = dict(kwargs, **({} if momentum is None else {"momentum": momentum}))
    if kwargs.get("momentum") == 0.0:
        kwargs.pop("nesterov", None)  # Nesterov without momentum is plain SGD (descend refuses the combination)
    build = _groups if optimizer_class is descend.Adafactor else _rows
    optimizer, theta, set_gradient = build(optimizer_class, kwargs, start, rates)
    gradient = GRADIENTS[function]
    history = [theta().copy()]
    alive = np.ones(len(rates), dtype=bool)
    arrived = np.zeros(len(rates), dtype=bool)
    stopped_at = np.full(len(rates), -1)
    for step in range(1, steps + 1):
        points = history[-1]
        with np.errstate(all="ignore"):
            gx, gy = gradient(points[:, 0], points[:, 1])
            g = np.stack([gx, gy], axis=1)
        lost = alive & ~np.all(np.isfinite(g), axis=1)
        alive &= ~lost
        stopped_at[lost] = step - 1
        g[~alive] = 0.0
        if not alive.any():
            break
        set_gradient(g)
        optimizer.step()
        points = theta().copy()
        points[~alive] = history[-1][~alive]  # a stopped run stays where it stopped
        history.append(points)
        lost = alive & (~np.all(np.isfinite(points), axis=1) | (np.abs(points).max(axis=1) > DIVERGED))
        stopped_at[lost] = step
        alive &= ~lost
        arrived |= alive & (nearest(points, minima) < TOLERANCE)
        if arrived.all() or (stop_at_first and arrived.any()):
            break
    stack = np.stack(history)  # steps × rates × 2
    paths, reached, finals, diverged = [], [], [], []
    for i in range(len(rates)):
        path = stack[: stopped_at[i] + 1 if stopped_at[i] >= 0 else len(stack), i]
        first, final = score(path, minima)
        paths.append(path if first is None else path[: first + 1])
        reached.append(first)
        finals.append(math.inf if stopped_at[i] >= 0 else final)
        diverged.append(bool(stopped_at[i] >= 0))
    return paths, reached, finals, diverged


def scorer(land: str, name: str, steps: int):
    """``tuning.search``'s score: steps to the tolerance; a run that has not arrived scores its steps + 1 + its
    distance (every arrival beats it); a diverged run scores inf. One batched run per momentum value."""

    def score_points(points):
        scores = [math.inf] * len(points)
        for momentum in sorted({p.get("momentum") for p in points}, key=lambda m: -1 if m is None else m):
            members = [i for i, p in enumerate(points) if p.get("momentum") == momentum]
            _, reached, finals, diverged = run_rates(land, name, [points[i]["lr"] for i in members], momentum, steps,
                                                     stop_at_first=True)
            ran = max((r for r in reached if r is not None), default=steps)
            for i, first, final, lost in zip(members, reached, finals, diverged):
                scores[i] = math.inf if lost else first if first is not None else ran + 1 + final
        return scores

    return score_points


def tune_and_trace(land: str, name: str, steps: int) -> tuple[dict, dict, np.ndarray]:
    """The tuning record of one optimizer on one landscape, its best run's outcome and path."""
    rates, momenta = OPTIMIZERS[name][2], OPTIMIZERS[name][3] if land in TUNED_MOMENTUM else None
    rates = tuning.log_grid(rates[0], rates[-1], 8 if land in FINE else 2)
    axes = [tuning.lr_axis(*rates, per_decade=8 if land in FINE else 2)]
    if momenta is not None:
        axes.append(momenta)
    record = tuning.search(scorer(land, name, steps), axes, metric=f"steps to within {TOLERANCE} of a minimum "
                           f"(not arrived in {steps} steps: steps + 1 + distance; diverged: inf)")
    best = record["best"]
    paths, reached, finals, diverged = run_rates(land, name, [best["lr"]], best.get("momentum"), steps, False)
    entry = {"lr": best["lr"], "momentum": best.get("momentum"), "steps_to_tolerance": reached[0],
             "final_distance": finals[0], "diverged": diverged[0], "at_edge": record["at_edge"]}
    return record, entry, paths[0]


def fate(name: str, entry: dict, steps: int) -> str:
    """One line: how the optimizer's run ended."""
    setting = f"lr {entry['lr']:.3g}" + (f", μ {entry['momentum']:.3g}" if entry["momentum"] is not None else "")
    if entry["steps_to_tolerance"] is not None:
        return f"{name}, {setting}: reached a minimum in {entry['steps_to_tolerance']} steps"
    if entry["diverged"]:
        return f"{name}: diverged at every lr of the grid"
    return f"{name}, {setting}: still on its way after {steps} steps, {entry['final_distance']:.2g} from a minimum"


def grid(function, window, points: int, log: bool):
    (x0, x1), (y0, y1) = window
    xs, ys = np.meshgrid(np.linspace(x0, x1, points), np.linspace(y0, y1, points))
    zs = function(xs, ys)
    return xs, ys, (np.log1p(zs - zs.min()) if log else zs)


CLAIM_OF = {"quadratic": ["momentum-beats-sgd-on-ill-conditioned-quadratic"],
            "saddle": ["adaptive-methods-escape-saddle-faster"]}


def draw(ctx: Context, land: str, paths: dict[str, np.ndarray], entries: dict[str, dict], steps: int) -> None:
    function, start, minima, _, window, log = LANDSCAPES[land]
    (x0, x1), (y0, y1) = window
    xs, ys, shown = grid(function, window, 120, log)
    height = "log(1 + f − min f)" if log else "f(θ)"
    figure = plt.figure(figsize=(15, 12))
    layout = figure.add_gridspec(3, 4, height_ratios=(1.35, 1, 1), hspace=0.45, wspace=0.28, left=0.05, right=0.98,
                                 top=0.96, bottom=0.05)
    surface = figure.add_subplot(layout[0, :2], projection="3d")
    sx, sy, sz = grid(function, window, 40, log)
    surface.plot_surface(sx, sy, sz, cmap="Greys", alpha=0.3, linewidth=0, antialiased=False)
    overlay = figure.add_subplot(layout[0, 2:])
    overlay.contour(xs, ys, shown, levels=25, cmap="Greys", linewidths=0.6)
    lowest = float(function(xs, ys).min())
    for index, (name, path) in enumerate(paths.items()):
        color = ctx.color(name)
        inside = path[(path[:, 0] >= x0) & (path[:, 0] <= x1) & (path[:, 1] >= y0) & (path[:, 1] <= y1)]
        z = function(inside[:, 0], inside[:, 1])
        surface.plot(inside[:, 0], inside[:, 1], np.log1p(z - lowest) if log else z, color=color, linewidth=1.8)
        overlay.plot(inside[:, 0], inside[:, 1], "-", color=color, linewidth=1.3, label=name)
        panel = figure.add_subplot(layout[1 + index // 4, index % 4])
        # the landscape as an image (much cheaper to draw than contours in eight panels)
        panel.imshow(shown, extent=(x0, x1, y0, y1), origin="lower", cmap="Greys", alpha=0.45, aspect="auto")
        panel.plot(inside[:, 0], inside[:, 1], ".-", color=color, markersize=2, linewidth=1)
        panel.plot(*start, "o", color="black", markersize=4)
        for point in minima:
            panel.plot(*point, "*", color="black", markersize=10)
        panel.set_xlim(x0, x1), panel.set_ylim(y0, y1)
        panel.set_title(fate(name, entries[name], steps).replace(": ", ":\n", 1), fontsize=8.5, color=color)
        panel.set_xlabel("θ₁", fontsize=8), panel.set_ylabel("θ₂", fontsize=8), panel.tick_params(labelsize=7)
    surface.set_xlabel("θ₁"), surface.set_ylabel("θ₂"), surface.set_zlabel(height)
    surface.set_title(f"{land}: surface and paths")
    overlay.plot(*start, "o", color="black", markersize=5, label="start")
    for index, point in enumerate(minima):
        overlay.plot(*point, "*", color="black", markersize=12, label="minimum" if index == 0 else None)
    overlay.set_xlim(x0, x1), overlay.set_ylim(y0, y1), overlay.set_xlabel("θ₁"), overlay.set_ylabel("θ₂")
    overlay.legend(fontsize=7.5, loc="best"), overlay.set_title(f"{land}: all optimizers (contours of {height})")
    ctx.save(figure, land, caption=f"{land.capitalize()} from ● {start}: each optimizer at its best learning rate "
             f"(and momentum μ) of a grid widened until the best is inside, run until it is within {TOLERANCE} of a "
             f"minimum (★), diverges, or {steps} steps pass; panel titles give each one's setting and fate.",
             tight=False, claims=CLAIM_OF.get(land, ()))
    bounds = ((x0, x1), (y0, y1))
    playground_name, playground_params = PLAYGROUND[land]
    tuned = {name: {"lr": entries[name]["lr"], **({"momentum": entries[name]["momentum"]}
                                                   if entries[name].get("momentum") is not None else {})}
             for name in paths}  # each optimizer's best setting, as the figure draws it
    runs = [plots.playground_run(OPTIMIZERS[name][0], **{**OPTIMIZERS[name][1], **tuned[name]}) for name in paths]
    setup = plots.playground_setup(playground_name, start, steps, runs, playground_params,
                                   note="(Here each run stops once it arrives; the playground runs every step.)")
    ctx.interactive(plots.trajectories(paths, f"{land}: drag the slider to step through the paths; click a legend "
                                       "entry to hide or show it", contour=grid(function, window, 60, log),
                                       minimum=minima[0], bounds=bounds, playground=setup),
                    f"{land}-interactive", caption=f"{land.capitalize()}, interactive: the slider sets the step, hover "
                    "shows θ; paths end where the optimizer stopped (tolerance reached, diverged, or out of view).",
                    claims=CLAIM_OF.get(land, ()))


ZIGZAG_LR, ZIGZAG_MOMENTUM = 0.45, 0.5  # just under the steep direction's 2/λ_max = 0.5, where plain steps zigzag


def zigzag_paths(steps: int = 100) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """SGD without and with momentum at one learning rate on 0.1x² + 2y², from the quadratic's start: the picture
    of the course's slides "SGD without momentum" / "SGD with momentum" (its zigzag quadratic)."""
    settings = {f"SGD (α = {ZIGZAG_LR:g})": dict(lr=ZIGZAG_LR),
                f"heavy ball (α = {ZIGZAG_LR:g}, μ = {ZIGZAG_MOMENTUM:g})": dict(lr=ZIGZAG_LR, momentum=ZIGZAG_MOMENTUM)}
    start = LANDSCAPES["quadratic"][1]
    paths, used = {}, {}
    for label, kwargs in settings.items():
        theta = torch.tensor(start, dtype=torch.float64, requires_grad=True)
        optimizer = descend.SGD([theta], **kwargs)
        path = [theta.detach().numpy().copy()]
        for _ in range(steps):
            theta.grad = torch.tensor(quadratic_gradient(*theta.tolist()), dtype=torch.float64)
            optimizer.step()
            path.append(theta.detach().numpy().copy())
        paths[label] = np.array(path)
        arrived = np.nonzero(np.linalg.norm(paths[label], axis=1) < TOLERANCE)[0]
        used[label] = {**kwargs, "steps_to_tolerance": int(arrived[0]) if len(arrived) else None}
    return paths, used


def draw_zigzag(ctx: Context) -> None:
    """The zigzag figure: what the claim describes, at one learning rate with and without momentum."""
    steps = 100
    paths, used = zigzag_paths(steps)
    window = LANDSCAPES["quadratic"][4]
    (x0, x1), (y0, y1) = window
    xs, ys, zs = grid(quadratic, window, 160, False)
    figure, axes = plt.subplots(1, 3, figsize=(16, 4.4), gridspec_kw={"width_ratios": (1, 1, 0.8)})
    for axis, (label, path) in zip(axes[:2], paths.items()):
        axis.contour(xs, ys, zs, levels=np.linspace(0.3, 4.5, 15) ** 2, colors="0.6", linewidths=0.6)  # even in √f
        axis.plot(path[:, 0], path[:, 1], ".-", color=ctx.color(label), markersize=3.5, linewidth=1.1)
        axis.plot(*path[0], "o", color="black", markersize=5), axis.plot(0, 0, "*", color="black", markersize=11)
        axis.set_xlim(x0, x1), axis.set_ylim(y0, y1), axis.set_aspect("equal")
        axis.set_xlabel("θ₁"), axis.set_ylabel("θ₂")
        reached = used[label]["steps_to_tolerance"]
        axis.set_title(f"{label}: within {TOLERANCE} of ★ in {reached if reached is not None else f'> {steps}'} steps",
                       color=ctx.color(label), fontsize=10)
    for label, path in paths.items():
        short = label.split(" (")[0]
        axes[2].semilogy(np.abs(path[:, 1]) + 1e-16, color=ctx.color(label), label=f"{short}: |θ₂| (across)")
        axes[2].semilogy(np.abs(path[:, 0]) + 1e-16, color=ctx.color(label), linestyle=":",
                         label=f"{short}: |θ₁| (along the valley)")
    axes[2].set_xlabel("step"), axes[2].set_ylabel("θ units (log scale)"), axes[2].legend(fontsize=8)
    axes[2].set_ylim(1e-6, 10), axes[2].set_xlim(0, steps)
    axes[2].set_title("across and along the valley", fontsize=10)
    figure.tight_layout()
    plain, ball = (used[label] for label in paths)
    caption = (f"The course's zigzag on the same quadratic, at one learning rate α = {ZIGZAG_LR:g}, just under the "
               f"steep direction's limit 2/λ_max = 0.5: plain SGD zigzags across the valley (θ₂ flips sign every "
               f"step and shrinks only by |1 − 4α| = {abs(1 - 4 * ZIGZAG_LR):.2g}) and creeps along it "
               f"({1 - 0.2 * ZIGZAG_LR:.2g} per step). With momentum μ = {ZIGZAG_MOMENTUM:g} the alternating "
               "gradients cancel in the velocity, so the zigzag dies after a few swings, and the steady gradient "
               f"along the valley adds up (√μ = {math.sqrt(ZIGZAG_MOMENTUM):.2g} per step): within {TOLERANCE} of "
               f"the minimum in {ball['steps_to_tolerance']} steps against {plain['steps_to_tolerance']}. The "
               "figures below show each optimizer at the best learning rate of the lab's grid, which the claim's "
               "measurement uses.")
    ctx.save(figure, "zigzag", caption=caption, claims=["momentum-beats-sgd-on-ill-conditioned-quadratic"])
    runs = [plots.playground_run("SGD", **{k: v for k, v in used[label].items() if k in ("lr", "momentum")})
            for label in paths]
    name, params = PLAYGROUND["quadratic"]
    setup = plots.playground_setup(name, LANDSCAPES["quadratic"][1], steps, runs, params)
    ctx.interactive(plots.trajectories(paths, "the zigzag: SGD without and with momentum at one learning rate",
                                       contour=(xs, ys, zs), minimum=(0.0, 0.0), bounds=window, playground=setup),
                    "zigzag-interactive", caption="The zigzag, interactive: step through it with the slider; plain "
                    "SGD crosses the valley at every step, with momentum the path settles after a few swings.",
                    claims=["momentum-beats-sgd-on-ill-conditioned-quadratic"])


def run(ctx: Context) -> Result:
    numbers: dict[str, dict] = {}
    records: dict[str, dict] = {}
    paths: dict[str, dict[str, np.ndarray]] = {land: {} for land in LANDSCAPES}
    tasks = [(land, opt) for land in LANDSCAPES for opt in OPTIMIZERS]
    for land, opt in ctx.track(tasks):
        steps = LANDSCAPES[land][3][ctx.full]
        record, entry, path = tune_and_trace(land, opt, steps)
        records[f"{land}: {opt}"] = record
        paths[land][opt] = path
        numbers.setdefault(land, {})[opt] = entry
    if ctx.figures_wanted:
        draw_zigzag(ctx)  # the claim's picture first, then the measured runs
        for land in LANDSCAPES:
            draw(ctx, land, paths[land], numbers[land], LANDSCAPES[land][3][ctx.full])

    def steps(land, opt):
        value = numbers[land][opt]["steps_to_tolerance"]
        return math.inf if value is None else value

    def ratio(land, baseline, contenders):
        slowest = max(steps(land, c) for c in contenders)
        return steps(land, baseline) / slowest if math.isfinite(slowest) else (
            math.nan if not math.isfinite(steps(land, baseline)) else 0.0)

    def setting(land, opt):
        entry = numbers[land][opt]
        return f"{opt} {steps(land, opt)} (lr {entry['lr']:g}" + (
            f", μ {entry['momentum']:g})" if entry["momentum"] is not None else ")")

    momentum = ratio("quadratic", "SGD", ("SGD+momentum", "Nesterov"))
    escape = ratio("saddle", "SGD", ("RMSprop", "Adam"))
    reached = {land: sum(numbers[land][o]["steps_to_tolerance"] is not None for o in OPTIMIZERS) for land in LANDSCAPES}
    summary = (
        f"Quadratic (κ = 20), steps to within {TOLERANCE} of the minimum: "
        + ", ".join(setting("quadratic", o) for o in ("SGD", "SGD+momentum", "Nesterov"))
        + ". Theory for the best fixed settings: gradient descent contracts by (κ−1)/(κ+1) = 0.905 per step, heavy "
        "ball by (√κ−1)/(√κ+1) = 0.635. Saddle, steps to a minimum: "
        + ", ".join(setting("saddle", o) for o in ("SGD", "RMSprop", "Adam"))
        + ". RMSprop's first step is α/√(1−γ) = 10α in every coordinate whatever its gradient, Adam's is α: both "
        "give the flat direction y, where the gradient is 1000× smaller, as large a first step as the steep one. "
        "Optimizers that reached a minimum: " + ", ".join(f"{land} {n}/{len(OPTIMIZERS)}" for land, n in reached.items())
        + ".")
    notes = {"adaptive-methods-escape-saddle-faster": "RMSprop's first step is 10α and Adam's α in every coordinate "
             "whatever its gradient: part of their lead is that first step"}
    return Result({"momentum-beats-sgd-on-ill-conditioned-quadratic": momentum,
                   "adaptive-methods-escape-saddle-faster": escape}, summary, numbers, tuning=records, notes=notes)
