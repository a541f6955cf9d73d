"""Errors raised by convtool's library code.

Every message is written for the user: the CLI prints ``error: <message>`` and exits
with ``exit_code``; it never shows a traceback for these.
"""

from __future__ import annotations


class ConvToolError(Exception):
    """Base class: bad input or a request convtool cannot honour (exit code 2)."""

    exit_code = 2


class ModelLoadError(ConvToolError):
    """The model file is missing, unreadable, not ONNX or not a valid graph."""


class OptionError(ConvToolError):
    """An option is out of range or inconsistent with the model."""


class CalibrationDataError(ConvToolError):
    """Calibration or evaluation data does not fit the model."""


class GateFailure(ConvToolError):
    """A CI gate failed (exit code 1, not 2: the input was fine, the result was not)."""

    exit_code = 1


class QuantizationError(ConvToolError):
    """onnxruntime's quantization tools failed on the model, or their output did not validate."""
