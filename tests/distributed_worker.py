"""What each of two gloo processes runs for tests/test_distributed.py; results go to files."""
from __future__ import annotations

import datetime
import gc
import os

import torch
import torch.distributed as dist
from torch import nn

import descend

STEPS = 6
GLOBAL_BATCH = 8
OPTIMIZERS = {
    "SGD": (descend.SGD, dict(lr=0.1, momentum=0.9)),
    "Adam": (descend.Adam, dict(lr=0.01)),
    "Adafactor": (descend.Adafactor, dict(beta1=0.9)),
    "SAM": (descend.SAM, dict(base_optimizer=descend.SGD, lr=0.1, momentum=0.9, rho=0.1)),
    # clipping by the global norm (the model's gradient norm is about 1.5 to 2: every step clips) and LAMB,
    # whose trust ratio reads norms of whole tensors
    "AdamW-clip": (descend.AdamW, dict(lr=0.01, max_grad_norm=0.5)),
    "LAMB-clip": (descend.LAMB, dict(lr=0.01, weight_decay=0.01, max_grad_norm=0.5)),
}
CLIPPED = ["AdamW-clip", "LAMB-clip"]


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 6), nn.Tanh(), nn.Linear(6, 4))


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    return torch.randn(GLOBAL_BATCH, 8, generator=g), torch.randn(GLOBAL_BATCH, 4, generator=g)


def train(model, optimizer, rank: int, world: int, steps: int = STEPS, first_step: int = 0, frozen=None,
          **step_kwargs):
    """``steps`` steps on this rank's share of each global batch; ``frozen``: a parameter whose gradient is
    dropped before each step."""
    share = GLOBAL_BATCH // world
    for step in range(first_step, first_step + steps):
        x, y = batch(step)
        x, y = x[rank * share:(rank + 1) * share], y[rank * share:(rank + 1) * share]

        def closure():
            optimizer.zero_grad()
            loss = ((model(x) - y) ** 2).mean()
            loss.backward()
            if frozen is not None:
                frozen.grad = None
            return loss

        optimizer.step(closure, **step_kwargs)


def make_eightbit_model() -> nn.Module:
    """Matrices whose shards (dim 0 over two ranks) are whole 8-bit blocks: 8,192 and 4,096 elements each."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 2048), nn.Tanh(), nn.Linear(2048, 4))


def eightbit_state(optimizer, param) -> dict:
    return {key: (type(value).__name__, str(value.dtype), tuple(getattr(value, "to_local", lambda: value)().shape))
            for key, value in optimizer.state[param].items()}


def make_muon_model() -> nn.Module:
    """Hidden matrices of 5, 6 and 6 rows: split 3 + 2 and 3 + 3 over two ranks."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 5), nn.Tanh(), nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 6), nn.Tanh(),
                         nn.Linear(6, 4))


def muon_optimizer(model: nn.Module):
    """Muon on the hidden matrices, AdamW on the rest (the head, the biases)."""
    return descend.MuonWithAuxAdamW(descend.muon_param_groups(model, muon=dict(lr=0.05, weight_decay=0.01),
                                                              adamw=dict(lr=0.01)))


def fsdp_muon(mesh, rank: int, world: int) -> dict:
    """MuonWithAuxAdamW on a sharded model, and beside it the same on an unsharded copy fed the same (gathered)
    gradients; the shapes of what was gathered whole on every rank (the owner scheme gathers nothing so)."""
    import descend.adapter.distributed as distributed
    from torch.distributed.fsdp import fully_shard

    model, twin = make_muon_model(), make_muon_model()
    fully_shard(model, mesh=mesh)
    optimizer, unsharded = muon_optimizer(model), muon_optimizer(twin)
    gathered, real_gather = [], distributed.gather
    distributed.gather = lambda tensor: gathered.append(tuple(tensor.shape)) or real_gather(tensor)
    try:
        share = GLOBAL_BATCH // world
        for step in range(STEPS):
            x, y = batch(step)
            optimizer.zero_grad()
            ((model(x[rank * share:(rank + 1) * share]) - y[rank * share:(rank + 1) * share]) ** 2).mean().backward()
            for p, q in zip(model.parameters(), twin.parameters()):
                q.grad = p.grad.full_tensor()
            optimizer.step()
            unsharded.step()
    finally:
        distributed.gather = real_gather
    return {"fsdp-Muon": full_params(model), "fsdp-Muon-unsharded": full_params(twin),
            "fsdp-Muon-gathered-whole": gathered, "fsdp-Muon-initial": full_params(make_muon_model())}


def full_params(model) -> list[torch.Tensor]:
    return [p.full_tensor().detach() if hasattr(p, "full_tensor") else p.detach().clone() for p in model.parameters()]


def worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    # a short timeout: a rank left waiting in a collective fails the test instead of hanging it
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60))
    torch.set_num_threads(1)
    results = scenarios(rank, world)
    torch.save(results, os.path.join(out, f"rank{rank}.pt"))
    # DDP, ZeRO and FSDP objects hold the process group: they are gone (scenarios returned) before it is
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


