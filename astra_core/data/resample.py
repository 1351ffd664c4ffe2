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

:class:`EpisodeTicks` applies the classification to one episode and writes it into the episode's
report (gaps, bad samples, counts, the ``gap_policy``): the rosbag importer
(:mod:`astra_core.data.rosbag_episodes`) and the recorder node (``astra_ros/recorder_episode.py``)
both judge their ticks with it, so a recording and the import of its bag agree tick for tick.
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterator, Sequence, TypeVar

import numpy as np

from astra_core.data.import_report import EpisodeReport

P = TypeVar("P")

OK, MISSING, BAD = 0, 1, 2  # per-tick status of one stream
NS = 1_000_000_000
GAP_POLICIES = ("drop_step", "drop_episode")
# Why an episode without a single step is not written (the importer's and the recorder's words).
NO_COMPLETE_STEP = "no complete step: every tick lacked a stream or had a bad sample"

BadSampleInfo = tuple[str, str, str]  # (stream, kind, message) of a bad sample chosen at a tick
# camera -> (RGB frame, instance mask or None) of the tick's sample; raises ValueError with a ``kind``
DecodeCamera = Callable[[str], tuple[np.ndarray, np.ndarray | None]]


@dataclass
class DecodedStep:
    """The camera frames (and masks) of a tick that is a step."""

    images: dict[str, np.ndarray]
    masks: dict[str, np.ndarray] | None  # None: no camera has masks


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


class EpisodeTicks:
    """The per-tick rule of one episode, reported: classify each tick in order (:class:`TickClassifier`),
    record its gaps and bad samples in the episode's report, apply the gap policy.

    ``gap_policy`` ``drop_step`` drops a gap or bad tick and keeps the episode; ``drop_episode``
    drops the whole episode at its first gap or bad tick (``dropped`` then says why).
    """

    def __init__(self, report: EpisodeReport, period_s: float, gap_policy: str) -> None:
        if gap_policy not in GAP_POLICIES:
            raise ValueError(f"gap policy {gap_policy!r}: must be one of {list(GAP_POLICIES)}")
        self.report = report
        self.period_s = float(period_s)
        self.gap_policy = gap_policy
        self.classifier = TickClassifier()
        self.dropped = ""  # why the whole episode is dropped ("" = it is not)

    def judge(self, tick_ns: int, missing: Sequence[str], bad: Sequence[BadSampleInfo], cameras: Sequence[str],
              decode: DecodeCamera) -> DecodedStep | None:
        """One tick, in order -> its decoded frames when it is a step to write, else None.

        ``missing``: the streams without a fresh sample at the tick; ``bad``: the bad samples chosen
        by the streams held as values. The cameras' samples are decoded only at a tick that may still
        become a step (nothing missing, nothing bad), so no time goes into frames that no step uses;
        a camera whose sample does not decode is a bad sample of that camera.
        """
        images: dict[str, np.ndarray] = {}
        masks: dict[str, np.ndarray] = {}
        if not missing and not bad:
            bad = []
            for camera in cameras:
                try:
                    images[camera], mask = decode(camera)
                except ValueError as err:
                    bad.append((camera, getattr(err, "kind", "decode"), str(err)))
                    continue
                if mask is not None:
                    masks[camera] = mask
        verdict, gaps = self.classifier.on_tick((tick_ns, list(missing)), bool(missing), bool(bad))
        for gap_ns, streams in gaps:
            for stream in streams:
                self.report.add_gap_tick(stream, gap_ns / NS, self.period_s)
        if gaps and self.gap_policy == "drop_episode":
            self.drop(f"gap at {gaps[0][0] / NS:.3f} s: {', '.join(gaps[0][1])} stale (gap_policy drop_episode)")
        if verdict == "bad":
            for stream, kind, message in bad:
                self.report.add_bad(stream, kind, message)
            if self.gap_policy == "drop_episode":
                self.drop(f"bad sample at {tick_ns / NS:.3f} s: {bad[0][0]} {bad[0][1]} (gap_policy drop_episode)")
        return DecodedStep(images, masks or None) if verdict == "step" and not self.dropped else None

    def drop(self, reason: str) -> None:
        """Drop the whole episode (the first reason is kept)."""
        if not self.dropped:
            self.dropped = reason

    def finish(self) -> None:
        """The episode ended: trailing pending ticks are trimmed; the tick counts go into the report."""
        report, c = self.report, self.classifier
        report.trimmed_end = c.finish()
        report.trimmed_start, report.gap_steps, report.bad_steps = c.trimmed_start, c.gap_ticks, c.bad_ticks
