"""The runner: each experiment's tuning once, then the experiment over seeds in worker processes; each claim's effect
aggregated with a 95% interval and a verdict (``verdicts.py``), and the report written into ``--out`` without
touching anything else."""
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
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from tqdm.auto import tqdm

from ..output import MARKER, OutputError, check_out, publish  # noqa: F401 (MARKER, OutputError: this module's API)
from ..output import retire as _retire  # noqa: F401
from ..output import written_by_descend as _written_by_descend  # noqa: F401
from .claims import KINDS
from .core import Context, jsonable
from .report import write_report
from .verdicts import VERDICTS, aggregate

SEEDS_QUICK, SEEDS_FULL = 10, 20
TUNING_SEED = 1_000_000  # experiments tune their hyperparameters on this seed, never one the claims are judged on


def _publish(scratch: Path, out: Path) -> None:
    """Moves the finished report into place; an existing previous report (or empty folder) is replaced."""
    publish(scratch, out, "descend lab")


# ---------------------------------------------------------------------------------------------------------------
# jobs: an experiment's tuning (once), then one run per seed


def _context(module: ModuleType, seed: int, full: bool, device: str, figure_dir: str, figures_wanted: bool,
             progress: bool, tuned: dict | None = None) -> Context:
    return Context(seed=seed, full=full, device=torch.device(device), figure_dir=Path(figure_dir), progress=progress,
                   name=module.NAME, figures_wanted=figures_wanted, tuned=tuned or {},
                   claim_ids=tuple(claim.id for claim in module.CLAIMS))


def tune_job(module_name: str, full: bool, device: str, progress: bool = False) -> dict[str, Any]:
    """An experiment's ``tune`` on TUNING_SEED, single-threaded: {"tuned": its records, "seconds", "cpu_seconds"}.

    ``tune`` returns {label: tuning record}; a key that starts with "_" holds other seed-independent work done once
    (it reaches the runs in ``ctx.tuned`` but is no tuning record)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        module = importlib.import_module(module_name)
        context = _context(module, TUNING_SEED, full, device, ".", False, progress)
        torch.manual_seed(TUNING_SEED)
        begin, cpu = time.perf_counter(), time.process_time()
        tuned = module.tune(context)
        seconds, cpu = time.perf_counter() - begin, time.process_time() - cpu
    finally:
        torch.set_num_threads(threads)
    return {"tuned": tuned, "seconds": seconds, "cpu_seconds": cpu}


def run_job(module_name: str, seed: int, full: bool, device: str, figure_dir: str, figures_wanted: bool,
            progress: bool = False, tuned: dict | None = None) -> dict[str, Any]:
    """One (experiment, seed) run; in a worker process or in this one. Single-threaded torch, seeded."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        module = importlib.import_module(module_name)
        context = _context(module, seed, full, device, figure_dir, figures_wanted, progress, tuned)
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
            "captions": {f: context.captions.get(f, "") for f in figures},
            "figure_claims": {f: context.figure_claims.get(f, []) for f in figures},
            "tuning": jsonable(result.tuning), "notes": dict(result.notes),
            "seconds": seconds, "cpu_seconds": cpu}


def seed_count(module: ModuleType, full: bool, seeds: int | None) -> int:
    """How many seeds an experiment runs: 1 if all its claims are deterministic, else --seeds or its default."""
    if all(claim.deterministic for claim in module.CLAIMS):
        return 1
    if seeds is not None:
        return seeds
    return getattr(module, "SEEDS_FULL", SEEDS_FULL) if full else getattr(module, "SEEDS_QUICK", SEEDS_QUICK)


def cost(module: ModuleType, what: str) -> float:
    """The experiment's estimated seconds for its tuning (``what="tune"``) or for one seed (``"run"``)."""
    return float(getattr(module, "COST", {}).get(what, 1.0))


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


