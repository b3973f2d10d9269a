"""benchmarks/gpu_check.sh, the one script a lent GPU machine runs, works end to end before it first meets a
GPU: its smoke mode runs every step of it on the CPU, the Triton kernels in the interpreter, on tiny sizes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="triton is not installed (pip install descend[gpu])")
ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_check_runs_end_to_end_in_smoke_mode(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable)
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--smoke", "--budget", "240"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check_smoke.json").read_text())
    assert report["smoke"] and report["kernels"] and report["speed"]
    assert all(r["status"] == "ok" for r in report["kernels"]), report["kernels"]
    assert {r["name"] for r in report["speed"]} >= {"AdamW", "Adam", "SGD momentum", "Lion", "NAdam", "RAdam",
                                                    "Adafactor", "AdamW 8-bit"}
    assert all(r["status"] == "ok" for r in report["speed"])
    table = (tmp_path / "gpu_check_smoke.md").read_text()
    assert "## Kernels against the reference chain" in table and "## Step time" in table


def test_the_gpu_check_refuses_to_run_without_a_gpu_unless_told_to_smoke(tmp_path):
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) != "" and _has_cuda():
        pytest.skip("this machine has a GPU")
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable)
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "no CUDA device" in done.stderr
    assert not list(tmp_path.glob("gpu_check*"))


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()
