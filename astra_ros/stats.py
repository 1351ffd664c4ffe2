"""Small bounded statistics for the node: latency percentiles and per-kind problem counters."""

from __future__ import annotations

import math
import threading
from collections import Counter, deque
from typing import Callable

import numpy as np


class LatencyWindow:
    """The last `size` samples (ms); percentiles over that window. Memory is bounded by `size`."""

    def __init__(self, size: int = 1000) -> None:
        if size <= 0:
            raise ValueError(f"latency window size must be > 0, got {size}")
        self._samples: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()
        self.count = 0  # all samples ever added

    def add(self, ms: float) -> None:
        with self._lock:
            self._samples.append(float(ms))
            self.count += 1

    def percentile(self, q: float) -> float:
        """q in [0, 100]; NaN when empty."""
        with self._lock:
            if not self._samples:
                return float("nan")
            return float(np.percentile(np.fromiter(self._samples, float, len(self._samples)), q))

    def summary(self, digits: int = 3) -> dict:
        """{"p50", "p99", "count"}; the percentiles are None (JSON null, never NaN) when empty."""
        def rounded(q: float) -> float | None:
            value = self.percentile(q)
            return round(value, digits) if math.isfinite(value) else None

        return {"p50": rounded(50), "p99": rounded(99), "count": self.count}

    def clear(self) -> None:
        with self._lock:
            self._samples.clear()


class ProblemLog:
    """Counts problems per kind and reports each kind once through `warn` (then only counts).

    Kinds are short fixed words ("encoding", "stale_camera", ...): never put per-message text
    into a kind, or the dict would grow without bound.
    """

    def __init__(self, warn: Callable[[str], None]) -> None:
        self._warn = warn
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.last_error = ""

    def report(self, kind: str, message: str) -> None:
        with self._lock:
            self.counts[kind] += 1
            first = self.counts[kind] == 1
            self.last_error = f"{kind}: {message}"
        if first:
            self._warn(f"[{kind}] {message} (further '{kind}' problems are counted, not logged)")

    def total(self, *kinds: str) -> int:
        with self._lock:
            return sum(self.counts[k] for k in kinds) if kinds else sum(self.counts.values())
