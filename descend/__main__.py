"""Command line: ``descend lab`` (also ``python -m descend lab``), ``descend playground``."""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from .output import OutputError, check_out, scratch_for


class CommandError(Exception):
    """A problem with what the user asked for: reported in one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse's parser with its errors (an unknown option, ``--seed abc``) in descend's one-line form."""

    def error(self, message: str):
        raise CommandError(f"{message} (`{self.prog} --help` lists the options)")


MAX_SEED = 2**32 - 1  # scikit-learn and numpy take seeds in [0, 2**32 - 1] (torch takes more)


def check_seeds(option: str, first: int, count: int = 1) -> None:
    """The one rule for the seeds of every subcommand: a run with seeds ``first … first + count − 1``
    may start only if each is a whole number every library it seeds takes; else CommandError."""
    rule = f"a seed is a whole number in [0, {MAX_SEED}]"
    if isinstance(first, bool) or not isinstance(first, int) or not 0 <= first <= MAX_SEED:
        raise CommandError(f"{option} {first}: {rule}")
    last = first + count - 1
    if last > MAX_SEED:
        raise CommandError(f"{option} {first} with {count} seeds uses the seeds {first} … {last}; {rule}")


def _lab(args: argparse.Namespace) -> int:
    from .lab import CLAIMS, EXPERIMENTS, run_lab
    from .lab.runner import seed_count

    if args.list:
        for name, module in EXPERIMENTS.items():
            print(f"{name:22s} {module.TITLE}")
            for claim in module.CLAIMS:
                print(f"    {claim.id:40s} {claim.source}")
        return 0
    if args.seeds is not None and args.seeds < 1:
        raise CommandError(f"--seeds {args.seeds}: need at least 1 seed")
    if args.workers is not None and args.workers < 1:
        raise CommandError(f"--workers {args.workers}: need at least 1 worker")
    names = list(EXPERIMENTS)
    if args.only is not None:
        asked = [n.strip() for n in args.only.split(",") if n.strip()]
        if not asked:
            raise CommandError(f"--only {args.only!r} names no experiment; `descend lab --list` shows the names")
        unknown = [n for n in asked if n not in EXPERIMENTS and n not in CLAIMS]
        if unknown:
            raise CommandError(f"unknown experiment or claim {', '.join(unknown)}; `descend lab --list` shows the names")
        wanted = {n if n in EXPERIMENTS else next(e for e, m in EXPERIMENTS.items() if n in {c.id for c in m.CLAIMS})
                  for n in asked}
        names = [n for n in EXPERIMENTS if n in wanted]
    check_seeds("--seed", args.seed, max(seed_count(EXPERIMENTS[n], args.full, args.seeds) for n in names))
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise CommandError("--device cuda: no CUDA GPU is available here")
    out = Path(args.out)
    try:
        check_out(out.absolute())
        out.absolute().parent.mkdir(parents=True, exist_ok=True)
        os.rmdir(tempfile.mkdtemp(prefix=".descend-probe-", dir=out.absolute().parent))
    except OutputError as error:
        raise CommandError(str(error)) from None
    except OSError as error:
        raise CommandError(f"cannot write the report to {out}: {error.strerror or error}") from None
    try:
        report = run_lab([EXPERIMENTS[n] for n in names], out, seed=args.seed, full=args.full, device=args.device,
                         progress=not args.no_progress, seeds=args.seeds, workers=args.workers)
    except OutputError as error:
        raise CommandError(str(error)) from None
    for claim_id, claim in report["claims"].items():
        from .lab.report import effect_text

        print(f"{claim['verdict']:12s}  {claim_id:42s} {effect_text(claim)}")
    counts = report["counts"]
    print(f"{counts['held']} held, {counts['did not hold']} did not hold, {counts['inconclusive']} inconclusive "
          f"({len(report['claims'])} claims, {len(names)} experiments) in {report['meta']['total_seconds']} s "
          f"({report['meta']['cpu_seconds_total']} CPU-seconds in the runs); report: {out.absolute() / 'index.html'}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from .tools.compare import compare, performance_profile, plot_profile
    from .tools.train import OPTIMIZERS, TASKS, make_task

    names = [n.strip() for n in args.optimizers.split(",") if n.strip()]
    if not names:
        raise CommandError(f"--optimizers {args.optimizers!r} names no optimizer; choose from {', '.join(OPTIMIZERS)}")
    unknown = [n for n in names if n not in OPTIMIZERS]
    if unknown:
        raise CommandError(f"unknown optimizer {', '.join(unknown)}; choose from {', '.join(OPTIMIZERS)}")
    seed_texts = [s.strip() for s in args.seeds.split(",") if s.strip()]
    if not seed_texts:
        raise CommandError(f"--seeds {args.seeds!r} names no seed")
    seeds = []
    for text in seed_texts:
        try:
            seeds.append(int(text))
        except ValueError:
            raise CommandError(f"--seeds {args.seeds!r}: {text!r} is not a whole number") from None
        check_seeds("--seeds", seeds[-1])
    task_names = [t.strip() for t in args.task.split(",") if t.strip()]
    if not task_names:
        raise CommandError(f"--task {args.task!r} names no task; the tasks are {', '.join(TASKS)}")
    try:
        tasks = {task: make_task(task) for task in task_names}
    except ValueError as error:
        raise CommandError(str(error)) from None
    for option, value in (("--epochs", args.epochs), ("--budget", args.budget)):
        if value < 1:
            raise CommandError(f"{option} must be at least 1, got {value}")
    out = Path(args.out)
    # written into a scratch folder beside --out, moved into place when every task is done (as descend lab)
    try:
        with scratch_for(out, "descend compare") as scratch:
            results = {}
            for task, (make_model, split) in tasks.items():
                generator = torch.Generator().manual_seed(0)
                train = DataLoader(TensorDataset(split.x_train, split.y_train), batch_size=64, shuffle=True,
                                   generator=generator)
                val = DataLoader(TensorDataset(split.x_test, split.y_test), batch_size=512)
                optimizers = {n: (OPTIMIZERS[n][0], {**OPTIMIZERS[n][1], "lr": OPTIMIZERS[n][2]}) for n in names}
                results[task] = comparison = compare(make_model, torch.nn.functional.cross_entropy, train, val,
                                                     optimizers, epochs=args.epochs, budget_per_optimizer=args.budget,
                                                     seeds=seeds, progress=not args.no_progress)
                table = comparison.to_markdown()
                print(f"\n## {task}\n\n{table}")
                (scratch / f"{task}.md").write_text(f"# {task}\n\n{table}\n")
                comparison.plot().savefig(scratch / f"{task}-curves.png", dpi=90, bbox_inches="tight")
            profile = performance_profile(results)
            plot_profile(profile).savefig(scratch / "profile.png", dpi=90, bbox_inches="tight")
    except OutputError as error:
        raise CommandError(str(error)) from None
    except OSError as error:
        raise CommandError(f"cannot write the tables and plots to {out}: {error.strerror or error}") from None
    print(f"\ntables and plots in {out.resolve()}")
    return 0


def _playground(args: argparse.Namespace) -> int:
    try:
        from .playground.server import PortInUse, is_loopback, serve
    except ImportError as error:
        raise CommandError(f"the playground needs {error.name}: pip install 'descend[playground]'") from None
    if not (0 <= args.port <= 65535):
        raise CommandError(f"--port must lie in [0, 65535], got {args.port}")
    if not is_loopback(args.host):
        print(f"descend: warning: --host {args.host} lets other machines on the network use the playground "
              "(and run optimizers on this one)", file=sys.stderr)
    try:
        serve(args.host, args.port, open_browser=not args.no_browser)
    except PortInUse as error:
        raise CommandError(str(error)) from None
    except OSError as error:
        raise CommandError(f"cannot listen on {args.host}:{args.port}: {error.strerror or error}") from None
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="descend", description="descend: optimizers and the lab that measures them")
    commands = parser.add_subparsers(dest="command", required=True)
    lab = commands.add_parser("lab", help="run the experiments and write an HTML report with figures")
    lab.add_argument("--list", action="store_true", help="list the experiments and exit")
    lab.add_argument("--only", metavar="NAME[,NAME]", help="run only these experiments")
    lab.add_argument("--out", default="report", help="report folder (default: ./report)")
    lab.add_argument("--seed", type=int, default=0, help="base seed: the runs use seed, seed+1, …")
    lab.add_argument("--seeds", type=int, help="seeds per experiment (default: 10 quick, 20 full)")
    lab.add_argument("--workers", type=int, help="worker processes (default: 2, or 1 on one core)")
    mode = lab.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", default=True, help="short runs (the default)")
    mode.add_argument("--full", action="store_true", help="longer runs and more seeds")
    lab.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    lab.add_argument("--no-progress", action="store_true", help="no progress bars")
    from .tools.train import add_arguments

    train = commands.add_parser("train", help="train a lab task; under torchrun, with DDP over the processes")
    add_arguments(train)
    comparison = commands.add_parser("compare", help="tune and compare optimizers on built-in tasks")
    comparison.add_argument("--task", default="digits-mlp", help="task[,task] (digits-mlp, mnist1d-cnn)")
    comparison.add_argument("--optimizers", default="sgd,adam,adafactor", help="names, comma-separated")
    comparison.add_argument("--epochs", type=int, default=3)
    comparison.add_argument("--budget", type=int, default=3, help="tuning runs per optimizer")
    comparison.add_argument("--seeds", default="0,1", help="seeds of the final runs, comma-separated")
    comparison.add_argument("--out", default="compare", help="folder for the table and plots")
    comparison.add_argument("--no-progress", action="store_true")
    playground = commands.add_parser("playground", help="a local web page: descend's optimizers on 2-D landscapes")
    playground.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    playground.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    playground.add_argument("--no-browser", action="store_true", help="do not open a browser")
    try:
        args = parser.parse_args(argv)
        if args.command == "compare":
            return _compare(args)
        if args.command == "playground":
            return _playground(args)
        if args.command == "train":
            from .tools.train import run

            check_seeds("--seed", args.seed)
            try:
                run(args)
            except ValueError as error:
                raise CommandError(str(error)) from None
            return 0
        return _lab(args)
    except CommandError as error:
        print(f"descend: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("descend: interrupted; no report was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
