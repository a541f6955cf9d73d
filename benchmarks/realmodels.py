"""Real third-party ONNX CNNs for benchmarks and slow tests.

Two packages of the optional ``[models]`` extra ship pretrained CNNs as ONNX files:

==============  ==========================================  =====================  ==================
name            file (inside the installed package)          task                   default input
==============  ==========================================  =====================  ==================
``ppocr_det``   rapidocr_onnxruntime/models/                 text detection (DB)    1x3x736x736
                ch_PP-OCRv4_det_infer.onnx
``ppocr_rec``   rapidocr_onnxruntime/models/                 text line recognition  1x3x48x320
                ch_PP-OCRv4_rec_infer.onnx                   (SVTR-LCNet, CTC)
``ppocr_cls``   rapidocr_onnxruntime/models/                 text line 0/180 deg    1x3x48x192
                ch_ppocr_mobile_v2.0_cls_infer.onnx          orientation
``yolov8n``     nudenet/320n.onnx                            YOLOv8n, 18 classes    1x3x320x320
                                                             (faces, body parts)
==============  ==========================================  =====================  ==================

The default shapes are what the packages feed: rapidocr scales a page so that its SHORT side is
``Det.limit_side_len`` (736) and rounds both sides to multiples of 32, so a square page runs at
736x736; it resizes each text crop to height 48 and pads it to at least the configured width
(320 for recognition, 192 for orientation); nudenet pads an image to a square and resizes it to
``inference_resolution`` (320). All four models have symbolic batch and spatial dims, so MACs and
latency need one of these static shapes.

What this module gives, all offline:

* :func:`find_models` -- the models and their metadata;
* sample images: people (:func:`person_images`, two bundled photos with a face and seeded
  variants of them), scenes without people (:func:`scene_images`), synthetic text pages and text
  lines rendered with PIL from known strings (:func:`text_pages`, :func:`text_lines`);
* :func:`preprocess` / :func:`calibration_inputs` / :func:`save_npz` -- model inputs built the way
  each package builds them, at one fixed size so that samples stack on the first axis;
* task-level runners pointed at any ONNX file (:func:`ocr`, :func:`detect`, :func:`task_outputs`)
  and the comparison the benchmarks report (:func:`same_output`, :func:`agreement`,
  :func:`task_agreement`).

Channel order: both packages follow OpenCV and take BGR arrays. This module hands out RGB
``uint8`` HxWx3 arrays (the convention of scikit-image and PIL) and converts at the boundary,
so callers never deal with BGR.

Heavy imports (cv2, PIL, scikit-image, onnxruntime, the packages themselves) happen inside the
functions that use them; importing this module costs nothing and works without the extra.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "MODEL_NAMES",
    "RealModel",
    "TextSample",
    "Detection",
    "ModelsNotInstalled",
    "find_models",
    "get_model",
    "person_images",
    "scene_images",
    "text_pages",
    "text_lines",
    "sample_images",
    "preprocess",
    "calibration_inputs",
    "save_npz",
    "ocr",
    "detect",
    "task_outputs",
    "same_output",
    "agreement",
    "task_agreement",
]

MODEL_NAMES: tuple[str, ...] = ("ppocr_det", "ppocr_rec", "ppocr_cls", "yolov8n")
_OCR_MODELS = ("ppocr_det", "ppocr_rec", "ppocr_cls")
_INSTALL_HINT = 'install the optional extra: pip install -e ".[models]"'


class ModelsNotInstalled(ImportError):
    """A package of the ``[models]`` extra is missing."""


@dataclass(frozen=True)
class RealModel:
    """One real ONNX CNN shipped by a third-party package."""

    name: str
    path: Path
    input_name: str
    #: A static input shape (N, C, H, W) matching what the package feeds, for MACs and latency.
    input_shape: tuple[int, ...]
    task: str
    package: str


class TextSample(NamedTuple):
    """A rendered RGB image and the text lines drawn on it, top to bottom."""

    image: np.ndarray
    lines: tuple[str, ...]


class Detection(NamedTuple):
    """One nudenet detection; ``box`` is (x, y, width, height) in image pixels."""

    cls: str
    score: float
    box: tuple[int, int, int, int]


# ----------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------


def _package_dir(module: str) -> Path | None:
    """The installed package's directory, found without importing it (no cv2 import)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@lru_cache(maxsize=1)
