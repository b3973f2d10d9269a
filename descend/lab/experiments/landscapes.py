"""Optimizer trajectories on classic 2-D loss landscapes (seed 004's contour and 3-D slides)."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import torch

import descend

from .. import plots
from ..claims import Claim
from ..core import Context, Result

NAME = "landscapes"
ORDER = 1
TITLE = "Trajectories on 2-D loss landscapes"
CLAIMS = [
    Claim(id="momentum-beats-sgd-on-ill-conditioned-quadratic",
          source="seed 004, slides “SGD without momentum” / “SGD with momentum” and the zigzag quadratic; "
                 "seed 002 §4.1",
          statement="On a quadratic with a steep and a shallow direction plain gradient steps zigzag; momentum "
                    "averages the zigzag out and accelerates along the valley.",
          measurement="steps to within 0.01 of the minimum of 0.1x² + 2y² from (−5, −2): SGD divided by the slower of "
                      "SGD+momentum and Nesterov, each at its best learning rate of the grid",
          criterion="ratio > 1 (both momentum methods need fewer steps than SGD)",
          threshold=1.0, direction=">", deterministic=True),
    Claim(id="adaptive-methods-escape-saddle-faster",
          source="seed 002, eqs. 4.16–4.18 (rᵢ is low for steep coordinates and vice versa)",
          statement="Adaptive methods divide each coordinate's step by the size of its recent derivatives, so a "
                    "flat direction gets a large step: they leave the saddle x² − y² faster than plain SGD.",
          measurement="steps until |y| > 1 from (1, 0.001): SGD divided by the slower of RMSprop and Adam, each at its "
                      "best learning rate of the grid",
          criterion="ratio > 1",
          threshold=1.0, direction=">", deterministic=True),
]


def quadratic(x, y):
    return 0.1 * x**2 + 2 * y**2


def rosenbrock(x, y):
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def beale(x, y):
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


def saddle(x, y):
    return x**2 - y**2


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
    return 2 * x, -2 * y


GRADIENTS = {quadratic: quadratic_gradient, rosenbrock: rosenbrock_gradient, beale: beale_gradient,
             saddle: saddle_gradient}


# name: (function, start, minimum (None: unbounded, measured by escape), steps quick/full, plot window, log colours)
LANDSCAPES = {
    "quadratic": (quadratic, (-5.0, -2.0), (0.0, 0.0), (300, 1000), ((-6, 6), (-3, 3)), False),
    "rosenbrock": (rosenbrock, (-1.2, 1.0), (1.0, 1.0), (1000, 5000), ((-2, 2), (-1, 3)), True),
    "beale": (beale, (1.0, 1.5), (3.0, 0.5), (1000, 3000), ((-0.5, 4.0), (-2.0, 2.5)), True),
    "saddle": (saddle, (1.0, 1e-3), None, (100, 500), ((-1.5, 1.5), (-1.5, 1.5)), False),
}
# name: (class, kwargs, base lr); each landscape scans base lr × LR_SCALES and keeps the best
OPTIMIZERS = {
    "SGD": (descend.SGD, {}, 3e-2),
    "SGD+momentum": (descend.SGD, dict(momentum=0.9), 3e-3),
    "Nesterov": (descend.SGD, dict(momentum=0.9, nesterov=True), 3e-3),
    "AdaGrad": (descend.Adagrad, {}, 1e-1),
    "RMSprop": (descend.RMSprop, {}, 1e-2),
    "Adadelta": (descend.Adadelta, {}, 1.0),
    "Adam": (descend.Adam, {}, 1e-2),
    "Adafactor": (descend.Adafactor, dict(relative_step=False, scale_parameter=False), 1e-2),
}
LR_SCALES = (0.1, 0.3, 1.0, 3.0, 10.0)
# the playground's landscape with the same f as each of these (descend.playground.landscapes): "open in the playground"
PLAYGROUND = {
    "quadratic": ("quadratic", {"condition": 20.0, "angle": 0.0, "scale": 4.0, "span": 2.0}),  # ½(0.2x² + 4y²)
    "rosenbrock": ("rosenbrock", {}),
    "beale": ("beale", {}),
    "saddle": ("saddle", {"wall": saddle(0.0, 1.0) + 1.0}),  # x² − y² + c·y⁴, c read off f(0, 1) = c − 1
}
TOLERANCE = 1e-2  # distance to the minimum; for the saddle: |y| > 1 (escaped)
DIVERGED = 1e6    # |θ| beyond this, or a non-finite gradient: the run diverged


def score(path, minimum):
    """(steps to the tolerance or None, final distance to the minimum or final |y| for the saddle)."""
    if minimum is None:
        escaped = np.nonzero(np.abs(path[:, 1]) > 1.0)[0]
        return (int(escaped[0]) if len(escaped) else None), float(abs(path[-1, 1]))
    distance = np.linalg.norm(path - np.array(minimum), axis=1)
    reached = np.nonzero(distance < TOLERANCE)[0]
    final = float(distance[-1]) if np.isfinite(distance[-1]) else math.inf
    return (int(reached[0]) if len(reached) else None), final


def _arrived(point: np.ndarray, minimum) -> bool:
    if minimum is None:
        return abs(point[1]) > 1.0
    return math.hypot(point[0] - minimum[0], point[1] - minimum[1]) < TOLERANCE


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


def best_run(function, start, minimum, spec, steps):
    """Runs every learning rate of the grid at once and returns the best:
    (lr, path, steps to the tolerance or None, final distance, diverged).

    The best rate is the first to reach the tolerance, so all runs stop then; if none does, the one ending
    closest to the minimum (for the saddle: farthest from it) wins. A run whose gradient turns non-finite or
    whose |θ| passes 1e6 has diverged; it stops there (its gradient is held at zero).
    """
    optimizer_class, kwargs, base_lr = spec
    rates = [base_lr * scale for scale in LR_SCALES]
    build = _groups if optimizer_class is descend.Adafactor else _rows
    optimizer, theta, set_gradient = build(optimizer_class, kwargs, start, rates)
    gradient = GRADIENTS[function]
    history = [theta().copy()]
    alive = np.ones(len(rates), dtype=bool)
    stopped_at = np.full(len(rates), -1)
    first = None
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
        arrived = [i for i in range(len(rates)) if alive[i] and _arrived(points[i], minimum)]
        if arrived:
            first = arrived
            break
    stack = np.stack(history)  # steps × rates × 2
    runs = []
    for i, lr in enumerate(rates):
        path = stack[: stopped_at[i] + 1 if stopped_at[i] >= 0 else len(stack), i]
        reached, final = score(path, minimum)
        diverged = stopped_at[i] >= 0
        if diverged:
            final = math.inf
        key = (reached if reached is not None else math.inf, final if minimum is not None else -final)
        runs.append((key, i, lr, path, reached, final, diverged))
    _, _, lr, path, reached, final, diverged = min(runs)
    return lr, path, reached, final, diverged


def fate(name: str, entry: dict, steps: int, minimum) -> str:
    """One line: how the optimizer's run ended."""
    if entry["steps_to_tolerance"] is not None:
        what = "escaped (|y| > 1)" if minimum is None else "reached the minimum"
        return f"{name}, lr {entry['lr']:.3g}: {what} in {entry['steps_to_tolerance']} steps"
    if entry["diverged"]:
        return f"{name}: diverged at every lr of the grid"
    return f"{name}, lr {entry['lr']:.3g}: after {steps} steps, {entry['final_distance']:.2g} from the minimum"


