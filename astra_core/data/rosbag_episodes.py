"""One rosbag2 recording -> episodes of synchronised steps, handed to a sink (the dataset writer).

Two passes over the bag, so that memory stays bounded by a few frames whatever the bag's size:

1. **small streams**: action, gripper, proprio, instruction and episode markers are read whole
   (they are small) and converted to numbers; episode windows and their instructions are found;
   each stream is resampled onto the control ticks (:func:`astra_core.data.resample.sample_stream`).
2. **cameras**: camera messages stream through one :class:`~astra_core.data.resample.NewestSampleResolver`
   per camera; a tick is complete once every camera has resolved it, and only frames that some
   tick uses are decoded (:func:`astra_core.data.ros_messages.image_to_rgb`). With ``mask_topics``
   a camera's sample is its frame paired with the mask of the same header stamp
   (:class:`~astra_core.data.mask_pairing.MaskPairer`, the recorder's pairing), sampled when the
   pair is complete.

Each tick is then a step, a gap, a bad step or trimmed, judged by
:class:`~astra_core.data.resample.EpisodeTicks` (the recorder's rule too), and the episode's report
says which. An episode is committed by the sink only when its window is
complete: one cut off by a truncated bag is reported and dropped, the ones before it are kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np
from tqdm import tqdm

from astra_core.data.import_mapping import MappingError, VectorComposer, common_image_size, prepare_frame
from astra_core.data.import_report import EpisodeReport
from astra_core.data.mask_pairing import MaskPairer
from astra_core.data.resample import (BAD, MISSING, NO_COMPLETE_STEP, EpisodeTicks, NewestSampleResolver, Reorderer,
                                      sample_stream, tick_grid)
from astra_core.data import ros_messages as rm
from astra_core.data.rosbag_mapping import RosbagMapping
from astra_core.data.rosbag_source import BagError, BagSource

NS = 1_000_000_000


# ---------------------------------------------------------------------------------------------
# what the caller provides and receives

@dataclass
class ImportSchema:
    """What the first recording fixes for the whole dataset (later ones must agree)."""

    joint_names: dict[str, list[str]] = field(default_factory=dict)  # JointState stream -> joints taken
    native_sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # camera -> (H, W)
    proprio_names: list[str] | None = None


@dataclass
class Step:
    images: dict[str, np.ndarray]
    action: np.ndarray
    proprio: np.ndarray | None
    timestamp: float
    masks: dict[str, np.ndarray] | None = None  # camera -> instance labels of its frame (mask_topics)


class EpisodeHandle(Protocol):
    def add_step(self, step: Step) -> None: ...
    def commit(self, success: bool, metadata: dict) -> int: ...  # -> dataset episode id
    def abort(self) -> None: ...


class EpisodeSink(Protocol):
    def begin(self, instruction: str, metadata: dict) -> EpisodeHandle: ...


# ---------------------------------------------------------------------------------------------
# pass 1: small streams

@dataclass
class NumericStream:
    """One non-camera stream of a bag, converted: sample times, values, and why bad samples are bad."""

    name: str
    topic: str
    msgtype: str
    convert: Callable[[Any], np.ndarray]
    times: list[int] = field(default_factory=list)
    values: list[np.ndarray | None] = field(default_factory=list)
    problems: list[tuple[str, str] | None] = field(default_factory=list)

    def add(self, t_ns: int, msg: Any) -> None:
        self.times.append(t_ns)
        try:
            if isinstance(msg, Exception):
                raise rm.BadSample("deserialize", f"message does not deserialise: {msg}")
            self.values.append(self.convert(msg))
            self.problems.append(None)
        except ValueError as err:
            self.values.append(None)
            self.problems.append((getattr(err, "kind", "value"), str(err)))

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
        """(times sorted, valid, values (K, D), problems) -- sorted by time, stable."""
        order = np.argsort(np.asarray(self.times, np.int64), kind="stable")
        times = np.asarray(self.times, np.int64)[order]
        valid = np.array([self.values[i] is not None for i in order], bool)
        dim = next((len(v) for v in self.values if v is not None), 0)
        values = np.full((len(order), dim), np.nan)
        for row, i in enumerate(order):
            if self.values[i] is not None:
                values[row] = self.values[i]
        return times, valid, values, [self.problems[i] for i in order]


@dataclass
class Window:
    """One episode's time span in a bag."""

    start_ns: int
    end_ns: int
    success: bool
    report: EpisodeReport
    instruction: str = ""


