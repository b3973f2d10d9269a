"""The runner: every experiment over seeds in worker processes, each claim's effect aggregated with a 95%
confidence interval and a verdict, and the report written into ``--out`` without touching anything else."""
from __future__ import annotations

import importlib
import math
import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from tqdm.auto import tqdm

from ..output import MARKER, OutputError, check_out, publish  # noqa: F401 (MARKER, OutputError: this module's API)
from ..output import retire as _retire  # noqa: F401
from ..output import written_by_descend as _written_by_descend  # noqa: F401
from .claims import Claim
from .core import Context, jsonable

SEEDS_QUICK, SEEDS_FULL = 3, 10
VERDICTS = ("held", "did not hold", "inconclusive")


def _publish(scratch: Path, out: Path) -> None:
    """Moves the finished report into place; an existing previous report (or empty folder) is replaced."""
    publish(scratch, out, "descend lab")


# ---------------------------------------------------------------------------------------------------------------
# verdicts


def aggregate(claim: Claim, effects: Sequence[float]) -> dict[str, Any]:
    """Mean effect over seeds, its 95% Student-t interval and the verdict.

    With n seeds, mean m and sample standard deviation s, the interval is m ± t₀.₉₇₅,ₙ₋₁ · s/√n. The claim
    *held* when the whole interval meets the criterion, *did not hold* when the whole interval violates it,
    and is *inconclusive* otherwise. A deterministic claim is decided by its one value.
    """
    values = [float(v) for v in effects]
    if claim.deterministic:
        value = values[0]
        return {"effects": [value], "mean": value, "ci": None, "n": 1, "deterministic": True,
                "verdict": "held" if claim.satisfied(value) else "did not hold",
                "note": "deterministic: one run, no interval"}
    n = len(values)
    finite = all(math.isfinite(v) for v in values)
    entry: dict[str, Any] = {"effects": values, "n": n, "deterministic": False}
    if n >= 2 and finite:
        from scipy.stats import t

        mean = math.fsum(values) / n
        sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
        half = float(t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
        low, high = mean - half, mean + half
        if claim.satisfied(low) and claim.satisfied(high):
            verdict = "held"
        elif not claim.satisfied(low) and not claim.satisfied(high):
            verdict = "did not hold"
        else:
            verdict = "inconclusive"
        entry.update(mean=mean, ci=[low, high], verdict=verdict, note="")
        return entry
    met = [claim.satisfied(v) for v in values]
    mean = math.fsum(values) / n if finite else float("nan")
    if n == 1:
        verdict, note = "inconclusive", "one seed: no interval (run with --seeds 2 or more)"
    else:
        verdict = "held" if all(met) else "did not hold" if not any(met) and not any(map(math.isnan, values)) \
            else "inconclusive"
        note = "a seed gave a non-finite effect: decided seed by seed, no interval"
    entry.update(mean=mean, ci=None, verdict=verdict, note=note)
    return entry


# ---------------------------------------------------------------------------------------------------------------
# jobs


def run_job(module_name: str, seed: int, full: bool, device: str, figure_dir: str, figures_wanted: bool,
            progress: bool = False) -> dict[str, Any]:
    """One (experiment, seed) run; in a worker process or in this one. Single-threaded torch, seeded."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        module = importlib.import_module(module_name)
        context = Context(seed=seed, full=full, device=torch.device(device), figure_dir=Path(figure_dir),
                          progress=progress, name=module.NAME, figures_wanted=figures_wanted)
        torch.manual_seed(seed)
        begin, cpu = time.perf_counter(), time.process_time()
        result = module.run(context)
        seconds, cpu = time.perf_counter() - begin, time.process_time() - cpu
    finally:
        torch.set_num_threads(threads)
    expected = {claim.id for claim in module.CLAIMS}
    if set(result.effects) != expected:
        raise RuntimeError(f"experiment {module.NAME} measured {sorted(result.effects)}, its claims are "
                           f"{sorted(expected)}")
    figures = list(context.figures) or list(result.figures)
    return {"effects": {k: float(v) for k, v in result.effects.items()}, "summary": result.summary,
            "numbers": jsonable(result.numbers), "figures": figures,
            "captions": {f: context.captions.get(f, "") for f in figures}, "seconds": seconds, "cpu_seconds": cpu}


def seed_count(module: ModuleType, full: bool, seeds: int | None) -> int:
    """How many seeds an experiment runs: 1 if all its claims are deterministic, else --seeds or its default."""
    if all(claim.deterministic for claim in module.CLAIMS):
        return 1
    if seeds is not None:
        return seeds
    return getattr(module, "SEEDS_FULL", SEEDS_FULL) if full else getattr(module, "SEEDS_QUICK", SEEDS_QUICK)


def _worker_setup() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle: it stops the workers
    torch.set_num_threads(1)


def _executor(workers: int) -> ProcessPoolExecutor:
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        # Workers fork from a server that has already imported these (torch.optim imports torch._dynamo when the
        # first optimizer is built: seconds per process otherwise).
        context.set_forkserver_preload(["torch", "torch._dynamo", "matplotlib.pyplot", "scipy.stats",
                                         "sklearn.datasets", "sklearn.model_selection", "descend.lab.runner"])
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_setup)


def _run_jobs(jobs: list[tuple], workers: int, progress: bool) -> list[dict[str, Any]]:
    bar = tqdm(total=len(jobs), desc="descend lab", unit="run", disable=not progress, dynamic_ncols=True)
    results: list[dict[str, Any] | None] = [None] * len(jobs)
    try:
        if workers <= 1:
            for index, job in enumerate(jobs):
                results[index] = run_job(*job)
                bar.set_postfix_str(f"{Path(job[0]).suffix.lstrip('.')} seed {job[1]}", refresh=False)
                bar.update()
            return results  # type: ignore[return-value]
        pool = _executor(workers)
        try:
            pending = {pool.submit(run_job, *job): index for index, job in enumerate(jobs)}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    index = pending.pop(future)
                    results[index] = future.result()
                    bar.set_postfix_str(f"{jobs[index][0].rsplit('.', 1)[-1]} seed {jobs[index][1]}", refresh=False)
                    bar.update()
        except BaseException:
            # interrupted, or a job failed: stop the other jobs now rather than waiting for them to finish
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
        return results  # type: ignore[return-value]
    finally:
        bar.close()


# ---------------------------------------------------------------------------------------------------------------
# the lab


def run_lab(experiments: Sequence[ModuleType], out: Path, seed: int = 0, full: bool = False, device: str = "cpu",
            progress: bool = True, seeds: int | None = None, workers: int | None = None) -> dict[str, Any]:
    """Runs each experiment over its seeds (seed s = ``seed`` + i) and writes ``out/index.html`` and
    ``out/results.json``.

    Jobs run in ``workers`` processes (default: 2, or 1 on a one-core machine) and are merged in a fixed order,
    so the same seed on the same machine gives the same ``results.json`` (apart from its ``meta`` section).
    The report is built in a scratch folder beside ``out`` and moved into place only when complete; ``out``
    must be new, empty, or a previous report (see ``check_out``).
    """
    from .report import write_report

    if seeds is not None and seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {seeds}")
    if not experiments:
        raise ValueError("no experiment to run")
    out = Path(os.path.abspath(out))
    check_out(out)
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        started = time.perf_counter()
        plan = {module.NAME: [seed + i for i in range(seed_count(module, full, seeds))] for module in experiments}
        jobs = [(module.__name__, s, full, device, str(scratch), i == 0)
                for i in range(max(map(len, plan.values())))
                for module in experiments if i < len(plan[module.NAME]) for s in [plan[module.NAME][i]]]
        outcomes = dict(zip(((job[0], job[1]) for job in jobs), _run_jobs(jobs, workers, progress)))
        report = _assemble(experiments, plan, outcomes, seed, full, device)
        report["meta"]["total_seconds"] = round(time.perf_counter() - started, 1)
        report["meta"]["workers"] = workers
        write_report(report, scratch)
        _publish(scratch, out)
        return report
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


def _assemble(experiments: Sequence[ModuleType], plan: dict[str, list[int]], outcomes: dict, seed: int, full: bool,
              device: str) -> dict[str, Any]:
    claims, sections, seconds, cpu = {}, {}, {}, {}
    for module in experiments:
        runs = [outcomes[(module.__name__, s)] for s in plan[module.NAME]]
        first = runs[0]
        for claim in module.CLAIMS:
            claims[claim.id] = {"experiment": module.NAME, "source": claim.source, "statement": claim.statement,
                                "measurement": claim.measurement, "criterion": claim.criterion,
                                "threshold": claim.threshold, "direction": claim.direction,
                                "seeds": plan[module.NAME][:1] if claim.deterministic else plan[module.NAME],
                                **aggregate(claim, [r["effects"][claim.id] for r in runs])}
        sections[module.NAME] = {
            "title": module.TITLE, "claims": [claim.id for claim in module.CLAIMS], "seeds": plan[module.NAME],
            "summary": first["summary"], "summaries": [r["summary"] for r in runs],
            "numbers": first["numbers"], "numbers_per_seed": [r["numbers"] for r in runs[1:]],
            "figures": [{"file": f, "caption": first["captions"].get(f, ""),
                         "kind": "interactive" if f.endswith(".plotly.json") else "image"} for f in first["figures"]],
        }
        seconds[module.NAME] = [round(r["seconds"], 2) for r in runs]
        cpu[module.NAME] = [round(r["cpu_seconds"], 2) for r in runs]
    counts = {verdict: sum(c["verdict"] == verdict for c in claims.values()) for verdict in VERDICTS}
    meta = {"torch": torch.__version__, "python": sys.version.split()[0],
            "machine": f"{platform.machine()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d %H:%M"),
            "seconds": seconds, "cpu_seconds": cpu,
            "cpu_seconds_total": round(sum(map(sum, cpu.values())), 1)}
    return {"settings": {"seed": seed, "mode": "full" if full else "quick", "device": device},
            "counts": counts, "claims": claims, "experiments": sections, "meta": meta}
