"""Loading model files for analysis with one-line :class:`~convtool.errors.ModelLoadError`\\ s.

Uses :func:`convtool.graph.io.load_model` (the converter's loader) when it is available, so
both commands reject bad files with the same messages; a small equivalent is kept here so the
analysis package does not depend on the conversion package being importable.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx

from convtool.errors import ModelLoadError

__all__ = ["load_model"]


def load_model(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """Load an ONNX model (external data included) or raise a one-line ModelLoadError."""
    try:
        from convtool.graph.io import load_model as graph_load
    except ImportError:  # pragma: no cover - the converter package is part of convtool
        graph_load = _load
    return graph_load(path)


def _load(path: str | os.PathLike[str]) -> onnx.ModelProto:
    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"{p}: no such file")
    if p.is_dir():
        raise ModelLoadError(f"{p}: is a directory, not an ONNX file")
    if p.stat().st_size == 0:
        raise ModelLoadError(f"{p}: file is empty")
    try:
        model = onnx.load(str(p))
    except FileNotFoundError as exc:
        raise ModelLoadError(f"{p}: external data file missing ({exc.filename or exc})") from None
    except Exception as exc:  # protobuf DecodeError, truncated files, bad external data
        raise ModelLoadError(f"{p}: not a readable ONNX model ({type(exc).__name__})") from None
    if not model.HasField("graph") or model.ir_version == 0:
        raise ModelLoadError(f"{p}: not an ONNX model (no graph found)")
    return model