def _sample_time(mapping: RosbagMapping, receive_ns: int, msg: Any) -> int:
    if mapping.time_source == "header" and not isinstance(msg, Exception):
        stamp = rm.header_stamp_ns(msg)
        if stamp is not None:
            return stamp
    return receive_ns


class BagEpisodes:
    """Reads one bag (already open) and sends its episodes to a sink. Use :meth:`run`."""

    def __init__(self, source: BagSource, mapping: RosbagMapping, schema: ImportSchema, sink: EpisodeSink,
                 instruction: str = "", progress: bool = True) -> None:
        self.source, self.mapping, self.schema, self.sink = source, mapping, schema, sink
        self.instruction_override = instruction
        self.progress = progress
        self.label = str(source.path)
        self.frames_written = 0
        self.reports: list[EpisodeReport] | None = None  # set once the episode windows are known
        self.instructions: list[tuple[int, str]] = []  # (receive ns, text) on the instruction topic
        self._check_topics()

    # -- topics and converters --------------------------------------------------------------------

    def _check_topics(self) -> None:
        m, src = self.mapping, self.source
        self.camera_types = {cam: src.check_topic(topic, rm.IMAGE_TYPES, f"camera '{cam}'") for cam, topic in m.cameras.items()}
        for cam, topic in m.mask_topics.items():
            src.check_topic(topic, rm.MASK_TYPES, f"mask of camera '{cam}'")
        self.streams: dict[str, NumericStream] = {}
        action_type = src.check_topic(m.action.topic, rm.ACTION_TYPES, "action")
        self.streams["action"] = NumericStream("action", m.action.topic, action_type, self._action_converter(action_type))
        if m.gripper.topic:
            gtype = src.check_topic(m.gripper.topic, rm.GRIPPER_TYPES, "gripper")
            self.streams["gripper"] = NumericStream("gripper", m.gripper.topic, gtype, lambda msg: np.array([rm.gripper_value(msg)]))
        for i, p in enumerate(m.proprio):
            name = f"proprio[{i}]"
            ptype = src.check_topic(p.topic, rm.PROPRIO_TYPES, name)
            self.streams[name] = NumericStream(name, p.topic, ptype, self._proprio_converter(name, ptype, p))
        if m.instruction.topic:
            src.check_topic(m.instruction.topic, rm.INSTRUCTION_TYPES, "instruction")
        self.marker_type = src.check_topic(m.episodes.topic, rm.MARKER_TYPES, "episode marker") if m.episodes.mode == "markers" else None

    def _action_converter(self, msgtype: str) -> Callable[[Any], np.ndarray]:
        a, where = self.mapping.action, f"bag {self.label}, action topic '{self.mapping.action.topic}'"
        pose_space = a.space != "discrete_se2"
        if msgtype != rm.JOINT_STATE and a.uses_vector_mapping:
            raise MappingError(f"{where}: action.dims / constants / quaternion apply to JointState actions only")
        if msgtype == rm.PICK_PLACE_SE2:
            if pose_space:
                raise MappingError(f"{where}: PickPlaceSE2 gives discrete_se2 actions, the mapping asks for {a.space}")
            return rm.pick_place_to_se2
        if msgtype == rm.POSE_STAMPED:
            if not pose_space:
                raise MappingError(f"{where}: PoseStamped gives pose6d actions, the mapping asks for discrete_se2")
            tol = self.mapping.quaternion_tolerance
            return lambda msg: np.append(rm.pose_stamped_to_pose6d(msg, tol), np.nan)  # gripper: filled per step
        # JointState: positions of the joints that `dims` names (or all, in order)
        external = ["gripper"] if self.mapping.gripper.configured and pose_space else []
        if external and a.dims and "gripper" in a.dims:
            raise MappingError(f"{where}: the gripper comes from both action.dims and the gripper section")
        refs = [*(a.dims or {}).values(), *(a.quaternion or [])]
        if any(not isinstance(r, str) for r in refs):
            raise MappingError(f"{where}: JointState actions name joints in action.dims / quaternion, not indices: {refs}")
        joints = refs or None  # None: every joint, in the message's order
        state: dict[str, VectorComposer] = {}

        def convert(msg: Any) -> np.ndarray:
            names, values = rm.joint_state_values(msg, "position", self.schema.joint_names.get("action", joints))
            if "composer" not in state:
                self.schema.joint_names.setdefault("action", names)
                state["composer"] = VectorComposer(a, names, where, external)
            return state["composer"].compose(values, self.mapping.quaternion_tolerance)

        return convert

    def _proprio_converter(self, name: str, msgtype: str, p) -> Callable[[Any], np.ndarray]:
        if msgtype == rm.POSE_STAMPED:
            tol = self.mapping.quaternion_tolerance
            return lambda msg: rm.pose_stamped_to_pose6d(msg, tol)

        def convert(msg: Any) -> np.ndarray:
            names, values = rm.joint_state_values(msg, p.field, self.schema.joint_names.get(name, p.joints))
            self.schema.joint_names.setdefault(name, names)
            return values

        return convert

    def _proprio_names(self) -> list[str] | None:
        names: list[str] = []
        for i, p in enumerate(self.mapping.proprio):
            if self.streams[f"proprio[{i}]"].msgtype == rm.POSE_STAMPED:
                names += [f"{p.prefix}{n}" for n in rm.POSE6D_NAMES]
            else:
                suffix = "" if p.field == "position" else f".{p.field}"
                names += [f"{p.prefix}{j}{suffix}" for j in self.schema.joint_names.get(f"proprio[{i}]", [])]
        return names or None

    # -- pass 1 -----------------------------------------------------------------------------------

    def _read_small_streams(self) -> tuple[list[tuple[int, str]], list[tuple[int, Any]]]:
        m = self.mapping
        by_topic: dict[str, list[NumericStream]] = {}
        for s in self.streams.values():
            by_topic.setdefault(s.topic, []).append(s)
        instructions: list[tuple[int, str]] = []
        markers: list[tuple[int, Any]] = []
        topics = set(by_topic) | {t for t in (m.instruction.topic, m.episodes.topic if self.marker_type else "") if t}
        for topic, receive_ns, msg in self.source.messages(topics):
            for stream in by_topic.get(topic, ()):
                stream.add(_sample_time(m, receive_ns, msg), msg)
            if isinstance(msg, Exception):
                continue
            if topic == m.instruction.topic:
                instructions.append((receive_ns, str(msg.data)))
            if self.marker_type and topic == m.episodes.topic:
                markers.append((receive_ns, msg.data))
        if not self.streams["action"].times:
            raise BagError(self.label, m.action.topic, "action topic has no messages")
        names = self._proprio_names()
        if self.schema.proprio_names is None:
            self.schema.proprio_names = names
        elif names != self.schema.proprio_names:
            raise BagError(self.label, None, f"proprio names {names} differ from the first bag's {self.schema.proprio_names}")
        return instructions, markers

    def _windows(self, markers: list[tuple[int, Any]], instructions: list[tuple[int, str]]) -> list[Window]:
        ep = self.mapping.episodes
        truncated = f" (bag truncated: {self.source.truncated})" if self.source.truncated else ""
        windows: list[Window] = []
        dropped: list[Window] = []
        unknown: list[str] = []  # marker values that are none of start/stop/fail/discard

        def window(start: int, end: int, success: bool) -> Window:
            label = self.label if ep.mode == "bag" else f"{self.label} [{start / NS:.3f}..{end / NS:.3f} s]"
            return Window(start, end, success, EpisodeReport(label, success=success, start_s=start / NS, end_s=end / NS))

        if ep.mode == "bag":
            firsts = [min(s.times) for s in self.streams.values() if s.times]
            lasts = [max(s.times) for s in self.streams.values() if s.times]
            w = window(min(firsts), max(lasts), ep.success)
            if self.source.truncated:
                w.report.drop(f"incomplete: the bag is truncated, so is its episode ({self.source.truncated})")
                dropped.append(w)
            else:
                windows.append(w)
        else:
            open_at: int | None = None
            for t, value in markers:
                if isinstance(value, (bool, np.bool_)):
                    kind = "start" if value else "stop"
                else:
                    value = str(value)
                    kind = next((k for k in ("start", "stop", "fail", "discard") if value in getattr(ep, k)), None)
                if kind is None:
                    unknown.append(value)  # not an episode marker: reported with every episode of the bag
                    continue
                if kind == "start":
                    if open_at is not None:
                        w = window(open_at, t, False)
                        w.report.drop(f"incomplete: a new start marker at {t / NS:.3f} s came before a stop marker")
                        dropped.append(w)
                    open_at = t
                elif open_at is None:
                    continue  # a stop without a start: nothing to end
                elif kind == "discard":
                    w = window(open_at, t, False)
                    w.report.drop("discarded by a marker")
                    dropped.append(w)
                    open_at = None
                else:
                    windows.append(window(open_at, t, kind == "stop"))
                    open_at = None
            if open_at is not None:
                end = self.source.last_read_ns or open_at
                w = window(open_at, end, False)
                w.report.drop(f"incomplete: no stop marker before the bag ends{truncated}")
                dropped.append(w)
        self.instructions = sorted((t, s) for t, s in instructions if s.strip())
        if ep.mode == "markers" and unknown:
            for w in windows + dropped:
                w.report.warnings.append(f"{len(unknown)} marker message(s) with unknown values ignored: {sorted(set(unknown))[:5]}")
        for w in dropped:
            w.report.success = None
        return sorted(windows + dropped, key=lambda w: w.start_ns)

    def _has_instruction(self, w: Window) -> bool:
        fixed = self.instruction_override or not self.mapping.instruction.topic
        return bool(self.instruction_override or self.mapping.instruction.text) if fixed else \
            any(t <= w.end_ns for t, _ in self.instructions)

    def instruction_at(self, w: Window, tick_ns: int) -> str:
        """The instruction in effect at the episode's first step: the newest one published by then
        (the one a live policy would be conditioned on), else the first one during the episode."""
        if self.instruction_override or not self.mapping.instruction.topic:
            return self.instruction_override or self.mapping.instruction.text
        before = [s for t, s in self.instructions if t <= tick_ns]
        later = [(t, s) for t, s in self.instructions if tick_ns < t <= w.end_ns]
        if before:
            chosen = before[-1]
        else:
            chosen = later[0][1]
            w.report.warnings.append(f"instruction arrived {(later[0][0] - tick_ns) / NS:.3f} s after the first step")
        if any(s != chosen for _, s in later):
            w.report.warnings.append(f"instruction changed during the episode; kept the one at its first step: {chosen!r}")
        return chosen

    # -- ticks ------------------------------------------------------------------------------------

    def _ticks(self, w: Window, action_times: np.ndarray) -> np.ndarray:
        if self.mapping.ticks == "rate":
            return tick_grid(w.start_ns, w.end_ns, self.mapping.control_rate_hz)
        ticks = action_times[(action_times >= w.start_ns) & (action_times <= w.end_ns)]
        unique = np.unique(ticks)
        if len(unique) != len(ticks):
            w.report.warnings.append(f"{len(ticks) - len(unique)} action message(s) share a time with another: one step each")
        return unique

    # -- the run ----------------------------------------------------------------------------------

    def run(self) -> list[EpisodeReport]:
        instructions, markers = self._read_small_streams()
        windows = self._windows(markers, instructions)
        self.reports = [w.report for w in windows]
        live = [w for w in windows if w.report.status == "written"]
        for w in live:
            if not self._has_instruction(w):
                w.report.drop("no instruction: none on the instruction topic before or during the episode, "
                              "and none given (--instruction / instruction.text)", status="failed")
        live = [w for w in live if w.report.status == "written"]
        if live:
            self._assemble(live)
        return self.reports

    def _assemble(self, windows: list[Window]) -> None:
        m = self.mapping
        tolerance_ns = int(round(m.tolerance_s * NS))
        arrays = {name: s.arrays() for name, s in self.streams.items()}
        plans = [_WindowPlan(w, self._ticks(w, arrays["action"][0]), arrays, tolerance_ns, self.streams) for w in windows]
        cameras = list(m.cameras)
        samples = CameraSamples(m)
        reorder = {cam: Reorderer(int(m.reorder_window_s * NS)) for cam in cameras} if m.time_source == "header" else None
        last: dict[str, tuple[int, _LazyFrame]] = {}
        current = 0
        assembler = _Assembler(self, plans[0], cameras, tolerance_ns, reorder, samples)
        total = sum(self.source.topics[t].count for t in samples.topics)
        bar = tqdm(total=total, desc=self.source.path.name, unit="msg", disable=not self.progress, leave=False)

        def feed(cam: str, t_ns: int, frame: _LazyFrame) -> None:
            nonlocal current, assembler
            last[cam] = (t_ns, frame)
            assembler.push(cam, t_ns, frame)
            while assembler.done and current + 1 < len(plans):
                self.frames_written += assembler.finish(complete=True)
                current += 1
                assembler = _Assembler(self, plans[current], cameras, tolerance_ns, reorder, samples)
                for c, (t, f) in last.items():  # the newest frame may serve the next window's first ticks
                    assembler.push(c, t, f)

        try:
            for topic, receive_ns, msg in self.source.messages(samples.topics):
                bar.update(1)
                if current >= len(plans) or (assembler.done and current + 1 >= len(plans)):
                    break  # every window is resolved
                sample = samples.add(topic, receive_ns, msg)
                if sample is None:
                    continue  # a frame or mask waiting for its other half
                cam, frame_msg, mask_msg = sample
                frame = _LazyFrame(frame_msg, cam, self, mask_msg)
                t_ns = _sample_time(m, receive_ns, frame_msg)
                if reorder is None:
                    feed(cam, t_ns, frame)
                else:
                    for stamp, f in reorder[cam].push(receive_ns, t_ns, frame):
                        feed(cam, stamp, f)
            if reorder is not None:
                for cam in cameras:
                    for stamp, f in reorder[cam].flush():
                        feed(cam, stamp, f)
            # A truncated read leaves the open window (and any after it) incomplete.
            complete = self.source.truncated is None or assembler.done
            self.frames_written += assembler.finish(complete=complete)
            for plan in plans[current + 1:]:
                plan.window.report.drop(f"incomplete: the bag is truncated before this episode ends ({self.source.truncated})")
        except BaseException:
            assembler.abort()
            raise
        finally:
            bar.close()


