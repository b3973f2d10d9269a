"""``descend train``: one of the lab's tasks with any descend optimizer, on one process or under torchrun.

    descend train --task digits-mlp --optimizer adam --steps 300
    torchrun --nproc_per_node=2 -m descend train --task digits-mlp --optimizer sam

Under torchrun (the environment holds WORLD_SIZE > 1) the processes join a gloo process group,
the model is wrapped in DistributedDataParallel, and each rank takes its slice of every global
batch, so the run matches a single process with the same global batch.
"""
from __future__ import annotations

import argparse
import gc
import math
import os
import time

import torch
from torch import nn

import descend

# name: (class, fixed keyword arguments, usual learning rate); shared by `descend train` and `descend compare`
OPTIMIZERS = {
    "sgd": (descend.SGD, dict(momentum=0.9, nesterov=True), 0.1),
    "adagrad": (descend.Adagrad, {}, 0.05),
    "rmsprop": (descend.RMSprop, {}, 1e-3),
    "adadelta": (descend.Adadelta, {}, 1.0),
    "adam": (descend.Adam, {}, 1e-3),
    "adamw": (descend.AdamW, {}, 1e-3),
    "adafactor": (descend.Adafactor, dict(relative_step=False), 1e-2),
    "sam": (descend.SAM, dict(base_optimizer=descend.SGD, momentum=0.9), 0.05),
}
TASKS = ("digits-mlp", "mnist1d-cnn")


def make_optimizer(name: str, params, lr: float | None = None) -> torch.optim.Optimizer:
    cls, kwargs, usual = OPTIMIZERS[name]
    return cls(params, lr=usual if lr is None else lr, **kwargs)


def make_task(name: str, seed: int = 0):
    """(a function building a fresh model, the data split) of a built-in task."""
    from ..lab import data

    if name == "digits-mlp":
        return (lambda: data.mlp(64, 128, 10, depth=2)), data.digits(seed)
    if name == "mnist1d-cnn":
        return data.cnn1d, data.mnist1d(seed)
    raise ValueError(f"unknown task {name!r}; the tasks are {', '.join(TASKS)}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", choices=TASKS, default="digits-mlp")
    parser.add_argument("--optimizer", choices=list(OPTIMIZERS), default="adam")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: the optimizer's usual one)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64, help="the global batch, split over the processes")
    parser.add_argument("--seed", type=int, default=0)


def check_arguments(args: argparse.Namespace) -> None:
    """``ValueError`` (one line for the command line) for a number no run can use."""
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        raise ValueError(f"--lr must be a number > 0, got {args.lr:g}")
    for option, value in (("--steps", args.steps), ("--batch-size", args.batch_size)):
        if value < 1:
            raise ValueError(f"{option} must be at least 1, got {value}")


def run(args: argparse.Namespace) -> dict:
    from ..lab import data

    check_arguments(args)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if args.batch_size % world:
        raise ValueError(f"--batch-size {args.batch_size} must be divisible by the {world} processes")
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("gloo")
    torch.manual_seed(args.seed)
    make_model, split = make_task(args.task, args.seed)
    model = make_model()
    if world > 1:
        model = nn.parallel.DistributedDataParallel(model)
    optimizer = make_optimizer(args.optimizer, model.parameters(), args.lr)
    share = args.batch_size // world
    generator = torch.Generator().manual_seed(args.seed)  # the same global batches on every rank
    n = len(split.y_train)
    started = time.perf_counter()
    for step in range(args.steps):
        index = torch.randint(0, n, (args.batch_size,), generator=generator)[rank * share:(rank + 1) * share]
        loss = optimizer.step(data.cross_entropy_closure(model, optimizer, split.x_train[index], split.y_train[index]))
        if rank == 0 and (step + 1) % max(1, args.steps // 5) == 0:
            print(f"step {step + 1:5d}  loss {float(loss.detach()):.4f}", flush=True)
    module = model.module if world > 1 else model
    train_loss, _ = data.evaluate(module, split.x_train, split.y_train)
    test_loss, test_accuracy = data.evaluate(module, split.x_test, split.y_test)
    checksum = torch.cat([p.detach().flatten() for p in module.parameters()]).double().sum()
    identical = True
    if world > 1:
        import torch.distributed as dist

        sums = [torch.zeros_like(checksum) for _ in range(world)]
        dist.all_gather(sums, checksum)
        identical = all(torch.equal(s, sums[0]) for s in sums)
        # DDP holds the process group and threads of its own: free it before the group goes away
        del model, optimizer, module
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()
    result = {"processes": world, "train_loss": train_loss, "test_loss": test_loss, "test_accuracy": test_accuracy,
              "seconds": time.perf_counter() - started, "replicas_identical": identical}
    if rank == 0:
        print(f"{args.task} with {args.optimizer} on {world} process(es): train loss {train_loss:.4f}, test "
              f"accuracy {test_accuracy:.3f}, {result['seconds']:.1f} s; parameters identical on all ranks: "
              f"{identical}", flush=True)
    return result
