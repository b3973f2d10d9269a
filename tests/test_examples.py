"""The examples run as documented."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_mnist1d_workflow_example(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "mnist1d_workflow.py"), "--out", str(tmp_path),
                             "--quick"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "lr_find: suggestion" in result.stdout and "| Adam |" in result.stdout
    for name in ("lr_find.png", "compare.png", "compare.md", "telemetry.png", "telemetry.csv"):
        assert (tmp_path / name).stat().st_size > 100, name


def _readme_section(title):
    text = (ROOT / "README.md").read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end]


def test_own_step_example_gets_a_generated_kernel_and_lions_numbers():
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "own_step.py")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "[LionSign, ScaleByLearningRate, DecoupledWeightDecay] runs on a generated C kernel" in out
    assert "for (int64_t j = lo; j < hi; j++)" in out  # the generated loop was printed
    assert "fused kernel == reference chain: True" in out and "same as descend.Lion: True" in out


def test_readme_own_step_code_is_the_tested_example():
    section = _readme_section("Write your own step")
    block = section.split("```python\n")[1].split("```")[0]
    assert "class LionSign(descend.Elementwise)" in block
    assert block.strip() in (ROOT / "examples" / "own_step.py").read_text()


def test_own_reduction_example_gets_a_one_pass_kernel_with_a_row_tail_and_the_papers_numbers():
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "own_reduction.py")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "[CentralizeGradient, Momentum, ScaleByLearningRate] runs on a generated C kernel\n" in out  # one pass
    assert "its pass sums each row of u: row0[l] += (double)x" in out
    assert "then, at the row's end, its mean: T1[r] = (T0[r] / ((double)(M)));" in out
    assert "and the tail updates the row: P[j] = (float)(x" in out
    assert "generated kernel == reference chain: True" in out
    assert "same as torch.optim.SGD on centralized gradients: True" in out


def test_readme_own_reduction_code_is_the_tested_example():
    section = _readme_section("Steps that reduce")
    block = section.split("```python\n")[1].split("```")[0]
    assert "class CentralizeGradient(descend.Reduction)" in block
    assert block.strip() in (ROOT / "examples" / "own_reduction.py").read_text()
