"""The Astra policy as a ROS 2 lifecycle node: camera frames + instruction in, checked commands out.

    python -m astra_ros.policy_node --ros-args --params-file config/policy.yaml
    astra_policy_node --ros-args --params-file config/policy.yaml     (console script)
    ros2 launch astra_ros policy.launch.py checkpoint:=/path/to/ckpt  (with a ROS 2 install)

Lifecycle: configure loads and warms up the checkpoint and checks its cameras against the
parameters; activate starts the control timer and the inference worker; deactivate stops them.
With `autostart` (default) the node configures and activates itself, so it runs without a
lifecycle manager or the ros2 CLI.

Threads: the executor thread(s) run the image/instruction/pose callbacks, which only convert and
store (FrameBuffer), and the control tick, which only decides whether a step may run and hands
the newest frames to the inference worker thread. The worker owns the policy: it resets it on a
new instruction, runs the model, filters the command (safety.py), publishes, and records the
executed action in the policy's history. A tick that finds the worker still busy is counted as
an overrun and skipped, so image callbacks never wait for the model and work never queues up.

Topics (relative names: namespace and remap as usual):
  in:  <camera_topics> (Image or CompressedImage, sensor-data QoS), instruction (std_msgs/String,
       reliable + transient-local), <ee_pose_topic> (PoseStamped, delta action spaces)
  out: target_pose (PoseStamped) + gripper_command (GripperCommand)   for pose6d action spaces
       pick_place (PickPlaceSE2)                                      for discrete_se2
       action_segment (ActionSegment, every step, also in dry_run), status (PolicyStatus, ~1 Hz)
  services: pause, resume, stop (std_srvs/Trigger)
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
import warnings
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import rclpy
from geometry_msgs.msg import PoseStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from astra_ros.frame_buffer import FrameBuffer, FrameSet, Staleness
from astra_ros.image_conversion import ImageConversionError, to_rgb
from astra_ros.msg import ActionSegment, GripperCommand, PickPlaceSE2, PolicyStatus, SE2Pose
from astra_ros.params import PolicyNodeParams, declare_parameters, read_parameters
from astra_ros.safety import SafetyLimits, filter_command, wrap_angle
from astra_ros.stats import LatencyWindow, ProblemLog

NODE_NAME = "astra_policy"
LATENCY_WINDOW = 10_000
SUMMARY_PREFIX = "astra_policy summary: "

# Frames reach the policy as read-only views of the message buffers (no copy); the runtime only
# reads them (torch.stack copies), so torch's "non-writable array" warning is noise here.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
POSE_DIMS = 6  # x y z roll pitch yaw; the 7th pose6d dimension is the gripper

# Instruction: late joiners must get the current instruction, and it must not be lost.
INSTRUCTION_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL, history=HistoryPolicy.KEEP_LAST)
STATUS_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.TRANSIENT_LOCAL, history=HistoryPolicy.KEEP_LAST)
COMMAND_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)


# ---------------------------------------------------------------------------------------------
# small pose helpers (ZYX / roll-pitch-yaw, the convention of the pose6d action space)

def rpy_to_quaternion(roll: float, pitch: float, yaw: float) -> tuple[float, float, float, float]:
    """-> (x, y, z, w)."""
    cr, sr = math.cos(roll / 2), math.sin(roll / 2)
    cp, sp = math.cos(pitch / 2), math.sin(pitch / 2)
    cy, sy = math.cos(yaw / 2), math.sin(yaw / 2)
    return (sr * cp * cy - cr * sp * sy, cr * sp * cy + sr * cp * sy,
            cr * cp * sy - sr * sp * cy, cr * cp * cy + sr * sp * sy)


def quaternion_to_rpy(x: float, y: float, z: float, w: float) -> tuple[float, float, float]:
    norm = math.sqrt(x * x + y * y + z * z + w * w)
    if not math.isfinite(norm) or norm < 1e-9:
        raise ValueError(f"invalid quaternion ({x}, {y}, {z}, {w})")
    x, y, z, w = x / norm, y / norm, z / norm, w / norm
    roll = math.atan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
    pitch = math.asin(max(-1.0, min(1.0, 2 * (w * y - z * x))))
    yaw = math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    return roll, pitch, yaw


def _stamp_seconds(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


# ---------------------------------------------------------------------------------------------
# the inference worker

@dataclass(frozen=True)
class StepJob:
    frames: FrameSet
    tick_s: float  # monotonic time of the control tick
    instruction: str
    episode: int  # bumped by every new instruction / stop; the worker resets the policy on change
    ee_pose: np.ndarray | None  # (6,) x y z roll pitch yaw, fresh, or None


class InferenceWorker:
    """One thread, at most one job in flight; `submit` never blocks."""

    def __init__(self, run: Callable[[StepJob], None], on_error: Callable[[BaseException], None]) -> None:
        self._run, self._on_error = run, on_error
        self._cond = threading.Condition()
        self._job: StepJob | None = None
        self._busy = False
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="astra_inference", daemon=True)
        self._thread.start()

    def submit(self, job: StepJob) -> bool:
        with self._cond:
            if self._busy or self._job is not None or self._stopping:
                return False
            self._job = job
            self._cond.notify()
            return True

    def stop(self, timeout_s: float = 10.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._job is None and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                job, self._job, self._busy = self._job, None, True
            try:
                self._run(job)
            except Exception as err:  # a failing step must not kill the thread (or the node)
                self._on_error(err)
            finally:
                with self._cond:
                    self._busy = False


# ---------------------------------------------------------------------------------------------

def _checkpoint_cameras(checkpoint: str) -> list[str] | None:
    """The checkpoint's camera list read straight from its config.yaml (no torch import), so a
    mismatch fails in a second; None when unreadable (load_checkpoint then reports the problem)."""
    import yaml

    try:
        cameras = yaml.safe_load((Path(checkpoint) / "config.yaml").read_text()).get("cameras")
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    return list(cameras) if isinstance(cameras, list) else None


def _check_checkpoint_cameras(params: PolicyNodeParams, cameras: list[str] | None) -> None:
    if cameras is not None and list(cameras) != list(params.camera_names):
        raise ValueError(
            f"camera_names {list(params.camera_names)} do not match the cameras the checkpoint "
            f"{params.checkpoint} was trained with: {list(cameras)} (same names, same order)")


def _load_policy(params: PolicyNodeParams):
    """The one place the node touches astra_core (imported lazily: torch is slow to import)."""
    from astra_core.checkpoint import load_checkpoint
    from astra_core.runtime import AstraPolicy, default_device

    device = default_device() if params.device == "auto" else params.device
    if params.cpu_threads:
        import torch

        torch.set_num_threads(params.cpu_threads)
    model = load_checkpoint(params.checkpoint, device=device)
    window = model.cfg.max_timesteps
    if params.history_length >= window:
        raise ValueError(f"history_length={params.history_length} must be < the checkpoint's context window "
                         f"max_timesteps={window} (0: half the window)")
    keep = params.history_length or None
    return AstraPolicy(model, device=device, keep_steps=keep), device


class PolicyNode(LifecycleNode):
    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        declare_parameters(self)
        # rclpy forbids two severities from one call site, so each log gets its own lambda
        self.problems = ProblemLog(lambda text: self.get_logger().warning(text))
        self._state = "unconfigured"
        self._params: PolicyNodeParams | None = None
        self._policy = None
        self._limits: SafetyLimits | None = None
        self._frames: FrameBuffer | None = None
        self._worker: InferenceWorker | None = None
        self._inputs: list = []
        self._outputs: dict[str, object] = {}
        self._control_timer = None
        self._lock = threading.Lock()  # guards the fields below (executor threads vs. worker)
        self._instruction = ""
        self._episode = 0
        self._worker_episode = -1
        self._paused = False
        self._hold_reason = "not configured"
        self._ee_pose: tuple[np.ndarray, float] | None = None  # (pose (6,), monotonic receive time)
        self._last_executed: np.ndarray | None = None  # absolute command last executed
        self._step = 0
        self.overruns = 0  # ticks skipped because the previous step was still running
        # Bounded windows (8 KB per 1000 samples); percentiles over the newest WINDOW steps.
        self.e2e_latency = LatencyWindow(LATENCY_WINDOW)  # newest image header stamp -> command published
        self.step_latency = LatencyWindow(LATENCY_WINDOW)  # control tick -> command published
        self.model_latency = LatencyWindow(LATENCY_WINDOW)  # policy.step alone
        self.overhead = LatencyWindow(LATENCY_WINDOW)  # step - model: what the node itself costs
        self.notices = ProblemLog(lambda text: self.get_logger().info(text))  # normal events (clipping)
        self._publish_times: deque[float] = deque(maxlen=50)

        # Status and services exist in every lifecycle state, so a failed configure is visible.
        self._status_pub = self.create_publisher(PolicyStatus, "status", STATUS_QOS)
        self._status_timer = self.create_timer(
            1.0 / float(self.get_parameter("status_rate_hz").value), self._publish_status,
            callback_group=MutuallyExclusiveCallbackGroup())
        self.create_service(Trigger, "pause", self._on_pause)
        self.create_service(Trigger, "resume", self._on_resume)
        self.create_service(Trigger, "stop", self._on_stop)

    # -- lifecycle ------------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._configure()
        except Exception as err:  # any failure -> stay unconfigured, say why
            self.problems.report("configure", str(err))
            self.get_logger().error(f"configure failed: {err}")
            self._release()
            return TransitionCallbackReturn.FAILURE
        self._state = "inactive"
        self._hold_reason = "inactive"
        return TransitionCallbackReturn.SUCCESS

    def _configure(self) -> None:
        params = read_parameters(self)
        _check_checkpoint_cameras(params, _checkpoint_cameras(params.checkpoint))  # fast, before torch
        policy, device = _load_policy(params)
        _check_checkpoint_cameras(params, policy.camera_names)
        spec = policy.action_space.spec
        if spec.frame == "delta":
            if spec.kind == "discrete_se2":
                raise ValueError("the checkpoint's action space is discrete_se2 with frame 'delta': not supported")
            if not params.ee_pose_topic:
                raise ValueError(f"the checkpoint's action space is {spec.kind} with frame 'delta': set "
                                 "'ee_pose_topic' (delta actions need the current end-effector pose)")
            if not (params.workspace_lower and params.workspace_upper):
                # the training statistics describe offsets, not where the robot may go
                raise ValueError(f"the checkpoint's action space is {spec.kind} with frame 'delta': set "
                                 "'workspace_lower' and 'workspace_upper' (absolute limits of the targets)")
        self._limits = self._build_limits(params, policy.action_space)
        self._warm_up(policy, params)
        self._params, self._policy = params, policy
        self._frames = FrameBuffer(params.camera_names, params.image_timeout_s)

        msg_type = CompressedImage if params.transport == "compressed" else Image
        for camera, topic in zip(params.camera_names, params.camera_topics):
            self._inputs.append(self.create_subscription(
                msg_type, topic, self._make_image_callback(camera), qos_profile_sensor_data))
        self._inputs.append(self.create_subscription(
            String, "instruction", self._on_instruction, INSTRUCTION_QOS))
        if params.ee_pose_topic:
            self._inputs.append(self.create_subscription(
                PoseStamped, params.ee_pose_topic, self._on_ee_pose, qos_profile_sensor_data))

        pub = self.create_lifecycle_publisher
        self._outputs["action_segment"] = pub(ActionSegment, "action_segment", COMMAND_QOS)
        if spec.kind == "discrete_se2":
            self._outputs["pick_place"] = pub(PickPlaceSE2, "pick_place", COMMAND_QOS)
        else:
            self._outputs["target_pose"] = pub(PoseStamped, "target_pose", COMMAND_QOS)
            self._outputs["gripper_command"] = pub(GripperCommand, "gripper_command", COMMAND_QOS)
        self.get_logger().info(
            f"configured: checkpoint {params.checkpoint} on {device}, action space {spec.kind}/{spec.frame}, "
            f"cameras {list(params.camera_names)} via {params.transport} on {list(params.camera_topics)}, "
            f"{params.control_rate_hz} Hz, dry_run={params.dry_run}, limits lower={self._limits.lower.tolist()} "
            f"upper={self._limits.upper.tolist()} max_step={self._limits.max_step.tolist()}")

    @staticmethod
    def _build_limits(params: PolicyNodeParams, action_space) -> SafetyLimits:
        names = action_space.dim_names
        stats = action_space.stats
        lower = list(params.workspace_lower) or list(stats.min)
        upper = list(params.workspace_upper) or list(stats.max)
        if "gripper" in names:  # GripperCommand.position is normalised: 0 closed .. 1 open
            g = names.index("gripper")
            if len(lower) == len(names):
                lower[g], upper[g] = max(lower[g], 0.0), min(upper[g], 1.0)
        try:
            return SafetyLimits.build(names, lower, upper, params.step_limits)
        except ValueError as err:
            raise ValueError(f"{err} (action dimensions in order: {names})") from None

    @staticmethod
    def _warm_up(policy, params: PolicyNodeParams) -> None:
        """Run a few steps on blank frames so first-call costs (allocations, kernels) happen now."""
        if params.warmup_steps == 0:
            return
        h, w = params.image_hw or (224, 224)
        blank = {cam: np.zeros((h, w, 3), np.uint8) for cam in params.camera_names}
        policy.reset("warm up")
        for _ in range(params.warmup_steps):
            out = policy.step(blank)
            policy.record_executed(out.values)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        assert self._params is not None
        self._worker = InferenceWorker(self._run_step, self._on_worker_error)
        self._control_timer = self.create_timer(
            1.0 / self._params.control_rate_hz, self._on_tick, callback_group=MutuallyExclusiveCallbackGroup())
        self._state = "active"
        self.get_logger().info("active" + (" (dry_run: no robot commands are published)" if self._params.dry_run
                                           else ": publishing robot commands"))
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_control()
        self._state = "inactive"
        self._hold_reason = "inactive"
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self._state = "unconfigured"
        self._hold_reason = "not configured"
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_control()
        self._release()
        self._state = "finalized"
        self._hold_reason = "shut down"
        return TransitionCallbackReturn.SUCCESS

    def _stop_control(self) -> None:
        if self._control_timer is not None:
            self.destroy_timer(self._control_timer)
            self._control_timer = None
        if self._worker is not None:
            self._worker.stop()
            self._worker = None

    def _release(self) -> None:
        for sub in self._inputs:
            self.destroy_subscription(sub)
        self._inputs.clear()
        for publisher in self._outputs.values():
            self.destroy_lifecycle_publisher(publisher)
        self._outputs.clear()
        self._policy = self._params = self._limits = self._frames = None

    def shutdown(self) -> None:
        """Stop the worker thread (used by main on exit, whatever the lifecycle state)."""
        self._stop_control()

    def summary(self) -> dict:
        """Counters and latency percentiles of this run (logged as one JSON line on exit)."""
        def pct(window: LatencyWindow) -> dict:
            return {"p50": round(window.percentile(50), 3), "p99": round(window.percentile(99), 3),
                    "count": window.count}

        frames = self._frames
        return {
            "steps": self.step_latency.count,
            "overruns": self.overruns,
            "e2e_ms": pct(self.e2e_latency),
            "step_ms": pct(self.step_latency),
            "model_ms": pct(self.model_latency),
            "overhead_ms": pct(self.overhead),
            "frames_received": sum(frames.received.values()) if frames else 0,
            "frames_unused": sum(frames.unused.values()) if frames else 0,
            "stale_ticks": frames.stale_ticks if frames else 0,
            "problems": dict(self.problems.counts),
            "clipped_steps": self.notices.counts["clipped"],
        }

    # -- inputs ---------------------------------------------------------------------------------

    def _make_image_callback(self, camera: str):
        def on_image(msg) -> None:
            frames, params = self._frames, self._params
            if frames is None or params is None:
                return
            try:
                image = to_rgb(msg, params.image_hw)
            except ImageConversionError as err:
                self.problems.report(err.kind, f"camera '{camera}': {err}")
                return
            frames.put(camera, image, _stamp_seconds(msg.header.stamp))
        return on_image

    def _on_instruction(self, msg: String) -> None:
        text = msg.data.strip()
        limit = self._params.instruction_max_chars if self._params else 1000
        if not text:
            self.problems.report("empty_instruction", "received an empty instruction; ignored")
            return
        if len(text) > limit:
            self.problems.report("long_instruction",
                                 f"instruction of {len(text)} characters exceeds instruction_max_chars={limit}; ignored")
            return
        with self._lock:
            self._instruction = text
            self._episode += 1
            self._last_executed = None
        self.get_logger().info(f"new instruction (history reset): {text!r}")

    def _on_ee_pose(self, msg: PoseStamped) -> None:
        p, q = msg.pose.position, msg.pose.orientation
        try:
            rpy = quaternion_to_rpy(q.x, q.y, q.z, q.w)
            pose = np.array([p.x, p.y, p.z, *rpy], dtype=np.float64)
            if not np.isfinite(pose).all():
                raise ValueError(f"non-finite position ({p.x}, {p.y}, {p.z})")
        except ValueError as err:
            self.problems.report("ee_pose", f"bad end-effector pose: {err}")
            return
        with self._lock:
            self._ee_pose = (pose, time.monotonic())

    # -- services -------------------------------------------------------------------------------

    def _on_pause(self, request, response):
        with self._lock:
            self._paused = True
        response.success, response.message = True, "paused: no commands until 'resume'"
        return response

    def _on_resume(self, request, response):
        with self._lock:
            self._paused = False
        response.success, response.message = True, "resumed"
        return response

    def _on_stop(self, request, response):
        with self._lock:
            self._instruction = ""
            self._episode += 1
            self._paused = False
            self._last_executed = None
        response.success, response.message = True, "stopped: episode ended, waiting for a new instruction"
        return response

    # -- control loop ---------------------------------------------------------------------------

    def _on_tick(self) -> None:
        tick_s = time.monotonic()
        frames_or_stale = self._frames.take() if self._frames is not None else Staleness({})
        with self._lock:
            reason = self._hold_reason_locked(frames_or_stale, tick_s)
            self._hold_reason = reason
            if reason:
                return
            ee_pose = self._ee_pose[0] if self._ee_pose is not None else None
            job = StepJob(frames_or_stale, tick_s, self._instruction, self._episode, ee_pose)  # type: ignore[arg-type]
        if self._worker is None or not self._worker.submit(job):
            self.overruns += 1

    def _hold_reason_locked(self, frames: FrameSet | Staleness, now_s: float) -> str:
        """Empty string: a step may run. Otherwise why not (shown in the status message)."""
        if self._paused:
            return "paused"
        if not self._instruction:
            return "no instruction"
        if isinstance(frames, Staleness):
            return frames.describe()
        if self._params is not None and self._params.ee_pose_topic:
            if self._ee_pose is None:
                return f"no end-effector pose on {self._params.ee_pose_topic}"
            age = now_s - self._ee_pose[1]
            if age > self._params.ee_pose_timeout_s:
                return f"stale end-effector pose: last one {age:.2f}s old"
        return ""

    def _run_step(self, job: StepJob) -> None:
        """Worker thread: model step -> safety filter -> publish -> record executed."""
        policy, limits, params = self._policy, self._limits, self._params
        if policy is None or limits is None or params is None:
            return
        if job.episode != self._worker_episode:
            policy.reset(job.instruction)
            self._worker_episode = job.episode
            self._step = 0
        # Memory is bounded by the runtime: at most max_timesteps segments, then it keeps the
        # newest history_length of them (see astra_core/runtime.py).
        out = policy.step(job.frames.images)
        self.model_latency.add(out.latency_ms)
        proposal = np.asarray(out.values, dtype=np.float64)
        kind, frame = policy.action_space.spec.kind, policy.action_space.spec.frame

        with self._lock:
            if job.episode != self._episode:  # a new instruction / stop arrived meanwhile: drop it
                return
            last_executed = self._last_executed
        if frame == "delta":
            target, reference = self._delta_to_target(proposal, job.ee_pose, last_executed)
        else:
            target, reference = proposal, last_executed
            if reference is None and job.ee_pose is not None and kind != "discrete_se2":
                reference = np.concatenate([job.ee_pose, proposal[POSE_DIMS:]])
        result = filter_command(target, limits, reference)
        if not result.ok:
            self.problems.report("unsafe_command", result.rejected or "rejected")
            self._hold_still(policy, reference, job, frame)
            return
        if result.clips:
            self.notices.report("clipped", "; ".join(str(c) for c in result.clips))

        with self._lock:
            paused = self._paused or job.episode != self._episode  # changed while the model ran
        send = not params.dry_run and not paused
        now = self.get_clock().now()
        stamp = now.to_msg()
        if send:
            self._publish_command(kind, result.command, stamp)
        executed = self._executed_in_action_frame(result.command, job.ee_pose, frame)
        self._publish_segment(out, proposal, executed, job.instruction, stamp, sent=send)
        done_s = time.monotonic()
        if paused:  # nothing went out: the robot held still
            self._hold_still(policy, reference, job, frame)
        else:
            # in dry_run the checked command counts as executed, so the rollout is the one the
            # robot would get with dry_run off
            policy.record_executed(executed)
            self._step += 1
            with self._lock:
                self._last_executed = result.command
        step_ms = (done_s - job.tick_s) * 1e3
        self.step_latency.add(step_ms)
        self.overhead.add(step_ms - out.latency_ms)
        if job.frames.newest_stamp_s > 0:  # cameras that leave stamps at 0 give no e2e figure
            self.e2e_latency.add((now.nanoseconds * 1e-9 - job.frames.newest_stamp_s) * 1e3)
        self._publish_times.append(done_s)

    def _hold_still(self, policy, reference: np.ndarray | None, job: StepJob, frame: str) -> None:
        """No command went out for this step: record 'stayed where it was' as the executed action,
        or, with no known position to stay at, drop the step by restarting the episode's context."""
        if reference is None:
            policy.reset(job.instruction)
            self._step = 0
        else:
            policy.record_executed(self._executed_in_action_frame(reference, job.ee_pose, frame))
            self._step += 1

    @staticmethod
    def _delta_to_target(delta: np.ndarray, ee_pose: np.ndarray | None, last_executed: np.ndarray | None):
        """pose6d delta action -> absolute target (Euler angles add, gripper stays absolute)."""
        assert ee_pose is not None  # the tick holds commands without a fresh pose
        target = delta.copy()
        target[:POSE_DIMS] = ee_pose + delta[:POSE_DIMS]
        reference = np.concatenate([ee_pose, (last_executed if last_executed is not None else target)[POSE_DIMS:]])
        return target, reference

    @staticmethod
    def _executed_in_action_frame(command: np.ndarray, ee_pose: np.ndarray | None, frame: str) -> np.ndarray:
        if frame != "delta":
            return command
        executed = command.copy()
        executed[:POSE_DIMS] = command[:POSE_DIMS] - ee_pose
        executed[3:POSE_DIMS] = wrap_angle(executed[3:POSE_DIMS])
        return executed

    def _publish_command(self, kind: str, command: np.ndarray, stamp) -> None:
        frame_id = self._params.output_frame
        if kind == "discrete_se2":
            msg = PickPlaceSE2()
            msg.header.stamp, msg.header.frame_id = stamp, frame_id
            msg.pick = SE2Pose(x=float(command[0]), y=float(command[1]), theta=float(command[2]))
            msg.place = SE2Pose(x=float(command[3]), y=float(command[4]), theta=float(command[5]))
            self._outputs["pick_place"].publish(msg)
            return
        pose = PoseStamped()
        pose.header.stamp, pose.header.frame_id = stamp, frame_id
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = (float(v) for v in command[:3])
        q = rpy_to_quaternion(*(float(v) for v in command[3:POSE_DIMS]))
        pose.pose.orientation.x, pose.pose.orientation.y, pose.pose.orientation.z, pose.pose.orientation.w = q
        self._outputs["target_pose"].publish(pose)
        gripper = GripperCommand()
        gripper.header.stamp, gripper.header.frame_id = stamp, frame_id
        gripper.position = float(command[POSE_DIMS])
        self._outputs["gripper_command"].publish(gripper)

    def _publish_segment(self, out, proposal: np.ndarray, executed: np.ndarray, instruction: str,
                         stamp, sent: bool) -> None:
        space = self._policy.action_space
        msg = ActionSegment()
        msg.header.stamp, msg.header.frame_id = stamp, self._params.output_frame
        msg.step = int(out.step)
        msg.instruction = instruction
        msg.action_space = space.spec.kind
        msg.dimension_names = list(space.dim_names)
        msg.proposed = [float(v) for v in proposal]
        msg.executed = [float(v) for v in executed]
        msg.bins = [int(v) for v in np.asarray(out.model_values)] if space.is_discrete else []
        msg.inference_latency_ms = float(out.latency_ms)
        msg.dry_run = not sent
        self._outputs["action_segment"].publish(msg)

    def _on_worker_error(self, err: BaseException) -> None:
        self.problems.report("inference", f"{type(err).__name__}: {err}")

    # -- status ---------------------------------------------------------------------------------

    def _publish_status(self) -> None:
        msg = PolicyStatus()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.state = self._state
        with self._lock:
            hold = self._hold_reason if self._state == "active" else self._state
            msg.step = self._step
            commands = self._state == "active" and not hold and self._params is not None and not self._params.dry_run
        msg.commands_enabled = bool(commands)
        msg.hold_reason = hold if hold else ("dry_run" if self._params is not None and self._params.dry_run else "")
        msg.last_error = self.problems.last_error
        frames = self._frames
        if frames is not None:
            msg.frames_received = sum(frames.received.values())
            msg.frames_dropped = sum(frames.unused.values())
            msg.frames_stale = frames.stale_ticks
        msg.bad_messages = self.problems.total(
            "encoding", "size", "empty", "step", "decode", "format", "empty_instruction", "long_instruction", "ee_pose")
        p50, p99 = self.e2e_latency.percentile(50), self.e2e_latency.percentile(99)
        msg.latency_p50_ms = p50 if math.isfinite(p50) else 0.0
        msg.latency_p99_ms = p99 if math.isfinite(p99) else 0.0
        times = list(self._publish_times)
        recent = time.monotonic() - times[-1] < 2.0 / (self._params.control_rate_hz if self._params else 1.0) \
            if times else False
        msg.control_rate_hz = (len(times) - 1) / (times[-1] - times[0]) if recent and len(times) > 2 else 0.0
        self._status_pub.publish(msg)


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args if args is not None else sys.argv)
    node = PolicyNode()
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    exit_code = 0
    try:
        if node.get_parameter("autostart").value:
            node.trigger_configure()
            if node._state == "inactive":
                node.trigger_activate()
            else:
                node.get_logger().error(
                    "autostart: configure failed, staying unconfigured (see the status topic and the error above)")
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.shutdown()
        # one machine-readable line for operators and for astra_ros.bench_node
        print(SUMMARY_PREFIX + json.dumps(node.summary()), flush=True)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
