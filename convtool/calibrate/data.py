"""Calibration data: loading it and checking it against the model's inputs.

Accepted sources
----------------
* ``data.npz``: one array per model input, named like the input, samples stacked on the first
  (batch) axis.  Arrays that are not model inputs (``labels``, ...) are ignored.
* a folder of ``.npy`` files (single-input models): each file is one sample shaped like the
  input without its batch axis, or a stack of samples with it; files are read in name order.
* a folder of images (``.png``, ``.jpg``, ``.jpeg``, ``.bmp``, ``.webp``; single-input models):
  preprocessed as :class:`~convtool.calibrate.config.ImagePreprocess` documents.  Needs Pillow,
  imported only here (``pip install pillow``).

Checks (each failure is a one-line :class:`~convtool.errors.CalibrationDataError`): every model
input has an array; arrays are non-empty, have the input's rank and its static dims (the first
axis is the sample axis); all inputs have the same number of samples; values are finite.
Float arrays are cast to the input's float type; integer or boolean data for a float input is
refused (it is usually labels or raw pixels fed by mistake), and float data for an integer input
likewise.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from convtool.calibrate.config import ImagePreprocess
from convtool.errors import CalibrationDataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")


@dataclass(frozen=True)
class InputSpec:
    """A model input: name, numpy dtype and dims (``None`` for a symbolic dim)."""

    name: str
    dtype: np.dtype
    dims: tuple[int | None, ...] | None  # None: rank unknown


def model_inputs(model: onnx.ModelProto) -> list[InputSpec]:
    """The graph inputs that need feeding (initializers listed as inputs excluded)."""
    inits = {t.name for t in model.graph.initializer}
    specs = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        try:
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type))
        except (KeyError, TypeError, ValueError):
            dtype = np.dtype(np.float32)
        dims = None
        if tt.HasField("shape"):
            dims = tuple(int(d.dim_value) if d.HasField("dim_value") else None for d in tt.shape.dim)
        specs.append(InputSpec(vi.name, dtype, dims))
    return specs


@dataclass(frozen=True)
class CalibrationData:
    """Validated arrays, one per model input, samples on axis 0."""

    arrays: Mapping[str, np.ndarray]
    source: str = "<memory>"
    # refits already solved on this data, keyed by the converted-layer prefix (see
    # capture._calibrate); the --max-drift search sets it so trials that share a prefix
    # do not solve the same layers again. None: no reuse.
    memo: dict | None = field(default=None, compare=False, repr=False)

    @property
    def count(self) -> int:
        return int(next(iter(self.arrays.values())).shape[0])

    def take(self, index: np.ndarray) -> CalibrationData:
        return CalibrationData({k: v[index] for k, v in self.arrays.items()}, self.source)

    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, self.count, batch_size):
            yield {k: v[start:start + batch_size] for k, v in self.arrays.items()}

    def split(self, holdout: float, seed: int) -> tuple[CalibrationData, CalibrationData | None]:
        """(fit, held-out): a seeded shuffle; no held-out part when ``holdout`` is 0 or there
        are fewer than 2 samples."""
        n = self.count
        held = int(round(n * holdout))
        if holdout > 0 and n >= 2:
            held = min(max(held, 1), n - 1)
        else:
            held = 0
        order = np.random.default_rng(seed).permutation(n)
        if held == 0:
            return self, None
        return self.take(np.sort(order[held:])), self.take(np.sort(order[:held]))


def _fail(source: str, message: str) -> CalibrationDataError:
    return CalibrationDataError(f"calibration data {source}: {message}")


def validate(arrays: Mapping[str, np.ndarray], model: onnx.ModelProto, source: str = "<memory>",
             max_samples: int | None = None, seed: int = 0) -> CalibrationData:
    """Check ``arrays`` against ``model``'s inputs and return them cast, as CalibrationData."""
    specs = model_inputs(model)
    if not specs:
        raise _fail(source, "the model has no inputs to feed")
    found = sorted(arrays)
    missing = [s.name for s in specs if s.name not in arrays]
    if missing:
        have = ", ".join(repr(n) for n in found) or "none"
        raise _fail(source, f"no array for model input {missing[0]!r} (arrays found: {have})")
    out: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for spec in specs:
        a = np.asarray(arrays[spec.name])
        out[spec.name] = _check_array(a, spec, source)
        counts[spec.name] = a.shape[0]
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"{k}: {v}" for k, v in counts.items())
        raise _fail(source, f"inputs have different numbers of samples ({detail})")
    data = CalibrationData(out, source)
    if max_samples is not None and data.count > max_samples:
        pick = np.sort(np.random.default_rng(seed).choice(data.count, max_samples, replace=False))
        data = data.take(pick)
    return data


