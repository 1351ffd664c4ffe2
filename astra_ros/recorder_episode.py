"""Resolved ticks -> the steps of one recorded episode, with its report. Pure Python, no ROS.

The importer's per-tick rule, judged by the same code (:class:`astra_core.data.resample.EpisodeTicks`,
which astra_core.data.rosbag_episodes uses too) into the same report
(:class:`astra_core.data.import_report.EpisodeReport`):
a tick where a stream has no fresh sample is a *gap* (dropped, its stream and span reported), one
whose newest sample is bad is a *bad* step (dropped, kind and first message reported), ticks before
every stream has started or after one stopped are *trimmed*; the rest are steps. Nothing is padded
or interpolated. Camera frames are decoded only for ticks that may become steps, by the decoder the
node passes in (the policy node's image conversion).

A stream that goes stale during an episode shows up as gaps; the episode's metadata then carries
``stale: true``, ``stale_streams`` and the gap spans, so a dataset user can find (or skip) it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from astra_core.data.import_report import EpisodeReport
from astra_core.data.resample import BAD, NO_COMPLETE_STEP, BadSampleInfo, EpisodeTicks
from astra_ros.recorder_ticks import ResolvedTick, Sample

NS = 1_000_000_000
OVERRUN_STREAM, OVERRUN_KIND = "recorder", "overrun"


@dataclass
class RecordedStep:
    images: dict[str, np.ndarray]
    masks: dict[str, np.ndarray] | None
    action: np.ndarray
    proprio: np.ndarray | None
    timestamp: float


class StepSink(Protocol):
    """Where an episode's steps go (the dataset output); made at the first step."""

    def add_step(self, step: RecordedStep) -> None: ...


# camera name, chosen sample -> (RGB frame, instance mask or None); raises ValueError with .kind
CameraDecoder = Callable[[str, Any], tuple[np.ndarray, np.ndarray | None]]


class EpisodeAssembler:
    """Classifies the ticks of one episode in order and sends its steps to a sink."""

    def __init__(self, cameras: Sequence[str], report: EpisodeReport, period_s: float, gap_policy: str,
                 sync_tolerance_s: float, decode: CameraDecoder, begin: Callable[[str], StepSink],
                 pose_actions: bool, proprio: bool) -> None:
        self.cameras = list(cameras)
        self.report = report
        self.sync_tolerance_ns = int(round(sync_tolerance_s * NS))
        self._decode = decode
        self._begin = begin
        self._pose_actions = pose_actions
        self._proprio = proprio
        self.ticks = EpisodeTicks(report, period_s, gap_policy)
        self.sink: StepSink | None = None
        self.instruction = ""
        self._previous: dict[str, int] = {}  # stream -> receive time of the sample the previous step used
        self._usage: dict[str, dict[str, Any]] = {}

    @property
    def dropped(self) -> str:
        """Why the whole episode is dropped ("" = it is not)."""
        return self.ticks.dropped

    def on_tick(self, tick: ResolvedTick) -> None:
        self.report.ticks += 1
        if tick.overrun:  # the tick kept its place in the order without its samples: never written
            bad: list[BadSampleInfo] = [(OVERRUN_STREAM, OVERRUN_KIND, "the writer thread fell behind "
                                                                       "(max_queued_steps): tick not written")]
        else:
            bad = [(s, *tick.samples[s].problem) for s, st in tick.status.items() if st == BAD]  # type: ignore[union-attr, misc]
        step = self.ticks.judge(tick.t_ns, tick.missing, bad, self.cameras,
                                lambda cam: self._decode(cam, tick.samples[cam].value))  # type: ignore[union-attr]
        if step is not None:
            self._write_step(tick, step.images, step.masks)

    def _write_step(self, tick: ResolvedTick, images: dict[str, np.ndarray], masks: dict[str, np.ndarray] | None) -> None:
        samples: Mapping[str, Sample] = tick.samples  # type: ignore[assignment]
        action = np.asarray(samples["action"].value, np.float64)
        if self._pose_actions:
            action = np.append(action, np.asarray(samples["gripper"].value, np.float64).reshape(-1)[0])
        proprio = np.asarray(samples["proprio"].value, np.float64) if self._proprio else None
        times = [samples[c].t_ns for c in self.cameras]
        if max(times) - min(times) > self.sync_tolerance_ns:
            self.report.misaligned_steps += 1
        for stream, sample in samples.items():
            self._count_use(stream, sample, tick.t_ns)  # type: ignore[arg-type]
        if self.sink is None:
            self.instruction = tick.instruction
            self.sink = self._begin(tick.instruction)
        elif tick.instruction != self.instruction and not any("instruction changed" in w for w in self.report.warnings):
            self.report.warnings.append(f"instruction changed during the episode; kept the one at its first step: "
                                        f"{self.instruction!r}")
        self.sink.add_step(RecordedStep(images, masks, action, proprio, tick.t_ns / NS))
        self.report.steps += 1

    def _count_use(self, stream: str, sample: Sample, tick_ns: int) -> None:
        stats = self._usage.setdefault(stream, {"used": 0, "repeated": 0, "max_age_ms": 0.0})
        stats["repeated" if self._previous.get(stream) == sample.t_ns else "used"] += 1
        self._previous[stream] = sample.t_ns
        stats["max_age_ms"] = max(stats["max_age_ms"], round((tick_ns - sample.t_ns) / 1e6, 3))

    def finish(self, messages: Mapping[str, int]) -> EpisodeReport:
        """The episode ended: trailing pending ticks are trimmed; the report is complete.
        ``messages``: messages received per stream during the episode."""
        report = self.report
        self.ticks.finish()
        for stream, count in messages.items():
            report.streams.setdefault(stream, {}).update({"messages": count, **self._usage.get(stream, {})})
        report.instruction = self.instruction
        if self.dropped:
            report.drop(self.dropped)
        elif report.steps == 0:
            report.drop(NO_COMPLETE_STEP)
        return report


def stale_streams(report: EpisodeReport) -> list[str]:
    """Streams that had no fresh sample at some interior tick of the episode (its gaps)."""
    return sorted({gap.stream for gap in report.gaps})


def episode_metadata(report: EpisodeReport) -> dict[str, Any]:
    """What the dataset episode records about its recording: tick counts, gaps (stale streams and
    when), bad samples and the stale mark."""
    stale = stale_streams(report)
    return {
        "ticks": report.ticks, "gap_steps": report.gap_steps, "bad_steps": report.bad_steps,
        "trimmed": [report.trimmed_start, report.trimmed_end], "misaligned_steps": report.misaligned_steps,
        "stale": bool(stale), "stale_streams": stale,
        "gaps": [{"stream": g.stream, "start_s": g.start_s, "end_s": g.end_s, "ticks": g.ticks} for g in report.gaps],
        "bad": report.bad, "warnings": list(report.warnings),
    }


def describe_gaps(report: EpisodeReport) -> str:
    """'wrist: 2 gap(s), 7 tick(s); action: 1 gap(s), 1 tick(s)' ('' = no gaps)."""
    parts = []
    for stream in stale_streams(report):
        gaps = [g for g in report.gaps if g.stream == stream]
        parts.append(f"{stream}: {len(gaps)} gap(s), {sum(g.ticks for g in gaps)} tick(s)")
    return "; ".join(parts)
