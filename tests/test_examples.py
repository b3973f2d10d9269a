"""The examples run as documented."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_mnist1d_workflow_example(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "mnist1d_workflow.py"), "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "lr_find: suggestion" in result.stdout and "| Adam |" in result.stdout
    for name in ("lr_find.png", "compare.png", "compare.md", "telemetry.png", "telemetry.csv"):
        assert (tmp_path / name).stat().st_size > 100, name