def _check_array(a: np.ndarray, spec: InputSpec, source: str) -> np.ndarray:
    name = spec.name
    if a.dtype == object or a.ndim == 0:
        raise _fail(source, f"array {name!r} is not a numeric array with a sample axis")
    if a.shape[0] == 0 or a.size == 0:
        raise _fail(source, f"array {name!r} is empty (shape {a.shape})")
    if spec.dims is not None:
        if a.ndim != len(spec.dims):
            want = "x".join("?" if d is None else str(d) for d in spec.dims)
            raise _fail(source, f"array {name!r} has shape {a.shape} ({a.ndim}-D) but input {name!r} is "
                                f"{len(spec.dims)}-D [{want}] with samples on the first axis")
        for axis, (have, want) in enumerate(zip(a.shape[1:], spec.dims[1:]), start=1):
            if want is not None and want > 0 and have != want:
                raise _fail(source, f"array {name!r} has {have} on axis {axis}, input {name!r} needs {want} "
                                    f"(array shape {a.shape})")
    target = spec.dtype
    if np.issubdtype(target, np.floating):
        if not np.issubdtype(a.dtype, np.floating):
            raise _fail(source, f"array {name!r} has dtype {a.dtype}, input {name!r} is {target}: "
                                f"preprocess to floats first (integers are refused, not guessed)")
        if not np.all(np.isfinite(a)):
            raise _fail(source, f"array {name!r} contains NaN or infinite values")
        return np.ascontiguousarray(a, dtype=target)
    if np.issubdtype(target, np.integer) or target == np.bool_:
        if a.dtype.kind not in "iub":
            raise _fail(source, f"array {name!r} has dtype {a.dtype}, input {name!r} is {target}")
        return np.ascontiguousarray(a, dtype=target)
    return np.ascontiguousarray(a)


def load_calibration(path: str | Path, model: onnx.ModelProto, image: ImagePreprocess | None = None,
                     max_samples: int | None = None, seed: int = 0) -> CalibrationData:
    """Read an ``.npz``, a folder of ``.npy`` files or a folder of images, then :func:`validate`."""
    p = Path(path)
    src = str(p)
    if not p.exists():
        raise _fail(src, "no such file or folder")
    if p.is_dir():
        arrays = _load_folder(p, model, image)
    else:
        arrays = _load_npz(p)
    return validate(arrays, model, src, max_samples=max_samples, seed=seed)


def _load_npz(p: Path) -> dict[str, np.ndarray]:
    try:
        loaded = np.load(p, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise _fail(str(p), f"not a readable .npz file ({type(exc).__name__})") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise _fail(str(p), "is a single .npy array; use an .npz with one array per model input")
    try:
        with loaded:
            return {k: loaded[k] for k in loaded.files}
    except (OSError, ValueError, EOFError) as exc:
        raise _fail(str(p), f"not a readable .npz file ({type(exc).__name__})") from None


def _single_input(model: onnx.ModelProto, p: Path, what: str) -> InputSpec:
    specs = model_inputs(model)
    if len(specs) != 1:
        raise _fail(str(p), f"a folder of {what} feeds one input, the model has {len(specs)}; use an .npz")
    return specs[0]


def _load_folder(p: Path, model: onnx.ModelProto, image: ImagePreprocess | None) -> dict[str, np.ndarray]:
    files = sorted(f for f in p.iterdir() if f.is_file())
    npys = [f for f in files if f.suffix.lower() == ".npy"]
    images = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES]
    if npys and images:
        raise _fail(str(p), "mixes .npy files and images; keep one kind per folder")
    if npys:
        spec = _single_input(model, p, ".npy files")
        parts = []
        for f in npys:
            try:
                a = np.load(f, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise _fail(str(f), f"not a readable .npy file ({type(exc).__name__})") from None
            if spec.dims is not None and a.ndim == len(spec.dims) - 1:
                a = a[None]
            parts.append(a)
        if len({a.shape[1:] for a in parts}) > 1 or len({a.dtype for a in parts}) > 1:
            raise _fail(str(p), ".npy files have different shapes or dtypes")
        return {spec.name: np.concatenate(parts)}
    if images:
        spec = _single_input(model, p, "images")
        return {spec.name: _load_images(images, spec, image or ImagePreprocess(), p)}
    raise _fail(str(p), f"folder holds no .npy files or images ({', '.join(IMAGE_SUFFIXES)})")


def _load_images(files: list[Path], spec: InputSpec, pre: ImagePreprocess, folder: Path) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        raise _fail(str(folder), "reading images needs Pillow: pip install pillow (or pass an .npz)") from None
    size = pre.size
    if size is None:
        dims = spec.dims or ()
        hw = (dims[2], dims[3]) if pre.layout == "NCHW" and len(dims) == 4 else (
            (dims[1], dims[2]) if len(dims) == 4 else (None, None))
        if None in hw or 0 in hw:
            raise _fail(str(folder), f"input {spec.name!r} has no static height and width; give --image-size H,W")
        size = (int(hw[0]), int(hw[1]))
    out = []
    for f in files:
        try:
            with Image.open(f) as im:
                im = im.convert("L" if pre.channel_order == "L" else "RGB").resize((size[1], size[0]), Image.BILINEAR)
                a = np.asarray(im, dtype=np.float32) / 255.0
        except OSError as exc:
            raise _fail(str(f), f"not a readable image ({type(exc).__name__})") from None
        if a.ndim == 2:
            a = a[:, :, None]
        if pre.channel_order == "BGR":
            a = a[:, :, ::-1]
        c = a.shape[2]
        mean = np.resize(np.asarray(pre.mean, np.float32), c)
        std = np.resize(np.asarray(pre.std, np.float32), c)
        if len(pre.mean) not in (1, c) or len(pre.std) not in (1, c):
            raise _fail(str(folder), f"--image-mean/--image-std need 1 or {c} values")
        a = (a - mean) / std
        out.append(a.transpose(2, 0, 1) if pre.layout == "NCHW" else a)
    return np.stack(out).astype(np.float32)
