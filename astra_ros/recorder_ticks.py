"""Live resampling for the recorder: the importer's rule, applied while the samples arrive.
Pure Python, no ROS.

The rule is :mod:`astra_core.data.resample`'s, and it is applied with that module's own
functions (:func:`~astra_core.data.resample.tick_grid`, :func:`~astra_core.data.resample.sample_stream`),
so a live recording and the import of its bag choose the same sample at every tick: at tick ``t``
each stream gives its **newest sample with time <= t**; a sample older than the tolerance is no
sample (the stream is stale there). Sample times are the recorder's receive times, which are also
the receive times it writes into its bags.

Why a tick can be decided live: the node stamps a message when its callback runs, and callbacks
run one after the other, so once the clock has passed ``t`` no sample with time <= ``t`` can still
come. :meth:`LiveResampler.resolve` therefore decides every tick before "now" with the samples it
has; each stream keeps only the samples that can still be the newest at an undecided tick (memory:
the samples of about one resolve period).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from astra_core.data.resample import BAD, MISSING, OK, sample_stream, tick_grid

ALWAYS = np.iinfo(np.int64).max  # "no tolerance": the instruction in effect is the newest one, however old

__all__ = ["BAD", "MISSING", "OK", "LiveResampler", "ResolvedTick", "Sample", "StreamHistory"]


@dataclass(frozen=True)
class Sample:
    """One message of a stream: receive time, its value (or what to decode later), why it is bad."""

    t_ns: int
    value: Any
    problem: tuple[str, str] | None = None  # (kind, message) when the message cannot be used


class StreamHistory:
    """The samples of one stream that may still be chosen, in time order."""

    def __init__(self) -> None:
        self._times: list[int] = []
        self._samples: list[Sample] = []

    def __len__(self) -> int:
        return len(self._samples)

    @property
    def latest(self) -> Sample | None:
        return self._samples[-1] if self._samples else None

    def add(self, sample: Sample) -> None:
        if self._times and sample.t_ns < self._times[-1]:
            raise ValueError(f"sample at {sample.t_ns} ns after one at {self._times[-1]} ns: samples must come in time order")
        self._times.append(int(sample.t_ns))
        self._samples.append(sample)

    def times_from(self, t_ns: int) -> list[int]:
        """Sample times >= t_ns (the action ticks of ``ticks: action``)."""
        return [t for t in self._times if t >= t_ns]

    def choose(self, ticks_ns: np.ndarray, tolerance_ns: int) -> tuple[list[Sample | None], np.ndarray]:
        """The importer's choice at each tick: (sample or None, status OK / MISSING / BAD)."""
        times = np.asarray(self._times, np.int64)
        valid = np.array([s.problem is None for s in self._samples], bool)
        index, status = sample_stream(times, valid, ticks_ns, tolerance_ns)
        return [self._samples[i] if i >= 0 else None for i in index], status

    def forget_before(self, t_ns: int) -> None:
        """Drop the samples that can no longer be chosen by a tick later than t_ns: all but the
        newest one at or before t_ns, and everything after it."""
        keep = int(np.searchsorted(np.asarray(self._times, np.int64), t_ns, side="right")) - 1
        if keep > 0:
            del self._times[:keep]
            del self._samples[:keep]


@dataclass(frozen=True)
class ResolvedTick:
    """A decided control tick: per stream the sample chosen (None: no sample) and its status."""

    index: int  # position in the episode's tick sequence (0 = the first tick)
    t_ns: int
    samples: dict[str, Sample | None]
    status: dict[str, int]
    instruction: str = ""  # the newest instruction at or before the tick ("" = none yet)
    overrun: bool = False  # the writer could not take it: counted as a bad step, never written
    missing: list[str] = field(default_factory=list)

    @property
    def any_missing(self) -> bool:
        return bool(self.missing)


