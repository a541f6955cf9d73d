"""Latency of ONNX models with onnxruntime on CPU, measured fairly.

Protocol (what :func:`time_models` does):

* Every session is created with stated options: ``intra_op_num_threads`` (default 1: the most
  reproducible number; pass the deployment's thread count to match it), ``inter_op_num_threads``
  = 1, sequential execution, a graph optimisation level, and the session config entry
  ``session.intra_op.allow_spinning`` (default ``"0"``). Spinning is off by default because two
  sessions in one process whose intra-op threads spin disturb each other: on a 2-core machine an
  A/A control of the same model came out 1.5x off with spinning on.
* Each session gets ``warmup`` untimed runs, then ``runs`` timed runs with
  ``time.perf_counter_ns``. With several sessions the timed runs are interleaved in an ABBA
  pattern (A B, B A, A B, ...), so slow machine drift and position effects hit every model
  alike. The speedup of B over A is the ratio of medians, ``median(A) / median(B)``.
* An A/A control (two sessions of the *same* model, timed exactly like an A/B pair) shows the
  noise floor of the machine: a speedup within ``|1 - aa_ratio|`` of 1 is noise.
* Statistics: median, p10 and p90 (linear interpolation) in milliseconds. Sub-millisecond
  models at 2+ threads are often bimodal; use more runs and look at p10/p90.

``onnxruntime`` is imported inside the functions so that importing convtool stays fast.
Timing right after heavy numpy work in the same process can be slow (caches and clocks); run
the timing before drift computations, which :mod:`convtool.reporting` does.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import onnx

from convtool.analysis.shapes import user_inputs, with_static_shapes
from convtool.errors import OptionError

if TYPE_CHECKING:  # pragma: no cover
    import onnxruntime

__all__ = [
    "OptLevel",
    "OPT_LEVELS",
    "SessionConfig",
    "LatencyStats",
    "Environment",
    "environment",
    "cpu_model",
    "make_session",
    "random_feeds",
    "latency_stats",
    "time_models",
]

log = logging.getLogger(__name__)

OptLevel = Literal["disable", "basic", "extended", "all"]
OPT_LEVELS: tuple[str, ...] = ("disable", "basic", "extended", "all")

#: Called after every timed run with (done, total).
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class SessionConfig:
    """onnxruntime CPU session options used for every timed session."""

    threads: int = 1
    opt_level: OptLevel = "all"
    allow_spinning: bool = False

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise OptionError(f"--threads must be >= 1, got {self.threads}")
        if self.opt_level not in OPT_LEVELS:
            raise OptionError(f"--opt-level must be one of {', '.join(OPT_LEVELS)}, got {self.opt_level!r}")


@dataclass(frozen=True)
class LatencyStats:
    """Timed runs of one session, in milliseconds."""

    median: float
    p10: float
    p90: float
    runs: int
    samples: tuple[float, ...] = ()

    def to_json(self) -> dict:
        return {"median": self.median, "p10": self.p10, "p90": self.p90, "runs": self.runs}


@dataclass(frozen=True)
class Environment:
    """Where and how the timing ran; printed and written with every result."""

    onnxruntime: str
    threads: int
    cpu: str
    opt_level: str
    allow_spinning: bool
    cpu_count: int
    python: str
    platform: str

    def to_json(self) -> dict:
        return {
            "onnxruntime": self.onnxruntime,
            "threads": self.threads,
            "cpu": self.cpu,
            "opt_level": self.opt_level,
            "allow_spinning": self.allow_spinning,
            "cpu_count": self.cpu_count,
            "python": self.python,
            "platform": self.platform,
        }


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else :func:`platform.processor`."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware", "cpu model") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def environment(config: SessionConfig) -> Environment:
    import onnxruntime as ort

    return Environment(
        onnxruntime=ort.__version__,
        threads=config.threads,
        cpu=cpu_model(),
        opt_level=config.opt_level,
        allow_spinning=config.allow_spinning,
        cpu_count=os.cpu_count() or 1,
        python=platform.python_version(),
        platform=platform.platform(terse=True),
    )


def _ort_level(level: str):
    import onnxruntime as ort

    return {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]


def make_session(
    model: str | os.PathLike[str] | onnx.ModelProto,
    config: SessionConfig,
    *,
    profile_prefix: str | None = None,
) -> onnxruntime.InferenceSession:
    """An onnxruntime CPU session with ``config``'s options (profiling when a prefix is given).

    A path is preferred over a ``ModelProto``: onnxruntime then reads external data itself.
    Raises :class:`~convtool.errors.ModelLoadError` when onnxruntime rejects the model.
    """
    import onnxruntime as ort

    from convtool.errors import ModelLoadError

    so = ort.SessionOptions()
    so.intra_op_num_threads = config.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = _ort_level(config.opt_level)
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if config.allow_spinning else "0")
    so.log_severity_level = 3
    if profile_prefix is not None:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    try:
        return ort.InferenceSession(source, so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        what = Path(model).name if not isinstance(model, onnx.ModelProto) else "model"
        raise ModelLoadError(f"{what}: onnxruntime cannot run it: {first}") from None


def random_feeds(
    model: onnx.ModelProto,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    *,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Seeded random inputs for every user input, with static shapes (see
    :func:`~convtool.analysis.shapes.with_static_shapes`).

    Floats are standard normal; integers are drawn from {0, 1} (safe as indices); bools are
    random. Raises :class:`OptionError` for symbolic dims the user must fix.
    """
    static = with_static_shapes(model, input_shapes)
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for vi in user_inputs(static.graph):
        ttype = vi.type.tensor_type
        dims = tuple(d.dim_value for d in ttype.shape.dim)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(ttype.elem_type)
        if np.issubdtype(dtype, np.floating):
            feeds[vi.name] = rng.standard_normal(dims).astype(dtype)
        elif dtype == np.bool_:
            feeds[vi.name] = rng.integers(0, 2, dims).astype(np.bool_)
        elif np.issubdtype(dtype, np.integer):
            feeds[vi.name] = rng.integers(0, 2, dims).astype(dtype)
        else:
            raise OptionError(f"input {vi.name!r}: cannot make random data of type {dtype}; use --inputs")
    return feeds


