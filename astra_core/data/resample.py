"""Resampling recorded streams onto control ticks: the one rule every importer (and a recorder)
uses to decide what the model saw at each step.

The rule, per stream and control tick ``t``: take the **newest sample with time <= t**; if it is
older than the tolerance (or there is none), the stream has **no sample** at ``t``. Never
interpolated, never padded: a sample the robot did not have at ``t`` is not invented.

Ticks are then classified (:class:`TickClassifier`):

* before the first tick at which every stream has a sample: *trimmed start* (recording starting);
* after the last such tick: *trimmed end* (a stream stopped first);
* in between, a tick where a stream has no sample: a **gap** (the step is dropped and reported);
* a tick whose newest sample is marked bad (undecodable frame, non-unit quaternion): a **bad**
  step (dropped and reported);
* otherwise a step.

Two forms compute the same choice: :func:`sample_stream` for streams held in memory (poses, joint
states) and :class:`NewestSampleResolver` for streams too big to hold (camera frames), fed one
sample at a time in time order. :class:`Reorderer` restores time order for header stamps.
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Generic, Iterator, TypeVar

import numpy as np

P = TypeVar("P")

OK, MISSING, BAD = 0, 1, 2  # per-tick status of one stream


def tick_grid(start_ns: int, end_ns: int, rate_hz: float) -> np.ndarray:
    """Control ticks ``start + k / rate`` (int64 ns) up to and including ``end``."""
    if not (math.isfinite(rate_hz) and rate_hz > 0):
        raise ValueError(f"control rate {rate_hz} must be a positive number")
    if end_ns < start_ns:
        return np.zeros(0, np.int64)
    period = 1e9 / rate_hz
    count = int((end_ns - start_ns) // period) + 1
    # k * period in float64 is exact to well under a nanosecond for any realistic recording length
    return start_ns + np.round(np.arange(count) * period).astype(np.int64)


def sample_stream(sample_ns: np.ndarray, valid: np.ndarray, ticks_ns: np.ndarray, tolerance_ns: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Newest sample at each tick: ``(index (T,) int64, -1 if none; status (T,) int8)``.

    ``sample_ns`` must be sorted (non-decreasing); among equal times the last one is the newest.
    """
    index = np.searchsorted(sample_ns, ticks_ns, side="right").astype(np.int64) - 1
    status = np.full(len(ticks_ns), MISSING, np.int8)
    has = index >= 0
    fresh = np.zeros(len(ticks_ns), bool)
    fresh[has] = ticks_ns[has] - sample_ns[index[has]] <= tolerance_ns
    status[fresh] = np.where(valid[index[fresh]], OK, BAD)
    index[~fresh] = -1
    return index, status


class NewestSampleResolver(Generic[P]):
    """Streaming :func:`sample_stream`: push samples in time order, get each tick's choice once known.

    A tick is resolved as soon as a sample newer than it arrives (that sample cannot be the
    newest at the tick) or the stream ends. Memory: one pending sample.
    """

    def __init__(self, ticks_ns: np.ndarray, tolerance_ns: int) -> None:
        self._ticks = ticks_ns
        self._tolerance = int(tolerance_ns)
        self._next = 0  # first unresolved tick
        self._pending: tuple[int, P] | None = None
        self.used = 0  # distinct samples chosen by at least one tick

    @property
    def done(self) -> bool:
        return self._next >= len(self._ticks)

    def push(self, t_ns: int, payload: P) -> list[tuple[int, P | None]]:
        """Add a sample; returns ``(tick index, payload or None for no sample)`` for newly resolved ticks."""
        if self._pending is not None and t_ns < self._pending[0]:
            raise ValueError(f"samples out of time order ({t_ns} after {self._pending[0]}); reorder them first")
        resolved = self._resolve(lambda tick: tick < t_ns)
        self._pending = (int(t_ns), payload)
        return resolved

    def finish(self) -> list[tuple[int, P | None]]:
        """The stream ended: resolve every remaining tick."""
        return self._resolve(lambda tick: True)

    def _resolve(self, before) -> list[tuple[int, P | None]]:
        out: list[tuple[int, P | None]] = []
        used = False
        while self._next < len(self._ticks) and before(int(self._ticks[self._next])):
            tick = int(self._ticks[self._next])
            if self._pending is not None and tick - self._pending[0] <= self._tolerance:
                out.append((self._next, self._pending[1]))
                used = True
            else:
                out.append((self._next, None))
            self._next += 1
        self.used += used
        return out


class Reorderer(Generic[P]):
    """Restores sample-time order of messages that arrive in receive order (header stamps).

    A message is released once the receive clock has passed its stamp by ``window_ns``; one whose
    stamp is older than a message already released arrived too late to be used: it is counted in
    ``late`` and dropped (it would change what earlier ticks saw).
    """

    def __init__(self, window_ns: int) -> None:
        self._window = int(window_ns)
        self._heap: list[tuple[int, int, P]] = []
        self._order = itertools.count()
        self._released = -(2**63)
        self.late = 0

    def push(self, receive_ns: int, sample_ns: int, payload: P) -> Iterator[tuple[int, P]]:
        if sample_ns < self._released:
            self.late += 1
        else:
            heapq.heappush(self._heap, (int(sample_ns), next(self._order), payload))
        yield from self._release(lambda stamp: stamp + self._window < receive_ns)

    def flush(self) -> Iterator[tuple[int, P]]:
        yield from self._release(lambda stamp: True)

    def _release(self, ready) -> Iterator[tuple[int, P]]:
        while self._heap and ready(self._heap[0][0]):
            stamp, _, payload = heapq.heappop(self._heap)
            self._released = stamp
            yield stamp, payload


@dataclass
class TickClassifier:
    """Classifies ticks in order (module docstring); ``on_tick`` says what to do with each one."""

    trimmed_start: int = 0
    trimmed_end: int = 0
    gap_ticks: int = 0
    bad_ticks: int = 0
    steps: int = 0
    _pending_missing: list[Any] = field(default_factory=list)

    def on_tick(self, tick: Any, any_missing: bool, any_bad: bool) -> tuple[str, list[Any]]:
        """-> (verdict, ticks confirmed as gaps now). verdict: "step", "bad", "trimmed" or "pending".

        A tick with a missing stream is "pending" until a later tick shows the streams are back
        (then it is a gap) or the episode ends (then it was trimmed: see :meth:`finish`).
        """
        if any_missing:
            if self.steps == 0 and self.bad_ticks == 0:
                self.trimmed_start += 1
                return "trimmed", []
            self._pending_missing.append(tick)
            return "pending", []
        gaps, self._pending_missing = self._pending_missing, []
        self.gap_ticks += len(gaps)
        if any_bad:
            self.bad_ticks += 1
            return "bad", gaps
        self.steps += 1
        return "step", gaps

    def finish(self) -> int:
        """End of the episode: the trailing pending ticks are trimmed; returns how many."""
        self.trimmed_end, self._pending_missing = len(self._pending_missing), []
        return self.trimmed_end
