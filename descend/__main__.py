"""Command line: ``descend lab`` (also ``python -m descend lab``)."""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path


class CommandError(Exception):
    """A problem with what the user asked for: reported in one line, exit status 2."""


def _lab(args: argparse.Namespace) -> int:
    from .lab import EXPERIMENTS, run_lab

    if args.list:
        for name, module in EXPERIMENTS.items():
            print(f"{name:20s} {module.TITLE}")
        return 0
    names = list(EXPERIMENTS)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in EXPERIMENTS]
        if unknown:
            raise CommandError(f"unknown experiment {', '.join(unknown)}; `descend lab --list` shows the names")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise CommandError("--device cuda: no CUDA GPU is available here")
    out = Path(args.out)
    try:
        if out.exists() and not out.is_dir():
            raise OSError("it is a file")
        out.resolve().parent.mkdir(parents=True, exist_ok=True)
        os.rmdir(tempfile.mkdtemp(prefix=".descend-probe-", dir=out.resolve().parent))
    except OSError as error:
        raise CommandError(f"cannot write the report to {out}: {error.strerror or error}") from None
    report = run_lab([EXPERIMENTS[n] for n in names], out, seed=args.seed, full=args.full, device=args.device,
                     progress=not args.no_progress)
    held = sum(e["held"] for e in report["experiments"].values())
    for name, result in report["experiments"].items():
        print(f"{'held        ' if result['held'] else 'did not hold'}  {name:20s} {result['seconds']:6.1f} s")
    print(f"{held} of {len(names)} claims held in {report['meta']['total_seconds']} s; "
          f"report: {out.resolve() / 'index.html'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="descend", description="descend: optimizers and the lab that measures them")
    commands = parser.add_subparsers(dest="command", required=True)
    lab = commands.add_parser("lab", help="run the experiments and write an HTML report with figures")
    lab.add_argument("--list", action="store_true", help="list the experiments and exit")
    lab.add_argument("--only", metavar="NAME[,NAME]", help="run only these experiments")
    lab.add_argument("--out", default="report", help="report folder (default: ./report)")
    lab.add_argument("--seed", type=int, default=0)
    mode = lab.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", default=True, help="short runs (the default)")
    mode.add_argument("--full", action="store_true", help="longer runs and more seeds")
    lab.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    lab.add_argument("--no-progress", action="store_true", help="no progress bars")
    from .train import add_arguments

    train = commands.add_parser("train", help="train a lab task; under torchrun, with DDP over the processes")
    add_arguments(train)
    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            from .train import run

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
