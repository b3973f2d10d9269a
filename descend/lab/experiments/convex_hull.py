"""SGD oscillates inside the convex hull of the per-sample minimizers."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy.spatial import ConvexHull, Delaunay

import descend

from ..core import Context, Result

NAME = "convex-hull"
TITLE = "8. SGD inside the convex hull of per-sample minimizers"
CLAIM = ("With f(θ) = Σᵢ aᵢ(θ₁−uᵢ₁)² + (θ₂−uᵢ₂)² over 5 samples, full-batch GD converges to the minimum while "
         "constant-step SGD keeps moving; at least 95% of its late iterates lie inside the convex hull of the uᵢ.")


def run(ctx: Context) -> Result:
    generator = np.random.default_rng(ctx.seed)
    minimizers = generator.uniform(-3, 3, size=(5, 2))
    weights = generator.uniform(0.5, 2.0, size=5)
    u = torch.tensor(minimizers)
    a = torch.tensor(weights)

    def sample_loss(theta, i):
        return a[i] * (theta[0] - u[i, 0]) ** 2 + (theta[1] - u[i, 1]) ** 2

    steps = 4000 if ctx.full else 1500
    lr = 0.1
    paths = {}
    order = torch.randint(0, 5, (steps,), generator=ctx.generator())
    for name in ctx.track(["GD", "SGD"]):
        theta = torch.tensor([-4.0, 4.0], dtype=torch.float64, requires_grad=True)
        optimizer = descend.SGD([theta], lr=lr / 5 if name == "GD" else lr)
        path = [theta.detach().numpy().copy()]
        for step in range(steps):
            optimizer.zero_grad()
            loss = sum(sample_loss(theta, i) for i in range(5)) if name == "GD" else sample_loss(theta, int(order[step]))
            loss.backward()
            optimizer.step()
            path.append(theta.detach().numpy().copy())
        paths[name] = np.array(path)
    minimum = np.array([(weights * minimizers[:, 0]).sum() / weights.sum(), minimizers[:, 1].mean()])
    late = paths["SGD"][len(paths["SGD"]) // 2:]
    inside = float((Delaunay(minimizers).find_simplex(late) >= 0).mean())
    gd_error = float(np.linalg.norm(paths["GD"][-1] - minimum))
    sgd_spread = float(np.linalg.norm(late - minimum, axis=1).mean())

    hull = ConvexHull(minimizers)
    figure, axis = plt.subplots(figsize=(6.5, 6))
    ring = np.append(hull.vertices, hull.vertices[0])
    axis.fill(minimizers[ring, 0], minimizers[ring, 1], alpha=0.15, color="tab:green", label="convex hull of uᵢ")
    axis.plot(paths["SGD"][:, 0], paths["SGD"][:, 1], "-", color="tab:orange", linewidth=0.5, alpha=0.7, label="SGD")
    axis.plot(paths["GD"][:, 0], paths["GD"][:, 1], "-", color="tab:blue", linewidth=2, label="GD")
    axis.scatter(minimizers[:, 0], minimizers[:, 1], c="k", s=25 * weights, zorder=3, label="uᵢ (size ∝ aᵢ)")
    axis.plot(*minimum, "r*", markersize=14, label="minimum of f")
    axis.legend(fontsize=8), axis.set_title(f"late SGD iterates inside the hull: {inside:.1%}")
    ctx.save(figure, "hull")

    held = inside >= 0.95 and gd_error < 1e-6
    summary = (f"{inside:.1%} of the last {len(late)} SGD iterates lie inside the hull; their mean distance to the "
               f"minimum is {sgd_spread:.3f}, while GD ends {gd_error:.1e} from it.")
    return Result(held, summary, {"fraction_inside": inside, "gd_final_error": gd_error,
                                  "sgd_mean_distance_late": sgd_spread, "minimizers": minimizers.tolist(),
                                  "weights": weights.tolist(), "lr": lr})