class LiveResampler:
    """Decides the control ticks of one episode from samples pushed as they arrive.

    ``rate_hz`` set: ticks every 1/rate from ``start_ns`` (``ticks: rate``, the importer's
    ``tick_grid(start, end, rate)``); ``rate_hz`` None: one tick per sample of ``tick_stream`` at or
    after ``start_ns`` (``ticks: action``). ``seeds`` are each stream's newest sample from before the
    start: the importer sees those too, in the bag, so the first tick may use them.
    """

    def __init__(self, streams: Sequence[str], start_ns: int, tolerance_ns: int, rate_hz: float | None = None,
                 tick_stream: str | None = None, seeds: Mapping[str, Sample] | None = None,
                 instruction: Sample | None = None) -> None:
        if (rate_hz is None) == (tick_stream is None):
            raise ValueError("give either rate_hz (ticks: rate) or tick_stream (ticks: action)")
        if tick_stream is not None and tick_stream not in streams:
            raise ValueError(f"tick stream {tick_stream!r} is not one of the streams {list(streams)}")
        self.streams = list(streams)
        self.start_ns = int(start_ns)
        self.tolerance_ns = int(tolerance_ns)
        self.rate_hz = rate_hz
        self.tick_stream = tick_stream
        self._histories = {s: StreamHistory() for s in self.streams}
        self._instructions = StreamHistory()
        for stream, sample in (seeds or {}).items():
            self._histories[stream].add(sample)
        if instruction is not None:
            self._instructions.add(instruction)
        self._next_index = 0  # ticks decided so far
        self._last_tick_ns: int | None = None
        self.finished = False

    @property
    def ticks_resolved(self) -> int:
        return self._next_index

    def latest(self, stream: str) -> Sample | None:
        return self._histories[stream].latest

    @property
    def held_samples(self) -> int:
        """Samples kept for undecided ticks, over all streams (what the resampler's memory holds)."""
        return sum(len(h) for h in self._histories.values())

    def add(self, stream: str, sample: Sample) -> None:
        if not self.finished:
            self._histories[stream].add(sample)

    def add_instruction(self, sample: Sample) -> None:
        if not self.finished:
            self._instructions.add(sample)

    def resolve(self, now_ns: int, final: bool = False) -> list[ResolvedTick]:
        """Decide the ticks before ``now_ns`` (with ``final``: at or before it, the episode's end:
        nothing is added afterwards)."""
        if self.finished:
            return []
        ticks = self._pending_ticks(int(now_ns), final)
        self.finished = final
        if not len(ticks):
            return []
        chosen = {s: self._histories[s].choose(ticks, self.tolerance_ns) for s in self.streams}
        instructions, _ = self._instructions.choose(ticks, ALWAYS)
        out = []
        for k, t in enumerate(ticks):
            status = {s: int(chosen[s][1][k]) for s in self.streams}
            out.append(ResolvedTick(
                index=self._next_index + k, t_ns=int(t), samples={s: chosen[s][0][k] for s in self.streams},
                status=status, instruction=instructions[k].value if instructions[k] is not None else "",
                missing=[s for s, st in status.items() if st == MISSING]))
        self._next_index += len(ticks)
        self._last_tick_ns = int(ticks[-1])
        for history in (*self._histories.values(), self._instructions):
            history.forget_before(self._last_tick_ns)
        return out

    def _pending_ticks(self, now_ns: int, final: bool) -> np.ndarray:
        until = now_ns if final else now_ns - 1  # ticks at "now" wait: a sample may still be stamped "now"
        if self.rate_hz is not None:
            # the whole grid from the start each time: exactly the importer's tick values
            return tick_grid(self.start_ns, until, self.rate_hz)[self._next_index:]
        after = self.start_ns if self._last_tick_ns is None else self._last_tick_ns + 1
        times = [t for t in self._histories[self.tick_stream].times_from(after) if t <= until]  # type: ignore[index]
        return np.unique(np.asarray(times, np.int64))