def grid(function, window, points: int, log: bool):
    (x0, x1), (y0, y1) = window
    xs, ys = np.meshgrid(np.linspace(x0, x1, points), np.linspace(y0, y1, points))
    zs = function(xs, ys)
    return xs, ys, (np.log1p(zs - zs.min()) if log else zs)


def draw(ctx: Context, land: str, paths: dict[str, np.ndarray], entries: dict[str, dict], steps: int) -> None:
    function, start, minimum, _, window, log = LANDSCAPES[land]
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
        if minimum is not None:
            panel.plot(*minimum, "*", color="black", markersize=10)
        panel.set_xlim(x0, x1), panel.set_ylim(y0, y1)
        panel.set_title(fate(name, entries[name], steps, minimum).replace(": ", ":\n", 1), fontsize=8.5, color=color)
        panel.set_xlabel("θ₁", fontsize=8), panel.set_ylabel("θ₂", fontsize=8), panel.tick_params(labelsize=7)
    surface.set_xlabel("θ₁"), surface.set_ylabel("θ₂"), surface.set_zlabel(height)
    surface.set_title(f"{land}: surface and paths")
    overlay.plot(*start, "o", color="black", markersize=5, label="start")
    if minimum is not None:
        overlay.plot(*minimum, "*", color="black", markersize=12, label="minimum")
    overlay.set_xlim(x0, x1), overlay.set_ylim(y0, y1), overlay.set_xlabel("θ₁"), overlay.set_ylabel("θ₂")
    overlay.legend(fontsize=7.5, loc="best"), overlay.set_title(f"{land}: all optimizers (contours of {height})")
    where = "escape the saddle (|y| > 1)" if minimum is None else f"reach {TOLERANCE} of the minimum (★)"
    ctx.save(figure, land, caption=f"{land.capitalize()} from ● {start}: each optimizer at its best learning rate of "
             f"base × {LR_SCALES}, run until it can {where}, diverges, or {steps} steps pass; panel titles give each "
             "one's fate.", tight=False)
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
                                       minimum=minimum, bounds=bounds, playground=setup),
                    f"{land}-interactive", caption=f"{land.capitalize()}, interactive: the slider sets the step, hover "
                    "shows θ; paths end where the optimizer stopped (tolerance reached, diverged, or out of view).")


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
    ctx.save(figure, "zigzag", caption=caption)
    runs = [plots.playground_run("SGD", **{k: v for k, v in used[label].items() if k in ("lr", "momentum")})
            for label in paths]
    name, params = PLAYGROUND["quadratic"]
    setup = plots.playground_setup(name, LANDSCAPES["quadratic"][1], steps, runs, params)
    ctx.interactive(plots.trajectories(paths, "the zigzag: SGD without and with momentum at one learning rate",
                                       contour=(xs, ys, zs), minimum=(0.0, 0.0), bounds=window, playground=setup),
                    "zigzag-interactive", caption="The zigzag, interactive: step through it with the slider; plain "
                    "SGD crosses the valley at every step, with momentum the path settles after a few swings.")


