"""On-disk cache of per-shape layer timings, so repeated ``--latency-aware`` runs are quick.

A timing depends on the conv's geometry and the replacement's form, not on weight values, so
the key is the geometry plus everything that changes the measurement:

* op geometry: input shape, dtype, kernel, in/out channels, group, strides, pads, dilations,
  ``auto_pad``, bias present;
* the replacement: rank and layout;
* the session: intra-op threads, optimisation level, spinning;
* the machine: onnxruntime version and CPU model.

Each entry is one JSON file ``<cache_dir>/timings/<sha256 of the key>.json`` holding the key
itself and the paired timed runs (milliseconds) with the round of fresh sessions each pair came
from and the looks its sequential timing planned, so a hit replays the decision (and its
interval) with the current margin.  An entry without rounds (an older cache) whose runs do not
decide is timed again by :class:`convtool.search.latency.LayerTuner`.  One file per key means
concurrent runs never corrupt each other (a write is a temporary file renamed into place; the
last writer wins).  Delete the folder to reset.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_CACHE_DIR", "CachedTiming", "TimingCache", "timing_key"]

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "convtool"
_VERSION = 1


def timing_key(*, x_shape: Sequence[int], dtype: str, kernel: Sequence[int], in_channels: int, out_channels: int,
               group: int, strides: Sequence[int], pads: Sequence[int], dilations: Sequence[int], auto_pad: str,
               bias: bool, rank: int, layout: str, threads: int, opt_level: str, allow_spinning: bool,
               onnxruntime: str, cpu: str) -> dict[str, Any]:
    """The cache key as a plain JSON-able dict (stored in the entry, so it is inspectable)."""
    return {
        "version": _VERSION,
        "op": "Conv",
        "x_shape": [int(d) for d in x_shape],
        "dtype": str(dtype),
        "kernel": [int(k) for k in kernel],
        "in_channels": int(in_channels),
        "out_channels": int(out_channels),
        "group": int(group),
        "strides": [int(s) for s in strides],
        "pads": [int(p) for p in pads],
        "dilations": [int(d) for d in dilations],
        "auto_pad": str(auto_pad),
        "bias": bool(bias),
        "rank": int(rank),
        "layout": str(layout),
        "threads": int(threads),
        "opt_level": str(opt_level),
        "allow_spinning": bool(allow_spinning),
        "onnxruntime": str(onnxruntime),
        "cpu": str(cpu),
    }


def _digest(key: Mapping[str, Any]) -> str:
    text = json.dumps(dict(key), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class CachedTiming:
    """Paired runs; ``rounds``: the round of fresh sessions of each pair (``None``: unknown, an
    older entry); ``looks``: the looks its sequential timing planned; ``final``: written by a
    sequential timing that stopped by its own rule (decided or capped), so it is replayed as is."""

    original_ms: tuple[float, ...]
    replacement_ms: tuple[float, ...]
    rounds: tuple[int, ...] | None = None
    looks: int = 1
    final: bool = False


class TimingCache:
    """Read and write timing entries under ``root`` (``None``: :data:`DEFAULT_CACHE_DIR`).

    ``enabled=False`` makes every lookup a miss and every store a no-op. A directory that
    cannot be created or written is not an error: the cache logs once and acts disabled.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, *, enabled: bool = True):
        self.root = Path(root).expanduser() if root is not None else DEFAULT_CACHE_DIR
        self.enabled = enabled
        self.hits = 0
        self.misses = 0

    def path(self, key: Mapping[str, Any]) -> Path:
        return self.root / "timings" / f"{_digest(key)}.json"

    def get(self, key: Mapping[str, Any]) -> CachedTiming | None:
        if not self.enabled:
            self.misses += 1
            return None
        p = self.path(key)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
            if data.get("key") != dict(key):
                raise ValueError("key mismatch")
            rounds = data.get("rounds")
            entry = CachedTiming(tuple(map(float, data["original_ms"])), tuple(map(float, data["replacement_ms"])),
                                 None if rounds is None else tuple(map(int, rounds)), int(data.get("looks", 1)),
                                 bool(data.get("final", False)))
            if not entry.original_ms or len(entry.original_ms) != len(entry.replacement_ms):
                raise ValueError("bad entry")
            if entry.rounds is not None and len(entry.rounds) != len(entry.original_ms):
                raise ValueError("bad rounds")
        except FileNotFoundError:
            self.misses += 1
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.debug("ignoring unreadable timing cache entry %s: %s", p, exc)
            self.misses += 1
            return None
        self.hits += 1
        return entry

    def put(self, key: Mapping[str, Any], original_ms: Sequence[float], replacement_ms: Sequence[float], *,
            rounds: Sequence[int] | None = None, looks: int = 1, final: bool = True) -> None:
        """Store paired runs (and how they were taken, see :class:`CachedTiming`)."""
        if not self.enabled:
            return
        p = self.path(key)
        data = {"key": dict(key), "original_ms": [float(x) for x in original_ms],
                "replacement_ms": [float(x) for x in replacement_ms], "created": time.time(),
                "looks": int(looks), "final": bool(final)}
        if rounds is not None:
            data["rounds"] = [int(r) for r in rounds]
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=".tmp-", suffix=".json")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f)
            os.replace(tmp, p)
        except OSError as exc:
            log.warning("timing cache %s is not writable (%s); timings will not be reused", self.root, exc)
            self.enabled = False
