"""Model inputs for timing and drift: seeded random batches or a user's ``.npz`` file.

``--inputs data.npz`` holds one array per model input name with the samples stacked on the
first axis, and optionally ``labels`` (integer class ids, one per sample). Checks, each a
one-line :class:`~convtool.errors.CalibrationDataError`:

* the file opens as ``.npz`` and holds no pickled objects;
* every model input is present, and no array other than the inputs and ``labels``;
* every array has the input's rank; dims after the first match the model's static dims;
* all arrays (and ``labels``) have the same number of samples, at least one;
* dtypes equal the input's or are cast to it within the same kind (float64 -> float32,
  int32 -> int64); an integer array for a float input is refused (unscaled pixels?);
* ``labels`` is 1-D (or ``[N, 1]``) of integers.

Batches (drift and accuracy): the model runs on chunks of its static batch dim ``B``, and the
sample count must then be a multiple of ``B``; with a symbolic batch dim, chunks of the
``--input-shape`` batch or 32 samples, the last chunk possibly smaller. Timing uses the first
chunk shaped like the analysed batch (see :func:`input_shapes_from_data`).
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from convtool.analysis.shapes import user_inputs
from convtool.errors import CalibrationDataError

__all__ = ["InputData", "read_npz", "input_shapes_from_data", "batches"]

LABELS = "labels"
#: Samples per run when the model's batch dim is symbolic and the user fixed none.
DEFAULT_CHUNK = 32


@dataclass(frozen=True)
class InputData:
    """Validated samples: ``arrays[name]`` has ``samples`` rows; ``labels`` or ``None``."""

    arrays: dict[str, np.ndarray]
    labels: np.ndarray | None
    samples: int
    path: str


def static_dims(vi: onnx.ValueInfoProto) -> list[int | None] | None:
    ttype = vi.type.tensor_type
    if not ttype.HasField("shape"):
        return None
    return [d.dim_value if d.WhichOneof("value") == "dim_value" and d.dim_value > 0 else None for d in ttype.shape.dim]


def _kind(dtype: np.dtype) -> str:
    return {"u": "int", "i": "int", "f": "float", "b": "bool"}.get(dtype.kind, dtype.kind)


def read_npz(path: str | os.PathLike[str], model: onnx.ModelProto) -> InputData:
    """Read and validate ``path`` against ``model``'s inputs (see the module docstring)."""
    p = Path(path)
    if not p.is_file():
        raise CalibrationDataError(f"--inputs {p}: no such file")
    try:
        with np.load(p, allow_pickle=False) as npz:
            raw = {k: npz[k] for k in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CalibrationDataError(f"--inputs {p}: not a readable .npz file ({first})") from None
    if not isinstance(raw, dict):  # pragma: no cover - np.load of .npy returns an array
        raise CalibrationDataError(f"--inputs {p}: expected an .npz archive")
    inputs = user_inputs(model.graph)
    names = [vi.name for vi in inputs]
    missing = [n for n in names if n not in raw]
    if missing:
        raise CalibrationDataError(
            f"--inputs {p}: no array for model input {missing[0]!r} (arrays: {', '.join(sorted(raw)) or 'none'})"
        )
    extra = sorted(set(raw) - set(names) - {LABELS})
    if extra:
        raise CalibrationDataError(
            f"--inputs {p}: array {extra[0]!r} is not a model input (inputs: {', '.join(names)}; "
            f"optional: {LABELS})"
        )
    arrays: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for vi in inputs:
        arr = raw[vi.name]
        ttype = vi.type.tensor_type
        target = onnx.helper.tensor_dtype_to_np_dtype(ttype.elem_type)
        if arr.dtype != target:
            if _kind(arr.dtype) != _kind(np.dtype(target)):
                raise CalibrationDataError(
                    f"--inputs {p}: array {vi.name!r} has dtype {arr.dtype}, the model input needs {np.dtype(target)}"
                )
            arr = arr.astype(target)
        dims = static_dims(vi)
        if dims is not None:
            if arr.ndim != len(dims):
                raise CalibrationDataError(
                    f"--inputs {p}: array {vi.name!r} has shape {list(arr.shape)}, "
                    f"the model input has rank {len(dims)} (samples stacked on the first axis)"
                )
            for axis, (got, want) in enumerate(zip(arr.shape[1:], dims[1:]), start=1):
                if want is not None and got != want:
                    shown = ["?" if d is None else d for d in dims]
                    raise CalibrationDataError(
                        f"--inputs {p}: array {vi.name!r} has shape {list(arr.shape)}, "
                        f"the model input is {shown} (dim {axis} differs)"
                    )
        if arr.ndim == 0:
            raise CalibrationDataError(f"--inputs {p}: array {vi.name!r} is a scalar; stack samples on axis 0")
        arrays[vi.name] = arr
        counts[vi.name] = arr.shape[0]
    labels = None
    if LABELS in raw:
        lab = raw[LABELS]
        if lab.ndim == 2 and lab.shape[1] == 1:
            lab = lab[:, 0]
        if lab.ndim != 1 or not np.issubdtype(lab.dtype, np.integer):
            raise CalibrationDataError(
                f"--inputs {p}: '{LABELS}' must be a 1-D integer array of class ids, "
                f"got shape {list(lab.shape)} dtype {lab.dtype}"
            )
        labels = lab
        counts[LABELS] = lab.shape[0]
    if len(set(counts.values())) > 1:
        shown = ", ".join(f"{k}: {v}" for k, v in counts.items())
        raise CalibrationDataError(f"--inputs {p}: arrays disagree on the number of samples ({shown})")
    samples = next(iter(counts.values()), 0)
    if samples == 0:
        raise CalibrationDataError(f"--inputs {p}: no samples")
    return InputData(arrays=arrays, labels=labels, samples=samples, path=str(p))


def input_shapes_from_data(
    model: onnx.ModelProto, data: InputData, user_shapes: Mapping[str, Sequence[int]] | None = None
) -> dict[str, tuple[int, ...]]:
    """Static input shapes for analysis: the user's, else ``(B, *sample_shape)`` with ``B`` the
    model's static batch dim or 1."""
    shapes = {k: tuple(v) for k, v in (user_shapes or {}).items()}
    for vi in user_inputs(model.graph):
        if vi.name in shapes:
            continue
        dims = static_dims(vi)
        first = dims[0] if dims and dims[0] is not None else 1
        shapes[vi.name] = (first, *data.arrays[vi.name].shape[1:])
    return shapes


def batches(
    model: onnx.ModelProto, data: InputData, user_shapes: Mapping[str, Sequence[int]] | None = None
) -> Iterator[dict[str, np.ndarray]]:
    """Chunks of the samples along the first axis.

    The chunk size is the model's static batch dim; else the first dim the user fixed with
    ``--input-shape``; else :data:`DEFAULT_CHUNK` (a symbolic batch accepts any size, and the
    last chunk may be smaller).
    """
    size, static_batch = DEFAULT_CHUNK, False
    inputs = user_inputs(model.graph)
    if inputs:
        vi = inputs[0]
        dims = static_dims(vi)
        if dims and dims[0] is not None:
            size, static_batch = dims[0], True
        elif user_shapes and len(user_shapes.get(vi.name, ())) > 0:
            size = int(user_shapes[vi.name][0])
    if static_batch and data.samples % size:
        raise CalibrationDataError(
            f"--inputs {data.path}: {data.samples} samples do not fill batches of {size} "
            "(the model's batch dim is fixed)"
        )
    for start in range(0, data.samples, size):
        yield {k: v[start : start + size] for k, v in data.arrays.items()}