def latency_stats(samples_ms: Sequence[float]) -> LatencyStats:
    """Median, p10 and p90 of timed runs (milliseconds)."""
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no timed runs")
    p10, med, p90 = np.percentile(a, [10, 50, 90])
    return LatencyStats(float(med), float(p10), float(p90), int(a.size), tuple(float(x) for x in a))


def _run_once(session, feeds) -> float:
    t0 = time.perf_counter_ns()
    session.run(None, feeds)
    return (time.perf_counter_ns() - t0) / 1e6


def time_models(
    sessions: Sequence[onnxruntime.InferenceSession],
    feeds: Sequence[Mapping[str, np.ndarray]],
    *,
    runs: int,
    warmup: int,
    progress: Progress | None = None,
) -> list[LatencyStats]:
    """Time several sessions interleaved (ABBA order), each with its own feeds.

    Every session first gets ``warmup`` untimed runs (interleaved too), then ``runs`` timed
    runs. ``progress(done, total)`` is called after each timed run.
    """
    if runs < 1:
        raise OptionError(f"--runs must be >= 1, got {runs}")
    if warmup < 0:
        raise OptionError(f"--warmup must be >= 0, got {warmup}")
    if len(sessions) != len(feeds) or not sessions:
        raise ValueError("one feed dict per session is required")
    order = list(range(len(sessions)))
    for _ in range(warmup):
        for i in order:
            sessions[i].run(None, dict(feeds[i]))
    fed = [dict(f) for f in feeds]
    samples: list[list[float]] = [[] for _ in sessions]
    total = runs * len(sessions)
    done = 0
    for r in range(runs):
        for i in order if r % 2 == 0 else order[::-1]:
            samples[i].append(_run_once(sessions[i], fed[i]))
            done += 1
            if progress is not None:
                progress(done, total)
    return [latency_stats(s) for s in samples]
