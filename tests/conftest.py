"""Shared fixtures.  Shared model builders live in ``builders.py``, the golden comparison in
``golden.py``; both are imported as top-level modules (pytest's default import mode puts this
``tests/`` folder on ``sys.path``), so nothing here edits ``sys.path``."""

from __future__ import annotations

from pathlib import Path

import pytest
from builders import SAMPLES


@pytest.fixture(params=["vgg_style.onnx", "resnet_style.onnx"])
def sample_model(request) -> Path:
    return SAMPLES / request.param
