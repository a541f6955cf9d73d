from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/golden.py


@pytest.fixture(params=["vgg_style.onnx", "resnet_style.onnx"])
def sample_model(request) -> Path:
    return ROOT / "sample_models" / request.param
