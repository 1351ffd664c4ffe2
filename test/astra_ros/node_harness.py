"""Test harness of the ROS node tests: tiny checkpoints, a node subprocess, and an in-test
ROS participant (own rclpy Context) that publishes frames and records what the node sends.

A plain module (not conftest.py), imported by name: test/conftest.py puts this folder on
sys.path, so `from node_harness import ...` works under pytest's importlib mode, under
launch_testing's pytest plugin (which imports test modules on its own) and from subprocesses.

Everything is real: the node runs as `python -m astra_ros.policy_node --ros-args --params-file`
in its own process, talking DDS over loopback in a domain id of its own.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest
import yaml

rclpy = pytest.importorskip("rclpy")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from astra_ros.msg import PolicyStatus  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)

# Module-scoped nodes need domain ids outside the per-test range (1..101) of test/conftest.py.
_module_domains = itertools.count((os.getpid() * 13) % 120)


def module_domain_id() -> int:
    return 110 + next(_module_domains) % 120


def make_checkpoint(directory: Path, kind: str, cameras: list[str] | None = None, *, state_tokens: str = "pooled",
                    proprio_names: tuple[str, ...] = (), bounds: tuple | None = None) -> Path:
    """A tiny-preset checkpoint with random weights; `cameras` default: the preset's [front, wrist].
    `state_tokens="objects"` makes it take an instance mask per camera, `proprio_names` a
    proprioception vector; `bounds` = (low, high) replaces the action range (e.g. an env's)."""
    from astra_core.action_space import POSE6D_DIMS, SE2_DIMS, ActionStats
    from astra_core.checkpoint import save_checkpoint
    from astra_core.model import Astra, AstraConfig

    cfg_dict = yaml.safe_load((REPO_ROOT / "astra_core" / "presets" / "tiny.yaml").read_text())
    if cameras is not None:
        cfg_dict["cameras"] = list(cameras)
    if state_tokens != "pooled":
        cfg_dict["state_tokens"] = state_tokens
        cfg_dict["vision"]["pooling"] = "avg"  # spatial-softmax keypoints are for one pooled token
    if kind == "continuous_pose6d_delta":  # offsets from the current end-effector pose
        cfg_dict["action_space"] = {"kind": "continuous_pose6d", "frame": "delta"}
        names = POSE6D_DIMS
        lo, hi = [-0.02, -0.02, -0.02, -0.1, -0.1, -0.1, 0.0], [0.02, 0.02, 0.02, 0.1, 0.1, 0.1, 1.0]
    elif kind == "discrete_se2":
        cfg_dict["action_space"] = {"kind": "discrete_se2", "num_bins": 64}
        names, lo, hi = SE2_DIMS, [-0.4, -0.4, -math.pi] * 2, [0.4, 0.4, math.pi] * 2
    else:
        if kind == "continuous_pose6d":
            cfg_dict["action_space"] = {"kind": "continuous_pose6d"}
        names = POSE6D_DIMS
        lo = [-0.3, -0.3, 0.0, -math.pi, -math.pi, -math.pi, 0.0]
        hi = [0.3, 0.3, 0.5, math.pi, math.pi, math.pi, 1.0]
    if bounds is not None:
        lo, hi = [float(v) for v in bounds[0]], [float(v) for v in bounds[1]]
    stats = ActionStats(names=list(names), min=lo, max=hi, mean=[(a + b) / 2 for a, b in zip(lo, hi)],
                        std=[(b - a) / 4 + 1e-3 for a, b in zip(lo, hi)], count=1000)
    proprio_stats = None
    if proprio_names:
        cfg_dict["proprio_dim"] = len(proprio_names)
        n = len(proprio_names)
        proprio_stats = ActionStats(names=list(proprio_names), min=[-1.0] * n, max=[1.0] * n, mean=[0.0] * n,
                                    std=[0.5] * n, count=1000)
    import torch

    torch.manual_seed(0)  # random init is enough: the node tests check plumbing, not skill
    return save_checkpoint(directory, Astra(AstraConfig.from_dict(cfg_dict), stats, proprio_stats))


def make_tabletop_checkpoint(directory: Path, env_options: dict) -> Path:
    """An untrained checkpoint of the shipped tabletop configuration (object tokens from masks,
    pointer readout over the env's calibrated cameras): what `make run` evaluates, minus training."""
    from astra_core.action_space import SE2_DIMS, ActionStats
    from astra_core.checkpoint import save_checkpoint
    from astra_core.model import Astra, AstraConfig
    from astra_sim.env import make_env

    env = make_env("tabletop", **env_options)
    cfg = yaml.safe_load((REPO_ROOT / "astra_core" / "presets" / "tabletop_objects.yaml").read_text())
    calibration = env.sensor_info()["calibration"]
    cfg["calibration"] = {cam: calibration[cam]["table_homography"] for cam in cfg["cameras"]}
    cfg["vision"]["image_size"] = env.image_size[0]
    lo, hi = env.action_bounds
    stats = ActionStats(names=list(SE2_DIMS), min=lo.tolist(), max=hi.tolist(), mean=((lo + hi) / 2).tolist(),
                        std=((hi - lo) / 4).tolist(), count=1000)
    import torch

    torch.manual_seed(0)
    return save_checkpoint(directory, Astra(AstraConfig.from_dict(cfg), stats))


class NodeProcess:
    """`python -m astra_ros.policy_node --ros-args --params-file FILE [-p k:=v ...]` in its own process."""

    def __init__(self, params_file: Path, domain_id: int, log_path: Path, extra_args: list[str] = ()) -> None:
        env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id), PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "astra_ros.policy_node", "--ros-args", "--params-file", str(params_file),
             *extra_args],
            cwd=REPO_ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def summary(self) -> dict:
        """The summary line the node prints on exit, parsed as strict JSON (NaN/Infinity refused)."""
        from astra_ros.policy_node import SUMMARY_PREFIX

        lines = [line for line in self.log().splitlines() if line.startswith(SUMMARY_PREFIX)]
        assert len(lines) == 1, f"expected one summary line, found {len(lines)}:\n{self.log()[-3000:]}"

        def refuse(constant: str):
            raise ValueError(f"summary is not strict JSON: contains {constant}")

        return json.loads(lines[0][len(SUMMARY_PREFIX):], parse_constant=refuse)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        if self.alive():
            self.proc.terminate()  # SIGTERM: rclpy's handler shuts the node down cleanly
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def write_params(path: Path, params: dict, node_name: str = "astra_policy") -> Path:
    path.write_text(yaml.safe_dump({node_name: {"ros__parameters": params}}))
    return path


