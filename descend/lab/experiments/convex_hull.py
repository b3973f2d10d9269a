"""SGD oscillates inside the convex hull of the per-sample minimizers (seed 002, Fig. 4.2a)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy.spatial import ConvexHull, Delaunay

import descend

from .. import plots
from ..claims import LECTURE, Claim
from ..core import Context, Result

NAME = "convex-hull"
ORDER = 8
TITLE = "SGD inside the convex hull of per-sample minimizers"
COST = {"run": 0.3}
CLAIMS = [
    Claim(id="sgd-stays-inside-convex-hull",
          source=f"{LECTURE}, §4.2, eq. (4.13) and Figure 4.2 (a)",
          statement="Interestingly, in Figure 4.2 (a), once the trajectory hits S it mostly stays within S but with a "
                    "lot of fluctuations.",
          quote="verbatim",
          measurement="fraction of the last half of 1500 constant-step SGD iterates inside the hull of 5 random uᵢ",
          criterion="fraction > 0.95 (mostly)", threshold=0.95, direction=">", scale="fraction"),
    Claim(id="gd-converges-where-sgd-keeps-moving",
          source=f"{LECTURE}, §4.2, Figure 4.2 (a)",
          statement="Gradient descent converges to the minimum of C, while the stochastic gradient descent "
                    "trajectory keeps fluctuating inside S.",
          quote="paraphrase",
          measurement="log₁₀ of GD's final distance to the minimum, minus log₁₀ of SGD's mean late distance (GD "
                      "converges, SGD keeps fluctuating)",
          criterion="difference < −3 (GD at least 1000× closer)", threshold=-3.0, direction="<"),
]


def run(ctx: Context) -> Result:
    generator = np.random.default_rng(ctx.seed)
    minimizers = generator.uniform(-3, 3, size=(5, 2))
    weights = generator.uniform(0.5, 2.0, size=5)
    steps = 4000 if ctx.full else 1500
    lr = 0.1
    order = torch.randint(0, 5, (steps,), generator=ctx.generator()).numpy()
    paths = {}
    for name in ctx.track(["GD", "SGD"]):
        theta = torch.tensor([-4.0, 4.0], dtype=torch.float64, requires_grad=True)
        theta.grad = torch.zeros(2, dtype=torch.float64)
        optimizer = descend.SGD([theta], lr=lr / 5 if name == "GD" else lr)
        point, gradient = theta.detach().numpy(), theta.grad.numpy()
        path = [point.copy()]
        for step in range(steps):
            # ∇Cᵢ(θ) = (2aᵢ(θ₁ − uᵢ₁), 2(θ₂ − uᵢ₂)) from (4.13); GD sums all five
            rows = slice(None) if name == "GD" else slice(order[step], order[step] + 1)
            gradient[0] = (2 * weights[rows] * (point[0] - minimizers[rows, 0])).sum()
            gradient[1] = (2 * (point[1] - minimizers[rows, 1])).sum()
            optimizer.step()
            path.append(point.copy())
        paths[name] = np.array(path)
    minimum = np.array([(weights * minimizers[:, 0]).sum() / weights.sum(), minimizers[:, 1].mean()])
    late = paths["SGD"][len(paths["SGD"]) // 2:]
    inside = float((Delaunay(minimizers).find_simplex(late) >= 0).mean())
    gd_error = float(np.linalg.norm(paths["GD"][-1] - minimum))
    sgd_spread = float(np.linalg.norm(late - minimum, axis=1).mean())
    if ctx.figures_wanted:
        draw(ctx, minimizers, weights, minimum, paths, inside)
    summary = (f"{inside:.1%} of the last {len(late)} SGD iterates lie inside the hull; their mean distance to the "
               f"minimum is {sgd_spread:.3f}, while GD ends {gd_error:.1e} from it.")
    return Result({"sgd-stays-inside-convex-hull": inside,
                   "gd-converges-where-sgd-keeps-moving": float(np.log10(max(gd_error, 1e-300)) - np.log10(sgd_spread))},
                  summary, {"fraction_inside": inside, "gd_final_error": gd_error, "sgd_mean_distance_late": sgd_spread,
                            "minimizers": minimizers.tolist(), "weights": weights.tolist(), "lr": lr})


def draw(ctx: Context, minimizers, weights, minimum, paths, inside) -> None:
    hull = ConvexHull(minimizers)
    ring = np.append(hull.vertices, hull.vertices[0])
    xs, ys = np.meshgrid(np.linspace(-5, 4, 120), np.linspace(-4, 5, 120))
    total = sum(w * (xs - u[0]) ** 2 + (ys - u[1]) ** 2 for w, u in zip(weights, minimizers))
    figure, axis = plt.subplots(figsize=(6.5, 6))
    axis.contour(xs, ys, total, levels=20, cmap="Greys", linewidths=0.5)
    axis.fill(minimizers[ring, 0], minimizers[ring, 1], alpha=0.15, color="tab:green", label="convex hull S of uᵢ")
    axis.plot(paths["SGD"][:, 0], paths["SGD"][:, 1], "-", color=ctx.color("SGD"), linewidth=0.5, alpha=0.8,
              label="SGD")
    axis.plot(paths["GD"][:, 0], paths["GD"][:, 1], "-", color=ctx.color("GD"), linewidth=2, label="GD")
    axis.scatter(minimizers[:, 0], minimizers[:, 1], c="k", s=25 * weights, zorder=3, label="uᵢ (size ∝ aᵢ)")
    axis.plot(*minimum, "*", color="black", markersize=14, label="minimum of C")
    axis.set_xlabel("θ₁"), axis.set_ylabel("θ₂")
    axis.legend(fontsize=8), axis.set_title(f"late SGD iterates inside the hull: {inside:.1%}")
    ctx.save(figure, "hull", caption="From (−4, 4) GD (grey) walks straight to the minimum; SGD (blue) heads the "
             "same way, then keeps jumping around inside the green hull of the per-sample minimizers.",
             claims=[c.id for c in CLAIMS])
    contour = (xs, ys, np.log1p(total - total.min()))
    # the playground's convex-hull landscape with these samples: C/5, so the same steps at the same lr
    setup = plots.playground_setup(
        "convex-hull", paths["SGD"][0], len(paths["SGD"]) - 1,
        [{**plots.playground_run("SGD", lr=0.1), "batch": len(weights)}, {**plots.playground_run("SGD", lr=0.1),
                                                                           "batch": 1}],
        {"centers": minimizers.tolist(), "curvatures": weights.tolist(), "batch": 1, "span": 5 / 3},
        note="(The playground draws its own samples, so SGD's path differs in detail, not in kind.)")
    ctx.interactive(plots.trajectories({"GD": paths["GD"], "SGD": paths["SGD"]}, "GD and SGD on eq. 4.13: drag the "
                                       "slider to follow them", contour=contour, minimum=minimum,
                                       bounds=((-5, 4), (-4, 5)), regions={"convex hull S of uᵢ": minimizers[hull.vertices]},
                                       landmarks={"uᵢ (size ∝ aᵢ)": (minimizers, 6 * np.sqrt(weights) + 2)},
                                       playground=setup),
                    "hull-interactive", caption="Interactive: the slider sets the step; SGD reaches the hull within "
                    "a few dozen steps and then fluctuates inside it.", claims=[c.id for c in CLAIMS])
