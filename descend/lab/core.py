"""What an experiment gets (``Context``) and gives back (``Result``), and the runner that writes the report."""
from __future__ import annotations

import json
import math
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402


@dataclass
class Result:
    """An experiment's outcome: whether its claim held, the numbers behind it, and its figures."""

    held: bool
    summary: str  # one or two sentences with the measured numbers
    numbers: dict[str, Any]
    figures: list[str] = field(default_factory=list)


@dataclass
class Context:
    """The run's settings, plus helpers for figures and progress."""

    seed: int = 0
    full: bool = False
    device: torch.device = torch.device("cpu")
    figure_dir: Path = Path(".")
    progress: bool = True
    name: str = ""
    figures: list[str] = field(default_factory=list)

    def generator(self, offset: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1000 + offset)

    def track(self, items: Iterable, total: int | None = None, desc: str | None = None) -> Iterable:
        """``items`` with this experiment's progress bar."""
        return tqdm(items, total=total, desc=desc or self.name, disable=not self.progress, leave=False,
                    dynamic_ncols=True)

    def place(self, module: torch.nn.Module) -> torch.nn.Module:
        """The model on the run's device (``--device``); data moves batch by batch in ``data.train``."""
        return module.to(self.device)

    def save(self, figure, stem: str) -> str:
        """Saves a matplotlib figure as ``<experiment>-<stem>.png`` and closes it."""
        filename = f"{self.name}-{stem}.png"
        figure.savefig(self.figure_dir / filename, dpi=90, bbox_inches="tight")
        plt.close(figure)
        self.figures.append(filename)
        return filename


def fitted_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of log y against log x."""
    lx, ly = [math.log(v) for v in x], [math.log(v) for v in y]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return float(value) if hasattr(value, "__float__") else str(value)


def run_lab(experiments: Sequence[ModuleType], out: Path, seed: int = 0, full: bool = False,
            device: str = "cpu", progress: bool = True) -> dict[str, Any]:
    """Runs the experiments and writes ``out/index.html`` and ``out/results.json``.

    Everything is written into a temporary folder beside ``out`` that replaces ``out`` only once
    complete, so an interrupted run never leaves a half-written report.
    """
    from .report import write_html

    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        started = time.perf_counter()
        results = {}
        for module in tqdm(experiments, desc="descend lab", disable=not progress, dynamic_ncols=True):
            context = Context(seed=seed, full=full, device=torch.device(device), figure_dir=scratch,
                              progress=progress, name=module.NAME)
            torch.manual_seed(seed)
            begin = time.perf_counter()
            result = module.run(context)
            results[module.NAME] = {
                "title": module.TITLE, "claim": module.CLAIM, "held": bool(result.held), "summary": result.summary,
                "numbers": _jsonable(result.numbers), "figures": result.figures or context.figures,
                "seconds": round(time.perf_counter() - begin, 2),
            }
        meta = {
            "seed": seed, "mode": "full" if full else "quick", "device": device,
            "total_seconds": round(time.perf_counter() - started, 1), "torch": torch.__version__,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads",
            "date": time.strftime("%Y-%m-%d %H:%M"),
        }
        report = {"meta": meta, "experiments": results}
        (scratch / "results.json").write_text(json.dumps(report, indent=2))
        (scratch / "index.html").write_text(write_html(report))
        if out.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{out.name}-old-", dir=out.parent))
            os.replace(out, retired / out.name)
            os.replace(scratch, out)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(scratch, out)
        return report
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
