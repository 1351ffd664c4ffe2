"""One episode being recorded: ticks decided in the executor thread, steps and bag messages
written by a writer thread. Pure Python, no ROS.

Why two threads: the node stamps every message with its receive time when its callback runs, and
those times decide which sample a tick uses. Decoding and PNG-encoding frames (several ms a step)
in the executor thread would delay the callbacks behind them and so shift the recorded times; the
executor thread therefore only stamps, converts small values and decides ticks
(:class:`~astra_ros.recorder_ticks.LiveResampler`), and queues the rest, in order, for the writer
thread (:class:`~astra_ros.recorder_episode.EpisodeAssembler`, the dataset and bag outputs).

Memory stays bounded: when more than ``max_queued_steps`` ticks wait for the writer, further ticks
are queued without their frames and counted as bad steps of kind ``overrun`` (reported, never
written); bag messages beyond ``MAX_PENDING_BAG_BYTES`` are dropped and counted likewise.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from astra_core.data.import_report import EpisodeReport
from astra_ros.recorder_episode import (CameraDecoder, EpisodeAssembler, RecordedStep, describe_gaps,
                                        episode_metadata, stale_streams)
from astra_ros.recorder_outputs import BagEpisode, DatasetEpisode, DatasetOutput
from astra_ros.recorder_params import MARKER_FAIL, MARKER_START, MARKER_STOP, RecorderParams
from astra_ros.recorder_ticks import LiveResampler, ResolvedTick, Sample

NS = 1_000_000_000
# Serialised bag messages waiting for the writer thread beyond this are dropped (and counted): a
# disk that cannot keep up must not take the robot's memory with it.
MAX_PENDING_BAG_BYTES = 512 * 2**20


@dataclass
class EpisodeResult:
    """What stop / discard report back."""

    ok: bool
    message: str
    dataset_episode: int = -1
    bag_path: str = ""
    report: EpisodeReport | None = None
    stale_streams: list[str] = field(default_factory=list)


class _CountingSink:
    """Bag-only recording: steps are classified and counted (for the report), not written."""

    def add_step(self, step: RecordedStep) -> None:
        pass


def _skip_decoding(camera: str, value: Any) -> tuple[None, None]:
    return None, None  # type: ignore[return-value]


class RecordingSession:
    """Records one episode; made by the node's ``start`` service, ended by ``stop`` / ``discard``."""

    def __init__(self, number: int, params: RecorderParams, start_ns: int, instruction: Sample,
                 seeds: Mapping[str, Sample], decode: CameraDecoder, dataset: DatasetOutput | None,
                 bag: BagEpisode | None, marker_topic: str, metadata: dict[str, Any],
                 proprio_names: Callable[[], list[str] | None],
                 seed_messages: Sequence[tuple[str, str, int, bytes]] = ()) -> None:
        """``seeds``: each stream's newest sample from before the start; ``seed_messages``: the
        newest message of every topic as received (topic, type, receive ns, bytes), in time order,
        written to the bag before its start marker (the importer's first ticks may use them)."""
        self.number = number
        self.params = params
        self.start_ns = int(start_ns)
        self.cameras = list(params.camera_names)
        streams = [*self.cameras, "action", *(["gripper"] if params.pose_actions else []),
                   *(["proprio"] if params.proprio_topic else [])]
        self.streams = streams
        self.resampler = LiveResampler(
            streams, start_ns, int(round(params.tolerance_s * NS)),
            rate_hz=params.control_rate_hz if params.ticks == "rate" else None,
            tick_stream="action" if params.ticks == "action" else None, seeds=seeds, instruction=instruction)
        self.messages = dict.fromkeys(streams, 0)
        self.report = EpisodeReport(f"recorder episode {number}", start_s=start_ns / NS)
        self._dataset = dataset
        self._dataset_episode: DatasetEpisode | None = None
        self._bag = bag
        self._marker_topic = marker_topic
        self._metadata = metadata
        self._proprio_names = proprio_names
        self.assembler = EpisodeAssembler(
            self.cameras, self.report, 1.0 / params.control_rate_hz, params.gap_policy, params.sync_tolerance,
            decode if dataset is not None else _skip_decoding, self._begin_steps, params.pose_actions,
            bool(params.proprio_topic))
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()  # guards the counters below (executor thread vs. writer thread)
        self._queued_ticks = 0
        self._pending_bag_bytes = 0
        self.overrun_ticks = 0
        self.bag_messages_dropped = 0
        self.dataset_error = ""  # the first error writing the dataset episode (it is then dropped)
        self.bag_error = ""  # the first error writing the bag (it is then left in staging, unfinished)
        self.write_ms: list[float] = []  # writer time per step (decode + encode + write), for the summary
        self.busy_s = 0.0  # writer thread time: ticks, bag writes, the commit (its capacity: frames / busy_s)
        self._result: EpisodeResult | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"astra_recorder_writer_{number}", daemon=True)
        self._thread.start()
        if bag is not None:
            for topic, msgtype, t_ns, data in seed_messages:
                self.add_bag_message(topic, msgtype, t_ns, data)
            self.put_bag_marker(MARKER_START, start_ns)

    # -- executor thread ----------------------------------------------------------------------------

    def add_sample(self, stream: str, sample: Sample) -> None:
        self.messages[stream] += 1
        self.resampler.add(stream, sample)

    def add_instruction(self, sample: Sample) -> None:
        self.resampler.add_instruction(sample)

    def add_bag_message(self, topic: str, msgtype: str, t_ns: int, data: bytes) -> None:
        if self._bag is None:
            return
        with self._lock:
            if self._pending_bag_bytes + len(data) > MAX_PENDING_BAG_BYTES:
                self.bag_messages_dropped += 1
                return
            self._pending_bag_bytes += len(data)
        self._queue.put(("bag", topic, msgtype, t_ns, data))

    def put_bag_marker(self, value: str, t_ns: int) -> None:
        self._queue.put(("marker", value, t_ns))

    def advance(self, now_ns: int, final: bool = False) -> int:
        """Decide the ticks before now (``final``: up to and including the episode's end) and queue them."""
        ticks = self.resampler.resolve(now_ns, final)
        for tick in ticks:
            with self._lock:
                overrun = self._queued_ticks >= self.params.max_queued_steps
                self._queued_ticks += 1
                self.overrun_ticks += overrun
            if overrun:  # keep the tick's place in the order (the classifier needs it), not its frames
                tick = dataclasses.replace(tick, samples={}, overrun=True)
            self._queue.put(("tick", tick))
        return len(ticks)

    def stop(self, end_ns: int, success: bool, timeout_s: float) -> EpisodeResult:
        self.advance(end_ns, final=True)
        if self._bag is not None:
            self.put_bag_marker(MARKER_STOP if success else MARKER_FAIL, end_ns)
        self._queue.put(("finish", bool(success), int(end_ns)))
        return self._wait(timeout_s)

    def discard(self, timeout_s: float) -> EpisodeResult:
        self.resampler.resolve(0, final=True)  # nothing more is decided or written
        self._queue.put(("abort",))
        return self._wait(timeout_s)

    def _wait(self, timeout_s: float) -> EpisodeResult:
        if self._done.wait(timeout_s):
            return self._result  # type: ignore[return-value]
        return EpisodeResult(False, f"the writer thread is still busy after {timeout_s}s (slow disk?); the episode "
                                    "will be finished in the background, see the status topic")

    def progress(self) -> dict[str, int]:
        """Counters for the status message (read without stopping the writer)."""
        classifier = self.assembler.ticks.classifier
        return {"ticks": self.resampler.ticks_resolved, "steps": self.report.steps, "gap_steps": classifier.gap_ticks,
                "bad_steps": classifier.bad_ticks}

    @property
    def finished(self) -> bool:
        return self._done.is_set()

    def wait_finished(self, timeout_s: float) -> bool:
        """Wait for the writer thread to finish a stopped or discarded episode."""
        return self._done.wait(timeout_s)

    @property
    def result(self) -> EpisodeResult | None:
        return self._result

    # -- writer thread ------------------------------------------------------------------------------

    def _begin_steps(self, instruction: str):
        if self._dataset is None:
            return _CountingSink()
        self._dataset_episode = self._dataset.begin(instruction, dict(self._metadata), self._proprio_names())
        return self._dataset_episode

    def _run(self) -> None:
        try:
            self._drain()
        except Exception as err:  # a bug, not bad input: say so in the result instead of hanging stop
            self._result = EpisodeResult(False, f"episode {self.number}: the writer thread failed: "
                                                f"{type(err).__name__}: {err}", report=self.report)
        finally:
            self._done.set()

    def _drain(self) -> None:
        while True:
            item = self._queue.get()
            kind = item[0]
            if kind == "tick":
                with self._lock:
                    self._queued_ticks -= 1
                self._on_tick(item[1])
            elif kind == "bag":
                _, topic, msgtype, t_ns, data = item
                with self._lock:
                    self._pending_bag_bytes -= len(data)
                self._write_bag(lambda bag: bag.write(topic, msgtype, t_ns, data))
            elif kind == "marker":
                self._write_bag(lambda bag: bag.marker(self._marker_topic, item[2], item[1]))
            elif kind == "finish":
                self._result = self._finish(item[1], item[2])
                break
            else:  # abort
                self._result = self._abort()
                break

    def _on_tick(self, tick: ResolvedTick) -> None:
        if self.dataset_error:
            return
        t0 = time.perf_counter()
        steps = self.report.steps
        try:
            self.assembler.on_tick(tick)
        except Exception as err:  # the dataset refused a step (another image size, ...): drop the episode
            self._fail_dataset(f"{type(err).__name__}: {err}")
            return
        elapsed = time.perf_counter() - t0
        self.busy_s += elapsed
        if self.report.steps > steps:
            self.write_ms.append(elapsed * 1e3)

    def _write_bag(self, write: Callable[[BagEpisode], None]) -> None:
        if self._bag is None or self.bag_error:
            return
        t0 = time.perf_counter()
        try:
            write(self._bag)
            self.busy_s += time.perf_counter() - t0
        except Exception as err:  # disk full, ...: the bag stays in staging as far as it got
            self.bag_error = f"{type(err).__name__}: {err}"
            try:
                self._bag.close()
            except Exception:  # the storage is broken already; what reached the disk stays
                pass

    def _fail_dataset(self, error: str) -> None:
        if not self.dataset_error:
            self.dataset_error = error
            if self._dataset_episode is not None:
                self._dataset_episode.abort()

    def _finish(self, success: bool, end_ns: int) -> EpisodeResult:
        report = self.assembler.finish(self.messages)
        report.end_s, report.success = end_ns / NS, success
        if self.overrun_ticks:
            report.warnings.append(f"{self.overrun_ticks} tick(s) dropped: the writer fell behind (max_queued_steps)")
        if self.bag_messages_dropped:
            report.warnings.append(f"{self.bag_messages_dropped} bag message(s) dropped: the disk fell behind")
        result = EpisodeResult(True, "", report=report, stale_streams=stale_streams(report))
        parts = []
        if self._bag is not None:
            if not self.bag_error:
                self._write_bag(lambda bag: setattr(result, "bag_path", str(bag.commit())))
            if self.bag_error:
                result.ok = False
                parts.append(f"bag not finished ({self.bag_error}): what was written is in {self._bag.staging}")
            else:
                parts.append(f"bag {result.bag_path}")
        if self._dataset is not None:
            if self.dataset_error:
                report.drop(f"not written: {self.dataset_error}", status="failed")
            if report.status == "written":
                meta = {"recording": {"start_s": self.start_ns / NS, "end_s": end_ns / NS,
                                      "overrun_ticks": self.overrun_ticks}, **episode_metadata(report)}
                try:
                    t0 = time.perf_counter()
                    result.dataset_episode = report.episode = self._dataset_episode.commit(success, meta)  # type: ignore[union-attr]
                    self.busy_s += time.perf_counter() - t0
                    parts.append(f"dataset episode {result.dataset_episode}")
                except Exception as err:
                    self._fail_dataset(f"{type(err).__name__}: {err}")
                    report.drop(f"not written: {self.dataset_error}", status="failed")
            if report.status != "written":
                if self._dataset_episode is not None:
                    self._dataset_episode.abort()
                result.ok = False
                parts.append(f"no dataset episode: {report.reason}")
        gaps = describe_gaps(report)
        result.message = (f"episode {self.number}: {report.steps} step(s) of {report.ticks} tick(s)"
                          + (f", {report.gap_steps} gap step(s) (stale: {gaps})" if gaps else "")
                          + (f", {report.bad_steps} bad step(s)" if report.bad_steps else "")
                          + ("; " + "; ".join(parts) if parts else ""))
        return result

    def _abort(self) -> EpisodeResult:
        if self._dataset_episode is not None:
            self._dataset_episode.abort()
        if self._bag is not None:
            self._write_bag(lambda bag: bag.abort())
        self.report.drop("discarded")
        return EpisodeResult(True, f"episode {self.number} discarded: nothing written", report=self.report)
