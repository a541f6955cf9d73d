"""The real-model harness (benchmarks/realmodels.py) against the packages it wraps.

Slow, and only with the optional extra: pip install -e ".[models]" && pytest -m slow
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow

_REASON = 'needs the [models] extra: pip install -e ".[models]"'


@pytest.fixture(autouse=True, scope="module")
def _models_extra():
    # checked when a test runs, not at import: without -m slow these tests are deselected, not skipped
    for module in ("rapidocr_onnxruntime", "nudenet", "skimage", "PIL"):
        pytest.importorskip(module, reason=_REASON)

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

from benchmarks import realmodels as rm  # noqa: E402 - benchmarks/ is importable: pyproject's pythonpath = ["."]

THREADS = 2


@pytest.fixture(scope="module")
def models() -> dict[str, rm.RealModel]:
    return rm.find_models()


def test_all_models_found(models):
    assert set(models) == set(rm.MODEL_NAMES)
    for model in models.values():
        assert model.path.is_file(), model


@pytest.mark.parametrize("name", rm.MODEL_NAMES)
def test_declared_input_matches_the_onnx_file(models, name):
    model = models[name]
    graph = onnx.load(str(model.path), load_external_data=False).graph
    (inp,) = [i for i in graph.input if i.name == model.input_name]
    dims = inp.type.tensor_type.shape.dim
    assert len(dims) == len(model.input_shape)
    for dim, size in zip(dims, model.input_shape):
        if dim.HasField("dim_value") and dim.dim_value > 0:
            assert dim.dim_value == size


def test_nudenet_default_resolution_is_what_we_declare(models):
    import inspect

    from nudenet import NudeDetector

    default = inspect.signature(NudeDetector).parameters["inference_resolution"].default
    assert models["yolov8n"].input_shape == (1, 3, default, default)


@pytest.mark.parametrize("name", rm.MODEL_NAMES)
def test_calibration_inputs_fit_the_model(models, name):
    n = 2
    inputs = rm.calibration_inputs(name, n, seed=5)
    model = models[name]
    assert list(inputs) == [model.input_name]
    batch = inputs[model.input_name]
    assert batch.dtype == np.float32
    assert batch.shape == (n, *model.input_shape[1:])
    assert np.isfinite(batch).all()
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    session = ort.InferenceSession(str(model.path), options, providers=["CPUExecutionProvider"])
    outputs = session.run(None, inputs)
    assert all(out.shape[0] == n for out in outputs)


def test_calibration_npz_round_trip(tmp_path):
    inputs = rm.calibration_inputs("ppocr_rec", 3)
    path = rm.save_npz(tmp_path / "cal" / "rec.npz", inputs)
    with np.load(path) as data:
        assert set(data.files) == set(inputs)
        np.testing.assert_array_equal(data["x"], inputs["x"])


def test_calibration_shape_override():
    inputs = rm.calibration_inputs("ppocr_det", 2, shape=(320, 480))
    assert inputs["x"].shape == (2, 3, 320, 480)


# -- preprocessing mirrors each package's own code ---------------------------------------------


def test_yolo_preprocessing_matches_nudenet():
    from nudenet.nudenet import _read_image

    for image in rm.person_images() + rm.scene_images()[:2]:
        ours = rm.preprocess("yolov8n", image)
        theirs = _read_image(np.ascontiguousarray(image[:, :, ::-1]), 320)[0][0]
        np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_line_preprocessing_matches_rapidocr():
    from rapidocr_onnxruntime import RapidOCR

    engine = RapidOCR()
    for sample in rm.text_lines(4, seed=2):
        bgr = np.ascontiguousarray(sample.image[:, :, ::-1])
        np.testing.assert_allclose(rm.preprocess("ppocr_rec", sample.image),
                                   engine.text_rec.resize_norm_img(bgr, 320 / 48), atol=1e-6)
        np.testing.assert_allclose(rm.preprocess("ppocr_cls", sample.image),
                                   engine.text_cls.resize_norm_img(bgr), atol=1e-6)


def test_det_preprocessing_matches_rapidocr_at_the_default_size():
    from rapidocr_onnxruntime.ch_ppocr_det.utils import DetPreProcess

    page = rm.text_pages(1, seed=4)[0].image  # 736x736: rapidocr runs it unresized
    theirs = DetPreProcess(736, "min", [0.5] * 3, [0.5] * 3)(page[:, :, ::-1].copy())
    np.testing.assert_allclose(rm.preprocess("ppocr_det", page), theirs[0], atol=1e-6)


# -- sample images -----------------------------------------------------------------------------


def test_sample_images_are_rgb_uint8_and_seeded():
    for name in rm.MODEL_NAMES:
        images = rm.sample_images(name, 5, seed=1)
        assert len(images) == 5
        for image in images:
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    a = rm.text_lines(3, seed=9)
    b = rm.text_lines(3, seed=9)
    assert [s.lines for s in a] == [s.lines for s in b]
    np.testing.assert_array_equal(a[0].image, b[0].image)


# -- task runners ------------------------------------------------------------------------------


def test_ocr_reads_synthetic_lines():
    lines = rm.text_lines(16, seed=11)
    read = rm.ocr([s.image for s in lines], use_det=False, use_cls=False, threads=THREADS)
    correct = sum(r == s.lines for r, s in zip(read, lines))
    assert correct >= 0.8 * len(lines), list(zip(read, lines))


def test_ocr_reads_synthetic_pages():
    pages = rm.text_pages(3, seed=12)
    read = rm.ocr([s.image for s in pages], threads=THREADS)
    total = sum(len(s.lines) for s in pages)
    found = sum(len(set(r) & set(s.lines)) for r, s in zip(read, pages))
    assert found >= 0.8 * total, list(zip(read, pages))


def test_nudenet_finds_a_face_on_a_person_photo():
    for detections in rm.detect(rm.person_images(), threads=THREADS):
        assert any(d.cls.startswith("FACE_") for d in detections), detections


def test_nudenet_is_quiet_on_a_scene_without_people():
    (detections,) = rm.detect(rm.scene_images()[:1], threads=THREADS)  # coffee cup
    assert detections == []


@pytest.mark.parametrize("name", rm.MODEL_NAMES)
def test_original_agrees_with_itself(models, name):
    n = 3 if name == "ppocr_det" else 8
    images = rm.sample_images(name, n, seed=13)
    assert rm.task_agreement(name, None, models[name].path, images, threads=THREADS) == 1.0


def test_agreement_notices_a_different_model(tmp_path, models):
    """A recogniser with the character table removed decodes garbage: agreement drops."""
    model = onnx.load(str(models["ppocr_rec"].path))
    table = next(p for p in model.metadata_props if p.key == "character")
    lines = table.value.splitlines()
    table.value = "\n".join(lines[1:] + lines[:1])  # shift every character by one
    broken = tmp_path / "rec_shifted.onnx"
    onnx.save(model, str(broken))
    images = rm.sample_images("ppocr_rec", 4, seed=14)
    assert rm.task_agreement("ppocr_rec", None, broken, images, threads=THREADS) == 0.0


# -- comparison logic --------------------------------------------------------------------------


def test_same_detections_needs_class_and_iou():
    face = rm.Detection("FACE_FEMALE", 0.7, (100, 100, 50, 50))
    shifted = rm.Detection("FACE_FEMALE", 0.6, (105, 100, 50, 50))  # IoU 0.82
    far = rm.Detection("FACE_FEMALE", 0.7, (140, 100, 50, 50))  # IoU 0.11
    male = rm.Detection("FACE_MALE", 0.7, (100, 100, 50, 50))
    assert rm.same_output("yolov8n", [face], [shifted])
    assert not rm.same_output("yolov8n", [face], [far])
    assert not rm.same_output("yolov8n", [face], [male])
    assert not rm.same_output("yolov8n", [face], [face, shifted])
    assert rm.same_output("yolov8n", [], [])
    assert rm.agreement("yolov8n", [[face], []], [[shifted], [male]]) == 0.5


def test_same_ocr_is_exact_lines():
    assert rm.same_output("ppocr_det", ("a b", "c"), ("a b", "c"))
    assert not rm.same_output("ppocr_det", ("a b", "c"), ("ab", "c"))
    assert not rm.same_output("ppocr_rec", ("x",), ())


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(KeyError, match="expected one of"):
        rm.get_model("resnet50")
