"""Messages -> recorder samples: the value conversions and the frame/mask pairing. Pure Python
(duck-typed messages), no ROS.

Values are converted with :mod:`astra_core.data.ros_messages`, the functions the rosbag importer
applies to the same messages in a bag, so a recorded step holds exactly what the import of the
recording's bag holds: PoseStamped -> x y z + ZYX roll pitch yaw (quaternions normalised within the
tolerance, else a bad sample), PickPlaceSE2 -> pick/place x y theta, GripperCommand -> its position,
JointState -> the positions of the chosen joints. A message that cannot be converted becomes a *bad*
sample (kind + message), never a silently skipped one: the tick that would use it is a bad step.

Camera frames are not converted here: they are decoded only when a tick may use them (by the node,
with the policy node's image conversion). With instance masks, a camera's sample is a frame together
with the mask of its header stamp (:class:`astra_core.data.mask_pairing.MaskPairer`, the pairing the
rosbag importer applies to the recorded bag), available from the moment both have arrived.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np

from astra_core.data import ros_messages as rm
from astra_core.data.mask_pairing import MaskPairer
from astra_ros.instruction import InstructionError, check_instruction
from astra_ros.recorder_params import RecorderParams, mask_stream
from astra_ros.recorder_ticks import Sample

if TYPE_CHECKING:
    from astra_ros.recorder_session import RecordingSession

Converter = Callable[[Any], np.ndarray]


class Received(NamedTuple):
    """A frame or mask as it arrived: receive time, serialised bytes (for the bag), the message."""

    t_ns: int
    data: bytes
    msg: Any


def to_sample(t_ns: int, msg: Any, convert: Converter) -> Sample:
    """A sample of a converted message, or a bad sample saying why it cannot be used."""
    try:
        return Sample(t_ns, convert(msg))
    except ValueError as err:  # BadSample, QuaternionError: both carry a kind
        return Sample(t_ns, None, (getattr(err, "kind", "value"), str(err)))


class JointSelection:
    """The joints a JointState stream gives, fixed by the parameters or by its first message
    (as the importer does), so every step has the same proprio names in the same order."""

    def __init__(self, joints: Sequence[str]) -> None:
        self.names: list[str] | None = list(joints) or None

    def __call__(self, msg: Any) -> np.ndarray:
        names, values = rm.joint_state_values(msg, "position", self.names)
        if self.names is None:
            self.names = names
        return values


class StreamConverters:
    """The converter of each non-camera stream of a recorder (action, gripper, proprio)."""

    def __init__(self, params: RecorderParams) -> None:
        tolerance = params.quaternion_tolerance
        self.params = params
        self.joints: JointSelection | None = None
        self.converters: dict[str, Converter] = {}
        if params.pose_actions:
            self.converters["action"] = lambda msg: rm.pose_stamped_to_pose6d(msg, tolerance)
            self.converters["gripper"] = lambda msg: np.array([rm.gripper_value(msg)])
        else:
            self.converters["action"] = rm.pick_place_to_se2
        if params.proprio_topic:
            if params.proprio_msg_type == "pose":
                self.converters["proprio"] = lambda msg: rm.pose_stamped_to_pose6d(msg, tolerance)
            else:
                self.joints = JointSelection(params.proprio_joint_names)
                self.converters["proprio"] = self.joints

    def sample(self, stream: str, t_ns: int, msg: Any) -> Sample:
        return to_sample(t_ns, msg, self.converters[stream])

    def proprio_names(self) -> list[str] | None:
        """The dataset's proprio names (None: no proprioception; raises before a JointState arrived
        when the joints are not given)."""
        if not self.params.proprio_topic:
            return None
        if self.joints is None:
            return list(rm.POSE6D_NAMES)
        if self.joints.names is None:
            raise RuntimeError("proprio joint names are not known yet: no JointState message was received")
        return list(self.joints.names)


class RecorderInputs:
    """Everything the recorder keeps between its subscriptions and the episode being recorded:
    the newest sample and the newest message (as received) of every stream, the instruction in
    effect, the frame/mask pairing, and counters. The node's callbacks hand each message here
    (stamped, deserialised or the deserialisation error); an active session gets it too.

    ``topics`` / ``msgtypes``: stream -> resolved topic name / rosbag2 type name. ``report(kind,
    text)`` counts a refused message (the node's ProblemLog).
    """

    def __init__(self, params: RecorderParams, topics: Mapping[str, str], msgtypes: Mapping[str, str],
                 report: Callable[[str, str], None]) -> None:
        self.params = params
        self.topics, self.msgtypes = dict(topics), dict(msgtypes)
        self.report = report
        self.converters = StreamConverters(params)
        self.latest: dict[str, Sample] = {}  # stream -> newest sample (seeds the next episode's first ticks)
        self.latest_raw: dict[str, tuple[int, bytes]] = {}  # stream -> newest message as received (bag seeds)
        self.instruction: Sample | None = None
        self.received = dict.fromkeys(self.topics, 0)
        self.pairers = {c: MaskPairer(params.mask_stamp_tolerance_s) for c in params.camera_names} if params.mask_topics else {}
        self.session: RecordingSession | None = None

    @property
    def streams(self) -> list[str]:
        """The resampled streams: cameras, action, gripper, proprio."""
        return [*self.params.camera_names, *self.converters.converters]

    def recording(self) -> RecordingSession | None:
        session = self.session
        return session if session is not None and not session.resampler.finished else None

    def on_message(self, stream: str, t_ns: int, data: bytes, msg: Any) -> None:
        """One message of ``stream`` received at ``t_ns``: ``msg`` is it deserialised, or the
        exception deserialising raised."""
        self.received[stream] += 1
        self.latest_raw[stream] = (t_ns, data)
        session = self.recording()
        if session is not None:
            session.add_bag_message(self.topics[stream], self.msgtypes[stream], t_ns, data)
        if isinstance(msg, Exception):  # corrupt bytes: a bad sample of its stream
            self.report("deserialize", f"{stream} on {self.topics[stream]}: {msg}")
            if stream in self.streams:
                self._sample(stream, Sample(t_ns, None, ("deserialize", str(msg))))
        elif stream == "instruction":
            self._on_instruction(t_ns, msg)
        elif stream in self.converters.converters:
            sample = self.converters.sample(stream, t_ns, msg)
            if sample.problem is not None:
                self.report(sample.problem[0], f"{stream} on {self.topics[stream]}: {sample.problem[1]}")
            self._sample(stream, sample)
        elif self.pairers:  # a frame or a mask of a camera with masks: a sample once both are there
            camera = stream.removeprefix(mask_stream(""))
            pairer = self.pairers[camera]
            stamp, part = rm.stamp_ns(msg.header.stamp), Received(t_ns, data, msg)
            pair = pairer.add_frame(stamp, part) if stream == camera else pairer.add_mask(stamp, part)
            if pair is not None:
                self._sample(camera, Sample(t_ns, (pair[0].msg, pair[1].msg)))
        else:
            self._sample(stream, Sample(t_ns, msg))

    def _sample(self, stream: str, sample: Sample) -> None:
        self.latest[stream] = sample
        session = self.recording()
        if session is not None:
            session.add_sample(stream, sample)

    def _on_instruction(self, t_ns: int, msg: Any) -> None:
        try:
            text = check_instruction(msg.data, self.params.instruction_max_chars)
        except InstructionError as err:  # the policy node's rule: not UTF-8, empty or too long
            self.report(err.kind, str(err))
            return
        self.instruction = Sample(t_ns, text)
        session = self.recording()
        if session is not None:
            session.add_instruction(self.instruction)

    def seeds(self) -> dict[str, Sample]:
        """Each resampled stream's newest sample (the start of an episode may use it)."""
        return {s: self.latest[s] for s in self.streams if s in self.latest}

    def bag_seeds(self) -> list[tuple[str, str, int, bytes]]:
        """What the robot had, in time order, for the start of a bag: the newest message of every
        topic; for a camera with masks, every frame and mask its pairer holds (the importer's
        pairer, given them, pairs the episode's messages as this recorder does)."""
        paired = {*self.pairers, *(mask_stream(c) for c in self.pairers)}
        seeds = [(self.topics[s], self.msgtypes[s], t, data) for s, (t, data) in self.latest_raw.items() if s not in paired]
        for camera, pairer in self.pairers.items():
            for part, received in pairer.held():
                stream = camera if part == "frame" else mask_stream(camera)
                seeds.append((self.topics[stream], self.msgtypes[stream], received.t_ns, received.data))
        return sorted(seeds, key=lambda item: item[2])

    def ages(self, now_ns: int, streams: Sequence[str]) -> dict[str, float | None]:
        """Age (s) of the newest sample of each stale stream (None: never received): the streams
        whose newest sample is older than the tolerance, the policy node's staleness rule."""
        out: dict[str, float | None] = {}
        for stream in streams:
            latest = self.latest.get(stream)
            age = None if latest is None else (now_ns - latest.t_ns) / 1e9
            if age is None or age > self.params.tolerance_s:
                out[stream] = age
        return out
