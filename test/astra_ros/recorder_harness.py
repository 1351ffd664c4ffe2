"""Test harness of the recorder tests: the recorder as a real process, and an in-test ROS
participant that publishes a demonstration stream (cameras, masks, commands, proprioception,
instruction) and calls the recorder's services.

A plain module imported by name (test/conftest.py puts this folder on sys.path), like
node_harness.py. Everything is real: `python -m astra_ros.recorder_node --ros-args --params-file`
in its own process, DDS over loopback in a domain id of the test's own.

The stream is deterministic: frame k of a camera, command k and joint state k are functions of
k, and every message's header stamp says which k it is (stamp = T0 + k / rate), so a test can
tell from a recorded value which message it came from.
"""

from __future__ import annotations

import heapq
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import yaml

rclpy = pytest.importorskip("rclpy")

from builtin_interfaces.msg import Time  # noqa: E402
from geometry_msgs.msg import PoseStamped  # noqa: E402
from node_harness import RosPeer  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402

from astra_ros.image_conversion import labels_to_image, rgb_to_compressed, rgb_to_image  # noqa: E402
from astra_ros.msg import GripperCommand, PickPlaceSE2, RecorderStatus, SE2Pose  # noqa: E402
from astra_ros.pose_conversion import set_pose_from_xyzrpy  # noqa: E402
from astra_ros.qos import COMMAND_QOS, SENSOR_QOS, STATUS_QOS  # noqa: E402
from astra_ros.ros_processes import RosProcess, loopback_environment  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
SUMMARY_PREFIX = "astra_recorder summary: "
NAMESPACE = "/rec"  # the recorder runs in it; its status and services are private: /rec/astra_recorder/...
RECORDER = f"{NAMESPACE}/astra_recorder"
JOINTS = ["shoulder", "elbow", "wrist", "finger"]
STREAM_T0_S = 1_700_000_000  # header stamps: T0 + k / rate


