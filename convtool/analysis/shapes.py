"""Static shapes for analysis: fix the user's input dims, then run ONNX shape inference.

Cases handled:

* ``--input-shape NAME=1,3,224,224`` (repeatable) fixes every dim of that graph input;
  an unknown input name, a wrong rank or a dim that contradicts a static dim of the model is
  an :class:`~convtool.errors.OptionError`.
* Without it, a symbolic or unknown *first* dim (the batch-like dim) becomes 1; any other
  symbolic dim is an ``OptionError`` that names the input and tells the user to pass
  ``--input-shape NAME=DIMS``.
* Graph inputs that are also initializers (IR version < 4 lists every weight as an input)
  are constants, not user inputs: they are neither required nor accepted here.
* Shape inference runs on a *skeleton* of the model: tensors with more than
  :data:`_STRIP_ELEMENTS` elements keep their name, dtype and dims but lose their data.
  Shape inference only needs dims for those, so this keeps memory flat and avoids
  protobuf's 2 GB serialisation limit for large models already loaded into memory.
  Small tensors keep their data, so shape-computing subgraphs (Shape -> Concat -> Reshape)
  still propagate.

The caller's model is never mutated. Inferred ``value_info`` is kept for the top-level graph
only (subgraph bodies are not analysed by convtool).

:func:`static_shapes` is the table the cost counters and the latency tuner read: the dims of
every top-level tensor (graph inputs, inferred intermediates, outputs, initializers), ``None``
where inference left any dim symbolic or the rank unknown.  ONNX shape inference gives up on
shapes computed at run time from values it does not propagate (e.g. ``Pad`` amounts built by
``Shape -> ConstantOfShape -> Concat``: every tensor downstream gets ``unk__N`` dims).  This
module does not run the model; :mod:`convtool.runtime.observe` fills such gaps with the shapes
onnxruntime observes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import onnx
from google.protobuf.message import Message

from convtool.errors import OptionError

__all__ = ["Shape", "ShapeTable", "with_static_shapes", "user_inputs", "resolve_input_shapes", "infer_skeleton",
           "shape_table", "static_shapes"]

log = logging.getLogger(__name__)

Shape = tuple[int, ...]
#: Tensor name -> dims, ``None`` where a dim (or the rank) is unknown.
ShapeTable = dict[str, "Shape | None"]

#: Tensors larger than this lose their data in the shape-inference skeleton.
_STRIP_ELEMENTS = 4096
_STRIPPED_LOCATION = "__convtool_stripped__"


def user_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    """The graph inputs a user must feed: graph inputs that are not initializers."""
    constants = {t.name for t in graph.initializer} | {t.values.name for t in graph.sparse_initializer}
    return [vi for vi in graph.input if vi.name not in constants]


def _skeleton_tensor(tensor: onnx.TensorProto) -> onnx.TensorProto:
    n = 1
    for d in tensor.dims:
        n *= d
    if n <= _STRIP_ELEMENTS or tensor.data_location == onnx.TensorProto.EXTERNAL:
        out = onnx.TensorProto()
        out.CopyFrom(tensor)
        return out
    out = onnx.TensorProto(name=tensor.name, data_type=tensor.data_type, dims=list(tensor.dims))
    out.data_location = onnx.TensorProto.EXTERNAL
    out.external_data.add(key="location", value=_STRIPPED_LOCATION)
    return out


def _skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose large initializers have dims but no data."""
    skel = onnx.ModelProto()
    for field, value in model.ListFields():
        if field.name != "graph":
            copy_field(skel, field.name, value)
    g = skel.graph
    g.SetInParent()
    for field, value in model.graph.ListFields():
        if field.name == "initializer":
            g.initializer.extend(_skeleton_tensor(t) for t in value)
        else:
            copy_field(g, field.name, value)
    return skel


