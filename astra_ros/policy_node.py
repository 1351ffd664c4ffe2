"""The Astra policy as a ROS 2 lifecycle node: camera frames + instruction in, checked commands out.

    python -m astra_ros.policy_node --ros-args --params-file config/policy.yaml -p checkpoint:=/path/to/ckpt
    astra_policy_node --ros-args --params-file config/policy.yaml     (console script)
    ros2 launch astra_ros policy.launch.py checkpoint:=/path/to/ckpt  (with a ROS 2 install)

Lifecycle: configure reads the parameters (cameras left unset come from the checkpoint), loads
and warms up the checkpoint; activate starts the control timer and the inference worker;
deactivate stops them. With `autostart` (default) the node configures and activates itself, so
it runs without a lifecycle manager or the ros2 CLI.

Threads (why: docs/DEPLOYMENT.md, "Threads and executor"):
  * the executor thread (a SingleThreadedExecutor) runs every callback: image / instruction /
    pose callbacks only check, convert and store (FrameBuffer); the control tick only decides
    whether a step may run and hands the newest frames to the worker; status and services.
    rclpy 9.1's MultiThreadedExecutor is not used: it busy-resubmits pending callbacks (rclpy
    issue #1452) and starved the control tick under camera floods.
  * the inference worker thread (inference_worker.py) owns the policy: reset on a new
    instruction, model step, safety filter, freshness re-check, publish, record executed.
    A tick that finds it busy is counted as an overrun and skipped, so work never queues up.
  * the main thread waits for SIGINT/SIGTERM (shutdown_signals.py) and shuts down cleanly.

Topics (relative names: namespace and remap as usual):
  in:  <camera_topics> (Image or CompressedImage, sensor-data QoS), instruction (std_msgs/String,
       reliable + transient-local), <ee_pose_topic> (PoseStamped, delta action spaces),
       <mask_topics> (Image mono16/mono8 instance labels, one per camera, paired with the frame of
       the same stamp; object-token checkpoints), <proprio_topic> (JointState or PoseStamped;
       checkpoints with proprioception)
  out: target_pose (PoseStamped) + gripper_command (GripperCommand)   for pose6d action spaces
       pick_place (PickPlaceSE2)                                      for discrete_se2
       action_segment (ActionSegment, every step, also in dry_run), status (PolicyStatus)
  services: pause, resume, stop (std_srvs/Trigger)
"""

from __future__ import annotations

import math
import sys
import threading
import time
import warnings
from collections import deque
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.clock import Clock, ClockType
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger

from astra_ros.checkpoint_params import check_against_checkpoint, read_checkpoint_info
from astra_ros.cpu_scheduling import set_realtime_priority, set_torch_threads
from astra_ros.frame_buffer import FrameBuffer, FrameSet, Staleness
from astra_ros.image_conversion import ImageConversionError, image_to_labels, to_rgb
from astra_ros.inference_worker import InferenceWorker
from astra_ros.instruction import INSTRUCTION_PROBLEMS, InstructionError, check_instruction
from astra_ros.msg import ActionSegment, GripperCommand, PickPlaceSE2, PolicyStatus, SE2Pose
from astra_ros.node_main import init_ros, run_until_shutdown
from astra_ros.params import PolicyNodeParams, resolve_cameras
from astra_ros.pose_conversion import POSE_DIMS, pose_to_xyzrpy, set_pose_from_xyzrpy, stamp_to_seconds
from astra_ros.proprio import JointStateSelector, proprio_from_pose
from astra_ros.qos import COMMAND_QOS, INSTRUCTION_QOS, SENSOR_QOS, STATUS_QOS
from astra_ros.ros_parameters import declare_parameters, read_parameter_values
from astra_ros.safety import SafetyLimits, filter_command, late_command_reason, wrap_angle
from astra_ros.shutdown_signals import ShutdownRequest
from astra_ros.stats import LatencyWindow, ProblemLog