def _rapidocr_config() -> dict[str, Any]:
    """rapidocr's own config.yaml, so default sizes follow the installed version."""
    import yaml  # a rapidocr dependency

    root = _package_dir("rapidocr_onnxruntime")
    if root is None:
        raise ModelsNotInstalled(f"rapidocr-onnxruntime is not installed; {_INSTALL_HINT}")
    with open(root / "config.yaml", "rb") as f:
        config = yaml.safe_load(f)
    for section in ("Det", "Rec", "Cls"):
        config[section]["model_path"] = str(root / config[section]["model_path"])
    return config


def _nudenet_resolution() -> int:
    """nudenet's default ``inference_resolution`` (320 in nudenet 3.4)."""
    return 320


def _first_input_name(path: Path) -> str:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    return next(i.name for i in model.graph.input if i.name not in initializers)


@lru_cache(maxsize=1)
def _find_models_cached() -> tuple[RealModel, ...]:
    found: list[RealModel] = []
    if _package_dir("rapidocr_onnxruntime") is not None:
        cfg = _rapidocr_config()
        det_side = int(cfg["Det"]["limit_side_len"])
        specs = [
            ("ppocr_det", cfg["Det"]["model_path"], (1, 3, det_side, det_side),
             "PP-OCRv4 mobile text detector (DB): probability map of text pixels"),
            ("ppocr_rec", cfg["Rec"]["model_path"], (1, *map(int, cfg["Rec"]["rec_img_shape"])),
             "PP-OCRv4 mobile text line recogniser (CTC over 6623 Chinese/Latin characters)"),
            ("ppocr_cls", cfg["Cls"]["model_path"], (1, *map(int, cfg["Cls"]["cls_image_shape"])),
             "PP-OCR mobile v2.0 text line orientation classifier (0 or 180 degrees)"),
        ]
        for name, path, shape, task in specs:
            found.append(RealModel(name, Path(path), _first_input_name(Path(path)), shape, task,
                                   "rapidocr-onnxruntime"))
    nude = _package_dir("nudenet")
    if nude is not None:
        path = nude / "320n.onnx"
        side = _nudenet_resolution()
        found.append(RealModel("yolov8n", path, _first_input_name(path), (1, 3, side, side),
                               "YOLOv8n detector (nudenet): 18 classes incl. FACE_FEMALE/FACE_MALE",
                               "nudenet"))
    return tuple(found)


def find_models() -> dict[str, RealModel]:
    """The real models whose packages are installed, by name (possibly empty)."""
    return {m.name: m for m in _find_models_cached()}


def get_model(name: str) -> RealModel:
    """One model by name; a clear error when it is unknown or its package is missing."""
    if name not in MODEL_NAMES:
        raise KeyError(f"unknown real model {name!r}; expected one of {', '.join(MODEL_NAMES)}")
    models = find_models()
    if name not in models:
        package = "nudenet" if name == "yolov8n" else "rapidocr-onnxruntime"
        raise ModelsNotInstalled(f"{name} needs {package}; {_INSTALL_HINT}")
    return models[name]


# ----------------------------------------------------------------------------------------------
# Sample images (RGB uint8 HxWx3, all offline)
# ----------------------------------------------------------------------------------------------


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.shape[2] == 4:
        image = image[:, :, :3]
    return np.ascontiguousarray(image, dtype=np.uint8)


def _skimage(name: str) -> np.ndarray:
    import skimage.data

    return _rgb(getattr(skimage.data, name)())


#: Photos bundled in the scikit-image wheel (no download) that nudenet finds a face in.
_PERSON_PHOTOS = ("astronaut", "camera")
#: Bundled photos without people: detectors should stay silent on these.
_SCENE_PHOTOS = ("coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field",
                 "coins", "moon", "colorwheel", "clock", "brick")