class Recorder:
    """Messages of one topic with their local receive times."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: list[tuple[float, object]] = []

    def __call__(self, msg) -> None:
        with self._lock:
            self.items.append((time.monotonic(), msg))

    def since(self, t0: float) -> list[tuple[float, object]]:
        with self._lock:
            return [(t, m) for t, m in self.items if t >= t0]

    def messages(self, t0: float = 0.0) -> list:
        return [m for _, m in self.since(t0)]

    def last(self):
        with self._lock:
            return self.items[-1][1] if self.items else None


class RosPeer:
    """The test's side of the wire: its own rclpy Context, node and spinning thread."""

    def __init__(self, domain_id: int, name: str = "astra_test_peer") -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()
        self._camera_pubs: dict[str, object] = {}
        self.instruction_pub = self.node.create_publisher(String, "/instruction", LATCHED)
        self.status = self.record(PolicyStatus, "/status", LATCHED)
        self._streaming: dict[str, Callable[[], object]] = {}
        self._stream_lock = threading.Lock()
        self._stop_stream = threading.Event()
        self._stream_thread: threading.Thread | None = None

    def record(self, msg_type, topic: str, qos=10) -> Recorder:
        recorder = Recorder()
        self.node.create_subscription(msg_type, topic, recorder, qos)
        return recorder

    def camera_publisher(self, topic: str, msg_type=Image):
        key = f"{topic}:{msg_type.__name__}"
        if key not in self._camera_pubs:
            self._camera_pubs[key] = self.node.create_publisher(msg_type, topic, qos_profile_sensor_data)
        return self._camera_pubs[key]

    def now(self):
        return self.node.get_clock().now().to_msg()

    # --- a background stream of camera frames --------------------------------------------------
    def stream(self, frames: dict[str, Callable[[], object]], rate_hz: float) -> None:
        """Publish make() on each topic at rate_hz until stop_stream(); `frames` can be changed later."""
        self.set_streams(frames)
        self._start_stream(lambda items: [(topic, make()) for topic, make in items], rate_hz)

    def stream_observations(self, make: Callable[[object], list[tuple[str, object]]], rate_hz: float) -> None:
        """Publish make(stamp) -> [(topic, message), ...] at rate_hz until stop_stream(): one stamp
        per cycle, so that e.g. a frame and its mask can carry the same header stamp."""
        self.set_streams({})
        self._start_stream(lambda items: make(self.now()), rate_hz)

    def _start_stream(self, produce: Callable[[list], list[tuple[str, object]]], rate_hz: float) -> None:
        self._stop_stream.clear()

        def loop() -> None:
            period = 1.0 / rate_hz
            next_t = time.monotonic()
            while not self._stop_stream.is_set():
                with self._stream_lock:
                    items = list(self._streaming.items())
                for topic, msg in produce(items):
                    self.camera_publisher(topic, type(msg)).publish(msg)
                next_t += period
                time.sleep(max(0.0, next_t - time.monotonic()))

        self._stream_thread = threading.Thread(target=loop, daemon=True)
        self._stream_thread.start()

    def set_streams(self, frames: dict[str, Callable[[], object]]) -> None:
        with self._stream_lock:
            self._streaming = dict(frames)

    def stop_stream(self) -> None:
        self._stop_stream.set()
        if self._stream_thread is not None:
            self._stream_thread.join(5)
            self._stream_thread = None

    def instruct(self, text: str) -> None:
        self.instruction_pub.publish(String(data=text))

    def instruct_raw(self, data: bytes) -> None:
        """Publish an instruction whose serialized `data` field is exactly these bytes (e.g.
        invalid UTF-8, which a String message built in Python cannot hold)."""
        self.instruction_pub.publish(string_cdr(data))

    def call_trigger(self, service: str, timeout_s: float = 10.0):
        from std_srvs.srv import Trigger

        return self.call(Trigger, service, Trigger.Request(), timeout_s)

    def call(self, srv_type, service: str, request, timeout_s: float = 10.0):
        """Call a service and wait for its answer (woken by the answer, not by polling)."""
        from astra_ros.service_calls import call_service

        client = self.node.create_client(srv_type, service)
        try:
            return call_service(client, request, timeout_s)
        finally:
            self.node.destroy_client(client)

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")

    def wait_for_status(self, predicate: Callable[[PolicyStatus], bool], timeout_s: float, what: str,
                        after: float = 0.0) -> PolicyStatus:
        found: list[PolicyStatus] = []

        def check() -> bool:
            for msg in self.status.messages(after):
                if predicate(msg):
                    found.append(msg)
                    return True
            return False

        self.wait_for(check, timeout_s, what)
        return found[0]

    def close(self) -> None:
        self.stop_stream()
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()
        self._thread.join(5)


