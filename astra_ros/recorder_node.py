"""Record demonstration episodes over ROS 2, straight into the Astra dataset format and/or
rosbag2 folders.

    python -m astra_ros.recorder_node --ros-args --params-file config/recorder.yaml
    astra_recorder --ros-args --params-file config/recorder.yaml -p dataset_path:=data/demos   (console script)

A plain node, not a lifecycle node: there is nothing to arm or load, and a recorder that is up
should record whenever asked; episodes (start / stop / discard) are its lifecycle. Bad parameters,
or a dataset whose schema the parameters contradict, make the process exit 1 at once with the reason.

What is recorded (docs/DATASET.md, "Recording on a robot"): every camera (raw or compressed, the
policy node's image conversion), optional instance masks per camera (paired with the frame of the
same stamp, as the policy node pairs them), the commanded action (PoseStamped + GripperCommand,
or PickPlaceSE2), proprioception (JointState or PoseStamped) and the instruction. Steps are
resampled at the control rate with the importer's rule (astra_core.data.resample: the newest
sample not newer than the tick, none if older than ``tolerance_s``), so the dataset equals the
import of the same episode's bag, step for step. A stream that goes stale is a gap: reported on
the status topic while it lasts and in the episode's metadata (``stale``, ``stale_streams``,
``gaps``), never padded.

Topics (relative names; namespace and remap as usual):
  in:  <camera_topics> (Image or CompressedImage), <mask_topics> (Image mono16/mono8), <action_topic>
       (PoseStamped / PickPlaceSE2), <gripper_topic> (GripperCommand), <proprio_topic> (JointState /
       PoseStamped), <instruction_topic> (String); QoS from astra_ros.qos, as the policy node
  out: ~/status (astra_ros/RecorderStatus; reliable + transient local)
  services: ~/start_episode (astra_ros/StartRecording), ~/stop_episode (astra_ros/StopRecording,
       with the success flag), ~/discard_episode (std_srvs/Trigger)
  (~/: private names, /<namespace>/astra_recorder/..., so that the recorder's status does not clash
  with a policy node's `status` in the same namespace)

Threads: one executor thread runs every callback; they only stamp (the node clock, never going
back), convert small values and decide ticks. A writer thread per episode decodes frames, writes
the dataset episode and the bag (recorder_session.py). The main thread waits for SIGINT/SIGTERM;
an episode still open then is saved with success false and a warning saying so.
"""

from __future__ import annotations

import sys
from typing import Any, Sequence

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger

from astra_ros.frame_buffer import Staleness
from astra_ros.image_conversion import ImageConversionError, image_to_labels, to_rgb
from astra_ros.msg import GripperCommand, PickPlaceSE2, RecorderStatus
from astra_ros.node_main import run_plain_node
from astra_ros.qos import COMMAND_QOS, INSTRUCTION_QOS, SENSOR_QOS, STATUS_QOS
from astra_ros.recorder_outputs import BagOutput, DatasetOutput
from astra_ros.recorder_params import RECORDER_PARAMETERS, RecorderParams, mask_stream
from astra_ros.recorder_session import RecordingSession
from astra_ros.recorder_streams import RecorderInputs
from astra_ros.ros_parameters import declare_parameters, read_parameter_values
from astra_ros.srv import StartRecording, StopRecording
from astra_ros.stats import LatencyWindow, ProblemLog

NODE_NAME = "astra_recorder"
SUMMARY_PREFIX = "astra_recorder summary: "
# The recorder's own interface is private (~/: under the node's name), so a recorder and a policy node
# can share a namespace: both have a `status`, of different types.
STATUS_TOPIC, MARKER_TOPIC = "~/status", "~/episode_marker"  # markers: in the bags only (start / stop / fail)
START_SERVICE, STOP_SERVICE, DISCARD_SERVICE = "~/start_episode", "~/stop_episode", "~/discard_episode"
NS = 1_000_000_000


def ros_type_name(msg_type: type) -> str:
    """rclpy message class -> rosbag2 type name, e.g. sensor_msgs/msg/Image."""
    return f"{msg_type.__module__.split('.')[0]}/msg/{msg_type.__name__}"


