"""Latency-aware conversion: per-layer timing, the decision rule, and a cache of timings.

``decide`` is pure arithmetic; ``cache`` is file I/O; ``layer`` and ``tuner`` import
onnxruntime lazily (through :mod:`convtool.bench.latency`) only when timing runs.
"""
