"""runtime/inputs.py: the one inputs module - .npz, .npy folders, image folders and random
feeds; the checks (one-line CalibrationDataErrors); labels; splits; fixed-batch behaviour."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from builders import conv_relu, make_model, three_conv_model
from onnx import TensorProto, helper
from PIL import Image

from convtool.errors import CalibrationDataError, OptionError
from convtool.options import ImagePreprocess
from convtool.runtime.inputs import (
    Dataset,
    batches,
    fixed_batch,
    input_shapes_from_data,
    load,
    model_inputs,
    random_dataset,
    random_feeds,
    usable,
    validate,
)


def refused(call, message: str) -> CalibrationDataError:
    with pytest.raises(CalibrationDataError) as exc:
        call()
    assert message in str(exc.value), str(exc.value)
    assert "\n" not in str(exc.value)
    return exc.value


def io_model(inputs: list[tuple[str, int, list]]) -> onnx.ModelProto:
    """A model whose inputs are ``(name, elem_type, dims)``, each passed through an Identity."""
    nodes = [helper.make_node("Identity", [n], [f"{n}.out"]) for n, _, _ in inputs]
    graph = helper.make_graph(nodes, "io", [helper.make_tensor_value_info(n, t, d) for n, t, d in inputs],
                              [helper.make_tensor_value_info(f"{n}.out", t, d) for n, t, d in inputs])
    return make_model(graph)


def rgb_model(h: int | str = 9, w: int | str = 9, channels: int = 3, batch: int | str = "N"):
    return io_model([("x", TensorProto.FLOAT, [batch, channels, h, w])])


# --- validate ------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"images": np.zeros((4, 8, 9, 9), np.float32)}, "no array for model input 'x' (arrays found: 'images')"),
        ({"x": np.zeros((4, 8, 9), np.float32)}, "has shape (4, 8, 9) (3-D) but input 'x' is 4-D"),
        ({"x": np.zeros((4, 3, 9, 9), np.float32)}, "has 3 on axis 1, input 'x' needs 8"),
        ({"x": np.zeros((4, 8, 9, 9), np.int64)}, "has dtype int64, input 'x' is float32"),
        ({"x": np.zeros((0, 8, 9, 9), np.float32)}, "is empty"),
        ({"x": np.full((2, 8, 9, 9), np.nan, np.float32)}, "NaN"),
        ({"x": np.float32(1.0)}, "is not a numeric array with a sample axis"),
    ],
)
def test_bad_arrays_are_refused(arrays, message):
    err = refused(lambda: validate(arrays, three_conv_model(), "cal.npz"), message)
    assert str(err).startswith("calibration data cal.npz: ")


def test_extra_arrays_other_than_labels_are_refused():
    """The documented rule: a misspelt input name must not be silently ignored."""
    arrays = {"x": np.zeros((3, 8, 9, 9), np.float32), "x_typo": np.zeros((3, 8, 9, 9), np.float32)}
    refused(lambda: validate(arrays, three_conv_model()),
            "array 'x_typo' is not a model input (inputs: x; optional: labels)")


def test_labels_are_split_off_and_float64_is_cast():
    data = validate({"x": np.zeros((3, 8, 9, 9)), "labels": np.arange(3, dtype=np.int32)}, three_conv_model())
    assert set(data.arrays) == {"x"} and data.arrays["x"].dtype == np.float32
    assert data.labels.dtype == np.int64 and data.labels.tolist() == [0, 1, 2]
    column = validate({"x": np.zeros((2, 8, 9, 9), np.float32), "labels": np.array([[4], [7]])}, three_conv_model())
    assert column.labels.tolist() == [4, 7]  # [N, 1] is read as N class ids


@pytest.mark.parametrize("labels, message", [
    (np.zeros(3, np.float32), "'labels' must be a 1-D integer array of class ids"),
    (np.zeros((3, 2), np.int64), "'labels' must be a 1-D integer array of class ids, got shape [3, 2]"),
    (np.zeros(4, np.int64), "arrays have different numbers of samples (x: 3, labels: 4)"),
])
def test_bad_labels_are_refused(labels, message):
    refused(lambda: validate({"x": np.zeros((3, 8, 9, 9), np.float32), "labels": labels}, three_conv_model()), message)


def test_mismatched_sample_counts():
    two = three_conv_model()
    two.graph.input.append(helper.make_tensor_value_info("x2", TensorProto.FLOAT, ["N", 2]))
    refused(lambda: validate({"x": np.zeros((3, 8, 9, 9), np.float32), "x2": np.zeros((4, 2), np.float32)}, two),
            "different numbers of samples")


def test_integer_inputs_cast_within_their_kind_and_refuse_floats():
    model = io_model([("ids", TensorProto.INT64, ["N", 4]), ("mask", TensorProto.BOOL, ["N", 4])])
    data = validate({"ids": np.ones((2, 4), np.int32), "mask": np.ones((2, 4), bool)}, model)
    assert data.arrays["ids"].dtype == np.int64 and data.arrays["mask"].dtype == np.bool_
    refused(lambda: validate({"ids": np.ones((2, 4), np.float32), "mask": np.ones((2, 4), bool)}, model),
            "array 'ids' has dtype float32, input 'ids' is int64")


def test_max_samples_keeps_a_seeded_subset_in_order():
    x = np.arange(10, dtype=np.float32)[:, None, None, None] * np.ones((10, 8, 9, 9), np.float32)
    a = validate({"x": x, "labels": np.arange(10)}, three_conv_model(), max_samples=4, seed=3)
    b = validate({"x": x, "labels": np.arange(10)}, three_conv_model(), max_samples=4, seed=3)
    assert a.count == 4 and np.array_equal(a.labels, b.labels)
    assert a.labels.tolist() == sorted(a.labels.tolist())
    assert np.array_equal(a.arrays["x"][:, 0, 0, 0], a.labels.astype(np.float32))  # samples and labels stay paired
    assert validate({"x": x}, three_conv_model(), max_samples=20).count == 10


def test_model_inputs_skip_initializers_listed_as_inputs():
    model = three_conv_model()
    w = model.graph.initializer[0]
    model.graph.input.append(helper.make_tensor_value_info(w.name, w.data_type, list(w.dims)))
    (spec,) = model_inputs(model)
    assert (spec.name, spec.dtype, spec.dims) == ("x", np.dtype(np.float32), (None, 8, 9, 9))


# --- load: .npz, .npy folders, image folders -----------------------------------------------------

def test_npz(tmp_path):
    path = tmp_path / "cal.npz"
    np.savez(path, x=np.zeros((5, 8, 9, 9), np.float32), labels=np.arange(5))
    data = load(path, three_conv_model())
    assert data.count == 5 and data.labels.tolist() == list(range(5)) and data.source == str(path)


@pytest.mark.parametrize("name, make, message", [
    ("absent.npz", lambda p: None, "no such file or folder"),
    ("garbage.npz", lambda p: p.write_bytes(b"not a zip"), "not a readable .npz file"),
    ("one.npy", lambda p: np.save(p, np.zeros((2, 8, 9, 9), np.float32)), "is a single .npy array; use an .npz"),
    ("empty", lambda p: p.mkdir(), "folder holds no .npy files or images"),
])
def test_unreadable_sources_are_refused(tmp_path, name, make, message):
    path = tmp_path / name
    make(path)
    refused(lambda: load(path, three_conv_model()), message)


def test_npy_folder_takes_single_samples_and_stacks_in_name_order(tmp_path):
    np.save(tmp_path / "a.npy", np.full((8, 9, 9), 1, np.float32))  # one sample, no batch axis
    np.save(tmp_path / "b.npy", np.full((2, 8, 9, 9), 2, np.float32))  # a stack of two
    np.save(tmp_path / "c.npy", np.full((8, 9, 9), 3, np.float32))
    data = load(tmp_path, three_conv_model())
    assert data.count == 4 and data.arrays["x"][:, 0, 0, 0].tolist() == [1, 2, 2, 3]


def test_npy_folder_refusals(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((8, 9, 9), np.float32))
    np.save(tmp_path / "b.npy", np.zeros((8, 9, 9), np.float64))
    refused(lambda: load(tmp_path, three_conv_model()), ".npy files have different shapes or dtypes")
    two_inputs = io_model([("a", TensorProto.FLOAT, ["N", 2]), ("b", TensorProto.FLOAT, ["N", 2])])
    refused(lambda: load(tmp_path, two_inputs), "a folder of .npy files feeds one input, the model has 2; use an .npz")
    Image.new("RGB", (9, 9)).save(tmp_path / "c.png")
    refused(lambda: load(tmp_path, three_conv_model()), "mixes .npy files and images")


def test_image_folder_rgb_resized_and_normalised(tmp_path):
    for i in range(2):
        Image.fromarray(np.full((20, 30, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
    data = load(tmp_path, rgb_model(), ImagePreprocess(mean=(0.5,), std=(0.25,)))
    assert data.arrays["x"].shape == (2, 3, 9, 9) and data.arrays["x"].dtype == np.float32
    np.testing.assert_allclose(data.arrays["x"][0], -2.0)  # (0 - 0.5) / 0.25
    np.testing.assert_allclose(data.arrays["x"][1], (40 / 255 - 0.5) / 0.25, rtol=1e-6)


def test_image_channel_order_layout_and_greyscale(tmp_path):
    red = np.zeros((6, 6, 3), np.uint8)
    red[..., 0] = 255
    Image.fromarray(red).save(tmp_path / "red.png")
    bgr = load(tmp_path, rgb_model(6, 6), ImagePreprocess(channel_order="BGR")).arrays["x"]
    assert bgr[0, 2].min() == 1.0 and bgr[0, 0].max() == 0.0  # red moves to the last channel
    nhwc = load(tmp_path, io_model([("x", TensorProto.FLOAT, ["N", 6, 6, 3])]),
                ImagePreprocess(layout="NHWC")).arrays["x"]
    assert nhwc.shape == (1, 6, 6, 3) and nhwc[0, ..., 0].min() == 1.0
    grey = load(tmp_path, rgb_model(4, 5, channels=1), ImagePreprocess(channel_order="L")).arrays["x"]
    assert grey.shape == (1, 1, 4, 5)
    np.testing.assert_allclose(grey, round(0.299 * 255) / 255, atol=1 / 255)  # Pillow's luma of pure red


def test_image_size_needed_for_symbolic_height_and_width(tmp_path):
    Image.new("RGB", (10, 10)).save(tmp_path / "a.png")
    refused(lambda: load(tmp_path, rgb_model("H", "W")), "has no static height and width; give --image-size H,W")
    assert load(tmp_path, rgb_model("H", "W"), ImagePreprocess(size=(4, 6))).arrays["x"].shape == (1, 3, 4, 6)


def test_image_mean_with_the_wrong_number_of_values(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    refused(lambda: load(tmp_path, rgb_model(4, 4), ImagePreprocess(mean=(0.1, 0.2))),
            "--image-mean/--image-std need 1 or 3 values")


# --- random feeds --------------------------------------------------------------------------------

def test_random_feeds_are_seeded_and_static():
    model = conv_relu()
    a = random_feeds(model, seed=3)
    b = random_feeds(model, seed=3)
    assert list(a) == ["X"] and a["X"].shape == (1, 3, 8, 8) and a["X"].dtype == np.float32
    np.testing.assert_array_equal(a["X"], b["X"])
    assert not np.array_equal(a["X"], random_feeds(model, seed=4)["X"])
    assert random_feeds(model, {"X": (2, 3, 8, 8)})["X"].shape == (2, 3, 8, 8)


def test_random_feeds_for_integer_and_boolean_inputs():
    model = io_model([("ids", TensorProto.INT64, [2, 4]), ("mask", TensorProto.BOOL, [2, 4])])
    feeds = random_feeds(model)
    assert feeds["ids"].dtype == np.int64 and set(np.unique(feeds["ids"])) <= {0, 1}
    assert feeds["mask"].dtype == np.bool_ and feeds["mask"].shape == (2, 4)


def test_random_feeds_need_shapes_for_symbolic_dims():
    with pytest.raises(OptionError, match=r"input x \[N,3,H,W\] has symbolic dims; pass --input-shape x=DIMS"):
        random_feeds(rgb_model("H", "W"))
    assert random_feeds(rgb_model("H", "W"), {"x": (1, 3, 5, 5)})["x"].shape == (1, 3, 5, 5)


def test_random_dataset_is_marked_random():
    data = random_dataset(conv_relu(), count=5, seed=1)
    assert data.random and data.count == 5 and data.arrays["X"].shape == (5, 3, 8, 8)
    assert data.describe() == "5 seeded random inputs"
    np.testing.assert_array_equal(data.arrays["X"], random_dataset(conv_relu(), count=5, seed=1).arrays["X"])


# --- splits and batches --------------------------------------------------------------------------

def test_split_is_seeded_disjoint_and_complete():
    data = Dataset({"x": np.arange(10, dtype=np.float32)[:, None]}, np.arange(10))
    fit, held = data.split(0.3, seed=1)
    assert (fit.count, held.count) == (7, 3)
    assert sorted(fit.labels.tolist() + held.labels.tolist()) == list(range(10))
    assert np.array_equal(held.labels, data.split(0.3, seed=1)[1].labels)
    assert not np.array_equal(held.labels, data.split(0.3, seed=2)[1].labels)
    assert data.split(0.01, seed=1)[1].count == 1 and data.split(0.99, seed=1)[0].count == 1
    assert data.split(0.0, seed=1) == (data, None)
    one = Dataset({"x": np.zeros((1, 2), np.float32)})
    assert one.split(0.5, seed=0) == (one, None)  # one sample: nothing to hold out


def test_fixed_batch_runs_exactly_b_and_drops_the_remainder():
    model = rgb_model(batch=4)
    data = Dataset({"x": np.zeros((10, 3, 9, 9), np.float32)})
    assert fixed_batch(model) == 4 and usable(data, model) == 8
    assert [b["x"].shape[0] for b in batches(data, model, batch_size=3)] == [4, 4]  # B wins over batch_size


def test_symbolic_batch_takes_the_callers_batch_size():
    model = rgb_model()
    data = Dataset({"x": np.zeros((10, 3, 9, 9), np.float32)})
    assert fixed_batch(model) is None and usable(data, model) == 10
    assert [b["x"].shape[0] for b in batches(data, model, batch_size=4)] == [4, 4, 2]


def test_inputs_with_different_fixed_batches_have_no_fixed_batch():
    model = io_model([("a", TensorProto.FLOAT, [2, 3]), ("b", TensorProto.FLOAT, [4, 3])])
    assert fixed_batch(model) is None


def test_input_shapes_from_data():
    data = Dataset({"x": np.zeros((10, 3, 7, 5), np.float32)})
    assert input_shapes_from_data(rgb_model("H", "W"), data) == {"x": (1, 3, 7, 5)}
    assert input_shapes_from_data(rgb_model("H", "W", batch=4), data) == {"x": (4, 3, 7, 5)}
    assert input_shapes_from_data(rgb_model("H", "W"), data, {"x": (2, 3, 8, 8)}) == {"x": (2, 3, 8, 8)}