class _Schedule:
    """The jobs in the order they start: every tuning first, then the ready run with the largest estimated cost (so
    the long ones do not finish last); an experiment's seeds only once its tuning is done."""

    def __init__(self, experiments: Sequence[ModuleType], plan: dict[str, list[int]], full: bool, device: str,
                 figure_dir: str):
        self.full, self.device, self.figure_dir = full, device, figure_dir
        self.waiting = {module.NAME: module for module in experiments if hasattr(module, "tune")}
        self.ready: list[tuple] = []
        self.tuned: dict[str, dict] = {}
        self.plan = plan
        for module in experiments:
            if module.NAME in self.waiting:
                self.ready.append((cost(module, "tune"), "tune", module))
            else:
                self._release(module)
        self.total = sum(cost(m, "tune") for m in self.waiting.values()) + sum(
            cost(m, "run") * len(plan[m.NAME]) for m in experiments)

    def _release(self, module: ModuleType) -> None:
        for i, seed in enumerate(self.plan[module.NAME]):
            self.ready.append((cost(module, "run"), "run", module, seed, i == 0))

    def tuning_done(self, module: ModuleType, tuned: dict) -> None:
        self.tuned[module.NAME] = tuned
        self._release(module)

    def next(self) -> tuple | None:
        if not self.ready:
            return None
        # tunings first (their seeds wait for them), then the longest runs
        self.ready.sort(key=lambda job: (job[1] != "tune", -job[0], job[2].NAME, job[3] if job[1] == "run" else -1))
        return self.ready.pop(0)

    def call(self, job: tuple) -> tuple[Callable, tuple]:
        module = job[2]
        if job[1] == "tune":
            return tune_job, (module.__name__, self.full, self.device)
        return run_job, (module.__name__, job[3], self.full, self.device, self.figure_dir, job[4], False,
                         self.tuned.get(module.NAME))


def _label(job: tuple) -> str:
    return f"{job[2].NAME} {'tuning' if job[1] == 'tune' else f'seed {job[3]}'}"


def _run_jobs(schedule: _Schedule, workers: int, progress: bool) -> tuple[dict, dict]:
    """Runs every job; returns ({(experiment, seed): run outcome}, {experiment: tuning outcome}).

    The progress bar counts estimated seconds of work (each experiment's ``COST``), so its remaining time is the
    work left at the pace measured so far, not a count of runs of very different lengths."""
    bar = tqdm(total=schedule.total, desc="descend lab", unit="s", disable=not progress, dynamic_ncols=True,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed} elapsed, about {remaining} left{postfix}")
    runs: dict[tuple[str, int], dict] = {}
    tunings: dict[str, dict] = {}

    def finished(job: tuple, outcome: dict) -> None:
        if job[1] == "tune":
            tunings[job[2].NAME] = outcome
            schedule.tuning_done(job[2], outcome["tuned"])
        else:
            runs[(job[2].NAME, job[3])] = outcome
        bar.set_postfix_str(f"{_label(job)} done", refresh=False)
        bar.update(min(job[0], bar.total - bar.n))

    try:
        if workers <= 1:
            while (job := schedule.next()) is not None:
                function, arguments = schedule.call(job)
                finished(job, function(*arguments))
            return runs, tunings
        pool = _executor(workers)
        try:
            pending: dict = {}
            while True:
                while len(pending) < workers and (job := schedule.next()) is not None:
                    function, arguments = schedule.call(job)
                    pending[pool.submit(function, *arguments)] = job
                if not pending:
                    break
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    finished(pending.pop(future), future.result())
        except BaseException:
            # interrupted, or a job failed: stop the other jobs now rather than waiting for them to finish
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
        return runs, tunings
    finally:
        bar.close()


# ---------------------------------------------------------------------------------------------------------------
# the lab


def run_lab(experiments: Sequence[ModuleType], out: Path, seed: int = 0, full: bool = False, device: str = "cpu",
            progress: bool = True, seeds: int | None = None, workers: int | None = None) -> dict[str, Any]:
    """Tunes each experiment that has a ``tune`` (once, on TUNING_SEED), runs each over its seeds (seed s = ``seed``
    + i) and writes ``out/index.html`` and ``out/results.json``.

    Jobs run in ``workers`` processes (default: 2, or 1 on a one-core machine) and are merged in a fixed order,
    so the same seed on the same machine gives the same ``results.json`` (apart from its ``meta`` section and the
    measured timings of the hardware claim). The report is built in a scratch folder beside ``out`` and moved
    into place only when complete; ``out`` must be new, empty, or a previous report (see ``check_out``).
    """
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
        schedule = _Schedule(experiments, plan, full, device, str(scratch))
        runs, tunings = _run_jobs(schedule, workers, progress)
        report = _assemble(experiments, plan, runs, tunings, seed, full, device)
        report["meta"]["total_seconds"] = round(time.perf_counter() - started, 1)
        report["meta"]["workers"] = workers
        write_report(report, scratch)
        _publish(scratch, out)
        return report
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