def _variant(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A mild, face-preserving augmentation: flip, crop, rescale, brightness/contrast."""
    import cv2

    h, w = image.shape[:2]
    out = image[:, ::-1] if rng.random() < 0.5 else image
    # crop up to 15% from each side
    top, bottom = (int(rng.uniform(0, 0.15) * h) for _ in range(2))
    left, right = (int(rng.uniform(0, 0.15) * w) for _ in range(2))
    out = out[top:h - bottom, left:w - right]
    scale = rng.uniform(0.6, 1.3)
    out = cv2.resize(np.ascontiguousarray(out), None, fx=scale, fy=scale,
                     interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    gain, bias = rng.uniform(0.8, 1.2), rng.uniform(-20, 20)
    return np.clip(out.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)


def person_images(n: int | None = None, *, seed: int = 0) -> list[np.ndarray]:
    """Photos with one person's face: scikit-image's astronaut and cameraman, then seeded variants.

    With ``n`` unset, the two originals. Otherwise ``n`` images: the originals first (when
    ``seed == 0``), then augmented variants (flip, crop, rescale, brightness) cycling over them.
    """
    base = [_skimage(name) for name in _PERSON_PHOTOS]
    if n is None:
        return base
    rng = np.random.default_rng(seed)
    out = list(base) if seed == 0 else []
    while len(out) < n:
        out.append(_variant(base[len(out) % len(base)], rng))
    return out[:n]


def scene_images() -> list[np.ndarray]:
    """Bundled scikit-image photos without people (negatives for the detector, context for OCR)."""
    return [_skimage(name) for name in _SCENE_PHOTOS]


_FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "/Library/Fonts",
              "/System/Library/Fonts", "C:/Windows/Fonts")
_FONT_NAMES = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf",
               "LiberationSans-Regular.ttf", "LiberationSerif-Regular.ttf", "Arial.ttf")


@lru_cache(maxsize=1)
def _font_files() -> tuple[str, ...]:
    """TrueType fonts found on this system (may be empty: then PIL's bundled font is used)."""
    found: dict[str, str] = {}
    for root in map(Path, _FONT_DIRS):
        if not root.is_dir():
            continue
        for name in _FONT_NAMES:
            if name not in found:
                hit = next(root.rglob(name), None)
                if hit is not None:
                    found[name] = str(hit)
    return tuple(found[name] for name in _FONT_NAMES if name in found)


def _font(index: int, size: int):
    from PIL import ImageFont

    files = _font_files()
    if files:
        return ImageFont.truetype(files[index % len(files)], size)
    return ImageFont.load_default(size=size)  # Pillow >= 10.1 bundles a scalable font


_WORDS = ("convert", "depthwise", "pointwise", "kernel", "channel", "tensor", "model", "layer",
          "ONNX", "Runtime", "PIXEL", "image", "text", "reader", "Python", "matrix", "rank",
          "value", "north", "garden", "window", "river", "station", "coffee", "paper", "orange",
          "Monday", "April", "London", "Paris", "Berlin", "total", "price", "order", "number",
          "street", "house", "green", "light", "speed", "hello", "world", "data", "fast", "slow")


def _random_line(rng: np.random.Generator, max_chars: int) -> str:
    while True:
        words = [
            str(rng.integers(0, 10 ** int(rng.integers(1, 5)))) if rng.random() < 0.2
            else _WORDS[int(rng.integers(len(_WORDS)))]
            for _ in range(int(rng.integers(1, 4)))
        ]
        line = " ".join(words)
        if len(line) <= max_chars:
            return line


def _paper(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(215, 256, size=3))


def _ink(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 70, size=3))


def text_pages(n: int, *, seed: int = 0, size: tuple[int, int] = (736, 736)) -> list[TextSample]:
    """``n`` synthetic pages (height, width = ``size``) with 3-6 lines of known printed text.

    Seeded: the same seed gives the same pages; different seeds give disjoint-looking sets
    (use one seed for calibration and another for evaluation).
    """
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    height, width = size
    pages = []
    for _ in range(n):
        page = Image.new("RGB", (width, height), _paper(rng))
        draw = ImageDraw.Draw(page)
        lines: list[str] = []
        y = int(rng.integers(20, 80))
        for _ in range(int(rng.integers(3, 7))):
            font_size = int(rng.integers(26, 46))
            font = _font(int(rng.integers(0, 16)), font_size)
            line = _random_line(rng, max_chars=24)
            x = int(rng.integers(20, 60))
            left, top, right, bottom = draw.textbbox((x, y), line, font=font)
            if bottom + 20 > height or right + 10 > width:
                break
            draw.text((x, y), line, font=font, fill=_ink(rng))
            lines.append(line)
            y = bottom + int(font_size * rng.uniform(0.9, 2.0))
        pages.append(TextSample(np.asarray(page, dtype=np.uint8), tuple(lines)))
    return pages


def text_lines(n: int, *, seed: int = 0) -> list[TextSample]:
    """``n`` synthetic text-line crops (one known line each, tight margins like a detector crop).

    Lines are short enough (at most 18 characters) to fit the recogniser's 48x320 input without
    being squeezed, so a fixed-size calibration batch sees them as rapidocr does.
    """
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n):
        font_size = int(rng.integers(28, 44))
        font = _font(int(rng.integers(0, 16)), font_size)
        line = _random_line(rng, max_chars=18)
        probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        left, top, right, bottom = probe.textbbox((0, 0), line, font=font)
        pad_x, pad_y = int(rng.integers(4, 14)), int(rng.integers(4, 12))
        image = Image.new("RGB", (right - left + 2 * pad_x, bottom - top + 2 * pad_y), _paper(rng))
        ImageDraw.Draw(image).text((pad_x - left, pad_y - top), line, font=font, fill=_ink(rng))
        samples.append(TextSample(np.asarray(image, dtype=np.uint8), (line,)))
    return samples


