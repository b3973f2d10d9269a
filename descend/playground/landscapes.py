"""The 2-D test functions of the playground, each with its exact gradient.

Every function is a polynomial in ``(x, y)``, written with plain arithmetic so that
the same code evaluates one point (Python floats, fast enough for 2000 optimizer
steps in a few ms) and a whole grid (numpy arrays, for the contours).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np


@dataclass(frozen=True)
class Knob:
    """A landscape parameter the page shows as a slider (``log``: the slider moves log10 of the value)."""

    name: str
    label: str
    default: float
    low: float
    high: float
    log: bool = False
    integer: bool = False

    def check(self, owner: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{owner}: {self.name} must be a finite number, got {value!r}")
        if not self.low <= value <= self.high:
            raise ValueError(f"{owner}: {self.name} must lie in [{self.low:g}, {self.high:g}], got {value!r}")
        if self.integer and value != int(value):
            raise ValueError(f"{owner}: {self.name} must be a whole number, got {value!r}")
        return int(value) if self.integer else float(value)


# Every landscape takes ``span``: the plotting window is the default one scaled about its centre (2: twice as
# wide), so that a start far from the minimum (a lab figure's, a student's click) stays in view.
SPAN = Knob("span", "window size (× the default)", 1.0, 0.25, 10.0, log=True)


class Landscape:
    """A loss ``f(x, y)`` on a plotting window, with its gradient and (for stochastic ones) sampled gradients.

    ``knobs`` are the landscape's own number parameters; every landscape also takes ``span`` (see ``SPAN``).
    ``extra_params`` names parameters that are not sliders (lists of numbers), checked by the subclass.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    formula: ClassVar[str]  # shown in the page
    window: ClassVar[tuple[tuple[float, float], tuple[float, float]]]
    start: ClassVar[tuple[float, float]]
    minima: ClassVar[tuple[tuple[float, float], ...]] = ()
    log_scale: ClassVar[bool] = False  # plot log(1 + f - f*) when f spans many decades
    knobs: ClassVar[tuple[Knob, ...]] = ()
    extra_params: ClassVar[tuple[str, ...]] = ()
    stochastic: ClassVar[bool] = False

    def __init__(self, **params: Any):
        every = self.all_knobs()
        unknown = sorted(set(params) - {k.name for k in every} - set(self.extra_params))
        if unknown:
            raise ValueError(f"{self.title}: unknown parameter {', '.join(unknown)}")
        self.params = {k.name: k.check(self.title, params.get(k.name, k.default)) for k in every}
        (x0, x1), (y0, y1) = type(self).window
        half_x, half_y, span = (x1 - x0) / 2, (y1 - y0) / 2, self.params["span"]
        middle_x, middle_y = (x0 + x1) / 2, (y0 + y1) / 2
        self.window = ((middle_x - span * half_x, middle_x + span * half_x),
                       (middle_y - span * half_y, middle_y + span * half_y))

    @classmethod
    def all_knobs(cls) -> tuple[Knob, ...]:
        """The landscape's own knobs, then ``span``."""
        return (*cls.knobs, SPAN)

    def value(self, x, y):
        raise NotImplementedError

    def gradient(self, x, y) -> tuple:
        raise NotImplementedError

    def minimum_value(self) -> float:
        return min((float(self.value(*m)) for m in self.minima), default=0.0)

    def sample(self, rng: random.Random) -> Any:
        """What one stochastic step draws (a mini-batch, noise); None for a deterministic landscape."""
        return None

    def sampled_gradient(self, x: float, y: float, sample: Any) -> tuple[float, float]:
        return self.gradient(x, y)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "formula": self.formula,
            "window": self.window,
            "start": self.start,
            "minima": [list(m) for m in self.minima_points()],
            "log_scale": self.log_scale,
            "stochastic": self.stochastic,
            "knobs": [vars(k) for k in self.all_knobs()],
            "bounded": bool(self.minima_points()),  # False: f has no minimum (the page plots f, not f − f*)
        }

    def minima_points(self) -> tuple[tuple[float, float], ...]:
        return self.minima