def _claim_entry(module: ModuleType, claim, runs: list[dict], seeds: list[int], tuned: dict) -> dict[str, Any]:
    first = runs[0]
    records = {**first["tuning"], **tuned}
    missing = [label for label in claim.compares if label not in records]
    if missing:
        raise RuntimeError(f"claim {claim.id} compares {missing}, which experiment {module.NAME} did not tune")
    entry = {"experiment": module.NAME, "kind": claim.kind, "source": claim.source, "quote": claim.quote,
             "beyond_course": claim.beyond_course, "statement": claim.statement, "measurement": claim.measurement,
             "criterion": claim.criterion, "threshold": claim.threshold, "direction": claim.direction,
             "scale": claim.scale, "range": list(claim.range), "seeds": seeds[:1] if claim.deterministic else seeds,
             **aggregate(claim, [r["effects"][claim.id] for r in runs],
                         {label: records[label] for label in claim.compares}),
             "figures": [f for f in first["figures"] if claim.id in first["figure_claims"].get(f, [])]}
    note = first["notes"].get(claim.id)
    if note:
        entry["reason"] = f"{entry['reason']}; {note}"
    return entry


def _assemble(experiments: Sequence[ModuleType], plan: dict[str, list[int]], outcomes: dict, tunings: dict,
              seed: int, full: bool, device: str) -> dict[str, Any]:
    claims, sections, seconds, cpu, tune_seconds = {}, {}, {}, {}, {}
    for module in experiments:
        runs = [outcomes[(module.NAME, s)] for s in plan[module.NAME]]
        first = runs[0]
        tuned = tunings.get(module.NAME, {}).get("tuned", {})
        for claim in module.CLAIMS:
            claims[claim.id] = _claim_entry(module, claim, runs, plan[module.NAME], tuned)
        sections[module.NAME] = {
            "title": module.TITLE, "claims": [claim.id for claim in module.CLAIMS], "seeds": plan[module.NAME],
            "summary": first["summary"], "summaries": [r["summary"] for r in runs],
            "numbers": first["numbers"], "numbers_per_seed": [r["numbers"] for r in runs[1:]],
            "tuning": {k: v for k, v in {**first["tuning"], **tuned}.items() if not k.startswith("_")},
            "figures": [{"file": f, "caption": first["captions"].get(f, ""), "claims": first["figure_claims"].get(f, []),
                         "kind": "interactive" if f.endswith(".plotly.json") else "image"} for f in first["figures"]],
        }
        seconds[module.NAME] = [round(r["seconds"], 2) for r in runs]
        cpu[module.NAME] = [round(r["cpu_seconds"], 2) for r in runs]
        if module.NAME in tunings:
            tune_seconds[module.NAME] = round(tunings[module.NAME]["cpu_seconds"], 2)
    counts = {verdict: sum(c["verdict"] == verdict for c in claims.values()) for verdict in VERDICTS}
    by_kind = {kind: {verdict: sum(c["verdict"] == verdict and c["kind"] == kind for c in claims.values())
                      for verdict in VERDICTS} for kind in KINDS}
    meta = {"torch": torch.__version__, "python": sys.version.split()[0],
            "machine": f"{platform.machine()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d %H:%M"),
            "seconds": seconds, "cpu_seconds": cpu, "tuning_cpu_seconds": tune_seconds,
            "cpu_seconds_total": round(sum(map(sum, cpu.values())) + sum(tune_seconds.values()), 1)}
    return {"settings": {"seed": seed, "mode": "full" if full else "quick", "device": device,
                         "tuning_seed": TUNING_SEED},
            "counts": counts, "counts_by_kind": by_kind, "claims": claims, "experiments": sections, "meta": meta}
