"""The README's quick start is run for real, so the docs cannot rot."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
from builders import ROOT


def quick_start() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_quick_start_has_exactly_install_and_test_commands():
    install, test = quick_start()
    assert install.startswith('pip install -e ".[test]" && convtool convert sample_models/')
    assert test == "pytest"


def test_quick_start_convert_command_runs(tmp_path):
    install, _ = quick_start()
    convert = install.split("&&", 1)[1].split()
    assert convert[0] == "convtool"
    shutil.copytree(ROOT / "sample_models", tmp_path / "sample_models",
                    ignore=shutil.ignore_patterns("*.dws.onnx"))
    proc = subprocess.run([sys.executable, "-m", "convtool", *convert[1:]], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    model_arg = Path(convert[2])
    written = tmp_path / model_arg.with_name(model_arg.stem + ".dws.onnx")
    onnx.checker.check_model(onnx.load(written), full_check=True)
    assert "converted" in proc.stdout