class Quadratic(Landscape):
    r"""``f = ½ θᵀHθ`` with ``H = L·R(φ) diag(1/κ, 1) R(φ)ᵀ``: the largest curvature is ``L`` (default 1).

    Gradient descent converges for ``α < 2/L`` (``2/λ_max``) and, at ``α = 1/L``, needs about
    ``κ`` steps along the flat direction; the rotation ``φ`` puts the valley off the axes,
    which is where per-coordinate methods (Adam, Adagrad) behave differently from SGD.
    ``κ = 20, φ = 0, L = 4`` is the lab's ``0.1x² + 2y²``.
    """

    name = "quadratic"
    title = "Ill-conditioned quadratic"
    formula = "f = ½ θᵀHθ,  H = L·R(φ) diag(1/κ, 1) R(φ)ᵀ"
    window = ((-3.0, 3.0), (-3.0, 3.0))
    start = (-2.5, 2.0)
    minima = ((0.0, 0.0),)
    knobs = (
        Knob("condition", "condition number κ", 10.0, 1.0, 1000.0, log=True),
        Knob("angle", "rotation φ (degrees)", 30.0, 0.0, 90.0),
        Knob("scale", "largest curvature L", 1.0, 0.01, 100.0, log=True),
    )

    def __init__(self, **params):
        super().__init__(**params)
        phi = math.radians(self.params["angle"])
        c, s = math.cos(phi), math.sin(phi)
        steep = self.params["scale"]
        flat = steep / self.params["condition"]
        # H = R diag(flat, steep) Rᵀ with R = [[c, -s], [s, c]]
        self.hxx = flat * c * c + steep * s * s
        self.hyy = flat * s * s + steep * c * c
        self.hxy = (flat - steep) * c * s

    def value(self, x, y):
        return 0.5 * (self.hxx * x * x + 2 * self.hxy * x * y + self.hyy * y * y)

    def gradient(self, x, y):
        return self.hxx * x + self.hxy * y, self.hxy * x + self.hyy * y


class Rosenbrock(Landscape):
    """Rosenbrock's banana valley, ``(1 − x)² + 100 (y − x²)²``, minimum ``f(1, 1) = 0``."""

    name = "rosenbrock"
    title = "Rosenbrock"
    formula = "f = (1 − x)² + 100 (y − x²)²"
    window = ((-2.0, 2.0), (-1.0, 3.0))
    start = (-1.2, 1.0)
    minima = ((1.0, 1.0),)
    log_scale = True

    def value(self, x, y):
        return (1 - x) ** 2 + 100 * (y - x * x) ** 2

    def gradient(self, x, y):
        valley = y - x * x
        return -2 * (1 - x) - 400 * x * valley, 200 * valley


class Beale(Landscape):
    """Beale's function, minimum ``f(3, 0.5) = 0``, with flat plateaus and steep walls."""

    name = "beale"
    title = "Beale"
    formula = "f = (1.5 − x + xy)² + (2.25 − x + xy²)² + (2.625 − x + xy³)²"
    window = ((-4.5, 4.5), (-4.5, 4.5))
    start = (1.0, 1.5)
    minima = ((3.0, 0.5),)
    log_scale = True

    def value(self, x, y):
        return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y * y) ** 2 + (2.625 - x + x * y**3) ** 2

    def gradient(self, x, y):
        a, b, c = 1.5 - x + x * y, 2.25 - x + x * y * y, 2.625 - x + x * y**3
        dx = 2 * a * (y - 1) + 2 * b * (y * y - 1) + 2 * c * (y**3 - 1)
        dy = 2 * a * x + 2 * b * 2 * x * y + 2 * c * 3 * x * y * y
        return dx, dy


class Saddle(Landscape):
    """A saddle at the origin, ``x² − y²``, held by quartic walls ``c·y⁴``: minima ``f(0, ±1/√(2c)) = −1/(4c)``
    (``c = ¼``: ``f(0, ±√2) = −1``). ``c = 0`` is the bare saddle of the lab, which has no minimum."""

    name = "saddle"
    title = "Saddle"
    window = ((-2.5, 2.5), (-2.5, 2.5))
    start = (-2.0, 0.02)
    knobs = (Knob("wall", "quartic wall c (0: no minimum)", 0.25, 0.0, 1.0),)

    def __init__(self, **params):
        super().__init__(**params)
        self.wall = self.params["wall"]
        self.formula = f"f = x² − y² + {self.wall:g}·y⁴" if self.wall else "f = x² − y²  (no minimum)"

    @property
    def minima(self):
        if not self.wall:
            return ()
        y = 1 / math.sqrt(2 * self.wall)
        return ((0.0, y), (0.0, -y))

    def minimum_value(self) -> float:
        return -1 / (4 * self.wall) if self.wall else 0.0  # without a wall: f at the saddle point

    def value(self, x, y):
        return x * x - y * y + self.wall * y**4

    def gradient(self, x, y):
        return 2 * x, -2 * y + 4 * self.wall * y**3