def scenarios(rank: int, world: int) -> dict:
    results = {}
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel

    for name, (cls, kwargs) in OPTIMIZERS.items():  # DDP
        model = DistributedDataParallel(make_model())
        optimizer = cls(model.parameters(), **kwargs)
        train(model, optimizer, rank, world)
        results[f"ddp-{name}"] = full_params(model.module)
        if name in CLIPPED:
            results[f"ddp-{name}-norm"] = optimizer.last_grad_norm

    model = DistributedDataParallel(make_model())  # SAM perturbing with each rank's local gradient
    optimizer = descend.SAM(model.parameters(), descend.SGD, lr=0.1, momentum=0.9, rho=0.1)
    train(model, optimizer, rank, world, first_pass=model.no_sync)
    results["ddp-SAM-local"] = full_params(model.module)

    model = DistributedDataParallel(make_model())  # ZeRO: sharded state, then a consolidate / load round trip
    optimizer = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=descend.Adam, lr=0.01)
    train(model, optimizer, rank, world, steps=3)
    optimizer.consolidate_state_dict(to=0)
    checkpoint = optimizer.state_dict() if rank == 0 else None
    results["zero-local-state-params"] = sum(len(s) > 0 for s in optimizer.optim.state.values())
    objects = [checkpoint]
    dist.broadcast_object_list(objects, src=0)
    resumed = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=descend.Adam, lr=0.01)
    resumed.load_state_dict(objects[0])
    train(model, resumed, rank, world, steps=STEPS - 3, first_step=3)
    results["zero-Adam"] = full_params(model.module)

    for name in CLIPPED:  # ZeRO: each rank's optimizer holds part of the parameters, so part of the norm
        cls, kwargs = OPTIMIZERS[name]
        model = DistributedDataParallel(make_model())
        optimizer = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=cls, **kwargs)
        train(model, optimizer, rank, world)
        results[f"zero-{name}"] = full_params(model.module)
        results[f"zero-{name}-norm"] = optimizer.optim.last_grad_norm

    # ZeRO, where one rank's share has no gradient (rank 0 holds the largest tensor alone): that rank still
    # takes its part in adding up the norm
    model = DistributedDataParallel(make_model())
    optimizer = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=descend.AdamW, lr=0.01, max_grad_norm=0.5)
    train(model, optimizer, rank, world, frozen=model.module[0].weight)
    results["zero-frozen-clip"] = full_params(model.module)

    mesh = init_device_mesh("cpu", (world,))  # FSDP2: DTensor parameters sharded on dim 0
    for name in ("SGD", "Adam", "Adafactor", *CLIPPED):
        cls, kwargs = OPTIMIZERS[name]
        model = make_model()
        fully_shard(model, mesh=mesh)
        optimizer = cls(model.parameters(), **kwargs)
        train(model, optimizer, rank, world)
        results[f"fsdp-{name}"] = full_params(model)
        if name in CLIPPED:
            results[f"fsdp-{name}-norm"] = optimizer.last_grad_norm

    results.update(fsdp_muon(mesh, rank, world))

    model = make_eightbit_model()  # 8-bit state: blocks of each rank's shard
    fully_shard(model, mesh=mesh)
    optimizer = descend.AdamW(model.parameters(), lr=0.01, state_dtype="8bit")
    train(model, optimizer, rank, world)
    results["fsdp-AdamW-8bit"] = full_params(model)
    results["fsdp-AdamW-8bit-state"] = eightbit_state(optimizer, model[0].weight)
    saved = optimizer.state_dict()  # a checkpoint of the shards, loaded back into a fresh optimizer
    resumed = descend.AdamW(model.parameters(), lr=0.01, state_dtype="8bit")
    resumed.load_state_dict(saved)
    results["fsdp-AdamW-8bit-resumed-equal"] = all(
        torch.equal(getattr(v, "to_local", lambda: v)(), getattr(optimizer.state[p][k], "to_local",
                                                                  lambda: optimizer.state[p][k])())
        for p in model.parameters() for k, v in resumed.state[p].items())
    results["fsdp-AdamW-8bit-resumed-state"] = eightbit_state(resumed, model[0].weight)

    for policy in ("raise", "skip"):  # a NaN in rank 0's shard only: every rank must decide alike
        model = make_model()
        fully_shard(model, mesh=mesh)
        optimizer = descend.Adam(model.parameters(), lr=0.01, nonfinite=policy)
        train(model, optimizer, rank, world, steps=1)
        x, y = batch(99)
        optimizer.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        if rank == 0:
            model[0].weight.grad.to_local().view(-1)[0] = float("nan")
        try:
            optimizer.step()
            results[f"fsdp-nan-{policy}"] = f"stepped, skipped {optimizer.skipped_steps}"
        except FloatingPointError:
            results[f"fsdp-nan-{policy}"] = "raised"

    for policy in ("skip", "raise"):  # ZeRO: the NaN is in a parameter only rank 0's optimizer holds
        model = DistributedDataParallel(make_model())
        optimizer = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=descend.Adam, lr=0.01,
                                            nonfinite=policy)
        train(model, optimizer, rank, world, steps=1)
        before = full_params(model.module)
        x, y = batch(99)
        optimizer.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        if rank == 0:
            optimizer.optim.param_groups[0]["params"][0].grad.view(-1)[0] = float("nan")
        try:
            optimizer.step()
            unchanged = all(torch.equal(a, b) for a, b in zip(before, full_params(model.module)))
            results[f"zero-nan-{policy}"] = f"stepped, skipped {optimizer.optim.skipped_steps}, unchanged {unchanged}"
        except FloatingPointError:
            results[f"zero-nan-{policy}"] = "raised"
    return results
