"""Model inputs, one way for every caller: calibration data, evaluation data, random feeds.

Sources (:func:`load`)
----------------------
* ``data.npz``: one array per model input, named like the input, samples stacked on the first
  (batch) axis, and optionally ``labels`` (integer class ids, one per sample).  **Any other
  array is refused** (a misspelt input name would otherwise be silently ignored).
* a folder of ``.npy`` files (single-input models): each file is one sample shaped like the
  input without its batch axis, or a stack of samples with it; files are read in name order.
* a folder of images (single-input models): preprocessed as
  :class:`~convtool.options.ImagePreprocess` documents.  Needs Pillow, imported only here.
* :func:`random_dataset`: seeded samples for every input (floats standard normal, integers
  from {0, 1}, booleans random), marked ``random`` so that nobody mistakes drift on them for
  accuracy.

Checks (:func:`validate`; each failure is a one-line
:class:`~convtool.errors.CalibrationDataError`): every model input has an array; arrays are
non-empty, have the input's rank and its static dims (the first axis is the sample axis); all
inputs (and ``labels``) have the same number of samples; float values are finite.  Dtypes are
cast within their kind (float64 -> float32, int32 -> int64) and the dataset's ``notes`` say so
(the commands print them); integer or boolean data for a float input is refused (usually labels
or raw pixels fed by mistake), float data for an integer input likewise.  ``labels`` is 1-D (or
``[N, 1]``) of integers.  Whether labels fit the model's classes is known only from its
outputs: :func:`convtool.analysis.drift.label_problem` says.

Overlap (:func:`shared_samples`): how many samples of one dataset also occur, bit for bit, in
another - evaluation data that the search saw is no evaluation.

Batching (:func:`batches`): a model whose inputs have a fixed batch dim ``B`` runs on chunks of
exactly ``B`` samples; a remainder smaller than ``B`` is not run, and :func:`usable` says how
many samples are.  A symbolic batch dim takes chunks of the caller's batch size, the last one
possibly smaller.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from convtool.analysis.shapes import resolve_input_shapes, user_inputs
from convtool.errors import CalibrationDataError, OptionError
from convtool.options import ImagePreprocess

__all__ = ["LABELS", "InputSpec", "Dataset", "model_inputs", "validate", "load", "random_dataset", "random_feeds",
           "fixed_batch", "batches", "usable", "input_shapes_from_data", "shared_samples"]

LABELS = "labels"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
#: Samples per run when the model's batch dim is symbolic and the caller fixed none.
DEFAULT_BATCH = 32


@dataclass(frozen=True)
class InputSpec:
    """A model input: name, numpy dtype and dims (``None`` for a symbolic dim)."""

    name: str
    dtype: np.dtype
    dims: tuple[int | None, ...] | None  # None: rank unknown


def model_inputs(model: onnx.ModelProto) -> list[InputSpec]:
    """The graph inputs that need feeding (initializers listed as inputs excluded)."""
    specs = []
    for vi in user_inputs(model.graph):
        tt = vi.type.tensor_type
        try:
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type))
        except (KeyError, TypeError, ValueError):
            dtype = np.dtype(np.float32)
        dims = None
        if tt.HasField("shape"):
            dims = tuple(int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None
                         for d in tt.shape.dim)
        specs.append(InputSpec(vi.name, dtype, dims))
    return specs


@dataclass(frozen=True)
class Dataset:
    """Validated arrays, one per model input, samples on axis 0; optional labels."""

    arrays: Mapping[str, np.ndarray]
    labels: np.ndarray | None = None
    source: str = "<memory>"
    random: bool = False
    notes: tuple[str, ...] = ()  # what validation did to the data (dtype casts), for the user

    @property
    def count(self) -> int:
        return int(next(iter(self.arrays.values())).shape[0])

    def take(self, index: np.ndarray) -> Dataset:
        labels = None if self.labels is None else self.labels[index]
        return Dataset({k: v[index] for k, v in self.arrays.items()}, labels, self.source, self.random, self.notes)

    def split(self, holdout: float, seed: int, multiple: int = 1) -> tuple[Dataset, Dataset | None]:
        """(fit, held-out): a seeded shuffle; no held-out part when ``holdout`` is 0 or there
        are fewer than 2 samples.  ``multiple``: a model's fixed batch dim - the held-out part
        is a whole number of batches (at least one), or empty when the data cannot spare one."""
        n = self.count
        held = 0
        if holdout > 0 and n >= 2 * multiple:
            batches = min(max(int(round(n * holdout / multiple)), 1), n // multiple - 1)
            held = batches * multiple
        if held == 0:
            return self, None
        order = np.random.default_rng(seed).permutation(n)
        return self.take(np.sort(order[held:])), self.take(np.sort(order[:held]))

    def describe(self) -> str:
        return f"{self.count} {'seeded random inputs' if self.random else 'samples of ' + self.source}"


def _fail(what: str, source: str, message: str) -> CalibrationDataError:
    return CalibrationDataError(f"{what} {source}: {message}")


def _kind(dtype: np.dtype) -> str:
    return {"u": "int", "i": "int", "f": "float", "b": "bool"}.get(dtype.kind, dtype.kind)


def _check_array(a: np.ndarray, spec: InputSpec, fail) -> np.ndarray:
    name = spec.name
    if a.dtype == object or a.ndim == 0:
        raise fail(f"array {name!r} is not a numeric array with a sample axis")
    if a.shape[0] == 0 or a.size == 0:
        raise fail(f"array {name!r} is empty (shape {a.shape})")
    if spec.dims is not None:
        if a.ndim != len(spec.dims):
            want = "x".join("?" if d is None else str(d) for d in spec.dims)
            raise fail(f"array {name!r} has shape {a.shape} ({a.ndim}-D) but input {name!r} is "
                       f"{len(spec.dims)}-D [{want}] with samples on the first axis")
        for axis, (have, want) in enumerate(zip(a.shape[1:], spec.dims[1:]), start=1):
            if want is not None and have != want:
                raise fail(f"array {name!r} has {have} on axis {axis}, input {name!r} needs {want} "
                           f"(array shape {a.shape})")
    target = spec.dtype
    if _kind(a.dtype) != _kind(target):
        hint = ": preprocess to floats first (integers are refused, not guessed)" if _kind(target) == "float" else ""
        raise fail(f"array {name!r} has dtype {a.dtype}, input {name!r} is {target}{hint}")
    if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        raise fail(f"array {name!r} contains NaN or infinite values")
    return np.ascontiguousarray(a, dtype=target)


def validate(arrays: Mapping[str, np.ndarray], model: onnx.ModelProto, source: str = "<memory>", *,
             what: str = "calibration data", max_samples: int | None = None, seed: int = 0) -> Dataset:
    """Check ``arrays`` against ``model``'s inputs (see the module docstring) and return them
    cast, with ``labels`` split off; ``max_samples`` keeps a seeded choice of that many."""
    specs = model_inputs(model)

    def fail(message: str) -> CalibrationDataError:
        return _fail(what, source, message)

    if not specs:
        raise fail("the model has no inputs to feed")
    names = [s.name for s in specs]
    missing = [n for n in names if n not in arrays]
    if missing:
        have = ", ".join(repr(n) for n in sorted(arrays)) or "none"
        raise fail(f"no array for model input {missing[0]!r} (arrays found: {have})")
    extra = sorted(set(arrays) - set(names) - {LABELS})
    if extra:
        raise fail(f"array {extra[0]!r} is not a model input (inputs: {', '.join(names)}; optional: {LABELS})")
    raw = {s.name: np.asarray(arrays[s.name]) for s in specs}
    out = {s.name: _check_array(raw[s.name], s, fail) for s in specs}
    notes = tuple(f"{what} {source}: array {s.name!r} is {raw[s.name].dtype}, cast to the model's {s.dtype}"
                  for s in specs if raw[s.name].dtype != out[s.name].dtype)
    counts = {k: v.shape[0] for k, v in out.items()}
    labels = None
    if LABELS in arrays:
        lab = np.asarray(arrays[LABELS])
        if lab.ndim == 2 and lab.shape[1] == 1:
            lab = lab[:, 0]
        if lab.ndim != 1 or not np.issubdtype(lab.dtype, np.integer):
            raise fail(f"'{LABELS}' must be a 1-D integer array of class ids, got shape {list(lab.shape)} "
                       f"dtype {lab.dtype}")
        labels = lab.astype(np.int64)
        counts[LABELS] = lab.shape[0]
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"{k}: {v}" for k, v in counts.items())
        raise fail(f"arrays have different numbers of samples ({detail})")
    data = Dataset(out, labels, source, notes=notes)
    if max_samples is not None and data.count > max_samples:
        data = data.take(np.sort(np.random.default_rng(seed).choice(data.count, max_samples, replace=False)))
    return data


def load(path: str | Path, model: onnx.ModelProto, image: ImagePreprocess | None = None, *,
         what: str = "calibration data", max_samples: int | None = None, seed: int = 0) -> Dataset:
    """Read an ``.npz``, a folder of ``.npy`` files or a folder of images, then :func:`validate`."""
    p = Path(path)
    src = str(p)
    if not p.exists():
        raise _fail(what, src, "no such file or folder")
    arrays = _load_folder(p, model, image, what) if p.is_dir() else _load_npz(p, what)
    return validate(arrays, model, src, what=what, max_samples=max_samples, seed=seed)


def _load_npz(p: Path, what: str) -> dict[str, np.ndarray]:
    import zipfile

    try:
        loaded = np.load(p, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise _fail(what, str(p), f"not a readable .npz file ({type(exc).__name__})") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise _fail(what, str(p), "is a single .npy array; use an .npz with one array per model input")
    try:
        with loaded:
            return {k: loaded[k] for k in loaded.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise _fail(what, str(p), f"not a readable .npz file ({type(exc).__name__})") from None


def _single_input(model: onnx.ModelProto, p: Path, kind: str, what: str) -> InputSpec:
    specs = model_inputs(model)
    if len(specs) != 1:
        raise _fail(what, str(p), f"a folder of {kind} feeds one input, the model has {len(specs)}; use an .npz")
    return specs[0]


def _load_folder(p: Path, model: onnx.ModelProto, image: ImagePreprocess | None, what: str) -> dict[str, np.ndarray]:
    files = sorted(f for f in p.iterdir() if f.is_file())
    npys = [f for f in files if f.suffix.lower() == ".npy"]
    images = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES]
    if npys and images:
        raise _fail(what, str(p), "mixes .npy files and images; keep one kind per folder")
    if npys:
        spec = _single_input(model, p, ".npy files", what)
        parts = []
        for f in npys:
            try:
                a = np.load(f, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise _fail(what, str(f), f"not a readable .npy file ({type(exc).__name__})") from None
            if spec.dims is not None and a.ndim == len(spec.dims) - 1:
                a = a[None]
            parts.append(a)
        if len({a.shape[1:] for a in parts}) > 1 or len({a.dtype for a in parts}) > 1:
            raise _fail(what, str(p), ".npy files have different shapes or dtypes")
        return {spec.name: np.concatenate(parts)}
    if images:
        spec = _single_input(model, p, "images", what)
        return {spec.name: _load_images(images, spec, image or ImagePreprocess(), p, what)}
    raise _fail(what, str(p), f"folder holds no .npy files or images ({', '.join(IMAGE_SUFFIXES)})")


def _load_images(files: list[Path], spec: InputSpec, pre: ImagePreprocess, folder: Path, what: str) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        raise _fail(what, str(folder), "reading images needs Pillow: pip install pillow (or pass an .npz)") from None
    size = pre.size
    if size is None:
        dims = spec.dims or ()
        hw = (dims[2], dims[3]) if pre.layout == "NCHW" and len(dims) == 4 else (
            (dims[1], dims[2]) if len(dims) == 4 else (None, None))
        if None in hw:
            raise _fail(what, str(folder), f"input {spec.name!r} has no static height and width; give --image-size H,W")
        size = (int(hw[0]), int(hw[1]))  # type: ignore[arg-type]
    out = []
    for f in files:
        try:
            with Image.open(f) as im:
                im = im.convert("L" if pre.channel_order == "L" else "RGB").resize((size[1], size[0]), Image.BILINEAR)
                a = np.asarray(im, dtype=np.float32) / 255.0
        except OSError as exc:
            raise _fail(what, str(f), f"not a readable image ({type(exc).__name__})") from None
        if a.ndim == 2:
            a = a[:, :, None]
        if pre.channel_order == "BGR":
            a = a[:, :, ::-1]
        c = a.shape[2]
        if len(pre.mean) not in (1, c) or len(pre.std) not in (1, c):
            raise _fail(what, str(folder), f"--image-mean/--image-std need 1 or {c} values")
        mean = np.resize(np.asarray(pre.mean, np.float32), c)
        std = np.resize(np.asarray(pre.std, np.float32), c)
        a = (a - mean) / std
        out.append(a.transpose(2, 0, 1) if pre.layout == "NCHW" else a)
    return np.stack(out).astype(np.float32)


def _random_array(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype, name: str) -> np.ndarray:
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(np.bool_)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, 2, shape).astype(dtype)
    raise OptionError(f"input {name!r}: cannot make random data of type {dtype}; pass real data")


def random_feeds(model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]] | None = None, *,
                 seed: int = 0) -> dict[str, np.ndarray]:
    """One seeded batch for every input at its static shape (symbolic first dim: 1)."""
    rng = np.random.default_rng(seed)
    dtypes = {s.name: s.dtype for s in model_inputs(model)}
    return {name: _random_array(rng, dims, dtypes[name], name) for name, dims in resolve_input_shapes(model, shapes).items()}


def random_dataset(model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]] | None = None, *,
                   count: int = 16, seed: int = 0) -> Dataset:
    """``count`` seeded random samples per input (per-sample shape from the static shape)."""
    rng = np.random.default_rng(seed)
    dtypes = {s.name: s.dtype for s in model_inputs(model)}
    arrays = {name: _random_array(rng, (count, *dims[1:]), dtypes[name], name)
              for name, dims in resolve_input_shapes(model, shapes).items()}
    return Dataset(arrays, None, f"seeded random inputs (seed {seed})", random=True)


def fixed_batch(model: onnx.ModelProto) -> int | None:
    """The model's fixed batch size (static first dim shared by all inputs), if any."""
    firsts = {s.dims[0] for s in model_inputs(model) if s.dims}
    firsts.discard(None)
    return int(firsts.pop()) if len(firsts) == 1 else None


