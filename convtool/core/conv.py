"""A Conv layer as plain numbers: what the maths needs, without any graph object.

:func:`convtool.graph.select.find_convs` reads these out of the graph; the planner
(:mod:`convtool.core.plan`) and the drivers work on them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from convtool.core.bnfold import fold_batchnorm


@dataclass(frozen=True)
class Geometry:
    """Kernel, channels, group and strides of a Conv (channels 0 when unknown)."""

    kernel: tuple[int, ...]
    in_channels: int
    out_channels: int
    group: int
    strides: tuple[int, ...] = ()

    @property
    def kernel_size(self) -> int:
        return max(1, math.prod(self.kernel))

    @property
    def unit_stride(self) -> bool:
        return all(int(s) == 1 for s in self.strides)


@dataclass(frozen=True)
class BatchNormParams:
    """An inference-mode BatchNormalization after the Conv, to be folded into it."""

    name: str
    scale: np.ndarray
    beta: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    eps: float


@dataclass(frozen=True)
class ConvLayer:
    """A convertible Conv: its label, constant weight and bias, geometry, and folded BN."""

    name: str
    weight: np.ndarray
    bias: np.ndarray | None
    geometry: Geometry
    batchnorm: BatchNormParams | None = None

    @property
    def params(self) -> int:
        """Parameters of the layer as it stands (BN parameters included)."""
        n = self.weight.size + (self.bias.size if self.bias is not None else 0)
        return int(n + (4 * self.geometry.out_channels if self.batchnorm is not None else 0))

    def folded(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Weight and bias with the following BatchNormalization folded in."""
        if self.batchnorm is None:
            return self.weight, self.bias
        bn = self.batchnorm
        return fold_batchnorm(self.weight, self.bias, bn.scale, bn.beta, bn.mean, bn.var, bn.eps)


def explicit_pads(spatial: tuple[int, ...], kernel: tuple[int, ...], strides: tuple[int, ...],
                  dilations: tuple[int, ...], auto_pad: str, pads: tuple[int, ...]) -> tuple[int, ...]:
    """ONNX ``auto_pad`` resolved into explicit ``[begin..., end...]`` pads for an input of
    ``spatial`` size (``NOTSET``: ``pads`` as given; ``VALID``: zeros; ``SAME_UPPER`` /
    ``SAME_LOWER``: output ``ceil(in / stride)``, the odd pad at the end / the beginning)."""
    d = len(kernel)
    if auto_pad in ("", "NOTSET"):
        return tuple(pads) if pads else (0,) * (2 * d)
    if auto_pad == "VALID":
        return (0,) * (2 * d)
    begin, end = [], []
    for i in range(d):
        out = -(-int(spatial[i]) // int(strides[i]))
        total = max((out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - int(spatial[i]), 0)
        small, big = total // 2, total - total // 2
        begin.append(small if auto_pad == "SAME_UPPER" else big)
        end.append(big if auto_pad == "SAME_UPPER" else small)
    return tuple(begin + end)
