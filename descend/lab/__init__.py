"""The lab: runnable experiments that check the course's optimizer claims over seeds and write a report.

Every module in ``descend/lab/experiments/`` that defines ``NAME``, ``CLAIMS`` and ``run`` is an experiment;
they are ordered by their optional ``ORDER`` (default 100), then ``NAME``. An experiment may also define
``tune(ctx)``, run once before its seeds, whose records reach ``run`` as ``ctx.tuned``, and ``COST``, its
estimated seconds ``{"tune": …, "run": …}`` for the progress display.
"""
from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from . import experiments as _package
from .claims import Claim
from .core import Context, Result
from .runner import run_lab


def discover(package: ModuleType = _package) -> dict[str, ModuleType]:
    """The experiment modules of ``package`` by name. Two modules with the same name or a shared claim id are an
    error."""
    found = []
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        if all(hasattr(module, attribute) for attribute in ("NAME", "CLAIMS", "run")):
            found.append(module)
    found.sort(key=lambda m: (getattr(m, "ORDER", 100), m.NAME))
    experiments: dict[str, ModuleType] = {}
    owners: dict[str, str] = {}
    for module in found:
        if module.NAME in experiments:
            raise RuntimeError(f"two lab experiments are named {module.NAME!r}: {module.__name__} and "
                               f"{experiments[module.NAME].__name__}")
        for claim in module.CLAIMS:
            if not isinstance(claim, Claim):
                raise RuntimeError(f"{module.__name__}.CLAIMS holds {claim!r}, not a Claim")
            if claim.id in owners:
                raise RuntimeError(f"claim id {claim.id!r} is claimed by both {owners[claim.id]} and {module.NAME}")
            owners[claim.id] = module.NAME
        experiments[module.NAME] = module
    return experiments


EXPERIMENTS = discover()
CLAIMS = {claim.id: claim for module in EXPERIMENTS.values() for claim in module.CLAIMS}

__all__ = ["CLAIMS", "EXPERIMENTS", "Claim", "Context", "Result", "discover", "run_lab"]
