"""benchmarks/: the --smoke modes run (tiny run counts; no timing is asserted).

The scripts run as ``python benchmarks/x.py`` from any folder: convtool comes from the installed
package (``pip install -e .``), a sibling module such as ``realmodels`` from the script's folder;
nothing edits ``sys.path`` (tests/test_imports.py checks).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(script: str, *args: str, cwd: Path = ROOT) -> str:
    # this checkout's convtool, not whichever one is pip-installed (as pytest's own pythonpath does)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--smoke", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_layouts_smoke(tmp_path):
    out = run_benchmark("layouts.py", cwd=tmp_path)  # from another folder: nothing relies on the working directory
    assert "| C | S | r | layout |" in out
    for layout in ("multiplier", "repeat", "branches", "pointwise_first"):
        assert f"| {layout} |" in out
    assert "of MAC speedup" in out


def test_speed_smoke(tmp_path):
    out = run_benchmark("speed.py", "--cache-dir", str(tmp_path))
    assert "| resnet_style | original |" in out
    assert "--latency-aware" in out and "speedup" in out


@pytest.mark.slow
def test_models_smoke():
    out = run_benchmark("models.py")
    assert "| yolov8n |" in out or "skipped:" in out


@pytest.mark.slow
def test_accuracy_real_model_smoke():
    out = run_benchmark("accuracy.py", "--real", "ppocr_rec", "--budgets", "0.1", "--calibration-samples", "4",
                        "--eval-samples", "2")
    assert "| max-drift 0.1 | refit |" in out and "task agreement" in out


def test_convert_time_smoke():
    out = run_benchmark("convert_time.py")
    assert "| vgg_style |" in out and "vs floor" in out


def test_accuracy_smoke():
    # the pointwise refit: the data-aware one inside a --max-drift search takes a minute here, and
    # its own tests are tests/test_search_calibrate*.py
    out = run_benchmark("accuracy.py", "--refit", "pointwise")
    assert "top-1" in out and "| refit |" in out and "--refit pointwise" in out


def test_latency_ab_smoke():
    out = run_benchmark("latency_ab.py")
    assert "A/A" in out


def test_timing_calibration_smoke():
    out = run_benchmark("timing_calibration.py")
    assert "| threads | pair | protocol | long-run speedup | 95% CI covers it |" in out
    assert "| 1 | A/B | report |" in out and "| 1 | A/A | one pair, 6 runs |" in out


def test_int8_smoke(tmp_path):
    out = run_benchmark("int8.py", cwd=tmp_path)
    for variant in ("fp32 original", "INT8 original", "convtool fp32", "convtool+INT8", "convtool+EQ+INT8"):
        assert f"| {variant} " in out
    assert "equalization off/on" in out and "| conv2 " in out
    assert "Collecting tensor data" not in out  # onnxruntime's calibrator prints are not passed on
    assert max(len(line) for line in out.splitlines() if line.startswith("|")) <= 80


@pytest.mark.slow
def test_int8_real_model_smoke():
    out = run_benchmark("int8.py", "--models", "yolov8n")
    assert "| INT8 original " in out or "skipped:" in out


@pytest.mark.slow
def test_search_real_smoke(tmp_path):
    svg = tmp_path / "sweep.svg"
    out = run_benchmark("search_real.py", "--sweep", "--sweep-out", str(svg), cwd=tmp_path)
    if "skipped:" in out:
        return
    for model in ("yolov8n", "ppocr_det"):
        assert f"### {model}: `--max-drift` search" in out
    assert "| 0.03 | cold |" in out and "| 0.03 | warm |" in out and "| 0.05 | cold |" in out
    assert "| **search total** |" in out and "speedup (95% CI)" in out
    assert "`convtool sweep`" in out and svg.read_text().startswith("<svg")