def string_cdr(data: bytes) -> bytes:
    """std_msgs/String serialized by hand: CDR little-endian header, uint32 length with the NUL, bytes, NUL."""
    import struct

    return b"\x00\x01\x00\x00" + struct.pack("<I", len(data) + 1) + data + b"\x00"


def stamp_seconds(stamp) -> float:
    """A header stamp in seconds (the node's clock when the node stamped it)."""
    return stamp.sec + stamp.nanosec * 1e-9


def stamped_after(recorder: Recorder, status: PolicyStatus) -> list:
    """Messages of `recorder` that the node stamped later than it published `status`.

    Both stamps come from the node's clock, so this orders node events without any guess about
    delivery delays or the test's own scheduling."""
    t = stamp_seconds(status.header.stamp)
    return [m for m in recorder.messages() if stamp_seconds(m.header.stamp) > t]


def watch_hold(peer: RosPeer, held: PolicyStatus, still_held: Callable[[PolicyStatus], bool],
               seconds: float) -> list[PolicyStatus]:
    """Wait until the node has held for `seconds` of its own clock since it published `held`;
    -> the statuses from `held` on, all of which must satisfy `still_held`."""
    t_held = stamp_seconds(held.header.stamp)
    peer.wait_for_status(lambda s: stamp_seconds(s.header.stamp) >= t_held + seconds, seconds + 5,
                         f"{seconds}s of statuses after '{held.hold_reason}'")
    during = [s for s in peer.status.messages() if stamp_seconds(s.header.stamp) >= t_held]
    assert all(still_held(s) for s in during), [s.hold_reason for s in during]
    return during


