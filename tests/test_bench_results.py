"""``make bench`` rewrites its own sections of benchmarks/RESULTS.md and keeps every other benchmark's."""
from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _step_speed():
    spec = importlib.util.spec_from_file_location("step_speed", ROOT / "benchmarks" / "step_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_write_sections_replaces_its_own_and_keeps_the_others(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# Old header\n\n## Step time\n\nold table\n\n## 8-bit state\n\n| kept | table |\n\n"
                       "## GPU step time\n\nold gpu\n")
    write = _step_speed().write_sections
    write(results, "# New header", [("## Step time", ["new table"]), ("## SAM", ["sam rows"])])
    text = results.read_text()
    assert text.startswith("# New header\n") and "Old header" not in text
    assert "new table" in text and "old table" not in text
    assert "| kept | table |" in text and "old gpu" in text and "sam rows" in text
    assert text.index("## Step time") < text.index("## 8-bit state") < text.index("## GPU step time") < text.index(
        "## SAM")
    write(results, "", [("## GPU step time", ["new gpu"])])
    again = results.read_text()
    assert again.startswith("# New header\n") and "new gpu" in again and "old gpu" not in again
    assert "| kept | table |" in again and "new table" in again
