"""DDP, ZeroRedundancyOptimizer and FSDP2 with two gloo processes on the CPU, against one process."""
from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import descend
import distributed_worker as w

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch without distributed support")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ranks")
    mp.spawn(w.worker, args=(2, free_port(), str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank{rank}.pt") for rank in range(2)]


def one_process(name: str, frozen: bool = False, norm: bool = False):
    """The parameters after training in one process (and the last gradient norm, with ``norm``)."""
    cls, kwargs = w.OPTIMIZERS[name]
    model = w.make_model()
    optimizer = cls(model.parameters(), **kwargs)
    w.train(model, optimizer, rank=0, world=1, frozen=model[0].weight if frozen else None)
    return (w.full_params(model), optimizer.last_grad_norm) if norm else w.full_params(model)


def assert_same(got, want, tolerance=1e-6):
    for g, x in zip(got, want):
        torch.testing.assert_close(g, x, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("name", list(w.OPTIMIZERS))
def test_ddp_two_ranks_equal_one_process_with_the_global_batch(two_ranks, name):
    rank0, rank1 = (r[f"ddp-{name}"] for r in two_ranks)
    assert all(torch.equal(a, b) for a, b in zip(rank0, rank1)), "ranks diverged"
    assert_same(rank0, one_process(name))
    assert not all(torch.equal(a, b) for a, b in zip(rank0, w.full_params(w.make_model())))


def test_sam_local_perturbation_keeps_ranks_identical_and_differs_from_global(two_ranks):
    rank0, rank1 = (r["ddp-SAM-local"] for r in two_ranks)
    assert all(torch.equal(a, b) for a, b in zip(rank0, rank1))
    assert not all(torch.allclose(a, b, atol=1e-7) for a, b in zip(rank0, two_ranks[0]["ddp-SAM"]))


def test_zero_redundancy_optimizer_shards_state_and_resumes_exactly(two_ranks):
    shares = [r["zero-local-state-params"] for r in two_ranks]  # ZeRO balances the 4 tensors by size
    assert sum(shares) == 4 and min(shares) >= 1
    rank0, rank1 = (r["zero-Adam"] for r in two_ranks)
    assert all(torch.equal(a, b) for a, b in zip(rank0, rank1))
    assert_same(rank0, one_process("Adam"))


@pytest.mark.parametrize("name", ["SGD", "Adam", "Adafactor"])
def test_fsdp2_sharded_run_equals_unsharded(two_ranks, name):
    rank0, rank1 = (r[f"fsdp-{name}"] for r in two_ranks)
    assert all(torch.equal(a, b) for a, b in zip(rank0, rank1))
    assert_same(rank0, one_process(name), tolerance=2e-6)


def test_fsdp2_keeps_8bit_state_per_shard_and_equals_unsharded(two_ranks):
    """Each rank's shard of a matrix is a whole number of blocks: its codes (a DTensor, like the parameter)
    and its scales (this rank's blocks) update as the unsharded tensor's do."""
    for r in two_ranks:
        assert r["fsdp-AdamW-8bit-state"]["exp_avg"] == ("DTensor", "torch.uint8", (1024, 8))
        assert r["fsdp-AdamW-8bit-state"]["exp_avg_absmax"] == ("Tensor", "torch.float32", (32,))
        assert r["fsdp-AdamW-8bit-resumed-state"] == r["fsdp-AdamW-8bit-state"]  # loaded back as it was saved
        assert r["fsdp-AdamW-8bit-resumed-equal"]
    rank0, rank1 = (r["fsdp-AdamW-8bit"] for r in two_ranks)
    assert all(torch.equal(a, b) for a, b in zip(rank0, rank1))
    model = w.make_eightbit_model()
    optimizer = descend.AdamW(model.parameters(), lr=0.01, state_dtype="8bit")
    w.train(model, optimizer, rank=0, world=1)
    assert optimizer.state[model[0].weight]["exp_avg"].dtype == torch.uint8
    # the gradients' sums are rounded otherwise across ranks: a moment may take the next code (rarely), which
    # moves its element by a fraction of the step
    difference = torch.cat([(a - b).abs().reshape(-1) for a, b in zip(rank0, w.full_params(model))])
    assert (difference <= 2e-6).double().mean() >= 0.999 and difference.max() <= 1e-3


@pytest.mark.parametrize("setting", ["ddp", "zero", "fsdp"])
@pytest.mark.parametrize("name", w.CLIPPED)
def test_clipping_by_the_global_norm_across_ranks_equals_one_process(two_ranks, name, setting):
    """DDP: every rank holds the whole averaged gradient; ZeRO: each rank's optimizer a share of the
    parameters; FSDP2: a shard of each.  The norm is of all of the gradient either way, and every step clips."""
    (rank0, norm0), (rank1, norm1) = ((r[f"{setting}-{name}"], r[f"{setting}-{name}-norm"]) for r in two_ranks)
    assert all(torch.equal(a, b) for a, b in zip(rank0, rank1)), "ranks diverged"
    params, norm = one_process(name, norm=True)
    assert norm > w.OPTIMIZERS[name][1]["max_grad_norm"], "the last step did not clip"
    assert torch.equal(norm0, norm1)
    torch.testing.assert_close(norm0, norm, rtol=1e-6, atol=0)
    assert_same(rank0, params, tolerance=2e-6)


def test_zero_rank_whose_share_has_no_gradient_still_adds_up_the_norm(two_ranks):
    rank0, rank1 = (r["zero-frozen-clip"] for r in two_ranks)
    assert all(torch.equal(a, b) for a, b in zip(rank0, rank1))
    assert_same(rank0, one_process("AdamW-clip", frozen=True))


def test_fsdp2_muon_orthogonalises_each_matrix_on_one_rank_and_equals_unsharded(two_ranks):
    """MuonWithAuxAdamW under fully_shard: bit for bit the unsharded optimizer fed the same gradients, and no
    matrix gathered whole to every rank (each u goes to its owner and back)."""
    for r in two_ranks:
        assert all(torch.equal(a, b) for a, b in zip(r["fsdp-Muon"], r["fsdp-Muon-unsharded"]))
        assert r["fsdp-Muon-gathered-whole"] == []
    assert all(torch.equal(a, b) for a, b in zip(two_ranks[0]["fsdp-Muon"], two_ranks[1]["fsdp-Muon"]))
    assert not any(torch.equal(a, b) for a, b in zip(two_ranks[0]["fsdp-Muon"], two_ranks[0]["fsdp-Muon-initial"]))


def test_fsdp2_ranks_agree_on_a_nonfinite_gradient_in_one_shard(two_ranks):
    assert [r["fsdp-nan-raise"] for r in two_ranks] == ["raised", "raised"]
    assert [r["fsdp-nan-skip"] for r in two_ranks] == ["stepped, skipped 1", "stepped, skipped 1"]


def test_zero_redundancy_ranks_agree_on_a_nonfinite_gradient_only_one_rank_holds(two_ranks):
    """ZeRO gives each rank's optimizer its share of the parameters: a NaN in rank 0's share must make
    both ranks skip (nothing half-applied) or both raise (no rank left waiting in ZeRO's broadcast)."""
    assert [r["zero-nan-skip"] for r in two_ranks] == ["stepped, skipped 1, unchanged True"] * 2
    assert [r["zero-nan-raise"] for r in two_ranks] == ["raised", "raised"]


def test_torchrun_two_processes_match_one(tmp_path):
    """The README's command: `torchrun --nproc_per_node=2 -m descend train ...` equals one process."""
    import re
    import subprocess
    import sys

    arguments = ["-m", "descend", "train", "--task", "digits-mlp", "--optimizer", "adam", "--steps", "40"]
    single = subprocess.run([sys.executable, *arguments], capture_output=True, text=True, timeout=300)
    double = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                             f"--master_port={free_port()}", *arguments], capture_output=True, text=True, timeout=300)
    assert single.returncode == 0 and double.returncode == 0, single.stderr + double.stderr
    loss = lambda out: float(re.search(r"train loss ([0-9.]+)", out).group(1))  # noqa: E731
    assert "on 2 process(es)" in double.stdout and "identical on all ranks: True" in double.stdout
    assert loss(double.stdout) == pytest.approx(loss(single.stdout), abs=2e-4)
