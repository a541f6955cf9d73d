"""The one golden comparison helper: original vs converted model in onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

_NP = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.FLOAT16: np.float16, onnx.TensorProto.DOUBLE: np.float64}


def random_feeds(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in vi.type.tensor_type.shape.dim]
        feeds[vi.name] = rng.standard_normal(dims).astype(_NP[vi.type.tensor_type.elem_type])
    return feeds


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def compare(original: onnx.ModelProto, converted: onnx.ModelProto, seed: int = 0) -> list[float]:
    """Check the converted model and return, per output, ``||a - b|| / ||a||``."""
    onnx.checker.check_model(converted, full_check=True)
    feeds = random_feeds(original, seed)
    outs_a = run(original, feeds)
    outs_b = run(converted, feeds)
    assert len(outs_a) == len(outs_b)
    errors = []
    for a, b in zip(outs_a, outs_b):
        assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape, a.dtype, b.dtype)
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        errors.append(float(np.linalg.norm(a64 - b64) / max(np.linalg.norm(a64), 1e-30)))
    return errors