def frame_pixels(camera: str, k: int, size: tuple[int, int]) -> np.ndarray:
    """Frame k of a camera: random pixels, distinct for every (camera, k)."""
    seed = (sum(camera.encode()) * 100_003 + k) % 2**32
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def mask_labels(k: int, size: tuple[int, int]) -> np.ndarray:
    """The instance mask of frame k: one object whose label is k + 1 (so a test can check the pairing)."""
    labels = np.zeros(size, np.uint16)
    h, w = size
    labels[h // 4: 3 * h // 4, (k % 3) * w // 4: (k % 3 + 2) * w // 4] = k + 1
    return labels


def command_values(k: int) -> np.ndarray:
    """Command k: x y z roll pitch yaw gripper (angles well inside their ranges)."""
    t = 0.1 * k
    return np.array([0.4 + 0.1 * np.sin(t), -0.2 + 0.05 * np.cos(t), 0.3, 0.2 * np.sin(t),
                     -0.3 + 0.1 * np.sin(0.7 * t), 1.0 - 0.4 * np.sin(1.3 * t), 0.5 + 0.5 * np.sin(0.3 * t)])


def se2_values(k: int) -> np.ndarray:
    return np.array([0.1 + 0.01 * k, -0.1, 0.05 * k, 0.3, 0.02 * k, -0.5])


def joint_values(k: int) -> np.ndarray:
    t = 0.04 * k
    return np.array([0.1 * t, -0.5 + 0.2 * t, 1.0, np.cos(t)])


def ee_pose_values(k: int) -> np.ndarray:
    """End-effector pose k (proprioception as PoseStamped): x y z roll pitch yaw."""
    t = 0.05 * k
    return np.array([0.3 + 0.05 * np.cos(t), 0.1 * np.sin(t), 0.25, 0.1, -0.2 + 0.3 * np.sin(t), 0.8 * np.cos(0.5 * t)])


def stamp(k: int, rate_hz: float) -> Time:
    ns = STREAM_T0_S * 1_000_000_000 + int(round(k * 1e9 / rate_hz))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def stamp_index(msg_stamp, rate_hz: float) -> int:
    """k of a message from its header stamp."""
    ns = msg_stamp.sec * 1_000_000_000 + msg_stamp.nanosec - STREAM_T0_S * 1_000_000_000
    return int(round(ns * rate_hz / 1e9))


@dataclass
class StreamSpec:
    """One published stream: topic, rate, and how message k is made (None: not published now)."""

    topic: str
    rate_hz: float
    make: Callable[[int], Any]
    qos: Any
    paused: bool = False
    count: int = 0


class DemoPeer(RosPeer):
    """The test's side of the wire (node_harness.RosPeer: own rclpy Context, node, spinning thread),
    plus streams published on a schedule (one thread) and the recorder's status and services."""

    def __init__(self, domain_id: int, name: str = "astra_recorder_test_peer") -> None:
        super().__init__(domain_id, name)
        self.streams: dict[str, StreamSpec] = {}
        self._publishers: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._stop_publishing = threading.Event()
        self._publish_thread: threading.Thread | None = None
        self.recorder_status = self.record(RecorderStatus, f"{RECORDER}/status", STATUS_QOS)

    # -- streams ------------------------------------------------------------------------------------

    def add_stream(self, name: str, spec: StreamSpec) -> None:
        msg = spec.make(0)
        self._publishers[name] = self.node.create_publisher(type(msg), spec.topic, spec.qos)
        self.streams[name] = spec

    def add_camera(self, camera: str, rate_hz: float, size=(32, 40), transport: str = "raw", masks: bool = False) -> None:
        topic = f"/camera/{camera}/image_raw" + ("/compressed" if transport == "compressed" else "")

        def make(k: int):
            pixels = frame_pixels(camera, k, size)
            if transport == "compressed":
                return rgb_to_compressed(pixels, "jpeg", frame_id=camera, stamp=stamp(k, rate_hz))
            return rgb_to_image(pixels, "rgb8", frame_id=camera, stamp=stamp(k, rate_hz))

        self.add_stream(camera, StreamSpec(topic, rate_hz, make, SENSOR_QOS))
        if masks:
            self.add_stream(f"mask:{camera}", StreamSpec(
                f"/camera/{camera}/mask", rate_hz,
                lambda k: labels_to_image(mask_labels(k, size), frame_id=camera, stamp=stamp(k, rate_hz)), SENSOR_QOS))

    def add_pose_commands(self, rate_hz: float) -> None:
        def pose(k: int) -> PoseStamped:
            msg = PoseStamped()
            msg.header.stamp, msg.header.frame_id = stamp(k, rate_hz), "base_link"
            set_pose_from_xyzrpy(msg.pose, command_values(k)[:6])  # as the policy node publishes its commands
            return msg

        def gripper(k: int) -> GripperCommand:
            msg = GripperCommand(position=float(command_values(k)[6]))
            msg.header.stamp = stamp(k, rate_hz)
            return msg

        self.add_stream("action", StreamSpec("/target_pose", rate_hz, pose, COMMAND_QOS))
        self.add_stream("gripper", StreamSpec("/gripper_command", rate_hz, gripper, COMMAND_QOS))

    def add_se2_commands(self, rate_hz: float) -> None:
        def pick_place(k: int) -> PickPlaceSE2:
            v = se2_values(k)
            msg = PickPlaceSE2(pick=SE2Pose(x=v[0], y=v[1], theta=v[2]), place=SE2Pose(x=v[3], y=v[4], theta=v[5]))
            msg.header.stamp = stamp(k, rate_hz)
            return msg

        self.add_stream("action", StreamSpec("/pick_place", rate_hz, pick_place, COMMAND_QOS))

    def add_joint_states(self, rate_hz: float) -> None:
        def joint_state(k: int) -> JointState:
            msg = JointState(name=list(JOINTS), position=[float(v) for v in joint_values(k)])
            msg.header.stamp = stamp(k, rate_hz)
            return msg

        self.add_stream("proprio", StreamSpec("/joint_states", rate_hz, joint_state, SENSOR_QOS))

    def add_ee_pose(self, rate_hz: float) -> None:
        def ee_pose(k: int) -> PoseStamped:
            msg = PoseStamped()
            msg.header.stamp, msg.header.frame_id = stamp(k, rate_hz), "base_link"
            set_pose_from_xyzrpy(msg.pose, ee_pose_values(k))
            return msg

        self.add_stream("proprio", StreamSpec("/ee_pose", rate_hz, ee_pose, SENSOR_QOS))

    def pause(self, name: str, paused: bool = True) -> None:
        with self._lock:
            self.streams[name].paused = paused

    def start(self) -> None:
        """Publish every stream at its rate (message k of a stream at start + k / rate) until close()."""
        self._stop_publishing.clear()

        def loop() -> None:
            t0 = time.monotonic()
            heap = [(t0, name) for name in self.streams]
            heapq.heapify(heap)
            while not self._stop_publishing.is_set():
                due, name = heapq.heappop(heap)
                time.sleep(max(0.0, due - time.monotonic()))
                spec = self.streams[name]
                with self._lock:
                    paused = spec.paused
                if not paused:
                    self._publishers[name].publish(spec.make(spec.count))
                spec.count += 1  # a paused stream skips its messages: the stamps keep their meaning
                heapq.heappush(heap, (due + 1.0 / spec.rate_hz, name))

        self._publish_thread = threading.Thread(target=loop, daemon=True)
        self._publish_thread.start()

    # -- the recorder's services and status ----------------------------------------------------------

    def call_recorder(self, srv_type, name: str, request, timeout_s: float = 30.0):
        return self.call(srv_type, f"{RECORDER}/{name}", request, timeout_s)

    def wait_for_recorder(self, predicate: Callable[[RecorderStatus], bool], timeout_s: float, what: str,
                          after: float = 0.0) -> RecorderStatus:
        """The first recorder status received after monotonic time `after` that satisfies `predicate`."""
        found: list[RecorderStatus] = []

        def check() -> bool:
            found[:] = [s for s in self.recorder_status.messages(after) if predicate(s)]
            return bool(found)

        self.wait_for(check, timeout_s, what)
        return found[0]

    def close(self) -> None:
        self._stop_publishing.set()
        if self._publish_thread is not None:
            self._publish_thread.join(5)
        super().close()


class RecorderProcess(RosProcess):
    """`python -m astra_ros.recorder_node --ros-args --params-file FILE -r __ns:=/rec` in its own process."""

    def __init__(self, params: dict, domain_id: int, workdir: Path) -> None:
        self.params_file = workdir / "recorder_params.yaml"
        self.params_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
        super().__init__("astra_ros.recorder_node", ["--params-file", str(self.params_file), "-r", f"__ns:={NAMESPACE}"],
                         loopback_environment(domain_id), workdir / "recorder.log")

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGINT (a clean shutdown: an open episode is saved, the dataset closed) -> exit code."""
        return super().stop(timeout_s)

    def summary(self) -> dict:  # type: ignore[override]
        summary = super().summary(SUMMARY_PREFIX)
        assert summary is not None, f"no summary line:\n{self.log()[-3000:]}"
        return summary


@pytest.fixture
def start_recorder(tmp_path, ros_domain_id):
    """start_recorder(params) -> a RecorderProcess in the test's domain; every one started is
    stopped at teardown, whatever the test's outcome (no process outlives its test)."""
    started: list[RecorderProcess] = []

    def start(params: dict) -> RecorderProcess:
        started.append(RecorderProcess(params, ros_domain_id, tmp_path))
        return started[-1]

    yield start
    for proc in started:
        proc.stop()