class CameraSamples:
    """Camera (and mask) messages in receive order -> camera samples: a frame alone, or, with
    ``mask_topics``, a frame and the mask of its stamp once both are there (the recorder's pairing,
    :class:`~astra_core.data.mask_pairing.MaskPairer`). Counts the masks that cannot be used."""

    def __init__(self, mapping: RosbagMapping) -> None:
        self.camera_of = {topic: cam for cam, topic in mapping.cameras.items()}
        self.mask_camera_of = {topic: cam for cam, topic in mapping.mask_topics.items()}
        self.topics = [*self.camera_of, *self.mask_camera_of]
        self.pairers: dict[str, MaskPairer] = {cam: MaskPairer(mapping.mask_stamp_tolerance_s) for cam in mapping.mask_topics}
        self.bad_masks: dict[str, list[int]] = {cam: [] for cam in mapping.mask_topics}  # receive ns of corrupt masks

    def add(self, topic: str, receive_ns: int, msg: Any) -> tuple[str, Any, Any] | None:
        """-> (camera, frame message, mask message or None) when a camera sample is complete."""
        if topic in self.camera_of:
            cam = self.camera_of[topic]
            if cam not in self.pairers or isinstance(msg, Exception):
                return cam, msg, None  # a corrupt frame is a bad sample of its camera (as in the recorder)
            pair = self.pairers[cam].add_frame(rm.stamp_ns(msg.header.stamp), msg)
        else:
            cam = self.mask_camera_of[topic]
            if isinstance(msg, Exception):  # pairs with nothing: its frame waits for a usable mask
                self.bad_masks[cam].append(receive_ns)
                return None
            pair = self.pairers[cam].add_mask(rm.stamp_ns(msg.header.stamp), msg)
        return None if pair is None else (cam, *pair)