class RecorderNode(Node):
    def __init__(self, argv: Sequence[str] = ()) -> None:
        super().__init__(NODE_NAME)
        declare_parameters(self, RECORDER_PARAMETERS)
        values, _ = read_parameter_values(self, argv, RECORDER_PARAMETERS)
        self.params = params = RecorderParams.from_values(values)
        self.problems = ProblemLog(lambda text: self.get_logger().warning(text))
        self.dataset = DatasetOutput(
            params.dataset_path, params.camera_names, params.action_spec, params.control_rate_hz, params.chunk_size,
            has_masks=bool(params.mask_topics), has_proprio=bool(params.proprio_topic), image_size=params.image_hw,
            metadata={"source": "astra_recorder", "recorder": self.get_fully_qualified_name()},
        ) if "dataset" in params.outputs else None
        self.bag = BagOutput(params.bag_path, params.bag_storage) if "rosbag" in params.outputs else None
        self._last_stamp_ns = 0
        self._episodes = 0
        self._counted: RecordingSession | None = None  # the session whose result is in the counters
        self.saved = self.discarded = self.dropped = 0
        self._stale_seen: set[str] = set()  # streams stale at some point of the current episode
        self.write_ms = LatencyWindow(10_000)
        self.writer_busy_s = 0.0
        self.frames_written = 0
        self.last_result = ""
        self.inputs = self._create_inputs()
        self.marker_topic = self.resolve_topic_name(MARKER_TOPIC)
        if self.bag is not None:
            self.bag.write_mapping(self.import_mapping())

        self._status_pub = self.create_publisher(RecorderStatus, STATUS_TOPIC, STATUS_QOS)
        self.create_timer(1.0 / params.status_rate_hz, self._publish_status)
        self.create_timer(1.0 / params.control_rate_hz, self._advance)
        self.create_service(StartRecording, START_SERVICE, self._on_start)
        self.create_service(StopRecording, STOP_SERVICE, self._on_stop)
        self.create_service(Trigger, DISCARD_SERVICE, self._on_discard)
        topics = self.inputs.topics
        self.get_logger().info(
            f"recording to {', '.join(self.outputs_text())}; cameras {[topics[c] for c in params.camera_names]} "
            f"({params.transport}), action {topics['action']} ({params.action_space}), {params.control_rate_hz} Hz "
            f"(ticks {params.ticks}, tolerance {params.tolerance_s}s)")
        self._publish_status()

    # -- inputs -------------------------------------------------------------------------------------

    def _create_inputs(self) -> RecorderInputs:
        """One raw subscription per stream: the bytes go to the bag as received, and are
        deserialised for the dataset (values at once, frames when a tick uses them)."""
        p = self.params
        wanted = p.topics()
        image_type = CompressedImage if p.transport == "compressed" else Image
        kinds: list[tuple[str, type, Any]] = [(c, image_type, SENSOR_QOS) for c in p.camera_names]
        kinds += [(mask_stream(c), Image, SENSOR_QOS) for c in p.camera_names if mask_stream(c) in wanted]
        kinds.append(("action", PoseStamped if p.pose_actions else PickPlaceSE2, COMMAND_QOS))
        if p.pose_actions:
            kinds.append(("gripper", GripperCommand, COMMAND_QOS))
        if p.proprio_topic:
            kinds.append(("proprio", PoseStamped if p.proprio_msg_type == "pose" else JointState, SENSOR_QOS))
        kinds.append(("instruction", String, INSTRUCTION_QOS))
        topics = {stream: self.resolve_topic_name(wanted[stream]) for stream, _, _ in kinds}
        inputs = RecorderInputs(p, topics, {stream: ros_type_name(t) for stream, t, _ in kinds}, self.problems.report)
        for stream, msg_type, qos in kinds:
            def on_raw(data: bytes, stream=stream, msg_type=msg_type) -> None:
                t_ns = self._stamp_ns()
                try:
                    msg = deserialize_message(data, msg_type)
                except Exception as err:  # corrupt bytes: a bad sample, not a dead callback
                    msg = err
                inputs.on_message(stream, t_ns, data, msg)
            self.create_subscription(msg_type, topics[stream], on_raw, qos, raw=True)
        return inputs

    def _stamp_ns(self) -> int:
        """Receive time: the node clock, never going back (a stepped system clock must not reorder samples)."""
        self._last_stamp_ns = max(self._last_stamp_ns, self.get_clock().now().nanoseconds)
        return self._last_stamp_ns

    def _decode(self, camera: str, value: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """Writer thread: a chosen camera sample -> (RGB frame, mask), with the policy node's conversion."""
        size = self.params.image_hw or (self.dataset.image_size if self.dataset is not None else None)
        limit = self.params.max_image_pixels or None
        frame, mask = value if self.inputs.pairers else (value, None)
        try:
            image = to_rgb(frame, size, max_pixels=limit)
            labels = None if mask is None else image_to_labels(mask, image.shape[:2], max_pixels=limit)
        except ImageConversionError as err:
            self.problems.report(err.kind, f"camera '{camera}': {err}")
            raise
        return image, labels

    # -- episodes -----------------------------------------------------------------------------------

    def _on_start(self, request, response):
        response.ok, response.episode = False, 0
        inputs = self.inputs
        session = inputs.session
        if session is not None and not session.finished:
            response.message = (f"episode {session.number} is still "
                                f"{'being recorded' if inputs.recording() else 'being saved'}: stop or discard it first")
            return response
        if inputs.instruction is None:
            response.message = f"no instruction received on {inputs.topics['instruction']}: publish one first"
            return response
        now = self._stamp_ns()
        stale = Staleness(inputs.ages(now, self.params.camera_names))
        if stale.ages:
            response.message = f"not started: {stale.describe()}"
            return response
        self._episodes += 1
        name = self.bag.next_name() if self.bag is not None else ""
        self._stale_seen = set()
        metadata = {"source": "astra_recorder", "recorder_episode": self._episodes, "note": request.note,
                    "topics": dict(inputs.topics), **({"bag": name} if name else {})}
        inputs.session = RecordingSession(
            self._episodes, self.params, now, inputs.instruction, inputs.seeds(), self._decode, self.dataset,
            self.bag.begin(name) if self.bag is not None else None, self.marker_topic, metadata,
            inputs.converters.proprio_names, seed_messages=inputs.bag_seeds())
        response.ok, response.episode, response.instruction = True, self._episodes, inputs.instruction.value
        response.stamp.sec, response.stamp.nanosec = divmod(now, NS)
        response.message = f"recording episode {self._episodes}: {inputs.instruction.value!r}"
        self.get_logger().info(response.message)
        self._publish_status()
        return response

    def _on_stop(self, request, response):
        response.ok, response.dataset_episode = False, -1
        session = self.inputs.recording()
        if session is None:
            response.message = "not recording: nothing to stop"
            return response
        result = session.stop(self._stamp_ns(), bool(request.success), self.params.stop_timeout_s)
        self._collect_finished()
        response.ok, response.message = result.ok, result.message
        response.dataset_episode, response.bag_path = result.dataset_episode, result.bag_path
        report = result.report
        if report is not None:
            response.steps, response.gap_steps, response.bad_steps = report.steps, report.gap_steps, report.bad_steps
        response.stale, response.stale_streams = bool(result.stale_streams), list(result.stale_streams)
        self.get_logger().info(result.message)
        self._publish_status()
        return response

    def _on_discard(self, request, response):
        session = self.inputs.recording()
        if session is None:
            response.success, response.message = False, "not recording: nothing to discard"
            return response
        result = session.discard(self.params.stop_timeout_s)
        self._collect_finished()
        response.success, response.message = result.ok, result.message
        self.get_logger().info(result.message)
        self._publish_status()
        return response

    def _collect_finished(self) -> None:
        """Count the last session's result once it is there (a stop that timed out finishes later)."""
        session = self.inputs.session
        if session is None or not session.finished or self._counted is session or session.result is None:
            return
        self._counted = session
        for ms in session.write_ms:
            self.write_ms.add(ms)
        self.writer_busy_s += session.busy_s
        result = session.result
        report = result.report
        if result.dataset_episode >= 0 and report is not None:
            self.frames_written += report.steps * len(self.params.camera_names)
        if report is not None and report.reason == "discarded":
            self.discarded += 1
        elif result.ok:
            self.saved += 1
        else:
            self.dropped += 1
        self.last_result = result.message

    def _advance(self) -> None:
        session = self.inputs.recording()
        if session is not None:
            session.advance(self._stamp_ns())

    # -- status -------------------------------------------------------------------------------------

    def stale_reason(self, now_ns: int) -> tuple[str, list[str]]:
        """The policy node's wording for cameras, the same rule for the other streams."""
        cameras = Staleness(self.inputs.ages(now_ns, self.params.camera_names))
        others = self.inputs.ages(now_ns, list(self.inputs.converters.converters))
        parts = [cameras.describe()] if cameras.ages else []
        if others:
            parts.append("stale stream(s): " + "; ".join(
                f"{s}: never received" if a is None else f"{s}: last message {a:.2f}s old" for s, a in others.items()))
        return "; ".join(parts), [*cameras.ages, *others]

    def _publish_status(self) -> None:
        self._collect_finished()
        now = self._stamp_ns()
        inputs, session = self.inputs, self.inputs.session
        recording = inputs.recording()
        msg = RecorderStatus()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.state = "recording" if recording else ("saving" if session is not None and not session.finished else "idle")
        reason, stale = self.stale_reason(now)
        msg.stale, msg.stale_reason = bool(stale), reason
        if recording is not None:
            self._stale_seen.update(stale)
        msg.stale_streams = sorted(self._stale_seen)
        msg.episode = self._episodes
        msg.instruction = inputs.instruction.value if inputs.instruction is not None else ""
        if session is not None:
            progress = session.progress()
            msg.ticks, msg.steps = progress["ticks"], progress["steps"]
            msg.gap_steps, msg.bad_steps = progress["gap_steps"], progress["bad_steps"]
            msg.elapsed_s = (now - session.start_ns) / NS if recording else 0.0
        msg.episodes_saved, msg.episodes_discarded, msg.episodes_dropped = self.saved, self.discarded, self.dropped
        msg.bad_messages = self.problems.total()
        msg.last_error = self.problems.last_error
        msg.last_result = self.last_result
        msg.output = ", ".join(self.outputs_text())
        self._status_pub.publish(msg)

    def outputs_text(self) -> list[str]:
        return [*([f"dataset {self.params.dataset_path}"] if self.dataset else []),
                *([f"bags {self.params.bag_path}"] if self.bag else [])]

    def import_mapping(self):
        """The importer's mapping for this recorder's bags (also written next to them)."""
        joints = self.inputs.converters.joints
        return self.params.import_mapping(self.inputs.topics, self.marker_topic, joints.names if joints else None)

    # -- exit ---------------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """An episode still open is saved with success false (a warning in its report says why); then
        the dataset is closed (statistics written)."""
        session = self.inputs.recording()
        if session is not None:
            session.report.warnings.append("the recorder was shut down during the episode: saved with success false")
            result = session.stop(self._stamp_ns(), False, self.params.stop_timeout_s)
            self.get_logger().info(result.message)
        session = self.inputs.session
        if session is not None and not session.wait_finished(self.params.stop_timeout_s):
            self.get_logger().error(f"episode {session.number} is still being written after {self.params.stop_timeout_s}s: "
                                    "it is dropped (the dataset keeps every episode committed before it)")
        self._collect_finished()
        if self.bag is not None:
            self.bag.write_mapping(self.import_mapping())  # the proprio joints may be known only now
        if self.dataset is not None:
            self.dataset.close()

    def summary(self) -> dict:
        return {
            "episodes": self._episodes, "saved": self.saved, "discarded": self.discarded, "dropped": self.dropped,
            "received": dict(self.inputs.received), "problems": dict(self.problems.counts),
            "write_ms": self.write_ms.summary(), "writer_busy_s": round(self.writer_busy_s, 3),
            "frames_written": self.frames_written,
            "frames_per_writer_s": round(self.frames_written / self.writer_busy_s, 1) if self.writer_busy_s else None,
            "last_result": self.last_result,
        }


def main(args: list[str] | None = None) -> int:
    """Run the recorder until SIGINT/SIGTERM (exit 0 after a summary line); exit 1 if it cannot start."""
    return run_plain_node(RecorderNode, NODE_NAME, SUMMARY_PREFIX, args)


if __name__ == "__main__":
    sys.exit(main())
