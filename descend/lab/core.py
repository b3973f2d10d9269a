"""What an experiment gets (``Context``) and gives back (``Result``)."""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from . import style  # noqa: E402


@dataclass
class Result:
    """One seed's outcome: the measured effect of each of the module's claims, the numbers behind them, figures.

    ``effects`` maps every ``Claim.id`` of the module to one float; the runner aggregates it over seeds.
    ``tuning`` holds the tuning records (``descend.lab.tuning.search``) of an experiment that tunes inside its run
    (a deterministic one); an experiment with a ``tune`` function gets its records in ``Context.tuned`` instead.
    ``notes`` adds a claim-specific explanation to the claim's one-line reason.
    """

    effects: dict[str, float]
    summary: str  # one or two sentences with the measured numbers
    numbers: dict[str, Any]
    figures: list[str] = field(default_factory=list)
    tuning: dict[str, dict] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


@dataclass
class Context:
    """The run's settings, plus helpers for figures and progress.

    ``figures_wanted`` is True for the first seed only: experiments draw figures then and skip them otherwise.
    ``tuned`` holds what the experiment's ``tune`` returned (run once, on ``TUNING_SEED``, before the seeds run).
    Every figure names the claims it shows (``claims=``; an empty tuple for an illustration): the report links them,
    and every claim needs a figure that shows its measurement.
    """

    seed: int = 0
    full: bool = False
    device: torch.device = torch.device("cpu")
    figure_dir: Path = Path(".")
    progress: bool = True
    name: str = ""
    figures_wanted: bool = True
    figures: list[str] = field(default_factory=list)
    captions: dict[str, str] = field(default_factory=dict)
    tuned: dict[str, Any] = field(default_factory=dict)
    claim_ids: tuple[str, ...] = ()
    figure_claims: dict[str, list[str]] = field(default_factory=dict)

    def generator(self, offset: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1000 + offset)

    def track(self, items: Iterable, total: int | None = None, desc: str | None = None) -> Iterable:
        """``items`` with this experiment's progress bar."""
        return tqdm(items, total=total, desc=desc or self.name, disable=not self.progress, leave=False,
                    dynamic_ncols=True)

    def place(self, module: torch.nn.Module) -> torch.nn.Module:
        """The model on the run's device (``--device``); data moves batch by batch in ``data.train``."""
        return module.to(self.device)

    @staticmethod
    def color(label: str) -> str:
        """The colour of an optimizer (or any curve label), the same in every figure of the report."""
        return style.color(label)

    def save(self, figure, stem: str, caption: str = "", tight: bool = True, *, claims: Sequence[str]) -> str:
        """Saves a matplotlib figure as ``<experiment>-<stem>.png`` with a one-line caption, and closes it.

        ``tight=False`` keeps the figure's own margins (set them with ``subplots_adjust``): it saves one full
        draw of the figure, which matters for large figures with many panels.
        """
        filename = f"{self.name}-{stem}.png"
        if self.figures_wanted:
            figure.savefig(self.figure_dir / filename, dpi=90, bbox_inches="tight" if tight else None,
                           metadata={"Software": None})
            self._record(filename, caption, claims)
        plt.close(figure)
        return filename

    def interactive(self, figure, stem: str, caption: str = "", *, claims: Sequence[str]) -> str:
        """Adds an interactive figure (a plotly ``Figure`` or its dict) shown in the report with bundled plotly.js.

        Written as ``<experiment>-<stem>.plotly.json``; the report embeds it so the page works from file://.
        """
        filename = f"{self.name}-{stem}.plotly.json"
        if self.figures_wanted:
            spec = figure.to_plotly_json() if hasattr(figure, "to_plotly_json") else dict(figure)
            spec = {"data": spec.get("data", []), "layout": spec.get("layout", {}), "frames": spec.get("frames", [])}
            text = json.dumps(spec, default=_plain, sort_keys=True)
            (self.figure_dir / filename).write_text(text)
            self._record(filename, caption, claims)
        return filename

    def _record(self, filename: str, caption: str, claims: Sequence[str]) -> None:
        unknown = [c for c in claims if self.claim_ids and c not in self.claim_ids]
        if unknown or isinstance(claims, str):
            raise ValueError(f"figure {filename} must name claims of its experiment, not {claims!r}")
        if filename not in self.figures:
            self.figures.append(filename)
        self.captions[filename] = " ".join(caption.split())
        self.figure_claims[filename] = list(claims)


def _plain(value: Any) -> Any:
    """JSON for what plotly figures hold besides plain values (numpy arrays and scalars, tensors)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def fitted_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of log y against log x."""
    lx, ly = [math.log(v) for v in x], [math.log(v) for v in y]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types; non-finite floats become strings ("nan", "inf")."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if hasattr(value, "tolist"):
        return jsonable(value.tolist())
    return float(value) if hasattr(value, "__float__") else str(value)