def usable(data: Dataset, model: onnx.ModelProto) -> int:
    """How many samples :func:`batches` runs (a fixed batch drops a smaller remainder)."""
    fixed = fixed_batch(model)
    return data.count - data.count % fixed if fixed else data.count


def batches(data: Dataset, model: onnx.ModelProto, batch_size: int = DEFAULT_BATCH) -> Iterator[dict[str, np.ndarray]]:
    """Feeds of ``batch_size`` samples (a fixed batch dim ``B`` wins: exactly ``B`` per run)."""
    size = fixed_batch(model) or batch_size
    for start in range(0, usable(data, model), size):
        yield {k: v[start:start + size] for k, v in data.arrays.items()}


def input_shapes_from_data(model: onnx.ModelProto, data: Dataset,
                           user_shapes: Mapping[str, Sequence[int]] | None = None) -> dict[str, tuple[int, ...]]:
    """Static input shapes for analysis, the one place symbolic dims are filled from data: the
    user's, else ``(B, *sample_shape)`` with ``B`` the model's static batch dim or 1 (the same
    batch :func:`~convtool.analysis.shapes.resolve_input_shapes` gives a symbolic one)."""
    shapes = {k: tuple(int(d) for d in v) for k, v in (user_shapes or {}).items()}
    for spec in model_inputs(model):
        if spec.name in shapes or spec.name not in data.arrays:
            continue
        first = spec.dims[0] if spec.dims and spec.dims[0] is not None else 1
        shapes[spec.name] = (int(first), *data.arrays[spec.name].shape[1:])
    return shapes


def _sample_keys(data: Dataset) -> list[bytes]:
    """One key per sample: the bytes of that sample in every input (inputs in name order)."""
    names = sorted(data.arrays)
    flat = [np.ascontiguousarray(data.arrays[n]).reshape(data.count, -1) for n in names]
    return [b"".join(f[i].tobytes() for f in flat) for i in range(data.count)]


def shared_samples(seen: Dataset, other: Dataset) -> int:
    """How many samples of ``other`` occur, bit for bit in every input, in ``seen`` (0 when the
    inputs or per-sample shapes differ)."""
    if sorted(seen.arrays) != sorted(other.arrays) or any(
            seen.arrays[k].shape[1:] != other.arrays[k].shape[1:] or seen.arrays[k].dtype != other.arrays[k].dtype
            for k in seen.arrays):
        return 0
    known = set(_sample_keys(seen))
    return sum(key in known for key in _sample_keys(other))