class _LazyFrame:
    """A camera message (and its mask) decoded on first use (only frames that a step uses are)."""

    __slots__ = ("msg", "mask", "camera", "owner", "_image", "_labels", "_error")

    def __init__(self, msg: Any, camera: str, owner: BagEpisodes, mask: Any = None) -> None:
        self.msg, self.mask, self.camera, self.owner = msg, mask, camera, owner
        self._image: np.ndarray | None = None
        self._labels: np.ndarray | None = None
        self._error: ValueError | None = None

    def decoded(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(RGB frame, instance labels or None); raises the ValueError (with a ``kind``) that makes it
        unusable, every time it is asked (a frame may serve several ticks)."""
        if self._image is None and self._error is None:
            try:
                if isinstance(self.msg, Exception):
                    raise rm.BadSample("deserialize", f"message does not deserialise: {self.msg}")
                native = self.owner.schema.native_sizes.get(self.camera)
                image = rm.image_to_rgb(self.msg, native)
                # the mask must have its frame's size, as the recorder and the policy node require
                labels = None if self.mask is None else rm.image_to_labels(self.mask, image.shape[:2])
                self.owner.schema.native_sizes.setdefault(self.camera, image.shape[:2])
                self._image, self._labels = image, labels
            except ValueError as err:
                self._error = err
            self.msg = self.mask = None  # the raw bytes are no longer needed
        if self._error is not None:
            raise self._error
        return self._image, self._labels  # type: ignore[return-value]


class _WindowPlan:
    """A window's ticks and, per small stream, the sample chosen at each tick."""

    def __init__(self, window: Window, ticks: np.ndarray, arrays: dict, tolerance_ns: int, streams: dict) -> None:
        self.window, self.ticks = window, ticks
        self.window.report.ticks = len(ticks)
        self.choice: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.arrays = arrays
        for name, (times, valid, _values, _problems) in arrays.items():
            self.choice[name] = sample_stream(times, valid, ticks, tolerance_ns)
        report = window.report
        for name, stream in streams.items():
            times, _, _, problems = arrays[name]
            inside = np.flatnonzero((times >= window.start_ns) & (times <= window.end_ns))
            bad: dict[str, int] = {}
            for i in inside:
                if problems[i] is not None:
                    bad[problems[i][0]] = bad.get(problems[i][0], 0) + 1
            report.streams[name] = {"topic": stream.topic, "type": stream.msgtype, "messages": len(inside), "bad_messages": bad}


class _Assembler:
    """Builds the steps of one window as camera frames resolve its ticks, and sends them to the sink."""

    def __init__(self, owner: BagEpisodes, plan: _WindowPlan, cameras: list[str], tolerance_ns: int,
                 reorder: dict[str, Reorderer] | None, samples: CameraSamples) -> None:
        self.owner, self.plan, self.cameras = owner, plan, cameras
        self.reorder = reorder
        self.samples = samples
        self.late_before = {cam: r.late for cam, r in reorder.items()} if reorder else {}
        self.window, self.report = plan.window, plan.window.report
        self.resolvers = {cam: NewestSampleResolver(plan.ticks, tolerance_ns) for cam in cameras}
        self.resolved: dict[int, dict[str, tuple[int, _LazyFrame] | None]] = {}
        self.next_tick = 0
        self.ticks = EpisodeTicks(self.report, 1.0 / owner.mapping.control_rate_hz, owner.mapping.gap_policy)
        self.handle: EpisodeHandle | None = None
        self.previous: dict[str, Any] = {}  # stream -> sample used at the previous step (repeats)
        self.camera_stats = {cam: {"topic": owner.mapping.cameras[cam], "type": owner.camera_types[cam], "messages": 0,
                                   "used": 0, "repeated": 0, "max_age_ms": 0.0} for cam in cameras}
        for cam, topic in owner.mapping.mask_topics.items():  # "messages" then counts frame + mask pairs
            self.camera_stats[cam]["mask_topic"] = topic
        self.camera_times: dict[str, list[int]] = {cam: [] for cam in cameras}
        for name in plan.choice:
            self.report.streams[name].update(used=0, repeated=0, max_age_ms=0.0)

    @property
    def done(self) -> bool:
        return all(r.done for r in self.resolvers.values())

    def push(self, cam: str, t_ns: int, frame: _LazyFrame) -> None:
        if self.window.start_ns <= t_ns <= self.window.end_ns:
            self.camera_stats[cam]["messages"] += 1
            self.camera_times[cam].append(t_ns)
        for k, payload in self.resolvers[cam].push(t_ns, (t_ns, frame)):
            self.resolved.setdefault(k, {})[cam] = payload
        self._drain()

    def _drain(self) -> None:
        while self.next_tick in self.resolved and len(self.resolved[self.next_tick]) == len(self.cameras):
            self._tick(self.next_tick, self.resolved.pop(self.next_tick))
            self.next_tick += 1

    def _tick(self, k: int, frames: dict[str, tuple[int, _LazyFrame] | None]) -> None:
        plan = self.plan
        tick_ns = int(plan.ticks[k])
        missing = [c for c, f in frames.items() if f is None]
        missing += [name for name, (_, status) in plan.choice.items() if status[k] == MISSING]
        bad = [(name, *plan.arrays[name][3][index[k]]) for name, (index, status) in plan.choice.items()
               if status[k] == BAD]
        step = self.ticks.judge(tick_ns, missing, bad, self.cameras, lambda cam: frames[cam][1].decoded())  # type: ignore[index]
        if self.ticks.dropped:
            self.abort()
        if step is not None:
            self._write_step(k, tick_ns, frames, step.images, step.masks)

    def _write_step(self, k: int, tick_ns: int, frames: dict, images: dict[str, np.ndarray],
                    masks: dict[str, np.ndarray] | None) -> None:
        plan, m, owner = self.plan, self.owner.mapping, self.owner
        try:  # all cameras must share one size unless the mapping resizes them
            common_image_size({cam: img.shape[:2] for cam, img in images.items()}, m.image_size)
        except MappingError as err:
            raise MappingError(f"bag {owner.label}: {err}") from None
        prepared = {cam: prepare_frame(img, m.image_size) for cam, img in images.items()}
        values = {name: plan.arrays[name][2][plan.choice[name][0][k]] for name in plan.choice}
        action = values["action"].copy()
        if "gripper" in values:
            action[-1] = values["gripper"][0]
        elif m.gripper.constant is not None:
            action[-1] = float(m.gripper.constant)
        proprio = np.concatenate([values[f"proprio[{i}]"] for i in range(len(m.proprio))]) if m.proprio else None
        # statistics: ages, repeats, camera sync
        times = [t for t, _ in frames.values()]
        if max(times) - min(times) > m.sync_tolerance * NS:
            self.report.misaligned_steps += 1
        for cam, (t_ns, frame) in frames.items():
            self._count_use(self.camera_stats[cam], cam, frame, tick_ns - t_ns)
        for name, (index, _) in plan.choice.items():
            sample_ns = int(plan.arrays[name][0][index[k]])
            self._count_use(self.report.streams[name], name, int(index[k]), tick_ns - sample_ns)
        if self.handle is None:
            meta = {"source": "rosbag2", "bag": owner.label, "window_s": [self.window.start_ns / NS, self.window.end_ns / NS],
                    "topics": {**{c: t for c, t in m.cameras.items()}, **m.stream_topics()}}
            self.window.instruction = owner.instruction_at(self.window, tick_ns)
            self.handle = owner.sink.begin(self.window.instruction, meta)
        self.handle.add_step(Step(prepared, action, proprio, tick_ns / NS, masks))
        self.report.steps += 1

    def _count_use(self, stats: dict, stream: str, sample: Any, age_ns: int) -> None:
        if stream in self.previous and self.previous[stream] == sample:
            stats["repeated"] += 1
        else:
            stats["used"] += 1
        self.previous[stream] = sample
        stats["max_age_ms"] = max(stats["max_age_ms"], round(age_ns / 1e6, 3))

    def abort(self) -> None:
        if self.handle is not None:
            self.handle.abort()
            self.handle = None

    def finish(self, complete: bool) -> int:
        """Resolve the remaining ticks, then commit or drop; returns the frames written."""
        if complete:
            for cam, resolver in self.resolvers.items():
                for k, payload in resolver.finish():
                    self.resolved.setdefault(k, {})[cam] = payload
            self._drain()
        self.ticks.finish()
        report = self.report
        for cam in self.cameras:
            self.camera_stats[cam]["source_drops"] = _estimated_drops(self.camera_times[cam])
            if cam in self.samples.bad_masks:  # masks that did not deserialise: their frames had no pair
                self.camera_stats[cam]["bad_masks"] = sum(self.window.start_ns <= t <= self.window.end_ns
                                                          for t in self.samples.bad_masks[cam])
            if self.reorder:  # header stamps that arrived too late to be ordered
                self.camera_stats[cam]["late"] = self.reorder[cam].late - self.late_before[cam]
            report.streams.setdefault(cam, {}).update(self.camera_stats[cam])
        report.instruction = self.window.instruction
        if not complete:
            self.abort()
            report.drop(f"incomplete: the bag is truncated before this episode ends ({self.owner.source.truncated})")
            return 0
        if self.ticks.dropped:
            report.drop(self.ticks.dropped)
            return 0
        if self.handle is None:
            report.drop(NO_COMPLETE_STEP)
            return 0
        metadata = {"ticks": report.ticks, "gap_steps": report.gap_steps, "bad_steps": report.bad_steps,
                    "trimmed": [report.trimmed_start, report.trimmed_end], "misaligned_steps": report.misaligned_steps}
        report.episode = self.handle.commit(self.window.success, metadata)
        self.handle = None
        return report.steps * len(self.cameras)


def _estimated_drops(times: list[int]) -> int:
    """Frames the camera (or the recorder) lost: inter-arrival gaps over 1.5x the median period."""
    if len(times) < 3:
        return 0
    dt = np.diff(np.sort(np.asarray(times, np.int64)))
    period = float(np.median(dt))
    if period <= 0:
        return 0
    long = dt[dt > 1.5 * period]
    return int(sum(int(round(d / period)) - 1 for d in long))