NODE_NAME = "astra_policy"
LATENCY_WINDOW = 10_000
SUMMARY_PREFIX = "astra_policy summary: "
# Problem kinds that are rejected input (PolicyStatus.bad_messages): image kinds from
# astra_core.imaging, the same for masks (prefixed "mask_"), instruction kinds, and a bad
# end-effector pose or proprioception message.
IMAGE_PROBLEMS = ("encoding", "size", "empty", "step", "decode", "format", "too_large")
MASK_PROBLEMS = tuple(f"mask_{kind}" for kind in IMAGE_PROBLEMS)
BAD_INPUT_PROBLEMS = IMAGE_PROBLEMS + MASK_PROBLEMS + INSTRUCTION_PROBLEMS + ("ee_pose", "proprio")
# How long `stop` waits for a step already running, so that no command of the ended episode goes
# out after `stop` answered (a caller may reset the robot or simulator right after).
STOP_WAIT_S = 5.0

# Frames reach the policy as read-only views of the message buffers (no copy); the runtime only
# reads them (torch.stack copies), so torch's "non-writable array" warning is noise here.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")


@dataclass(frozen=True)
class StepJob:
    frames: FrameSet
    tick_s: float  # monotonic time of the control tick
    instruction: str
    episode: int  # bumped by every new instruction / stop; the worker resets the policy on change
    ee_pose: np.ndarray | None  # (6,) x y z roll pitch yaw, fresh, or None
    proprio: np.ndarray | None = None  # the checkpoint's proprioception vector, fresh, or None


def load_policy(params: PolicyNodeParams):
    """The one place the node touches astra_core's model (imported lazily: torch is slow to import)."""
    from astra_core.checkpoint import load_checkpoint
    from astra_core.runtime import AstraPolicy, default_device

    device = default_device() if params.device == "auto" else params.device
    model = load_checkpoint(params.checkpoint, device=device)
    window = model.cfg.max_timesteps
    if params.history_length >= window:
        raise ValueError(f"history_length={params.history_length} must be < the checkpoint's context window "
                         f"max_timesteps={window} (0: half the window)")
    return AstraPolicy(model, device=device, keep_steps=params.history_length or None), device


