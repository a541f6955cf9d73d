"""The one onnxruntime session factory, and a description of where it runs.

Every session convtool creates - timing, calibration capture, drift runs, profiling - comes
from :func:`make_session` with a :class:`~convtool.options.SessionOptions`: intra-op threads
(``None``: onnxruntime's default), ``inter_op_num_threads = 1``, sequential execution, the
graph optimisation level, ``session.intra_op.allow_spinning`` (off by default: spinning
sessions in one process disturb each other, and numpy work between runs loses its cores) and
the execution providers in fallback order.  A provider that this onnxruntime build does not
have is a one-line :class:`~convtool.errors.OptionError`, never a silent CPU fallback.

``onnxruntime`` is imported inside the functions so that importing convtool stays fast.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import onnx

from convtool.errors import ModelLoadError, OptionError
from convtool.options import SessionOptions

if TYPE_CHECKING:  # pragma: no cover
    import onnxruntime

__all__ = ["Environment", "available_providers", "check_providers", "cpu_model", "environment", "make_session"]


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
    providers: tuple[str, ...] = ("CPUExecutionProvider",)

    def to_dict(self) -> dict:
        return {**asdict(self), "providers": list(self.providers)}


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


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def check_providers(providers: tuple[str, ...]) -> None:
    """Refuse providers this onnxruntime build does not have (one line, the ones it has)."""
    have = available_providers()
    missing = [p for p in providers if p not in have]
    if missing:
        raise OptionError(f"execution provider {missing[0]} is not available in this onnxruntime "
                          f"(available: {', '.join(have)})")


def environment(options: SessionOptions) -> Environment:
    import onnxruntime as ort

    return Environment(
        onnxruntime=ort.__version__,
        threads=options.threads or (os.cpu_count() or 1),
        cpu=cpu_model(),
        opt_level=options.opt_level,
        allow_spinning=options.spinning,
        cpu_count=os.cpu_count() or 1,
        python=platform.python_version(),
        platform=platform.platform(terse=True),
        providers=tuple(options.providers),
    )


def _ort_level(level: str):
    import onnxruntime as ort

    return {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]


def make_session(model: str | os.PathLike[str] | onnx.ModelProto, options: SessionOptions | None = None, *,
                 profile_prefix: str | None = None) -> onnxruntime.InferenceSession:
    """An onnxruntime session with ``options`` (profiling when a prefix is given).

    A path is preferred over a ``ModelProto``: onnxruntime then reads external data itself.
    Raises :class:`~convtool.errors.ModelLoadError` when onnxruntime rejects the model.
    """
    import onnxruntime as ort

    options = options or SessionOptions()
    check_providers(options.providers)
    so = ort.SessionOptions()
    if options.threads is not None:
        so.intra_op_num_threads = options.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = _ort_level(options.opt_level)
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if options.spinning else "0")
    so.log_severity_level = 3
    if profile_prefix is not None:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    try:
        return ort.InferenceSession(source, so, providers=list(options.providers))
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        what = Path(model).name if not isinstance(model, onnx.ModelProto) else "model"
        raise ModelLoadError(f"{what}: onnxruntime cannot run it: {first}") from None
