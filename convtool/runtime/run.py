"""Running a model over a dataset: every output, concatenated over batches."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnx

from convtool.errors import CalibrationDataError
from convtool.options import SessionOptions
from convtool.runtime.inputs import DEFAULT_BATCH, Dataset, batches, fixed_batch
from convtool.runtime.session import make_session

#: Sessions that run models for their outputs (not for timing): every core, no spinning.
COMPUTE = SessionOptions(threads=None, opt_level="all", spinning=False)


def run_outputs(model: onnx.ModelProto, data: Dataset, batch_size: int = DEFAULT_BATCH,
                outputs: Sequence[str] | None = None, session=None, *,
                progress: Callable[[int, int], None] | None = None) -> dict[str, np.ndarray]:
    """Run ``model`` on every (usable) sample; each requested output concatenated on axis 0.

    ``session``: an existing session of ``model`` (default: one with :data:`COMPUTE`);
    ``progress(done, total)`` after each batch.
    """
    sess = session or make_session(model, COMPUTE)
    names = list(outputs) if outputs is not None else [o.name for o in sess.get_outputs()]
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    feeds = list(batches(data, model, batch_size))
    if not feeds:
        raise CalibrationDataError(f"{data.source}: {data.count} sample(s), fewer than the model's fixed batch of "
                                   f"{fixed_batch(model)}; give at least one full batch")
    for i, feed in enumerate(feeds):
        for n, v in zip(names, sess.run(names, feed)):
            parts[n].append(np.asarray(v))
        if progress is not None:
            progress(i + 1, len(feeds))
    return {n: _stack(v) for n, v in parts.items()}


def _stack(chunks: list[np.ndarray]) -> np.ndarray:
    if len(chunks) == 1:
        return chunks[0]
    if all(c.ndim >= 1 for c in chunks) and len({c.shape[1:] for c in chunks}) == 1:
        return np.concatenate(chunks, axis=0)
    return np.concatenate([c.ravel() for c in chunks])