class PolicyNode(LifecycleNode):
    def __init__(self, argv: Sequence[str] = (), **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._argv = list(argv)  # to see `-p name:=[]`, which rcl drops (ros_args.py)
        declare_parameters(self)
        # rclpy forbids two severities from one call site, so each log gets its own lambda
        self.problems = ProblemLog(lambda text: self.get_logger().warning(text))
        self.notices = ProblemLog(lambda text: self.get_logger().info(text))  # normal events (clipping)
        self._state = "unconfigured"
        self._params: PolicyNodeParams | None = None
        self._policy = None
        self._limits: SafetyLimits | None = None
        self._frames: FrameBuffer | None = None
        self._worker: InferenceWorker[StepJob] | None = None
        self._inputs: list = []
        self._outputs: dict[str, object] = {}
        self._control_timer = None
        self.torch_threads: int | None = None
        self.realtime_priority = 0  # SCHED_FIFO priority in force (0: normal scheduling)
        self._lock = threading.Lock()  # guards the fields below (executor thread vs. worker)
        self._instruction = ""
        self._episode = 0
        self._worker_episode = -1
        self._paused = False
        self._hold_reason = "not configured"
        self._withheld = ""  # why the latest step's command was withheld at publish time ("" once one goes out)
        self._ee_pose: tuple[np.ndarray, float] | None = None  # (pose (6,), monotonic receive time)
        self._proprio: tuple[np.ndarray, float] | None = None  # (values, monotonic receive time)
        self._read_proprio = None  # message -> the checkpoint's proprioception vector (configure)
        self._episode_start_s = 0.0  # monotonic arrival of the instruction (new_frames_only)
        self._last_stamps: dict[str, float] = {}  # camera -> frame stamp of the newest step (new_frames_only)
        self._last_executed: np.ndarray | None = None  # absolute command last executed
        self._step = 0
        self.overruns = 0  # ticks skipped because the previous step was still running
        # Bounded windows (8 KB per 1000 samples); percentiles over the newest WINDOW steps.
        self.e2e_latency = LatencyWindow(LATENCY_WINDOW)  # newest image header stamp -> command published
        self.step_latency = LatencyWindow(LATENCY_WINDOW)  # control tick -> command published
        self.model_latency = LatencyWindow(LATENCY_WINDOW)  # policy.step alone
        self.reset_latency = LatencyWindow(LATENCY_WINDOW)  # policy.reset (prompt encoding), new episodes only
        self.overhead = LatencyWindow(LATENCY_WINDOW)  # step - model - reset: what the node itself costs
        self.handoff_latency = LatencyWindow(LATENCY_WINDOW)  # tick -> worker starts the job
        self.publish_latency = LatencyWindow(LATENCY_WINDOW)  # model done -> command published
        self._publish_times: deque[float] = deque(maxlen=50)

        # Status and services exist in every lifecycle state, so a failed configure is visible.
        # The status timer runs on the steady clock: with use_sim_time a paused (or not yet
        # started) simulation stops ROS time, and must not silence the health report too.
        self._status_pub = self.create_publisher(PolicyStatus, "status", STATUS_QOS)
        self._status_timer = self.create_timer(1.0 / float(self.get_parameter("status_rate_hz").value),
                                               self._publish_status, clock=Clock(clock_type=ClockType.STEADY_TIME))
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

    def _read_params(self) -> PolicyNodeParams:
        """Parameters with cameras filled in from the checkpoint, checked against it (fast: no torch)."""
        values, emptied = read_parameter_values(self, self._argv)
        for name in sorted(emptied):
            self.get_logger().info(f"'{name}' set to [] on the command line or in a later parameters file: "
                                   "taken as empty (rcl itself would keep the earlier value)")
        info = read_checkpoint_info(values["checkpoint"]) if values.get("checkpoint") else None
        params = PolicyNodeParams.from_values(resolve_cameras(values, info.cameras if info else None))
        if info is not None:
            check_against_checkpoint(params, info)
        return params

    def _configure(self) -> None:
        params = self._read_params()
        self.torch_threads = set_torch_threads(params.torch_threads)
        if params.realtime_priority:
            # before activate creates the worker thread and main the executor thread: they inherit it
            problem = set_realtime_priority(params.realtime_priority)
            if problem:
                self.problems.report("realtime", problem)
            else:
                self.realtime_priority = params.realtime_priority
        policy, device = load_policy(params)
        if policy.needs_masks != bool(params.mask_topics) or bool(policy.proprio_dim) != bool(params.proprio_topic):
            raise ValueError("the loaded model's inputs differ from its config.yaml (masks "
                             f"{policy.needs_masks}, proprioception {policy.proprio_dim}): corrupt checkpoint?")
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
        self._frames = FrameBuffer(params.camera_names, params.image_timeout_s, with_masks=bool(params.mask_topics),
                                   stamp_tolerance_s=params.mask_stamp_tolerance_s)
        if params.proprio_topic:
            self._read_proprio = (proprio_from_pose if params.proprio_msg_type == "pose" else
                                  JointStateSelector(params.proprio_joint_names or policy.model.proprio_stats.names))
        self._create_inputs(params)

        pub = self.create_lifecycle_publisher
        self._outputs["action_segment"] = pub(ActionSegment, "action_segment", COMMAND_QOS)
        if spec.kind == "discrete_se2":
            self._outputs["pick_place"] = pub(PickPlaceSE2, "pick_place", COMMAND_QOS)
        else:
            self._outputs["target_pose"] = pub(PoseStamped, "target_pose", COMMAND_QOS)
            self._outputs["gripper_command"] = pub(GripperCommand, "gripper_command", COMMAND_QOS)
        self.get_logger().info(
            f"configured: checkpoint {params.checkpoint} on {device}, torch intra-op threads {self.torch_threads} "
            f"(cpu_threads={params.cpu_threads}), scheduling "
            f"{f'SCHED_FIFO {self.realtime_priority}' if self.realtime_priority else 'normal'}, action space {spec.kind}/{spec.frame}, cameras "
            f"{list(params.camera_names)} via {params.transport} on {list(params.camera_topics)}, masks "
            f"{list(params.mask_topics) or 'none'}, proprioception {params.proprio_topic or 'none'}"
            f"{f' ({params.proprio_msg_type})' if params.proprio_topic else ''}, new_frames_only={params.new_frames_only}, "
            f"{params.control_rate_hz} Hz, dry_run={params.dry_run}, limits lower={self._limits.lower.tolist()} "
            f"upper={self._limits.upper.tolist()} max_step={self._limits.max_step.tolist()}")

    def _create_inputs(self, params: PolicyNodeParams) -> None:
        """One subscription per input; each callback checks, converts and stores, nothing else.
        A new input kind (e.g. detections) adds its subscription here, a store the tick reads,
        and a freshness rule in _hold_reason_locked."""
        msg_type = CompressedImage if params.transport == "compressed" else Image
        for camera, topic in zip(params.camera_names, params.camera_topics):
            self._inputs.append(self.create_subscription(msg_type, topic, self._make_image_callback(camera),
                                                         SENSOR_QOS))
        for camera, topic in zip(params.camera_names, params.mask_topics):
            self._inputs.append(self.create_subscription(Image, topic, self._make_image_callback(camera, masks=True),
                                                         SENSOR_QOS))
        if params.proprio_topic:
            proprio_type = PoseStamped if params.proprio_msg_type == "pose" else JointState
            self._inputs.append(self.create_subscription(proprio_type, params.proprio_topic, self._on_proprio,
                                                         SENSOR_QOS))
        self._inputs.append(self.create_subscription(String, "instruction", self._on_instruction, INSTRUCTION_QOS))
        if params.ee_pose_topic:
            self._inputs.append(self.create_subscription(PoseStamped, params.ee_pose_topic, self._on_ee_pose,
                                                         SENSOR_QOS))

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
        masks = None
        if policy.needs_masks:  # one object in the middle: a pointer readout needs a token to point at
            mask = np.zeros((h, w), np.uint16)
            mask[h // 3: 2 * h // 3, w // 3: 2 * w // 3] = 1
            masks = {cam: mask for cam in params.camera_names}
        proprio = np.array(policy.model.proprio_stats.mean) if policy.proprio_dim else None
        policy.reset("warm up")
        for _ in range(params.warmup_steps):
            out = policy.step(blank, masks, proprio)
            policy.record_executed(out.values)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        assert self._params is not None
        self._worker = InferenceWorker(self._run_step, self._on_worker_error)
        self._control_timer = self.create_timer(1.0 / self._params.control_rate_hz, self._on_tick)
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
        self._read_proprio = self._proprio = None

    def shutdown(self) -> None:
        """Stop the control timer and the worker thread (main, on exit, whatever the lifecycle state)."""
        self._stop_control()

    def summary(self) -> dict:
        """Counters and latency percentiles of this run (printed as one strict-JSON line on exit;
        a percentile without samples is null)."""
        frames = self._frames
        return {
            "steps": self.step_latency.count,
            "overruns": self.overruns,
            "torch_threads": self.torch_threads,
            "realtime_priority": self.realtime_priority,
            "e2e_ms": self.e2e_latency.summary(),
            "step_ms": self.step_latency.summary(),
            "model_ms": self.model_latency.summary(),
            "reset_ms": self.reset_latency.summary(),
            "overhead_ms": self.overhead.summary(),
            "handoff_ms": self.handoff_latency.summary(),
            "publish_ms": self.publish_latency.summary(),
            "frames_received": sum(frames.received.values()) if frames else 0,
            "masks_received": sum(frames.masks_received.values()) if frames else 0,
            "frames_unused": sum(frames.unused.values()) if frames else 0,
            "stale_ticks": frames.stale_ticks if frames else 0,
            "late_commands": self.problems.counts["late_command"],
            "bad_messages": self.problems.total(*BAD_INPUT_PROBLEMS),
            "problems": dict(self.problems.counts),
            "clipped_steps": self.notices.counts["clipped"],
        }

    # -- inputs ---------------------------------------------------------------------------------

    def _make_image_callback(self, camera: str, masks: bool = False):
        """Callback of one camera's frames (or, `masks`, of its instance masks): decode, check, store."""
        decode, refuse, put = ((image_to_labels, "refuse_mask", "put_mask") if masks else (to_rgb, "refuse", "put"))
        kind_prefix, source = ("mask_", f"mask of camera '{camera}'") if masks else ("", f"camera '{camera}'")

        def on_message(msg) -> None:
            frames, params = self._frames, self._params
            if frames is None or params is None:
                return
            try:
                data = decode(msg, params.image_hw, max_pixels=params.max_image_pixels or None)
            except ImageConversionError as err:
                getattr(frames, refuse)(camera, err.kind)
                self.problems.report(kind_prefix + err.kind, f"{source}: {err}")
                return
            getattr(frames, put)(camera, data, stamp_to_seconds(msg.header.stamp))
        return on_message

    def _on_proprio(self, msg) -> None:
        try:
            values = self._read_proprio(msg)
        except (ValueError, TypeError) as err:
            self.problems.report("proprio", f"bad proprioception on {self._params.proprio_topic}: {err}")
            return
        with self._lock:
            self._proprio = (values, time.monotonic())

    def _on_instruction(self, msg: String) -> None:
        limit = self._params.instruction_max_chars if self._params else 1000
        try:
            text = check_instruction(msg.data, limit)
        except InstructionError as err:
            self.problems.report(err.kind, str(err))
            return
        with self._lock:
            self._instruction = text
            self._episode += 1
            self._episode_start_s = time.monotonic()
            self._last_stamps = {}
            self._last_executed = None
            self._withheld = ""
        self.get_logger().info(f"new instruction (history reset): {text!r}")

    def _on_ee_pose(self, msg: PoseStamped) -> None:
        try:
            pose = pose_to_xyzrpy(msg.pose)
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
            self._withheld = ""
        # A step that passed its last check before the stop may still be publishing: answer only
        # once it is done, so a caller that resets the robot next gets no command of this episode.
        worker = self._worker
        idle = worker is None or worker.wait_idle(STOP_WAIT_S)
        response.success = True
        response.message = "stopped: episode ended, waiting for a new instruction" + (
            "" if idle else f" (a step was still running after {STOP_WAIT_S}s; it will be dropped)")
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
            proprio = self._proprio[0] if self._proprio is not None else None
            job = StepJob(frames_or_stale, tick_s, self._instruction, self._episode, ee_pose, proprio)  # type: ignore[arg-type]
            if self._worker is None or not self._worker.submit(job):
                self.overruns += 1
            else:
                self._last_stamps = dict(frames_or_stale.stamps_s)  # type: ignore[union-attr]

    def _hold_reason_locked(self, frames: FrameSet | Staleness, now_s: float) -> str:
        """Empty string: a step may run. Otherwise why not (shown in the status message)."""
        if self._paused:
            return "paused"
        if not self._instruction:
            return "no instruction"
        if isinstance(frames, Staleness):
            return frames.describe()
        params = self._params
        if params is not None and params.ee_pose_topic:
            reason = _staleness(self._ee_pose, now_s, params.ee_pose_timeout_s, "end-effector pose", params.ee_pose_topic)
            if reason:
                return reason
        if params is not None and params.proprio_topic:
            reason = _staleness(self._proprio, now_s, params.proprio_timeout_s, "proprioception", params.proprio_topic)
            if reason:
                return reason
        if params is not None and params.new_frames_only:
            waiting = frames.not_new(self._last_stamps, self._episode_start_s)
            if waiting:
                return f"waiting for new frames: {', '.join(waiting)}"
        return ""

    def _run_step(self, job: StepJob) -> None:
        """Worker thread: model step -> safety filter -> freshness re-check -> publish -> record executed."""
        start_s = time.monotonic()
        policy, limits, params = self._policy, self._limits, self._params
        if policy is None or limits is None or params is None:
            return
        self.handoff_latency.add((start_s - job.tick_s) * 1e3)
        reset_ms = 0.0
        if job.episode != self._worker_episode:
            policy.reset(job.instruction)
            self._worker_episode = job.episode
            self._step = 0
            reset_ms = (time.monotonic() - start_s) * 1e3
            self.reset_latency.add(reset_ms)
        # Memory is bounded by the runtime: at most max_timesteps segments, then it keeps the
        # newest history_length of them (see astra_core/runtime.py).
        out = policy.step(job.frames.images, job.frames.masks, job.proprio)
        model_done_s = time.monotonic()
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
            # stamped under the same lock as the check: a command stamped before a `stop` answered
            # belongs to the ended episode (the simulator bridge refuses such stale commands)
            now = self.get_clock().now()
        now_s = time.monotonic()
        late = late_command_reason(job.frames.age_s(now_s), now_s - job.tick_s, params.image_timeout_s,
                                   params.max_step_latency_s)
        if late:
            self.problems.report("late_command", late)
        send = not params.dry_run and not paused and not late
        stamp = now.to_msg()
        if send:
            self._publish_command(kind, result.command, stamp)
        executed = self._executed_in_action_frame(result.command, job.ee_pose, frame)
        self._publish_segment(out, proposal, executed, job.instruction, stamp, sent=send)
        done_s = time.monotonic()
        if paused or late:  # nothing went out: the robot held still
            self._hold_still(policy, reference, job, frame)
        else:
            # in dry_run the checked command counts as executed, so the rollout is the one the
            # robot would get with dry_run off
            policy.record_executed(executed)
            self._step += 1
            with self._lock:
                self._last_executed = result.command
        with self._lock:
            self._withheld = late
        step_ms = (done_s - job.tick_s) * 1e3
        self.step_latency.add(step_ms)
        self.overhead.add(step_ms - out.latency_ms - reset_ms)
        self.publish_latency.add((done_s - model_done_s) * 1e3)
        if job.frames.newest_stamp_s > 0:  # cameras that leave stamps at 0 give no e2e figure
            self.e2e_latency.add((now.nanoseconds * 1e-9 - job.frames.newest_stamp_s) * 1e3)
        if not late:
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
        set_pose_from_xyzrpy(pose.pose, command)
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
            hold = (self._hold_reason or self._withheld) if self._state == "active" else self._state
            msg.step = self._step
            commands = self._state == "active" and not hold and self._params is not None and not self._params.dry_run
        msg.commands_enabled = bool(commands)
        msg.hold_reason = hold if hold else ("dry_run" if self._params is not None and self._params.dry_run else "")
        msg.last_error = self.problems.last_error
        frames = self._frames
        if frames is not None:
            msg.frames_received = sum(frames.received.values())
            msg.frames_dropped = sum(frames.unused.values())
            # ticks held by a stale camera + commands withheld because their frames aged
            msg.frames_stale = frames.stale_ticks + self.problems.counts["late_command"]
        msg.bad_messages = self.problems.total(*BAD_INPUT_PROBLEMS)
        p50, p99 = self.e2e_latency.percentile(50), self.e2e_latency.percentile(99)
        msg.latency_p50_ms = p50 if math.isfinite(p50) else 0.0
        msg.latency_p99_ms = p99 if math.isfinite(p99) else 0.0
        times = list(self._publish_times)
        recent = time.monotonic() - times[-1] < 2.0 / (self._params.control_rate_hz if self._params else 1.0) \
            if times else False
        msg.control_rate_hz = (len(times) - 1) / (times[-1] - times[0]) if recent and len(times) > 2 else 0.0
        self._status_pub.publish(msg)


def _staleness(latest: tuple[np.ndarray, float] | None, now_s: float, timeout_s: float, what: str, topic: str) -> str:
    """Why a (values, monotonic receive time) input holds commands: never received, or too old; '' if fresh."""
    if latest is None:
        return f"no {what} on {topic}"
    age = now_s - latest[1]
    return f"stale {what}: last one {age:.2f}s old" if age > timeout_s else ""


def main(args: list[str] | None = None) -> int:
    """Run the node until SIGINT/SIGTERM; exit 0 after printing the summary, however many signals."""
    argv = list(args if args is not None else sys.argv)
    init_ros(argv)
    node = PolicyNode(argv)

    def autostart(shutdown: ShutdownRequest) -> None:
        if not node.get_parameter("autostart").value:
            return
        node.trigger_configure()
        if node._state == "inactive" and not shutdown.requested:
            node.trigger_activate()
        elif node._state != "inactive":
            node.get_logger().error(
                "autostart: configure failed, staying unconfigured (see the status topic and the error above)")

    # node.shutdown first: control timer and inference worker stop, so the counters are final
    return run_until_shutdown(node, SUMMARY_PREFIX, node.summary, start=autostart, stop=node.shutdown)


if __name__ == "__main__":
    sys.exit(main())
