"""The user's calibration choices: frozen, validated, no heavy imports (the CLI builds them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from convtool.errors import OptionError

Layout = Literal["NCHW", "NHWC"]
ChannelOrder = Literal["RGB", "BGR", "L"]


@dataclass(frozen=True)
class ImagePreprocess:
    """How a folder of images becomes one model input (documented for users in the CLI help).

    Each image is opened with Pillow, converted to ``channel_order`` (``L`` = greyscale, one
    channel), resized to ``size`` = (height, width) with bilinear filtering, scaled to [0, 1]
    (``pixel / 255``), normalised per channel as ``(x - mean) / std`` (one value applies to every
    channel) and laid out as ``layout`` with the samples stacked on the first axis.
    """

    size: tuple[int, int] | None = None  # None: taken from the model input's static shape
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    layout: Layout = "NCHW"
    channel_order: ChannelOrder = "RGB"

    def __post_init__(self) -> None:
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 1):
            raise OptionError(f"--image-size must be HEIGHT,WIDTH with positive values, got {self.size}")
        if self.layout not in ("NCHW", "NHWC"):
            raise OptionError(f"--image-layout must be NCHW or NHWC, got {self.layout!r}")
        if self.channel_order not in ("RGB", "BGR", "L"):
            raise OptionError(f"--channel-order must be RGB, BGR or L, got {self.channel_order!r}")
        if not self.mean or not self.std:
            raise OptionError("--image-mean and --image-std need at least one value")
        if any(s <= 0 for s in self.std):
            raise OptionError(f"--image-std values must be > 0, got {self.std}")


@dataclass(frozen=True)
class CalibrationOptions:
    """Settings of the least-squares refit (see :mod:`convtool.calibrate.refit`).

    ``source``: an ``.npz`` (one array per model input, samples on axis 0) or a folder of
    images / ``.npy`` samples; ``None`` when the caller passes arrays to ``convert_model``.
    ``holdout``: fraction of samples kept aside to choose the ridge strength and to accept a
    refit only when it lowers the held-out error.  ``max_samples``: use at most this many
    samples (seeded choice).  ``batch_size``: samples per onnxruntime run.
    ``max_positions``: per layer and batch, at most this many spatial positions enter the
    least squares (seeded subsampling; 0 = all).
    """

    source: str | None = None
    holdout: float = 0.2
    max_samples: int = 512
    batch_size: int = 32
    max_positions: int = 65536
    seed: int = 0
    image: ImagePreprocess | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.holdout < 1.0:
            raise OptionError(f"--holdout must be in [0, 1), got {self.holdout}")
        if self.max_samples < 1:
            raise OptionError(f"--calibration-samples must be >= 1, got {self.max_samples}")
        if self.batch_size < 1:
            raise OptionError(f"calibration batch size must be >= 1, got {self.batch_size}")
        if self.max_positions < 0:
            raise OptionError(f"max_positions must be >= 0, got {self.max_positions}")


def parse_numbers(text: str | None, option: str, kind: type = float) -> tuple | None:
    """``"0.5,0.25"`` -> ``(0.5, 0.25)`` for comma-separated option values; OptionError if bad."""
    if text is None:
        return None
    try:
        values = tuple(kind(v) for v in str(text).replace(" ", "").split(",") if v != "")
    except ValueError:
        raise OptionError(f"{option} must be comma-separated {'integers' if kind is int else 'numbers'}, got {text!r}") from None
    if not values:
        raise OptionError(f"{option} needs at least one value")
    return values