def copy_field(dst: Message, name: str, value: object) -> None:
    """Set field ``name`` of ``dst`` to ``value`` (a message, a scalar or a repeated field)."""
    if isinstance(value, Message):
        getattr(dst, name).CopyFrom(value)
    elif isinstance(value, (str, bytes, int, float, bool)):
        setattr(dst, name, value)
    else:  # repeated field
        getattr(dst, name).extend(value)


def _dims_text(vi: onnx.ValueInfoProto) -> str:
    out = []
    for d in vi.type.tensor_type.shape.dim:
        kind = d.WhichOneof("value")
        out.append(str(d.dim_value) if kind == "dim_value" else (d.dim_param or "?"))
    return "[" + ",".join(out) + "]"


def _user_dims(vi: onnx.ValueInfoProto, dims: Sequence[int]) -> Shape:
    """The user's ``--input-shape`` dims for ``vi``, checked against the model's static dims."""
    ttype = vi.type.tensor_type
    dims = tuple(int(d) for d in dims)
    if ttype.HasField("shape") and len(ttype.shape.dim) != len(dims):
        raise OptionError(
            f"--input-shape {vi.name}: model input has rank {len(ttype.shape.dim)} "
            f"{_dims_text(vi)}, got {len(dims)} dims"
        )
    for axis, d in enumerate(dims):
        if d <= 0:
            raise OptionError(f"--input-shape {vi.name}: dims must be positive, got {d}")
        if ttype.HasField("shape"):
            old = ttype.shape.dim[axis]
            if old.WhichOneof("value") == "dim_value" and old.dim_value > 0 and old.dim_value != d:
                raise OptionError(
                    f"--input-shape {vi.name}: the model fixes dim {axis} to {old.dim_value} "
                    f"{_dims_text(vi)}, got {d}"
                )
    return dims


def _default_dims(vi: onnx.ValueInfoProto) -> Shape | None:
    """The model's dims with a symbolic first (batch-like) dim as 1; ``None`` when another dim
    (or the rank) is unknown."""
    ttype = vi.type.tensor_type
    if not ttype.HasField("shape"):
        return None
    dims = []
    for i, d in enumerate(ttype.shape.dim):
        if d.WhichOneof("value") == "dim_value" and d.dim_value > 0:
            dims.append(int(d.dim_value))
        elif i == 0:
            dims.append(1)  # batch-like leading dim
        else:
            return None
    return tuple(dims)


def resolve_input_shapes(model: onnx.ModelProto | onnx.GraphProto,
                         input_shapes: Mapping[str, Sequence[int]] | None = None) -> dict[str, Shape]:
    """The static dims of every tensor input a user feeds (:func:`user_inputs`): the caller's
    (``--input-shape``, checked against the model), else the model's with a symbolic first dim
    as 1.  The one resolver behind shape inference, the cost counts and random feeds.

    Raises :class:`~convtool.errors.OptionError` for an unknown input name, a wrong rank, a
    non-positive dim or one that contradicts the model, and for any other symbolic dim (naming
    the input and the ``--input-shape NAME=DIMS`` that fixes it).
    """
    graph = model.graph if isinstance(model, onnx.ModelProto) else model
    given = input_shapes or {}
    inputs = user_inputs(graph)
    by_name = {vi.name: vi for vi in inputs}
    unknown = sorted(set(given) - set(by_name))
    if unknown:
        names = ", ".join(repr(n) for n in by_name) or "none"
        raise OptionError(
            f"--input-shape names unknown input {unknown[0]!r}; the model's inputs are: {names}"
        )
    out: dict[str, Shape] = {}
    unresolved: list[str] = []
    for vi in inputs:
        if vi.type.WhichOneof("value") != "tensor_type":
            if vi.name in given:
                raise OptionError(f"--input-shape {vi.name!r}: input is not a tensor")
            continue
        dims = _user_dims(vi, given[vi.name]) if vi.name in given else _default_dims(vi)
        if dims is None:
            shown = _dims_text(vi) if vi.type.tensor_type.HasField("shape") else "(rank unknown)"
            unresolved.append(f"{vi.name} {shown}")
            continue
        out[vi.name] = dims
    if unresolved:
        first = unresolved[0].split(" ")[0]
        raise OptionError(
            f"input {unresolved[0]} has symbolic dims; pass --input-shape {first}=DIMS "
            f"(e.g. --input-shape {first}=1,3,224,224)"
        )
    return out


