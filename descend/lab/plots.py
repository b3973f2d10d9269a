"""Interactive figures as plain plotly specs (dicts), drawn in the report by the bundled plotly.js.

Each optimizer keeps its report-wide colour (``style.color``); clicking a legend entry hides or shows it.
Pass the result to ``ctx.interactive(spec, stem, caption=...)``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .style import color

REGION_COLORS = ("#2ca02c", "#8c6d31", "#6b6ecf")  # filled regions (a convex hull): never an optimizer's line


def _thin(values: np.ndarray, most: int) -> np.ndarray:
    """At most ``most`` evenly spaced rows of ``values``, always keeping the first and the last."""
    if len(values) <= most:
        return values
    index = np.unique(np.linspace(0, len(values) - 1, most).round().astype(int))
    return values[index]


def _finite(values) -> list:
    """Plain floats, with None (a gap in the line) for NaN and ±inf."""
    array = np.asarray([np.nan if v is None else v for v in values] if isinstance(values, list) else values,
                       dtype=float).ravel()
    return [float(f"{v:.5g}") if np.isfinite(v) else None for v in array]  # 5 digits: plenty for a plot


def _as_array(values) -> np.ndarray:
    return np.asarray([np.nan if v is None else v for v in values], dtype=float)


def _axis(title: str, log: bool = False) -> dict:
    # powers of ten (10⁻⁶), never plotly's SI prefixes: an MSE axis must not read "1μ, 1n, 1p"
    return {"title": {"text": title}, "type": "log" if log else "linear", "zeroline": False,
            "exponentformat": "power", "showexponent": "all"}


def layout(title: str, x_title: str, y_title: str, log_x: bool = False, log_y: bool = False, **extra) -> dict:
    return {"title": {"text": title, "font": {"size": 14}}, "xaxis": _axis(x_title, log_x),
            "yaxis": _axis(y_title, log_y), "hovermode": "closest", "legend": {"itemclick": "toggle", "itemdoubleclick": False},
            "margin": {"l": 60, "r": 20, "t": 40, "b": 50}, "height": 420, **extra}


def curves(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], title: str, x_title: str, y_title: str,
           log_x: bool = False, log_y: bool = False, mode: str = "lines", most: int = 400) -> dict:
    """One line per label: ``series[label] = (x, y)``; hover shows the label and both values."""
    data = []
    for label, (x, y) in series.items():
        points = _thin(np.column_stack([_as_array(x), _as_array(y)]), most)
        data.append({"type": "scatter", "mode": mode, "name": label, "x": _finite(points[:, 0]),
                     "y": _finite(points[:, 1]), "line": {"color": color(label), "width": 2},
                     "marker": {"color": color(label)},
                     "hovertemplate": f"{label}<br>{x_title} %{{x:.4g}}<br>{y_title} %{{y:.4g}}<extra></extra>"})
    return {"data": data, "layout": layout(title, x_title, y_title, log_x, log_y)}


def playground_run(optimizer: str | type, **hyperparameters) -> dict:
    """One optimizer of a playground setup: a catalog name (a class's name is one) and its hyperparameters.

    Pairs such as ``betas=(0.9, 0.99)`` become the page's ``betas[0]``, ``betas[1]``.
    """
    name = optimizer if isinstance(optimizer, str) else optimizer.__name__
    flat = {}
    for key, value in hyperparameters.items():
        if isinstance(value, (tuple, list)):
            flat.update({f"{key}[{i}]": float(v) for i, v in enumerate(value)})
        else:
            flat[key] = value if isinstance(value, (bool, str)) or value is None else float(value)
    return {"optimizer": name, "hyperparameters": flat}


def playground_setup(landscape: str, start: Sequence[float], steps: int, runs: Sequence[dict],
                     params: Mapping | None = None, seed: int = 0, note: str = "") -> dict:
    """What "open in the playground" opens beside a figure: a landscape of ``descend.playground.landscapes``
    (with its knobs, ``params``), the start, the step count and the runs (``playground_run``).

    ``note`` is shown beside the link in the report (what differs from the figure, e.g. the samples drawn).
    Pass the result as ``trajectories(..., playground=...)``; tests check that the page accepts it and
    retraces the figure.
    """
    setup = {"landscape": landscape, "params": dict(params or {}), "start": [float(start[0]), float(start[1])],
             "steps": int(steps), "seed": int(seed), "runs": [dict(run) for run in runs]}
    return {"setup": setup, "note": " ".join(note.split())}


def trajectories(paths: Mapping[str, np.ndarray], title: str, contour: tuple | None = None,
                 x_title: str = "θ₁", y_title: str = "θ₂", positions: int = 25, most: int = 300,
                 minimum: Sequence[float] | None = None, bounds: tuple | None = None,
                 regions: Mapping[str, np.ndarray] | None = None,
                 landmarks: Mapping[str, tuple] | None = None, playground: dict | None = None) -> dict:
    """Optimizer paths in the plane with a step slider, on axes of equal scale (a circle stays a circle).

    ``paths[label]`` is an (steps + 1) × 2 array of iterates; ``contour = (xs, ys, zs)`` draws the landscape
    (zs is shown as given, e.g. log(1 + f)). The slider moves every optimizer to step k: its path so far is
    drawn solid and a dot marks θ_k; the whole path stays faint behind. ``regions[label]`` is a polygon
    (its corners in order) drawn filled, such as a convex hull; ``landmarks[label] = (points, sizes)`` draws
    marked points (sizes in pixels, or one size). ``playground`` (from ``playground_setup``) puts an "open in
    the playground" link with that setup beside the figure in the report.
    """
    data: list[dict] = []
    if contour is not None:
        xs, ys, zs = contour
        data.append({"type": "contour", "x": _finite(np.asarray(xs)[0]), "y": _finite(np.asarray(ys)[:, 0]),
                     "z": [_finite(row) for row in np.asarray(zs)], "colorscale": "Greys", "reversescale": True,
                     "showscale": False, "opacity": 0.55, "contours": {"coloring": "lines"}, "hoverinfo": "skip",
                     "ncontours": 25, "showlegend": False, "name": "f"})
    for index, (label, corners) in enumerate((regions or {}).items()):
        ring = np.asarray(corners, dtype=float)
        ring = np.vstack([ring, ring[:1]])
        tint = REGION_COLORS[index % len(REGION_COLORS)]
        data.append({"type": "scatter", "mode": "lines", "x": _finite(ring[:, 0]), "y": _finite(ring[:, 1]),
                     "fill": "toself", "fillcolor": tint + "26", "line": {"color": tint, "width": 1.5},
                     "name": label, "hoverinfo": "name"})
    for label, (points, sizes) in (landmarks or {}).items():
        points = np.asarray(points, dtype=float).reshape(-1, 2)
        size = [float(v) for v in np.broadcast_to(np.asarray(sizes, dtype=float), (len(points),))]
        data.append({"type": "scatter", "mode": "markers", "x": _finite(points[:, 0]), "y": _finite(points[:, 1]),
                     "name": label, "marker": {"color": "black", "size": size},
                     "hovertemplate": f"{label}<br>(%{{x:.4g}}, %{{y:.4g}})<extra></extra>"})
    if minimum is not None:
        data.append({"type": "scatter", "mode": "markers", "x": [minimum[0]], "y": [minimum[1]], "name": "minimum",
                     "marker": {"symbol": "star", "size": 14, "color": "black"}, "hovertemplate": "minimum"
                     "<extra></extra>"})
    steps = max(len(p) for p in paths.values()) - 1
    ks = np.unique(np.linspace(0, steps, positions).round().astype(int))
    so_far_index, dot_index = [], []
    clipped = {}
    for label, path in paths.items():
        path = np.asarray(path, dtype=float)
        if bounds is not None:  # a diverging path is drawn until it leaves the window
            (x0, x1), (y0, y1) = bounds
            inside = np.all(np.isfinite(path), axis=1) & (path[:, 0] >= x0) & (path[:, 0] <= x1) \
                & (path[:, 1] >= y0) & (path[:, 1] <= y1)
            last = int(np.argmin(inside)) if not inside.all() else len(path)
            path = path[:max(last, 1)]
        clipped[label] = path
        c = color(label)
        full = _thin(path, most)
        data.append({"type": "scatter", "mode": "lines", "x": _finite(full[:, 0]), "y": _finite(full[:, 1]),
                     "name": label, "legendgroup": label, "showlegend": False, "hoverinfo": "skip",
                     "line": {"color": c, "width": 1, "dash": "dot"}, "opacity": 0.5})
        so_far_index.append(len(data))
        data.append({"type": "scatter", "mode": "lines", "x": _finite(full[:, 0]), "y": _finite(full[:, 1]),
                     "name": label, "legendgroup": label, "line": {"color": c, "width": 2.5},
                     "hovertemplate": f"{label}<br>θ = (%{{x:.4g}}, %{{y:.4g}})<extra></extra>"})
        dot_index.append(len(data))
        data.append({"type": "scatter", "mode": "markers", "x": _finite(path[-1:, 0]), "y": _finite(path[-1:, 1]),
                     "name": label, "legendgroup": label, "showlegend": False,
                     "marker": {"color": c, "size": 10, "line": {"color": "white", "width": 1}},
                     "hovertemplate": f"{label}<br>θ = (%{{x:.4g}}, %{{y:.4g}})<extra></extra>"})
    slider_steps = []
    for k in ks:
        xs_so_far, ys_so_far, xs_dot, ys_dot = [], [], [], []
        for path in clipped.values():
            upto = _thin(path[:min(k, len(path) - 1) + 1], 60)
            xs_so_far.append(_finite(upto[:, 0])), ys_so_far.append(_finite(upto[:, 1]))
            xs_dot.append(_finite(upto[-1:, 0])), ys_dot.append(_finite(upto[-1:, 1]))
        slider_steps.append({"method": "restyle", "label": str(int(k)),
                             "args": [{"x": xs_so_far + xs_dot, "y": ys_so_far + ys_dot},
                                      so_far_index + dot_index]})
    extra = {"sliders": [{"active": len(slider_steps) - 1, "steps": slider_steps, "currentvalue": {"prefix": "step "},
                          "pad": {"t": 40}, "len": 0.95}]}
    spec_layout = layout(title, x_title, y_title, **extra)
    spec_layout["height"] = 560
    # one unit is as long on both axes; the plot area shrinks to the window's shape instead of stretching it
    spec_layout["yaxis"].update(scaleanchor="x", scaleratio=1, constrain="domain")
    spec_layout["xaxis"]["constrain"] = "domain"
    # the legend inside the paper's right edge: the equal-aspect plot area leaves room there on a wide page
    spec_layout["legend"].update(x=1.0, xanchor="right", y=1.0, yanchor="top", bgcolor="rgba(255,255,255,0.85)")
    if bounds is not None:
        spec_layout["xaxis"]["range"], spec_layout["yaxis"]["range"] = list(bounds[0]), list(bounds[1])
    if playground is not None:
        spec_layout["meta"] = {"playground": playground}
    return {"data": data, "layout": spec_layout}
