"""Train the bundled real sample model: a small CNN on scikit-learn's handwritten digits.

This is the only place in the repository that uses torch (and scikit-learn); the package and the
tests only read the files it writes. Install the training dependencies with::

    pip install torch==2.13.0 scikit-learn

Data: ``sklearn.datasets.load_digits`` (1797 grey 8x8 images, 10 classes, shipped inside
scikit-learn), pixel values 0..16 divided by 16, upsampled to 32x32 (bilinear, align_corners=False),
then normalised with the training split's mean and std (printed; 0.305383 and 0.323652).
A fixed stratified split (``train_test_split(test_size=360, stratify=labels, random_state=0)``)
holds out 360 images for evaluation; the other 1437 train the model, and the first 300 of them
(in split order) form the calibration set.

Model (every conv 3x3, pad 1, no bias, followed by BatchNormalization and Relu; ONNX node names
conv1..conv6, bn1..bn6, relu1..relu6, pool1, pool2, gap, flatten, fc)::

    conv1 1->16, conv2 16->32, conv3 32->32, MaxPool 2, conv4 32->64, conv5 64->64, MaxPool 2,
    conv6 64->64, GlobalAveragePool, Linear 64->10

Writes, next to this script (or into ``--out DIR``):

* ``digits_cnn.onnx``   -- opset 17, input ``input`` float32 [batch, 1, 32, 32], output ``logits``
  float32 [batch, 10]; exported in eval mode with BatchNormalization nodes kept (not fused).
* ``digits_eval.npz``   -- held-out set: ``input`` float32 [360, 1, 32, 32], ``labels`` int64 [360].
* ``digits_calib.npz``  -- calibration set: ``input`` float32 [300, 1, 32, 32] (training split).

and prints the held-out top-1 accuracy measured with onnxruntime on the exported model.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

SEED = 0
EVAL_SIZE = 360
CALIB_SIZE = 300
SIZE = 32
EPOCHS = 30
BATCH = 64


CHANNELS = [(1, 16), (16, 32), (32, 32), (32, 64), (64, 64), (64, 64)]
POOL_AFTER = {3: "pool1", 5: "pool2"}  # conv index (1-based) -> name of the MaxPool after it


class DigitsCNN(nn.Module):
    """Modules are attributes named like the ONNX nodes they become (conv1, bn1, relu1, pool1...)."""

    def __init__(self) -> None:
        super().__init__()
        self.layers: list[str] = []
        for i, (cin, cout) in enumerate(CHANNELS, start=1):
            self._add(f"conv{i}", nn.Conv2d(cin, cout, 3, padding=1, bias=False))
            self._add(f"bn{i}", nn.BatchNorm2d(cout))
            self._add(f"relu{i}", nn.ReLU())
            if i in POOL_AFTER:
                self._add(POOL_AFTER[i], nn.MaxPool2d(2))
        self._add("gap", nn.AdaptiveAvgPool2d(1))
        self._add("flatten", nn.Flatten())
        self._add("fc", nn.Linear(CHANNELS[-1][1], 10))

    def _add(self, name: str, module: nn.Module) -> None:
        self.add_module(name, module)
        self.layers.append(name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.layers:
            x = getattr(self, name)(x)
        return x


def load_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return (train_x, train_y, eval_x, eval_y), images upsampled to 32x32 and normalised."""
    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    labels = digits.target.astype(np.int64)
    idx = np.arange(len(labels))
    train_idx, eval_idx = train_test_split(
        idx, test_size=EVAL_SIZE, stratify=labels, random_state=SEED
    )
    up = F.interpolate(
        torch.from_numpy(images)[:, None], size=(SIZE, SIZE), mode="bilinear", align_corners=False
    ).numpy()
    mean = float(up[train_idx].mean())
    std = float(up[train_idx].std())
    print(f"normalisation: mean={mean:.6f} std={std:.6f}")
    up = ((up - mean) / std).astype(np.float32)
    return up[train_idx], labels[train_idx], up[eval_idx], labels[eval_idx]