def _fix_inputs(graph: onnx.GraphProto, input_shapes: Mapping[str, Sequence[int]]) -> None:
    """Write :func:`resolve_input_shapes` into ``graph``'s inputs."""
    resolved = resolve_input_shapes(graph, input_shapes)
    for vi in graph.input:
        if vi.name not in resolved:
            continue
        ttype = vi.type.tensor_type
        ttype.ClearField("shape")
        ttype.shape.SetInParent()
        for d in resolved[vi.name]:
            ttype.shape.dim.add().dim_value = d


def infer_skeleton(
    model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]] | None = None
) -> onnx.ModelProto:
    """Shape-inferred skeleton of ``model``: static inputs, large tensors without data.

    Cheap to build and safe for models of any size; used by the cost counters, which
    need dims, never values.
    """
    skel = _skeleton(model)
    _fix_inputs(skel.graph, input_shapes or {})
    try:
        return onnx.shape_inference.infer_shapes(skel, check_type=False, strict_mode=False, data_prop=True)
    except Exception as exc:  # onnx raises InferenceError / ValidationError / RuntimeError
        raise OptionError(f"shape inference failed: {str(exc).strip().splitlines()[0]}") from None


def shape_table(graph: onnx.GraphProto) -> ShapeTable:
    """Dims of every tensor an (inferred) graph declares: inputs, ``value_info``, outputs and
    initializers; ``None`` where a dim is symbolic or the rank unknown.  A name declared twice
    keeps its known dims."""
    shapes: ShapeTable = {}
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        if vi.type.WhichOneof("value") != "tensor_type" or not vi.type.tensor_type.HasField("shape"):
            shapes.setdefault(vi.name, None)
            continue
        dims: list[int] | None = []
        for d in vi.type.tensor_type.shape.dim:
            if d.WhichOneof("value") == "dim_value":
                dims.append(d.dim_value)  # type: ignore[union-attr]
            else:
                dims = None
                break
        if dims is not None or shapes.get(vi.name) is None:
            shapes[vi.name] = None if dims is None else tuple(dims)
    for t in graph.initializer:
        shapes[t.name] = tuple(t.dims)
    return shapes


def static_shapes(model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]] | None = None) -> ShapeTable:
    """:func:`shape_table` of the inferred skeleton: every top-level tensor's dims at the given
    (or default) input shapes, ``None`` where ONNX shape inference could not resolve them.

    Raises :class:`~convtool.errors.OptionError` like :func:`infer_skeleton`.
    """
    return shape_table(infer_skeleton(model, input_shapes).graph)


def with_static_shapes(
    model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]] | None = None
) -> onnx.ModelProto:
    """Return a new model with static input dims and inferred ``value_info``.

    ``input_shapes`` maps input names to dims (see :func:`parse_input_shapes`). A symbolic
    first dim defaults to 1; any other symbolic dim left unset raises :class:`OptionError`.
    The caller's ``model`` is not modified. External-data tensors already loaded into memory
    are copied like any other tensor; shape inference itself runs on a data-free skeleton.
    """
    inferred = infer_skeleton(model, input_shapes)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for field in ("input", "output", "value_info"):
        out.graph.ClearField(field)
        getattr(out.graph, field).extend(getattr(inferred.graph, field))
    return out


def data_free_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """Public name for the skeleton: large initializers point at external data that does
    not exist (``STRIPPED_LOCATION``); used to validate huge graphs cheaply."""
    return _skeleton(model)


STRIPPED_LOCATION = _STRIPPED_LOCATION
