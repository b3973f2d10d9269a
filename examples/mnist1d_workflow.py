"""A practitioner's loop on MNIST-1D: find a learning rate, compare optimizers, watch the chosen one train.

    python examples/mnist1d_workflow.py [--out mnist1d-workflow] [--quick]

1. `descend.lr_find` runs a range test with Adam and suggests a learning rate.
2. `descend.compare` tunes SGD+Nesterov, Adam and Adafactor on a small budget and compares them over seeds.
3. `descend.Telemetry` records what each step of the best optimizer did while it trains for real.
Figures and tables go to --out. Runs in about a minute on 2 CPU cores; ``--quick`` (what the tests run) does
the same three things on a quarter of the data, one seed and fewer epochs, in a few seconds.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import descend  # noqa: E402
from descend.lab import data  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("mnist1d-workflow"))
    parser.add_argument("--quick", action="store_true", help="a smoke run: less data, one seed, fewer epochs")
    args = parser.parse_args(argv)
    examples, epochs, seeds, range_steps = (1000, 1, (0,), 40) if args.quick else (4000, 4, (0, 1), 100)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    torch.manual_seed(0)
    split = data.mnist1d(0, examples)  # generated offline by the mnist1d package
    train = DataLoader(TensorDataset(split.x_train, split.y_train), batch_size=128, shuffle=True,
                       generator=torch.Generator().manual_seed(0))
    val = DataLoader(TensorDataset(split.x_test, split.y_test), batch_size=1000)
    loss_fn = nn.functional.cross_entropy

    # 1. learning-rate range test
    result = descend.lr_find(data.cnn1d(), loss_fn, train, optimizer=descend.Adam, start=1e-6, end=1.0, steps=range_steps)
    result.plot().savefig(args.out / "lr_find.png", dpi=90, bbox_inches="tight")
    print(f"lr_find: {'suggestion ' if result.suggestion else ''}{result.verdict}")
    adam_lr = result.suggestion or 1e-3  # None when the curve is flat or too noisy: Adam's usual rate

    # 2. optimizer comparison
    comparison = descend.compare(
        data.cnn1d, loss_fn, train, val,
        {"SGD+Nesterov": (descend.SGD, dict(lr=0.1, momentum=0.9, nesterov=True)),
         "Adam": (descend.Adam, dict(lr=adam_lr)),
         "Adafactor": (descend.Adafactor, dict(lr=1e-2, relative_step=False))},
        epochs=epochs, budget_per_optimizer=2 if args.quick else 3, seeds=seeds)
    table = comparison.to_markdown()
    print(table)
    (args.out / "compare.md").write_text(table + "\n")
    comparison.plot().savefig(args.out / "compare.png", dpi=90, bbox_inches="tight")

    # 3. telemetry on the best optimizer of the comparison
    best = min(comparison.table(), key=lambda row: row["val_loss"])
    classes = {"SGD+Nesterov": (descend.SGD, dict(momentum=0.9, nesterov=True)), "Adam": (descend.Adam, {}),
               "Adafactor": (descend.Adafactor, dict(relative_step=False))}
    cls, kwargs = classes[best["optimizer"]]
    torch.manual_seed(0)
    model = data.cnn1d()
    optimizer = cls(model.parameters(), lr=best["lr"], **kwargs)
    with descend.Telemetry(optimizer, every=5, csv_path=args.out / "telemetry.csv") as telemetry:
        for _ in range(6 if not args.quick else 1):
            for x, y in train:
                optimizer.zero_grad()
                loss_fn(model(x), y).backward()
                optimizer.step()
    telemetry.plot().savefig(args.out / "telemetry.png", dpi=90, bbox_inches="tight")
    accuracy = data.evaluate(model, split.x_test, split.y_test)[1]
    last = telemetry.records[-1]
    print(f"{best['optimizer']} at lr {best['lr']:.2g}: test accuracy {accuracy:.3f}; last recorded step: "
          f"‖Δθ‖/‖θ‖ = {last['update_ratio']:.2e}, gradient norm {last['grad_norm']:.3f}")
    print(f"done in {time.perf_counter() - started:.0f} s; figures and tables in {args.out.resolve()}")


if __name__ == "__main__":
    main()