def run(ctx: Context) -> Result:
    numbers: dict[str, dict] = {}
    paths: dict[str, dict[str, np.ndarray]] = {land: {} for land in LANDSCAPES}
    tasks = [(land, opt) for land in LANDSCAPES for opt in OPTIMIZERS]
    for land, opt in ctx.track(tasks):
        function, start, minimum, steps, _, _ = LANDSCAPES[land]
        lr, path, reached, final, lost = best_run(function, start, minimum, OPTIMIZERS[opt], steps[ctx.full])
        paths[land][opt] = path
        numbers.setdefault(land, {})[opt] = {"lr": lr, "steps_to_tolerance": reached, "final_distance": final,
                                             "diverged": lost}
    if ctx.figures_wanted:
        draw_zigzag(ctx)  # the claim's picture first, then the measured runs
        for land in LANDSCAPES:
            draw(ctx, land, paths[land], numbers[land], LANDSCAPES[land][3][ctx.full])

    def steps(land, opt):
        value = numbers[land][opt]["steps_to_tolerance"]
        return math.inf if value is None else value

    momentum = steps("quadratic", "SGD") / max(steps("quadratic", "SGD+momentum"), steps("quadratic", "Nesterov"))
    escape = steps("saddle", "SGD") / max(steps("saddle", "RMSprop"), steps("saddle", "Adam"))
    reached = {land: sum(numbers[land][o]["steps_to_tolerance"] is not None for o in OPTIMIZERS) for land in LANDSCAPES}
    summary = (
        f"Quadratic, steps to within {TOLERANCE} of the minimum: SGD {steps('quadratic', 'SGD')}, SGD+momentum "
        f"{steps('quadratic', 'SGD+momentum')}, Nesterov {steps('quadratic', 'Nesterov')}. Saddle, steps to |y| > 1: "
        f"SGD {steps('saddle', 'SGD')}, RMSprop {steps('saddle', 'RMSprop')}, Adam {steps('saddle', 'Adam')}. "
        f"Optimizers that reached the minimum: " + ", ".join(f"{land} {n}/{len(OPTIMIZERS)}" for land, n in
                                                            reached.items() if land != "saddle") + "."
    )
    return Result({"momentum-beats-sgd-on-ill-conditioned-quadratic": momentum,
                   "adaptive-methods-escape-saddle-faster": escape}, summary, numbers)
