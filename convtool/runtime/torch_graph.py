"""A small ONNX interpreter written with ``torch.nn.functional`` (optional extra ``[finetune]``).

Why an interpreter of our own rather than onnx2torch: fine-tuning needs exactly three things
from torch - run an ONNX graph, get gradients for a chosen set of initializers, and read any
intermediate tensor by its ONNX name - and nothing else.  A direct interpreter over the graph
gives all three with ONNX names intact (the converted layers' outputs keep the original tensor
names, which is how the teacher's and the student's features are paired), needs no graph
rewriting first (weights held in ``Constant`` nodes, shape subgraphs and opset differences are
handled where they are read), and adds no dependency beyond torch - installing onnx2torch
alone replaced the CPU torch with a multi-GB CUDA build.

What it does
------------
:class:`TorchGraph` holds every constant of the model (initializers and ``Constant`` nodes) as
a torch tensor; the initializers named in ``trainable`` become ``torch.nn.Parameter`` objects.
:meth:`TorchGraph.run` executes the nodes in the graph's (topological) order and returns the
requested tensors by name; a tensor is dropped after its last use.  Floating tensors are
computed in float32 whatever the model's float type (float16 models run in float32; the
write-back casts to the stored dtype).  Shape arithmetic (``Shape``, ``Gather``, ``Concat`` of
int64 ...) runs eagerly on int64 tensors, so models with dynamic spatial dims work at any input
size.

Operators (ONNX semantics, opsets 7-21 where they differ): Conv and ConvTranspose (1-D/2-D/3-D,
groups, dilations, explicit or ``auto_pad`` padding), BatchNormalization (inference form),
InstanceNormalization, LayerNormalization, the activations Relu, LeakyRelu, PRelu, Elu, Selu,
Sigmoid, HardSigmoid, HardSwish, Tanh, Softplus, Softsign, Gelu, Erf, Clip, the elementwise
Add, Sub, Mul, Div, Pow, Max, Min, Sum, Mean, Sqrt, Exp, Log, Abs, Neg, Reciprocal, Floor,
Ceil, Round, Equal, Greater, Less, GreaterOrEqual, LessOrEqual, Not, And, Or, Where; the
layout ops Concat, Split, Slice, Gather, Reshape, Flatten, Transpose, Squeeze, Unsqueeze,
Expand, Tile, Pad (constant, reflect, edge), Shape, Size, ConstantOfShape, Range, Cast,
Identity, Dropout (inference), Constant; MaxPool, AveragePool, GlobalAveragePool,
GlobalMaxPool; Gemm, MatMul; Resize and Upsample (nearest with ``asymmetric`` + ``floor``,
(bi/tri)linear with ``half_pixel``, ``pytorch_half_pixel`` or ``align_corners``); Softmax,
LogSoftmax; ReduceMean, ReduceSum, ReduceMax, ReduceMin, ArgMax.  Anything else is reported
by :func:`unsupported` before any work, and a model whose interpreted output does not match
onnxruntime's is refused by the caller (:mod:`convtool.search.finetune`), so a semantic gap
cannot silently train the wrong function.

torch is imported by this module only; nothing else in convtool imports it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

__all__ = ["SUPPORTED", "TorchGraph", "unsupported"]


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _to_torch(array: np.ndarray) -> torch.Tensor:
    a = np.asarray(array)
    if a.dtype.kind == "f":
        a = a.astype(np.float32)
    elif a.dtype == np.uint64 or a.dtype == np.uint32:
        a = a.astype(np.int64)
    return torch.from_numpy(np.array(a, order="C", copy=True))  # (ascontiguousarray makes scalars 1-D)


def _ints(t: torch.Tensor | None) -> list[int]:
    return [] if t is None else [int(v) for v in t.reshape(-1).tolist()]


def _floats(t: torch.Tensor | None) -> list[float]:
    return [] if t is None else [float(v) for v in t.reshape(-1).tolist()]


def _opt(inputs: Sequence[torch.Tensor | None], i: int) -> torch.Tensor | None:
    return inputs[i] if len(inputs) > i else None


# --- padding -------------------------------------------------------------------------------

def _auto_pads(auto_pad: str, in_sp: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
               dilations: Sequence[int]) -> list[int]:
    """ONNX ``pads`` (all begins, then all ends) for ``SAME_UPPER`` / ``SAME_LOWER`` / ``VALID``."""
    n = len(in_sp)
    if auto_pad == "VALID":
        return [0] * (2 * n)
    begins, ends = [], []
    for size, k, s, d in zip(in_sp, kernel, strides, dilations):
        out = -(-size // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        small, big = total // 2, total - total // 2
        begins.append(small if auto_pad == "SAME_UPPER" else big)
        ends.append(big if auto_pad == "SAME_UPPER" else small)
    return begins + ends


def _torch_pad(pads: Sequence[int]) -> list[int]:
    """ONNX spatial pads ``[b1, b2, .., e1, e2, ..]`` -> ``F.pad`` order (last axis first)."""
    n = len(pads) // 2
    out: list[int] = []
    for i in reversed(range(n)):
        out += [pads[i], pads[i + n]]
    return out


def _spatial_pads(x: torch.Tensor, at: dict[str, Any], kernel: Sequence[int], strides: Sequence[int],
                  dilations: Sequence[int]) -> list[int]:
    n = x.dim() - 2
    auto_pad = at.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad not in ("NOTSET", ""):
        return _auto_pads(auto_pad, x.shape[2:], kernel, strides, dilations)
    return list(at.get("pads", [0] * (2 * n)))


# --- operators ------------------------------------------------------------------------------

def _conv(x, w, b=None, *, at):
    n = x.dim() - 2
    kernel = list(at.get("kernel_shape", w.shape[2:]))
    strides = list(at.get("strides", [1] * n))
    dilations = list(at.get("dilations", [1] * n))
    pads = _spatial_pads(x, at, kernel, strides, dilations)
    group = int(at.get("group", 1))
    if pads[:n] == pads[n:]:
        padding = pads[:n]
    else:
        x = F.pad(x, _torch_pad(pads))
        padding = [0] * n
    fn = (F.conv1d, F.conv2d, F.conv3d)[n - 1]
    return fn(x, w, b, strides, padding, dilations, group)


def _conv_transpose(x, w, b=None, *, at):
    n = x.dim() - 2
    strides = list(at.get("strides", [1] * n))
    dilations = list(at.get("dilations", [1] * n))
    group = int(at.get("group", 1))
    out_pad = list(at.get("output_padding", [0] * n))
    if "output_shape" in at or at.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"", ""):
        raise NotImplementedError("ConvTranspose with output_shape or auto_pad")
    pads = list(at.get("pads", [0] * (2 * n)))
    fn = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[n - 1]
    if pads[:n] == pads[n:]:
        return fn(x, w, b, strides, pads[:n], out_pad, group, dilations)
    y = fn(x, w, b, strides, [0] * n, out_pad, group, dilations)
    index = [slice(None), slice(None)]
    for i in range(n):
        index.append(slice(pads[i], y.shape[2 + i] - pads[i + n]))
    return y[tuple(index)]


def _pool(x, *, at, kind: str):
    n = x.dim() - 2
    kernel = list(at["kernel_shape"])
    strides = list(at.get("strides", [1] * n))
    dilations = list(at.get("dilations", [1] * n))
    pads = _spatial_pads(x, at, kernel, strides, dilations)
    ceil = bool(at.get("ceil_mode", 0))
    symmetric = pads[:n] == pads[n:] and all(p <= k // 2 for p, k in zip(pads[:n], kernel))
    if kind == "max":
        if not symmetric:
            x = F.pad(x, _torch_pad(pads), value=-math.inf)
            pads = [0] * (2 * n)
        fn = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[n - 1]
        return fn(x, kernel, strides, pads[:n], dilations, ceil_mode=ceil)
    if any(d != 1 for d in dilations):
        raise NotImplementedError("AveragePool with dilations")
    include = bool(at.get("count_include_pad", 0))
    if not symmetric:
        if not include and any(pads):
            raise NotImplementedError("AveragePool with asymmetric pads excluded from the count")
        x = F.pad(x, _torch_pad(pads))
        pads = [0] * (2 * n)
    fn = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[n - 1]
    return fn(x, kernel, strides, pads[:n], ceil_mode=ceil, count_include_pad=include)


def _batchnorm(x, scale, bias, mean, var, *_, at):
    return F.batch_norm(x, mean, var, scale, bias, False, 0.0, float(at.get("epsilon", 1e-5)))


def _instancenorm(x, scale, bias, *, at):
    return F.instance_norm(x, weight=scale, bias=bias, eps=float(at.get("epsilon", 1e-5)))


def _layernorm(x, scale, bias=None, *, at):
    axis = int(at.get("axis", -1)) % x.dim()
    return F.layer_norm(x, list(x.shape[axis:]), scale, bias, float(at.get("epsilon", 1e-5)))


def _clip(x, lo=None, hi=None, *, at):
    if lo is None and "min" in at:
        lo = torch.tensor(float(at["min"]))
    if hi is None and "max" in at:
        hi = torch.tensor(float(at["max"]))
    if lo is not None:
        x = torch.maximum(x, lo.to(x.dtype))
    if hi is not None:
        x = torch.minimum(x, hi.to(x.dtype))
    return x


def _gemm(a, b, c=None, *, at):
    if at.get("transA", 0):
        a = a.transpose(0, 1)
    if at.get("transB", 0):
        b = b.transpose(0, 1)
    y = float(at.get("alpha", 1.0)) * (a @ b)
    if c is not None:
        y = y + float(at.get("beta", 1.0)) * c
    return y


def _div(a, b, *, at):
    if not a.is_floating_point() and not b.is_floating_point():
        return torch.div(a, b, rounding_mode="trunc")
    return a / b


def _softmax(x, *, at, opset: int, log: bool = False):
    fn = torch.log_softmax if log else torch.softmax
    if opset >= 13:
        return fn(x, dim=int(at.get("axis", -1)))
    axis = int(at.get("axis", 1)) % x.dim()
    shape = x.shape
    return fn(x.reshape(int(np.prod(shape[:axis], dtype=np.int64)), -1), dim=1).reshape(shape)


def _axes(at: dict, inputs: Sequence, index: int) -> list[int] | None:
    t = _opt(inputs, index)
    if t is not None:
        return _ints(t)
    return list(at["axes"]) if "axes" in at else None


def _squeeze(x, *rest, at):
    axes = _axes(at, (x, *rest), 1)
    if axes is None:
        return x.squeeze()
    for a in sorted((a % x.dim() for a in axes), reverse=True):
        x = x.squeeze(a)
    return x


def _unsqueeze(x, *rest, at):
    axes = _axes(at, (x, *rest), 1) or []
    rank = x.dim() + len(axes)
    for a in sorted(a % rank for a in axes):
        x = x.unsqueeze(a)
    return x


def _reshape(x, shape, *, at):
    dims = _ints(shape)
    if not at.get("allowzero", 0):
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return x.reshape(dims)


def _flatten(x, *, at):
    axis = int(at.get("axis", 1)) % (x.dim() + 1) if x.dim() else 0
    outer = int(np.prod(x.shape[:axis], dtype=np.int64))
    return x.reshape(outer, -1)


def _concat(*xs, at):
    xs = [x for x in xs if x is not None and x.numel() > 0] or list(xs[:1])
    if any(x.is_floating_point() for x in xs):
        xs = [x.float() for x in xs]
    return torch.cat(xs, dim=int(at["axis"]))


def _split(x, *rest, at, n_out: int):
    axis = int(at.get("axis", 0))
    sizes = _ints(_opt((x, *rest), 1)) or list(at.get("split", []))
    if not sizes:
        size = x.shape[axis]
        chunk = -(-size // n_out)
        sizes = [min(chunk, size - i * chunk) for i in range(n_out)]
    return tuple(torch.split(x, sizes, dim=axis))


def _slice(x, *rest, at, opset: int):
    if opset < 10:
        starts, ends = list(at["starts"]), list(at["ends"])
        axes = list(at.get("axes", range(len(starts))))
        steps = [1] * len(starts)
    else:
        starts, ends = _ints(rest[0]), _ints(rest[1])
        axes = _ints(_opt(rest, 2)) or list(range(len(starts)))
        steps = _ints(_opt(rest, 3)) or [1] * len(starts)
    index: list[Any] = [slice(None)] * x.dim()
    flips = []
    for s, e, a, st in zip(starts, ends, axes, steps):
        a %= x.dim()
        size = x.shape[a]
        if st > 0:
            s = max(0, min(size, s + size if s < 0 else s))
            e = max(0, min(size, e + size if e < 0 else e))
            index[a] = slice(s, e, st)
        else:  # negative step: take the forward slice, then flip
            s = max(-1, min(size - 1, s + size if s < 0 else s))
            e = max(-1, min(size - 1, e + size if e < 0 else e))
            count = max(0, -(-(s - e) // -st))
            first = s - (count - 1) * (-st)
            index[a] = slice(first, s + 1, -st) if count else slice(0, 0)
            flips.append(a)
    y = x[tuple(index)]
    return torch.flip(y, flips) if flips else y


def _gather(x, idx, *, at):
    axis = int(at.get("axis", 0)) % x.dim()
    flat = idx.reshape(-1).long()
    flat = torch.where(flat < 0, flat + x.shape[axis], flat)
    y = torch.index_select(x, axis, flat)
    return y.reshape([*x.shape[:axis], *idx.shape, *x.shape[axis + 1:]])


def _transpose(x, *, at):
    perm = list(at.get("perm", reversed(range(x.dim()))))
    return x.permute(perm)


def _pad(x, *rest, at, opset: int):
    mode = at.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if opset < 11:
        pads, value = list(at["pads"]), float(at.get("value", 0.0))
        axes = list(range(x.dim()))
    else:
        pads = _ints(rest[0])
        cv = _opt(rest, 1)
        value = float(cv.reshape(-1)[0]) if cv is not None and cv.numel() else 0.0
        axes = _ints(_opt(rest, 2)) or list(range(x.dim()))
    axes = [a % x.dim() for a in axes]
    full = [0] * (2 * x.dim())
    for i, a in enumerate(axes):
        full[a], full[a + x.dim()] = pads[i], pads[i + len(axes)]
    torch_pads = _torch_pad(full)
    while len(torch_pads) > 2 and torch_pads[-1] == 0 and torch_pads[-2] == 0:
        torch_pads = torch_pads[:-2]
    if mode == "constant":
        return F.pad(x, torch_pads, value=value)
    if mode in ("reflect", "edge"):
        n = len(torch_pads) // 2  # F.pad's reflect/replicate pad trailing axes of a (N, C, ...) tensor
        if n > x.dim() - 2:
            raise NotImplementedError(f"Pad mode {mode} on the batch or channel axis")
        return F.pad(x, torch_pads, mode="reflect" if mode == "reflect" else "replicate")
    raise NotImplementedError(f"Pad mode {mode}")


def _resize(x, *rest, at, opset: int):
    mode = at.get("mode", b"nearest")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if opset < 11:  # Upsample, Resize-10: scales is the second input
        scales = _floats(rest[0]) if rest else list(at.get("scales", []))
        sizes: list[int] = []
        coord = "asymmetric"
        nearest = "floor"
    else:
        scales = _floats(_opt(rest, 1))
        sizes = _ints(_opt(rest, 2))
        coord = at.get("coordinate_transformation_mode", b"half_pixel")
        coord = coord.decode() if isinstance(coord, bytes) else coord
        nearest = at.get("nearest_mode", b"round_prefer_floor")
        nearest = nearest.decode() if isinstance(nearest, bytes) else nearest
        if "axes" in at:
            raise NotImplementedError("Resize with axes")
    if sizes:
        if sizes[:2] != list(x.shape[:2]):
            raise NotImplementedError("Resize of the batch or channel axis")
        out = sizes[2:]
        scale_args: dict[str, Any] = {"size": out}
    else:
        if scales[:2] != [1.0, 1.0]:
            raise NotImplementedError("Resize of the batch or channel axis")
        out = [int(math.floor(s * f)) for s, f in zip(x.shape[2:], scales[2:])]
        # the given scales, as ONNX uses them (not recomputed from the sizes)
        scale_args = {"scale_factor": scales[2:], "recompute_scale_factor": False}
    if mode == "nearest":
        if coord == "asymmetric" and nearest == "floor":
            return F.interpolate(x, mode="nearest", **scale_args)
        if coord == "half_pixel" and nearest in ("round_prefer_ceil", "round_prefer_floor") and \
                all(o % s == 0 for o, s in zip(out, x.shape[2:])):  # integer upsampling: no ties, same pixels
            return F.interpolate(x, mode="nearest-exact", size=out)
        raise NotImplementedError(f"Resize nearest with {coord}/{nearest}")
    if mode in ("linear", "cubic"):
        n = x.dim() - 2
        torch_mode = ("bicubic" if mode == "cubic" else ("linear", "bilinear", "trilinear")[n - 1])
        if mode == "cubic" and (n != 2 or abs(float(at.get("cubic_coeff_a", -0.75)) + 0.75) > 1e-6):
            raise NotImplementedError("Resize cubic other than 2-D with a = -0.75")
        if coord == "align_corners":
            return F.interpolate(x, mode=torch_mode, align_corners=True, size=out)
        if coord == "half_pixel" or (coord == "pytorch_half_pixel" and all(o > 1 for o in out)):
            return F.interpolate(x, mode=torch_mode, align_corners=False, **scale_args)
        raise NotImplementedError(f"Resize {mode} with {coord}")
    raise NotImplementedError(f"Resize mode {mode}")


def _reduce(x, *rest, at, fn: str, opset: int):
    axes = _axes(at, (x, *rest), 1)
    keep = bool(at.get("keepdims", 1))
    if axes is None or not axes:
        if at.get("noop_with_empty_axes", 0) and axes is not None:
            return x
        axes = list(range(x.dim()))
    axes = [a % x.dim() for a in axes]
    if fn == "mean":
        return x.mean(dim=axes, keepdim=keep)
    if fn == "sum":
        return x.sum(dim=axes, keepdim=keep)
    y = x
    for a in sorted(axes, reverse=True):
        y = (y.amax if fn == "max" else y.amin)(dim=a, keepdim=keep)
    return y


def _expand(x, shape, *, at):
    dims = _ints(shape)
    rank = max(x.dim(), len(dims))
    xs = [1] * (rank - x.dim()) + list(x.shape)
    ds = [1] * (rank - len(dims)) + dims
    target = [max(a, b) if b != 1 else a for a, b in zip(xs, ds)]
    return x.reshape(xs).expand(target)


def _constant_of_shape(shape, *, at):
    value = at.get("value")
    arr = numpy_helper.to_array(value) if value is not None else np.zeros(1, np.float32)
    fill = _to_torch(arr).reshape(-1)[0]
    return torch.full(_ints(shape), fill.item(), dtype=fill.dtype)


_CAST = {
    onnx.TensorProto.FLOAT: torch.float32, onnx.TensorProto.FLOAT16: torch.float32,
    onnx.TensorProto.DOUBLE: torch.float32, onnx.TensorProto.BFLOAT16: torch.float32,
    onnx.TensorProto.INT64: torch.int64, onnx.TensorProto.INT32: torch.int64, onnx.TensorProto.INT16: torch.int64,
    onnx.TensorProto.INT8: torch.int64, onnx.TensorProto.UINT8: torch.int64, onnx.TensorProto.BOOL: torch.bool,
}


def _cast(x, *, at):
    to = int(at["to"])
    if to not in _CAST:
        raise NotImplementedError(f"Cast to type {to}")
    target = _CAST[to]
    if target == torch.int64 and x.is_floating_point():
        return torch.trunc(x).to(torch.int64)
    return x.to(target)


def _constant(*, at):
    for key in ("value", "sparse_value"):
        if key in at:
            value = at[key]
            arr = numpy_helper.to_array(value) if key == "value" else numpy_helper.to_array(value.values)
            return _to_torch(arr)
    if "value_float" in at:
        return torch.tensor(float(at["value_float"]))
    if "value_floats" in at:
        return torch.tensor([float(v) for v in at["value_floats"]])
    if "value_int" in at:
        return torch.tensor(int(at["value_int"]))
    if "value_ints" in at:
        return torch.tensor([int(v) for v in at["value_ints"]], dtype=torch.int64)
    raise NotImplementedError("Constant without a numeric value")


def _floatify(fn):
    def run(*xs, at):
        xs = tuple(x.float() if x is not None and not x.is_floating_point() else x for x in xs)
        return fn(*xs, at=at)
    return run


def _binary(fn):
    def run(a, b, *, at):
        if a.is_floating_point() != b.is_floating_point():
            a, b = a.float(), b.float()
        return fn(a, b)
    return run


def _variadic(fn):
    def run(*xs, at):
        out = xs[0]
        for x in xs[1:]:
            out = fn(out, x)
        return out
    return run


_OPS: dict[str, Any] = {
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "BatchNormalization": _batchnorm,
    "InstanceNormalization": _instancenorm,
    "LayerNormalization": _layernorm,
    "Relu": lambda x, *, at: F.relu(x),
    "LeakyRelu": lambda x, *, at: F.leaky_relu(x, float(at.get("alpha", 0.01))),
    "PRelu": lambda x, slope, *, at: torch.where(x >= 0, x, x * slope),
    "Elu": lambda x, *, at: F.elu(x, float(at.get("alpha", 1.0))),
    "Selu": lambda x, *, at: float(at.get("gamma", 1.0507009873554805)) * torch.where(
        x > 0, x, float(at.get("alpha", 1.6732632423543772)) * (torch.exp(x) - 1)),
    "Sigmoid": lambda x, *, at: torch.sigmoid(x),
    "HardSigmoid": lambda x, *, at: torch.clamp(float(at.get("alpha", 0.2)) * x + float(at.get("beta", 0.5)), 0, 1),
    "HardSwish": lambda x, *, at: x * torch.clamp(x / 6 + 0.5, 0, 1),
    "Tanh": lambda x, *, at: torch.tanh(x),
    "Softplus": lambda x, *, at: F.softplus(x),
    "Softsign": lambda x, *, at: x / (1 + x.abs()),
    "Gelu": lambda x, *, at: F.gelu(x, approximate="tanh" if at.get("approximate", b"none") in (b"tanh", "tanh") else "none"),
    "Erf": lambda x, *, at: torch.erf(x),
    "Clip": _clip,
    "Add": _binary(torch.add),
    "Sub": _binary(torch.sub),
    "Mul": _binary(torch.mul),
    "Div": _div,
    "Pow": lambda a, b, *, at: torch.pow(a, b.to(a.dtype) if a.is_floating_point() else b),
    "Max": _variadic(torch.maximum),
    "Min": _variadic(torch.minimum),
    "Sum": _variadic(torch.add),
    "Mean": lambda *xs, at: _variadic(torch.add)(*xs, at=at) / len(xs),
    "Sqrt": lambda x, *, at: torch.sqrt(x),
    "Exp": lambda x, *, at: torch.exp(x),
    "Log": lambda x, *, at: torch.log(x),
    "Abs": lambda x, *, at: x.abs(),
    "Neg": lambda x, *, at: -x,
    "Reciprocal": lambda x, *, at: 1.0 / x,
    "Floor": lambda x, *, at: torch.floor(x),
    "Ceil": lambda x, *, at: torch.ceil(x),
    "Round": lambda x, *, at: torch.round(x),
    "Equal": _binary(torch.eq),
    "Greater": _binary(torch.gt),
    "Less": _binary(torch.lt),
    "GreaterOrEqual": _binary(torch.ge),
    "LessOrEqual": _binary(torch.le),
    "Not": lambda x, *, at: torch.logical_not(x),
    "And": lambda a, b, *, at: torch.logical_and(a, b),
    "Or": lambda a, b, *, at: torch.logical_or(a, b),
    "Where": lambda c, a, b, *, at: torch.where(c, a, b) if a.is_floating_point() == b.is_floating_point()
    else torch.where(c, a.float(), b.float()),
    "Concat": _concat,
    "Gather": _gather,
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Transpose": _transpose,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Expand": _expand,
    "Tile": lambda x, reps, *, at: x.repeat(_ints(reps)),
    "Shape": lambda x, *, at: torch.tensor(list(x.shape)[int(at.get("start", 0)):at.get("end", None)], dtype=torch.int64),
    "Size": lambda x, *, at: torch.tensor(x.numel(), dtype=torch.int64),
    "ConstantOfShape": _constant_of_shape,
    "Range": lambda s, e, d, *, at: torch.arange(s.item(), e.item(), d.item(), dtype=s.dtype),
    "Cast": _cast,
    "Identity": lambda x, *, at: x,
    "Dropout": lambda x, *rest, at: x,
    "Constant": _constant,
    "MaxPool": lambda x, *, at: _pool(x, at=at, kind="max"),
    "AveragePool": lambda x, *, at: _pool(x, at=at, kind="avg"),
    "GlobalAveragePool": lambda x, *, at: x.mean(dim=tuple(range(2, x.dim())), keepdim=True),
    "GlobalMaxPool": lambda x, *, at: x.amax(dim=tuple(range(2, x.dim())), keepdim=True),
    "Gemm": _gemm,
    "MatMul": _floatify(lambda a, b, *, at: a @ b),
    "ArgMax": lambda x, *, at: (torch.argmax(x, dim=int(at.get("axis", 0)), keepdim=bool(at.get("keepdims", 1)))),
}
#: Ops that need the model's opset or the node's output count.
_OPSET_OPS = {"Softmax", "LogSoftmax", "Slice", "Pad", "Resize", "Upsample", "ReduceMean", "ReduceSum",
              "ReduceMax", "ReduceMin", "Split"}
SUPPORTED: frozenset[str] = frozenset(_OPS) | frozenset(_OPSET_OPS)


def _opset(model: onnx.ModelProto) -> int:
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)


def unsupported(model: onnx.ModelProto) -> list[str]:
    """``op (node)`` for every node the interpreter cannot run (empty when it can run them all)."""
    out = []
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type not in SUPPORTED:
            out.append(f"{node.op_type} ({node.name or node.output[0]})")
    return out


class TorchGraph:
    """An ONNX graph as a torch computation (see the module docstring).

    ``trainable``: initializer names that become ``torch.nn.Parameter`` (float32); every other
    constant is a plain tensor.  :attr:`parameters` maps those names to their parameters.
    """

    def __init__(self, model: onnx.ModelProto, trainable: Iterable[str] = ()) -> None:
        want = set(trainable)
        self.opset = _opset(model)
        self.nodes = list(model.graph.node)
        self.attrs = [_attrs(n) for n in self.nodes]
        self.constants: dict[str, torch.Tensor] = {}
        self.parameters: dict[str, torch.nn.Parameter] = {}
        for t in model.graph.initializer:
            value = _to_torch(numpy_helper.to_array(t))
            if t.name in want:
                self.parameters[t.name] = torch.nn.Parameter(value.float())
            else:
                self.constants[t.name] = value
        missing = want - set(self.parameters)
        if missing:
            raise KeyError(f"not initializers: {sorted(missing)}")
        self.input_names = [i.name for i in model.graph.input
                            if i.name not in self.constants and i.name not in self.parameters]
        self.output_names = [o.name for o in model.graph.output]
        # last use of every tensor, to drop it as early as possible
        self.last_use: dict[str, int] = {}
        for i, node in enumerate(self.nodes):
            for name in node.input:
                if name:
                    self.last_use[name] = i

    def run(self, feeds: Mapping[str, torch.Tensor | np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """The tensors named ``outputs`` (default: the graph outputs) for ``feeds``."""
        want = list(outputs) if outputs is not None else self.output_names
        keep = set(want)
        env: dict[str, torch.Tensor | None] = {}
        for name in self.input_names:
            value = feeds[name]
            env[name] = value if isinstance(value, torch.Tensor) else _to_torch(value)
        env[""] = None
        for i, (node, at) in enumerate(zip(self.nodes, self.attrs)):
            args = [self._value(env, name) for name in node.input]
            while args and args[-1] is None and node.op_type not in ("Clip",):
                args.pop()
            op = node.op_type
            if op in _OPSET_OPS:
                result = self._opset_op(op, args, at, len(node.output))
            else:
                result = _OPS[op](*args, at=at)
            results = result if isinstance(result, tuple) else (result,)
            for name, value in zip(node.output, results):
                if name:
                    env[name] = value
            for name in node.input:
                if name and self.last_use.get(name) == i and name not in keep and name in env:
                    del env[name]
        return {name: self._value(env, name) for name in want}  # type: ignore[misc]

    def _value(self, env: dict, name: str) -> torch.Tensor | None:
        if not name:
            return None
        if name in env:
            return env[name]
        if name in self.parameters:
            return self.parameters[name]
        return self.constants[name]

    def _opset_op(self, op: str, args: list, at: dict, n_out: int):
        if op in ("Softmax", "LogSoftmax"):
            return _softmax(*args, at=at, opset=self.opset, log=op == "LogSoftmax")
        if op == "Slice":
            return _slice(*args, at=at, opset=self.opset)
        if op == "Pad":
            return _pad(*args, at=at, opset=self.opset)
        if op in ("Resize", "Upsample"):
            return _resize(*args, at=at, opset=10 if op == "Upsample" else self.opset)
        if op == "Split":
            return _split(*args, at=at, n_out=n_out)
        fn = {"ReduceMean": "mean", "ReduceSum": "sum", "ReduceMax": "max", "ReduceMin": "min"}[op]
        if op == "ReduceSum" and self.opset < 13 or op != "ReduceSum" and self.opset < 18:
            args = args[:1]  # axes are an attribute before opset 13 (ReduceSum) / 18 (the others)
        return _reduce(*args, at=at, fn=fn, opset=self.opset)