def assert_only_the_running_step_finishes(peer: RosPeer, commands: Recorder, held: PolicyStatus,
                                          still_held: Callable[[PolicyStatus], bool], why: str) -> None:
    """Once a status reports a hold, no control tick starts a step: only the one step that was
    already running may still finish and send its command. Checked for 1 s of the node's clock,
    with the node's stamps and its status step counter, so the verdict does not depend on how
    loaded this machine is (a step may take any time; there is at most one)."""
    during = watch_hold(peer, held, still_held, 1.0)
    late = stamped_after(commands, held)
    assert len(late) <= 1, f"{len(late)} commands after {why} (at most the step then running may finish)"
    assert max(s.step for s in during) <= held.step + 1, f"steps ran after {why}: {[s.step for s in during]}"


def publish_until_counted(peer: RosPeer, sends: Iterator[Callable[[], None]], count: int, batch: int,
                          timeout_s: float, batch_timeout_s: float = 1.0) -> tuple[int, int]:
    """Publish bad messages (each `send()` publishes one) until the node has counted `count` of them
    in its status.bad_messages; -> (messages published, messages the node counted).

    Cameras use sensor-data QoS (best effort, keep-last 5): a burst larger than that queue is
    mostly overwritten before the node's callbacks run, so it would never reach the code under
    test. So this publishes `batch` messages (at most 4 per topic), then waits until the node's
    count has caught up before the next batch. The node must publish status often
    (status_rate_hz) for this to be quick. A message lost anyway (best effort over loopback, rare)
    only makes its batch wait `batch_timeout_s`; counting then goes on from what the node reports.
    """
    def reported() -> int:
        return peer.status.last().bad_messages

    t0 = time.monotonic()
    peer.wait_for_status(lambda s: True, 5, "a status", after=t0)  # a count not older than now
    base = expected = reported()
    sent = 0
    deadline = t0 + timeout_s
    while reported() - base < count:
        for _ in range(batch):
            next(sends)()
            sent += 1
        expected += batch
        batch_deadline = min(time.monotonic() + batch_timeout_s, deadline)
        while reported() < expected and time.monotonic() < batch_deadline:
            time.sleep(0.002)
        assert time.monotonic() < deadline, (
            f"the node counted {reported() - base} of {sent} bad messages in {timeout_s}s (needed {count})")
        expected = reported()
    return sent, reported() - base


def rgb_frame(camera: str, peer: RosPeer, size=(64, 64), seed: int = 0) -> Image:
    from astra_ros.image_conversion import rgb_to_image

    rng = np.random.default_rng(seed)
    return rgb_to_image(rng.integers(0, 256, (*size, 3), dtype=np.uint8), "rgb8", frame_id=camera,
                        stamp=peer.now())


def compressed_frame(camera: str, peer: RosPeer, size=(64, 64), fmt: str = "jpeg") -> CompressedImage:
    from astra_ros.image_conversion import rgb_to_compressed

    image = np.random.default_rng(1).integers(0, 256, (*size, 3), dtype=np.uint8)
    return rgb_to_compressed(image, fmt, frame_id=camera, stamp=peer.now())