def shift(x: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Random translation by up to max_shift pixels (per batch), a light augmentation."""
    dx, dy = (torch.randint(-max_shift, max_shift + 1, (2,), generator=gen)).tolist()
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


def train(train_x: np.ndarray, train_y: np.ndarray) -> DigitsCNN:
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    model = DigitsCNN()
    x, y = torch.from_numpy(train_x), torch.from_numpy(train_y)
    steps = EPOCHS * ((len(y) + BATCH - 1) // BATCH)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    model.train()
    for epoch in range(EPOCHS):
        perm = torch.randperm(len(y), generator=gen)
        total = 0.0
        for start in range(0, len(y), BATCH):
            b = perm[start : start + BATCH]
            loss = F.cross_entropy(model(shift(x[b], gen)), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(b)
        if (epoch + 1) % 10 == 0:
            print(f"epoch {epoch + 1}: train loss {total / len(y):.4f}")
    return model.eval()


def export(model: DigitsCNN, path: Path) -> None:
    """Export in eval mode, keeping BatchNormalization nodes (TrainingMode.PRESERVE stops the
    exporter from fusing them into the convs; the model is in eval mode, so BN uses running stats)."""
    buf = io.BytesIO()
    torch.onnx.export(
        model,
        (torch.zeros(1, 1, SIZE, SIZE),),
        buf,
        dynamo=False,
        opset_version=17,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        training=torch.onnx.TrainingMode.PRESERVE,
        do_constant_folding=False,
    )
    proto = onnx.load_from_string(buf.getvalue())
    proto.producer_name = "convtool sample_models/train_digits.py"
    _rename_nodes(proto.graph)
    ops = [n.op_type for n in proto.graph.node]
    if ops.count("BatchNormalization") != 6 or ops.count("Conv") != 6:
        raise RuntimeError(f"unexpected exported graph: {ops}")
    onnx.checker.check_model(proto, full_check=True)
    path.write_bytes(proto.SerializeToString())


def _rename_nodes(graph: onnx.GraphProto) -> None:
    """Name nodes after their module ("/conv1/Conv" -> "conv1") and their outputs "<node>.out";
    graph inputs and outputs keep their names."""
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    renamed: dict[str, str] = {}
    seen: set[str] = set()
    for node in graph.node:
        name = ".".join(node.name.strip("/").split("/")[:-1]) or node.name.strip("/")
        if name in seen:
            raise RuntimeError(f"two exported nodes map to the name {name!r}")
        seen.add(name)
        node.name = name
        for k, out in enumerate(node.output):
            if out not in keep:
                renamed[out] = f"{name}.out" if k == 0 else f"{name}.out{k}"
                node.output[k] = renamed[out]
    for node in graph.node:
        for k, inp in enumerate(node.input):
            node.input[k] = renamed.get(inp, inp)


def onnx_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = sess.run(["logits"], {"input": x})[0]
    return float((logits.argmax(1) == y).mean())


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent,
        help="folder to write into (default: next to this script)",
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)

    train_x, train_y, eval_x, eval_y = load_data()
    model = train(train_x, train_y)
    with torch.no_grad():
        torch_acc = float((model(torch.from_numpy(eval_x)).argmax(1).numpy() == eval_y).mean())

    model_path = args.out / "digits_cnn.onnx"
    export(model, model_path)
    np.savez_compressed(args.out / "digits_eval.npz", input=eval_x, labels=eval_y)
    np.savez_compressed(args.out / "digits_calib.npz", input=train_x[:CALIB_SIZE])

    acc = onnx_accuracy(model_path, eval_x, eval_y)
    print(f"torch held-out top-1: {torch_acc:.4f}")
    print(f"held-out top-1 (onnxruntime, {len(eval_y)} images): {acc:.4f}")
    return acc


if __name__ == "__main__":
    main()
