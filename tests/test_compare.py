"""compare: the tuning budget is spent exactly, the best lr is picked, the table and profile are right."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import descend
from descend.__main__ import main
from descend.tools.compare import Comparison, Run, performance_profile


def loaders():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(128, 5, generator=generator)
    y = (x[:, 0] > 0).long()
    return DataLoader(TensorDataset(x, y), batch_size=32), DataLoader(TensorDataset(x[:64], y[:64]), batch_size=64)


def test_budget_accounting_and_the_best_lr():
    train, val = loaders()
    built = []

    def model_fn():
        built.append(1)
        return nn.Linear(5, 2)

    optimizers = {"sgd": (descend.SGD, {"lr": 0.1}), "adam": descend.Adam}
    result = descend.compare(model_fn, nn.functional.cross_entropy, train, val, optimizers, epochs=2,
                             budget_per_optimizer=3, seeds=(0, 1), progress=False)
    assert len(built) == 2 * (3 + 2) and result.runs_per_optimizer == {"sgd": 5, "adam": 5}
    assert len(result.tuning) == 6 and len(result.final) == 4
    assert sorted({r.lr for r in result.tuning if r.optimizer == "sgd"}) == pytest.approx([0.01, 0.1, 1.0])
    for name in optimizers:
        tried = [r for r in result.tuning if r.optimizer == name]
        assert result.best_lr[name] == min(tried, key=lambda r: r.val_loss).lr
    rows = {row["optimizer"]: row for row in result.table()}
    assert rows["adam"]["state_bytes"] == 2 * 4 * (5 * 2 + 2) and rows["sgd"]["state_bytes"] == 0  # no momentum
    assert all(0 <= row["val_accuracy"] <= 1 and row["seeds"] == 2 for row in rows.values())
    assert any(row["reached_target"] > 0 and row["time_to_target_s"] > 0 for row in rows.values())
    assert "| optimizer |" in result.to_markdown() and result.plot().axes


def run(name, losses, seconds, val_loss):
    return Run(name, 0.1, 0, losses, seconds, losses[-1], val_loss, None, None, 0)


def test_time_to_target_and_performance_profile():
    fast = run("a", [1.0, 0.4, 0.2], [1.0, 2.0, 3.0], 0.2)
    slow = run("b", [1.0, 0.8, 0.3], [1.0, 2.0, 3.0], 0.4)
    assert fast.time_to(0.5) == 2.0 and slow.time_to(0.5) == 3.0 and slow.time_to(0.1) == math.inf
    task1 = Comparison([], [fast, slow], {"a": 0.1, "b": 0.1}, target_loss=0.5)
    task2 = Comparison([], [run("a", [0.5], [1.0], 0.9), run("b", [0.5], [1.0], 0.3)], {"a": 0.1, "b": 0.1}, 0.5)
    profile = performance_profile({"t1": task1, "t2": task2}, taus=[1.0, 2.0, 3.0])
    assert profile["a"] == [0.5, 0.5, 1.0]  # best on t1; 3× the best on t2
    assert profile["b"] == [0.5, 1.0, 1.0]  # 2× the best on t1; best on t2


def test_bad_input():
    train, val = loaders()
    with pytest.raises(ValueError, match="no trainable parameters"):
        descend.compare(lambda: nn.Linear(5, 2).requires_grad_(False), nn.functional.cross_entropy, train, val,
                        {"sgd": descend.SGD}, progress=False)
    with pytest.raises(ValueError, match="yielded nothing"):
        descend.compare(lambda: nn.Linear(5, 2), nn.functional.cross_entropy, [], val, {"sgd": descend.SGD},
                        progress=False)
    with pytest.raises(ValueError, match="budget"):
        descend.compare(lambda: nn.Linear(5, 2), nn.functional.cross_entropy, train, val, {"sgd": descend.SGD},
                        budget_per_optimizer=0, progress=False)


def test_command_line(tmp_path, capsys):
    assert main(["compare", "--task", "digits-mlp", "--optimizers", "sgd,adam", "--epochs", "1", "--budget", "1",
                 "--seeds", "0", "--out", str(tmp_path), "--no-progress"]) == 0
    assert "| adam |" in capsys.readouterr().out
    assert (tmp_path / "digits-mlp.md").exists() and (tmp_path / "profile.png").exists()
    assert main(["compare", "--optimizers", "sgd,lion", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "unknown optimizer lion" in capsys.readouterr().err


def diverging_loss(output, target):
    return nn.functional.cross_entropy(output, target) * float("nan")


def test_a_diverged_run_never_reaches_a_target_and_a_task_all_lost_counts_as_lost_for_all():
    train, val = loaders()
    everything_diverges = descend.compare(lambda: nn.Linear(5, 2), diverging_loss, train, val,
                                          {"sgd": descend.SGD, "adam": descend.Adam}, epochs=1,
                                          budget_per_optimizer=1, seeds=(0, 1), progress=False)
    assert not math.isfinite(everything_diverges.target_loss)
    for row in everything_diverges.table():
        assert row["reached_target"] == 0 and row["time_to_target_s"] is None and row["val_loss"] == math.inf
        assert row["val_loss_std"] is None  # no spread of values that are not numbers
    assert "no run reached a finite training loss" in everything_diverges.to_markdown()
    assert everything_diverges.plot().axes
    assert run("a", [math.inf], [1.0], math.inf).time_to(math.inf) == math.inf
    assert run("a", [math.nan, 0.1], [1.0, 2.0], 0.1).time_to(0.5) == 2.0
    normal = Comparison([], [run("sgd", [0.5], [1.0], 0.2), run("adam", [0.5], [1.0], 0.4)],
                        {"sgd": 0.1, "adam": 0.1}, 0.5)
    profile = performance_profile({"lost": everything_diverges, "normal": normal}, taus=[1.0, 2.0])
    assert profile["sgd"] == [0.5, 0.5] and profile["adam"] == [0.0, 0.5]
    assert performance_profile({"lost": everything_diverges}, taus=[1.0, 100.0]) == {
        "tau": [1.0, 100.0], "adam": [0.0, 0.0], "sgd": [0.0, 0.0]}


def test_a_zero_loss_is_the_best_on_its_task():
    perfect = Comparison([], [run("a", [0.0], [1.0], 0.0), run("b", [0.5], [1.0], 0.5)], {"a": 0.1, "b": 0.1}, 0.5)
    assert performance_profile({"t": perfect}, taus=[1.0, 10.0]) == {"tau": [1.0, 10.0], "a": [1.0, 1.0],
                                                                     "b": [0.0, 0.0]}


@pytest.fixture
def quick_compare(monkeypatch):
    """`descend compare` with compare() replaced by a fake that answers at once (different numbers on
    every call) and interrupts the call numbered in `interrupt_at`, as Ctrl-C would."""
    import descend.tools.compare as compare_module
    import descend.tools.train as train_module

    calls = {"count": 0, "interrupt_at": None}

    def fake_compare(model_fn, loss_fn, train, val, optimizers, **kwargs):
        calls["count"] += 1
        if calls["count"] == calls["interrupt_at"]:
            raise KeyboardInterrupt
        loss = 1.0 / calls["count"]
        return Comparison([], [run(name, [loss], [1.0], loss) for name in optimizers], dict.fromkeys(optimizers, 0.1),
                          target_loss=loss)

    monkeypatch.setattr(compare_module, "compare", fake_compare)
    monkeypatch.setattr(train_module, "make_task", lambda name, seed=0: (None, loaders_split()))
    return calls


def loaders_split():
    from types import SimpleNamespace

    x, y = torch.zeros(4, 5), torch.zeros(4, dtype=torch.long)
    return SimpleNamespace(x_train=x, y_train=y, x_test=x, y_test=y)


def compare_cli(out, tasks="digits-mlp,mnist1d-cnn"):
    return main(["compare", "--task", tasks, "--optimizers", "sgd,adam", "--out", str(out), "--no-progress"])


def contents(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_compare_interrupted_in_its_second_task_leaves_the_previous_folder_as_it_was(tmp_path, quick_compare, capsys):
    out = tmp_path / "compare"
    assert compare_cli(out) == 0
    before = contents(out)
    assert {"digits-mlp.md", "digits-mlp-curves.png", "mnist1d-cnn.md", "profile.png", ".descend-report"} <= set(before)
    quick_compare["interrupt_at"] = quick_compare["count"] + 2  # Ctrl-C during the second task
    assert compare_cli(out) == 130
    assert contents(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["compare"]  # no scratch left
    assert "no report was written" in capsys.readouterr().err
    quick_compare["interrupt_at"] = None
    assert compare_cli(out, tasks="mnist1d-cnn") == 0  # a finished run replaces the previous one whole
    assert "digits-mlp.md" not in contents(out) and contents(out)["mnist1d-cnn.md"] != before["mnist1d-cnn.md"]


def test_compare_never_writes_over_what_descend_did_not_write(tmp_path, quick_compare, capsys):
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.md").write_text("mine")
    assert compare_cli(project) == 2
    error = capsys.readouterr().err
    assert "not empty" in error and error.count("\n") == 1 and quick_compare["count"] == 0  # refused before training
    out = tmp_path / "compare"
    assert compare_cli(out) == 0
    (out / "digits-mlp.md").write_text("edited by hand")  # a file descend wrote: still descend's to replace
    (out / "keep.txt").write_text("mine")
    assert compare_cli(out) == 2 and "keep.txt" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine" and (project / "notes.md").read_text() == "mine"
