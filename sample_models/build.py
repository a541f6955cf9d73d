"""Build the bundled synthetic sample models, byte for byte reproducibly.

Writes, next to this script (or into ``--out DIR``):

* ``vgg_style.onnx``    -- VGG-style CNN: three stages of two 3x3 Conv + BatchNormalization + Relu
  (3->64->64, 64->128->128, 128->256->256), MaxPool after each stage, then GlobalAveragePool,
  Flatten and a Gemm to 10 classes.
* ``resnet_style.onnx`` -- ResNet-style CNN: a 3x3 stem Conv (3->32) + BN + Relu, then three stages of
  two basic blocks each (32, 64, 128 channels; the first block of stages 2 and 3 has stride 2 and a
  1x1 stride-2 Conv + BN on the shortcut), then GlobalAveragePool, Flatten and a Gemm to 10 classes.

Both take ``input`` float32 [1, 3, 64, 64] and give ``logits`` float32 [1, 10]; opset 17, IR version 8.

The weights are random, not trained: He-normal convolutions (std = sqrt(2 / fan_in)) and inference-form
BatchNormalization with plausible statistics (scale around 1, small bias and running mean, running
variance around 1), so activations keep roughly unit scale through the network. The last BN of every
residual branch has a smaller scale (0.2..0.5), as in trained ResNets, so the residual sums do not grow.
Use these models for conversion, latency and size measurements; for accuracy use ``digits_cnn.onnx``
(see ``train_digits.py``).

Determinism: a fixed seed per model, values drawn only with numpy's ``Generator`` (PCG64) and combined
with exactly rounded arithmetic, and a fixed producer string, so two runs write identical bytes.

Usage::

    python sample_models/build.py              # writes next to this file
    python sample_models/build.py --out DIR    # writes into DIR
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8
INPUT_SHAPE = (1, 3, 64, 64)
NUM_CLASSES = 10
PRODUCER = "convtool sample_models/build.py"
VGG_SEED = 1701
RESNET_SEED = 1702


class _Graph:
    """A tiny model-definition helper: each method adds a node (and its initializers) and returns
    the name of the node's output tensor, which is ``<node name>.out``."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def _const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    def _node(self, op: str, name: str, inputs: list[str], **attrs: object) -> str:
        out = f"{name}.out"
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        return out

    def conv(self, name: str, x: str, cin: int, cout: int, k: int, stride: int = 1) -> str:
        fan_in = cin * k * k
        weight = self.rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / fan_in)
        pad = k // 2
        return self._node(
            "Conv",
            name,
            [x, self._const(f"{name}.weight", weight)],
            kernel_shape=[k, k],
            strides=[stride, stride],
            pads=[pad, pad, pad, pad],
        )

    def bn(self, name: str, x: str, c: int, scale_range: tuple[float, float] = (0.8, 1.2)) -> str:
        scale = self.rng.uniform(*scale_range, size=c)
        bias = self.rng.standard_normal(c) * 0.1
        mean = self.rng.standard_normal(c) * 0.1
        var = self.rng.uniform(0.6, 1.6, size=c)
        inputs = [
            x,
            self._const(f"{name}.scale", scale),
            self._const(f"{name}.bias", bias),
            self._const(f"{name}.mean", mean),
            self._const(f"{name}.var", var),
        ]
        return self._node("BatchNormalization", name, inputs, epsilon=1e-5, momentum=0.9)

    def relu(self, name: str, x: str) -> str:
        return self._node("Relu", name, [x])

    def add(self, name: str, a: str, b: str) -> str:
        return self._node("Add", name, [a, b])

    def maxpool(self, name: str, x: str) -> str:
        return self._node("MaxPool", name, [x], kernel_shape=[2, 2], strides=[2, 2])

    def head(self, x: str, c: int) -> str:
        """GlobalAveragePool -> Flatten -> Gemm (transB=1, like a PyTorch Linear); output ``logits``."""
        x = self._node("GlobalAveragePool", "head.gap", [x])
        x = self._node("Flatten", "head.flatten", [x], axis=1)
        weight = self.rng.standard_normal((NUM_CLASSES, c)) * np.sqrt(1.0 / c)
        bias = self.rng.standard_normal(NUM_CLASSES) * 0.01
        node = helper.make_node(
            "Gemm",
            [x, self._const("head.fc.weight", weight), self._const("head.fc.bias", bias)],
            ["logits"],
            name="head.fc",
            transB=1,
        )
        self.nodes.append(node)
        return "logits"

    def model(self, graph_name: str, doc: str) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes,
            graph_name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(INPUT_SHAPE))],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [INPUT_SHAPE[0], NUM_CLASSES])],
            initializer=self.initializers,
            doc_string=doc,
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name=PRODUCER,
            producer_version="1",
            ir_version=IR_VERSION,
        )
        onnx.checker.check_model(model, full_check=True)
        return model


def build_vgg() -> onnx.ModelProto:
    """VGG-style: (Conv3x3 + BN + Relu) x 2 per stage, MaxPool after each stage, GAP + Gemm head."""
    g = _Graph(np.random.default_rng(VGG_SEED))
    x, cin = "input", INPUT_SHAPE[1]
    for stage, cout in enumerate((64, 128, 256), start=1):
        for i in (1, 2):
            p = f"stage{stage}"
            x = g.conv(f"{p}.conv{i}", x, cin, cout, 3)
            x = g.bn(f"{p}.bn{i}", x, cout)
            x = g.relu(f"{p}.relu{i}", x)
            cin = cout
        x = g.maxpool(f"stage{stage}.pool", x)
    g.head(x, cin)
    return g.model("vgg_style", "VGG-style CNN with random He-normal weights (convtool sample model)")


def build_resnet() -> onnx.ModelProto:
    """ResNet-style: stem, 3 stages x 2 basic blocks (32, 64, 128 channels), GAP + Gemm head."""
    g = _Graph(np.random.default_rng(RESNET_SEED))
    x = g.conv("stem.conv", "input", INPUT_SHAPE[1], 32, 3)
    x = g.bn("stem.bn", x, 32)
    x = g.relu("stem.relu", x)
    cin = 32
    for stage, cout in enumerate((32, 64, 128), start=1):
        for block in (1, 2):
            p = f"stage{stage}.block{block}"
            stride = 2 if (block == 1 and stage > 1) else 1
            y = g.conv(f"{p}.conv1", x, cin, cout, 3, stride)
            y = g.bn(f"{p}.bn1", y, cout)
            y = g.relu(f"{p}.relu1", y)
            y = g.conv(f"{p}.conv2", y, cout, cout, 3)
            y = g.bn(f"{p}.bn2", y, cout, scale_range=(0.2, 0.5))
            shortcut = x
            if stride != 1 or cin != cout:
                shortcut = g.conv(f"{p}.downsample.conv", x, cin, cout, 1, stride)
                shortcut = g.bn(f"{p}.downsample.bn", shortcut, cout)
            x = g.add(f"{p}.add", y, shortcut)
            x = g.relu(f"{p}.relu2", x)
            cin = cout
    g.head(x, cin)
    return g.model("resnet_style", "ResNet-style CNN with random He-normal weights (convtool sample model)")


BUILDERS = {"vgg_style.onnx": build_vgg, "resnet_style.onnx": build_resnet}


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent,
        help="folder to write the models into (default: next to this script)",
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, build in BUILDERS.items():
        path = args.out / filename
        path.write_bytes(build().SerializeToString())
        written.append(path)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return written


if __name__ == "__main__":
    main()