def sample_images(model_name: str, n: int, *, seed: int = 0) -> list[np.ndarray]:
    """``n`` RGB images suited to the model's task (what :func:`task_agreement` expects).

    * ``ppocr_det``: synthetic text pages, with the bundled page scan and a few text-free
      scenes mixed in (1 in 4) so that false detections show up too;
    * ``ppocr_rec`` / ``ppocr_cls``: synthetic text-line crops;
    * ``yolov8n``: people photos and variants, alternating with people-free scenes.
    """
    get_model(model_name)  # validates the name and that the package is installed
    if model_name in ("ppocr_rec", "ppocr_cls"):
        return [s.image for s in text_lines(n, seed=seed)]
    scenes = scene_images()
    if model_name == "ppocr_det":
        pages = iter(s.image for s in text_pages(n, seed=seed))
        extra = [_skimage("page")] + scenes
        return [extra[(i // 4) % len(extra)] if i % 4 == 3 else next(pages) for i in range(n)]
    people = iter(person_images(n, seed=seed))
    return [scenes[(i // 2) % len(scenes)] if i % 2 else next(people) for i in range(n)]


# ----------------------------------------------------------------------------------------------
# Preprocessing (mirrors each package; tests check that it matches their own code)
# ----------------------------------------------------------------------------------------------


def _bgr(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(_rgb(image)[:, :, ::-1])


def _det_input(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """rapidocr DetPreProcess: resize, scale 1/255, (x - mean) / std, HWC -> CHW, BGR order.

    rapidocr picks the size from the image (short side to 736, both sides rounded to 32); a
    calibration batch needs one size, so the image is resized straight to (height, width).
    """
    import cv2

    cfg = _rapidocr_config()["Det"]
    mean, std = np.array(cfg["mean"]), np.array(cfg["std"])
    resized = cv2.resize(_bgr(image), (width, height))
    normed = (resized.astype("float32") * (1 / 255.0) - mean) / std
    return normed.transpose(2, 0, 1).astype(np.float32)


def _line_input(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """rapidocr rec/cls resize_norm_img: keep aspect at height 48, (x/255 - .5)/.5, pad right."""
    import cv2

    bgr = _bgr(image)
    h, w = bgr.shape[:2]
    resized_w = min(width, int(math.ceil(height * w / float(h))))
    resized = cv2.resize(bgr, (resized_w, height)).astype("float32")
    resized = (resized.transpose(2, 0, 1) / 255 - 0.5) / 0.5
    out = np.zeros((3, height, width), dtype=np.float32)
    out[:, :, :resized_w] = resized
    return out


def _yolo_input(image: np.ndarray, side: int) -> np.ndarray:
    """nudenet _read_image: pad bottom/right to a square, resize, /255.

    nudenet converts its BGR input with ``cv2.COLOR_RGBA2BGR`` (which swaps R and B on a
    3-channel image) and then ``blobFromImage(swapRB=True)`` swaps them back, so the network
    receives BGR, as computed here.
    """
    import cv2

    bgr = _bgr(image)
    h, w = bgr.shape[:2]
    size = max(h, w)
    padded = cv2.copyMakeBorder(bgr, 0, size - h, 0, size - w, cv2.BORDER_CONSTANT)
    blob = cv2.dnn.blobFromImage(padded, 1 / 255.0, (side, side), (0, 0, 0),
                                 swapRB=False, crop=False)
    return blob[0]


def preprocess(model_name: str, image: np.ndarray,
               shape: tuple[int, int] | None = None) -> np.ndarray:
    """One RGB image -> the model's input (C, H, W) float32, as its package prepares it.

    ``shape`` = (H, W) overrides the model's default static size (see :class:`RealModel`).
    """
    model = get_model(model_name)
    height, width = shape if shape is not None else model.input_shape[2:]
    if model_name == "ppocr_det":
        return _det_input(image, height, width)
    if model_name in ("ppocr_rec", "ppocr_cls"):
        return _line_input(image, height, width)
    if height != width:
        raise ValueError(f"yolov8n runs on square inputs in nudenet, got {height}x{width}")
    return _yolo_input(image, height)


def calibration_inputs(model_name: str, n: int, *, seed: int = 0,
                       shape: tuple[int, int] | None = None,
                       images: Sequence[np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """``{input_name: array (n, C, H, W) float32}`` from ``n`` task images, one fixed size.

    The images are :func:`sample_images` (``seed`` selects the set; keep calibration and
    evaluation seeds apart) unless ``images`` is given. ``shape`` = (H, W) overrides the
    default static size.
    """
    if n < 1:
        raise ValueError("n must be at least 1")
    model = get_model(model_name)
    if images is None:
        images = sample_images(model_name, n, seed=seed)
    elif len(images) < n:
        raise ValueError(f"{n} samples requested but only {len(images)} images given")
    batch = np.stack([preprocess(model_name, im, shape) for im in list(images)[:n]])
    return {model.input_name: batch}


def save_npz(path: str | Path, inputs: dict[str, np.ndarray]) -> Path:
    """Write calibration inputs as an npz, one array per model input (``convtool --calibration``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **inputs)
    return path


# ----------------------------------------------------------------------------------------------
# Task runners
# ----------------------------------------------------------------------------------------------


def _ocr_engine(det_path: str | Path | None, rec_path: str | Path | None,
                cls_path: str | Path | None, threads: int | None):
    from rapidocr_onnxruntime import RapidOCR

    cfg = _rapidocr_config()
    kwargs: dict[str, Any] = {
        "det_model_path": str(det_path or cfg["Det"]["model_path"]),
        "rec_model_path": str(rec_path or cfg["Rec"]["model_path"]),
        "cls_model_path": str(cls_path or cfg["Cls"]["model_path"]),
    }
    if threads is not None:
        kwargs["intra_op_num_threads"] = threads
        kwargs["inter_op_num_threads"] = 1
    return RapidOCR(**kwargs)


def ocr(images: Iterable[np.ndarray], *, det_path: str | Path | None = None,
        rec_path: str | Path | None = None, cls_path: str | Path | None = None,
        use_det: bool = True, use_cls: bool = True,
        threads: int | None = None) -> list[tuple[str, ...]]:
    """Recognised text lines per RGB image, with rapidocr using the given model files.

    Lines come in rapidocr's reading order, stripped of surrounding whitespace (the CTC decoder
    sometimes emits a leading space). With detection, rapidocr drops lines scoring below its
    ``text_score`` (0.5).

    Any path left unset uses the packaged model. ``use_det=False`` treats each image as one text
    line crop (recognition, and orientation if ``use_cls``). ``threads`` sets onnxruntime's
    intra-op threads (default: onnxruntime's own choice, as rapidocr does).
    """
    engine = _ocr_engine(det_path, rec_path, cls_path, threads)
    results = []
    for image in images:
        out, _ = engine(_bgr(image), use_det=use_det, use_cls=use_cls, use_rec=True)
        if not out:
            results.append(())
        elif use_det:  # [box, text, score]
            results.append(tuple(str(r[1]).strip() for r in out))
        else:  # [text, score]
            results.append(tuple(str(r[0]).strip() for r in out))
    return results


def detect(images: Iterable[np.ndarray], model_path: str | Path | None = None, *,
           resolution: int | None = None, threads: int | None = None) -> list[list[Detection]]:
    """nudenet detections per RGB image, with the detector running ``model_path``.

    ``resolution`` is nudenet's ``inference_resolution`` (default 320). ``threads`` sets
    onnxruntime's intra-op threads (nudenet itself takes no session options, so the session is
    replaced by one built with them).
    """
    from nudenet import NudeDetector

    side = resolution or _nudenet_resolution()
    path = str(model_path or get_model("yolov8n").path)
    detector = NudeDetector(model_path=path, inference_resolution=side)
    if threads is not None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        detector.onnx_session = ort.InferenceSession(path, options,
                                                     providers=["CPUExecutionProvider"])
    results = []
    for image in images:
        found = detector.detect(_bgr(image))
        results.append([Detection(d["class"], float(d["score"]), tuple(int(v) for v in d["box"]))
                        for d in found])
    return results


def task_outputs(model_name: str, model_path: str | Path | None,
                 images: Sequence[np.ndarray], *, threads: int | None = None) -> list[Any]:
    """The task output per image when ``model_name`` is replaced by the file ``model_path``.

    * ``ppocr_det``: full OCR (detection, orientation, recognition) on pages -> text lines;
    * ``ppocr_rec`` / ``ppocr_cls``: each image is a line crop -> its recognised text
      (the orientation classifier runs only for ``ppocr_cls``);
    * ``yolov8n``: :class:`Detection` lists.
    """
    get_model(model_name)
    if model_name == "ppocr_det":
        return ocr(images, det_path=model_path, threads=threads)
    if model_name == "ppocr_rec":
        return ocr(images, rec_path=model_path, use_det=False, use_cls=False, threads=threads)
    if model_name == "ppocr_cls":
        return ocr(images, cls_path=model_path, use_det=False, use_cls=True, threads=threads)
    return detect(images, model_path, threads=threads)


def _iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def _same_detections(a: Sequence[Detection], b: Sequence[Detection], min_iou: float) -> bool:
    """Same count, and a one-to-one greedy match of same-class boxes with IoU >= min_iou."""
    if len(a) != len(b):
        return False
    unmatched = list(b)
    for det in sorted(a, key=lambda d: -d.score):
        best, best_iou = None, min_iou
        for other in unmatched:
            if other.cls == det.cls:
                iou = _iou(det.box, other.box)
                if iou >= best_iou:
                    best, best_iou = other, iou
        if best is None:
            return False
        unmatched.remove(best)
    return True


def same_output(model_name: str, a: Any, b: Any, *, min_iou: float = 0.5) -> bool:
    """Whether two task outputs of one image count as the same.

    OCR: the identical tuple of text lines. Detections: same number, every detection matched to
    one of the other side's with the same class and IoU >= ``min_iou`` (scores are ignored).
    """
    if model_name == "yolov8n":
        return _same_detections(a, b, min_iou)
    return tuple(a) == tuple(b)


def agreement(model_name: str, outputs_a: Sequence[Any], outputs_b: Sequence[Any], *,
              min_iou: float = 0.5) -> float:
    """Fraction of samples whose task outputs are the same (see :func:`same_output`)."""
    if len(outputs_a) != len(outputs_b):
        raise ValueError(f"{len(outputs_a)} outputs against {len(outputs_b)}")
    if not outputs_a:
        raise ValueError("no samples to compare")
    same = sum(same_output(model_name, a, b, min_iou=min_iou)
               for a, b in zip(outputs_a, outputs_b))
    return same / len(outputs_a)


def task_agreement(model_name: str, original_path: str | Path | None,
                   candidate_path: str | Path, images: Sequence[np.ndarray], *,
                   threads: int | None = None, min_iou: float = 0.5) -> float:
    """Fraction of ``images`` on which the candidate model gives the original's task output.

    ``original_path`` None means the packaged model. To compare many candidates against one
    original, call :func:`task_outputs` once for the original and :func:`agreement` per candidate.
    """
    original = task_outputs(model_name, original_path, images, threads=threads)
    candidate = task_outputs(model_name, candidate_path, images, threads=threads)
    return agreement(model_name, original, candidate, min_iou=min_iou)