class Himmelblau(Landscape):
    """Himmelblau's function: four minima with ``f = 0``."""

    name = "himmelblau"
    title = "Himmelblau"
    formula = "f = (x² + y − 11)² + (x + y² − 7)²"
    window = ((-5.0, 5.0), (-5.0, 5.0))
    start = (-0.5, -0.5)
    minima = ((3.0, 2.0), (-2.805118086952745, 3.131312518250573), (-3.779310253377747, -3.283185991286170),
              (3.584428340330492, -1.848126526964404))
    log_scale = True

    def value(self, x, y):
        return (x * x + y - 11) ** 2 + (x + y * y - 7) ** 2

    def gradient(self, x, y):
        a, b = x * x + y - 11, x + y * y - 7
        return 4 * a * x + 2 * b, 2 * a + 4 * b * y


@dataclass
class _Batch:
    indices: list[int]
    noise: tuple[float, float]


class ConvexHull(Landscape):
    r"""The sum of per-sample quadratics of seed 002, eq. (4.13) and Fig. 4.2.

    .. math::
        C(\theta) = \frac1n \sum_{i=1}^n C_i(\theta), \qquad
        C_i(\theta) = a_i(\theta_1 - u_{i,1})^2 + (\theta_2 - u_{i,2})^2

    Every minimizer ``u_i`` lies in the convex hull ``S`` of the ``u``'s, and so does the
    minimizer of ``C``.  A stochastic step uses the mean gradient of a mini-batch of
    ``batch`` samples drawn without replacement (``batch = n`` is gradient descent), plus
    Gaussian noise of standard deviation ``noise``.  ``spread = 0`` puts every ``u_i`` at
    the same point (Fig. 4.2 b).  ``centers`` (a list of ``[u_i1, u_i2]``) and ``curvatures``
    (the ``a_i``, each > 0) replace the five samples of the figure, e.g. by a lab run's.
    """

    name = "convex-hull"
    title = "Convex hull (sum of per-sample quadratics)"
    formula = "C = (1/n) Σᵢ aᵢ(θ₁ − uᵢ₁)² + (θ₂ − uᵢ₂)²,  steps use a mini-batch of the i"
    window = ((-3.0, 3.0), (-3.0, 3.0))
    start = (-2.5, 2.5)
    stochastic = True
    knobs = (
        Knob("batch", "mini-batch size (n = full batch; n = 5 unless centers are given)", 1, 1, 20, integer=True),
        Knob("noise", "gradient noise σ", 0.0, 0.0, 5.0),
        Knob("spread", "spread of the minimizers uᵢ", 1.0, 0.0, 2.0),
    )
    extra_params = ("centers", "curvatures")
    # the five samples of Fig. 4.2: minimizers on a pentagon-like cloud around (0.5, 0.5), curvatures a_i
    _centers = np.array([[1.2, 0.9], [-0.4, 1.3], [-0.6, -0.1], [0.7, -0.5], [1.6, 0.4]])
    _curvatures = np.array([0.5, 1.0, 2.0, 1.5, 0.8])
    MAX_SAMPLES = 20  # the batch knob's upper end

    def __init__(self, **params):
        super().__init__(**params)
        centers, curvatures = self._samples(params.get("centers"), params.get("curvatures"))
        if "centers" in params:  # kept with the knobs, so that a copy with another batch size has the same samples
            self.params.update(centers=centers.tolist(), curvatures=curvatures.tolist())
        if self.params["batch"] > len(centers):
            raise ValueError(f"{self.title}: batch must lie in [1, {len(centers)}] (the number of samples), "
                             f"got {self.params['batch']}")
        middle = centers.mean(axis=0)
        # plain floats: one optimizer step evaluates these sums on Python numbers, far faster than numpy
        self.u = [tuple(map(float, p)) for p in middle + self.params["spread"] * (centers - middle)]
        self.a = [float(a) for a in curvatures]
        weights = curvatures / curvatures.sum()
        self.minimizer = (float(weights @ np.array(self.u)[:, 0]), float(np.mean([u[1] for u in self.u])))

    def _samples(self, centers: Any, curvatures: Any) -> tuple[np.ndarray, np.ndarray]:
        """The minimizers u_i and curvatures a_i: the figure's five, or the ones given (checked)."""
        if centers is None and curvatures is None:
            return self._centers, self._curvatures
        if centers is None or curvatures is None:
            raise ValueError(f"{self.title}: centers and curvatures come together (one a_i per u_i)")

        def numbers(value) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

        shaped = isinstance(centers, (list, tuple)) and 1 <= len(centers) <= self.MAX_SAMPLES and all(
            isinstance(c, (list, tuple)) and len(c) == 2 and all(map(numbers, c)) for c in centers)
        if not shaped:
            raise ValueError(f"{self.title}: centers must be a list of 1 to {self.MAX_SAMPLES} points [x, y] of "
                             f"finite numbers, got {centers!r}")
        if not (isinstance(curvatures, (list, tuple)) and len(curvatures) == len(centers)
                and all(numbers(a) and a > 0 for a in curvatures)):
            raise ValueError(f"{self.title}: curvatures must be {len(centers)} positive numbers, one per center, "
                             f"got {curvatures!r}")
        return np.array(centers, dtype=float), np.array(curvatures, dtype=float)

    @property
    def hull(self) -> list[list[float]]:
        """The corners of ``S`` in order, for drawing it (Andrew's monotone chain)."""
        points = sorted({(round(p[0], 12), round(p[1], 12)) for p in self.u})
        if len(points) < 3:
            return [list(p) for p in points]

        def cross(o, a, b):
            return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

        def chain(ordered):
            kept = []
            for p in ordered:
                while len(kept) >= 2 and cross(kept[-2], kept[-1], p) <= 0:
                    kept.pop()
                kept.append(p)
            return kept[:-1]

        return [list(p) for p in chain(points) + chain(points[::-1])]

    def minima_points(self):
        return (self.minimizer,)

    def minimum_value(self) -> float:
        return float(self.value(*self.minimizer))

    def describe(self):
        return {**super().describe(), "hull": self.hull, "samples": [list(u) for u in self.u]}

    def _mean_gradient(self, x, y, indices):
        """The mean of ``∇C_i`` over the samples ``indices``."""
        gx = sum(2 * self.a[i] * (x - self.u[i][0]) for i in indices) / len(indices)
        gy = sum(2 * (y - self.u[i][1]) for i in indices) / len(indices)
        return gx, gy

    def value(self, x, y):
        total = sum(a * (x - u[0]) ** 2 + (y - u[1]) ** 2 for a, u in zip(self.a, self.u))
        return total / len(self.a)

    def gradient(self, x, y):
        return self._mean_gradient(x, y, range(len(self.a)))

    def sample(self, rng: random.Random):
        indices = sorted(rng.sample(range(len(self.a)), self.params["batch"]))
        sigma = self.params["noise"]
        noise = (rng.gauss(0.0, sigma), rng.gauss(0.0, sigma)) if sigma else (0.0, 0.0)
        return _Batch(indices, noise)

    def sampled_gradient(self, x, y, sample: _Batch):
        gx, gy = self._mean_gradient(x, y, sample.indices)
        return gx + sample.noise[0], gy + sample.noise[1]


LANDSCAPES: dict[str, type[Landscape]] = {
    cls.name: cls for cls in (Quadratic, Rosenbrock, Beale, Saddle, Himmelblau, ConvexHull)
}


def make_landscape(name: str, params: dict[str, Any] | None = None) -> Landscape:
    """The landscape called ``name`` with the given knob values (ValueError for unknown or out-of-range ones)."""
    if name not in LANDSCAPES:
        raise ValueError(f"unknown landscape {name!r}; the landscapes are {', '.join(LANDSCAPES)}")
    return LANDSCAPES[name](**(params or {}))
