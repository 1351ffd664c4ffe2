"""Any astra_sim environment as a ROS 2 robot: cameras, masks, poses and episode events out; policy
commands in; services to reset an episode and to ask how it went.

    python -m astra_ros.sim_bridge --ros-args -p env:=tabletop -p "env_options:=[image_size=96]"
    astra_sim_bridge --ros-args --params-file config/sim_bridge.yaml          (console script)
    ros2 launch astra_ros sim.launch.py env:=maniskill checkpoint:=...        (with a ROS 2 install)

A plain node, not a lifecycle node: a simulator has no hardware to arm, so it is up when its
process is; episodes (reset_episode) are its lifecycle. If the environment cannot be built the
process exits 1 with the reason, since there is nothing to serve.

Stepping (`step_mode`, docs/SIMULATORS.md "Through ROS"):
  * per_command (pick-and-place envs: the tabletop): one env step per command; the simulated world
    waits meanwhile and the current observation is re-sent (same stamp) at republish_rate_hz;
  * fixed_rate (6-D pose envs): a wall-clock timer steps the env at step_rate_hz with the newest
    command as the target; without a new one the target holds (a position-controlled arm that
    loses its inputs stays where it was sent last, or where it is at the episode's start).
Every command is checked first (astra_ros.sim_commands): refusals are counted per reason and
reported in get_outcome and the episode events; nothing a client sends can stop the bridge.

Topics (relative; camera names are the env's):
  out: camera/<cam>/image_raw (Image rgb8), camera/<cam>/camera_info, camera/<cam>/mask (Image
       mono16 instance labels, same stamp as the image), proprio (JointState named by the env's
       proprio_names), ee_pose (PoseStamped, where the proprioception has a position),
       joint_states (JointState, where the env has joints: ManiSkill's Panda),
       episode_event (astra_ros/EpisodeEvent), /clock (publish_clock), expert/... (publish_expert)
  in:  pick_place (PickPlaceSE2) for SE(2) envs; target_pose (PoseStamped) + gripper_command
       (GripperCommand) for 6-D pose envs: the policy node's outputs, so one namespace wires both
  services: reset_episode (astra_ros/ResetEpisode), get_outcome (astra_ros/GetOutcome)
Sensor data and poses use sensor-data QoS, commands the command QoS, events reliable +
transient local: all from astra_ros.qos, shared with the policy node.

Threads: the main thread builds the env and then runs every callback (services, commands and
timers are serialised), so the env is only ever touched by the thread that made it: MuJoCo's EGL
renderer (Meta-World) fails from any other (EGL_BAD_ACCESS). SIGINT/SIGTERM are seen between
executor waits.
"""

from __future__ import annotations

import sys
import time
from typing import Optional, Sequence

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import CameraInfo, Image, JointState

from astra_ros.bridge_params import BRIDGE_PARAMETERS, BridgeParams
from astra_ros.cpu_scheduling import set_torch_threads
from astra_ros.image_conversion import labels_to_image, rgb_to_image
from astra_ros.msg import EpisodeEvent, GripperCommand, PickPlaceSE2, SE2Pose
from astra_ros.node_main import run_plain_node
from astra_ros.params import resolve_torch_threads
from astra_ros.pose_conversion import POSE_DIMS, set_pose_from_xyzrpy, stamp_to_seconds
from astra_ros.proprio import fill_joint_state
from astra_ros.qos import CLOCK_QOS, COMMAND_QOS, EVENT_QOS, SENSOR_QOS
from astra_ros.ros_parameters import load_parameters
from astra_ros.sim_commands import (CommandRefused, HeldTarget, PoseCommandPairer, check_frame_and_stamp,
                                    gripper_value, pose_values, se2_values)
from astra_ros.sim_episode import EVENT_NAMES, EpisodeRecord, EpisodeRunner, pose_from_proprio, seconds_to_stamp_parts
from astra_ros.srv import GetOutcome, ResetEpisode
from astra_ros.stats import LatencyWindow, ProblemLog
from astra_sim.env import Observation

NODE_NAME = "astra_sim_bridge"
SUMMARY_PREFIX = "astra_sim_bridge summary: "


def camera_frame_id(camera: str) -> str:
    return f"{camera}_optical_frame"


class SimBridge(Node):
    def __init__(self, argv: Sequence[str] = ()) -> None:
        super().__init__(NODE_NAME)
        self.params = params = BridgeParams.from_values(load_parameters(self, argv, BRIDGE_PARAMETERS))
        self.torch_threads = set_torch_threads(resolve_torch_threads(params.cpu_threads))
        t0 = time.perf_counter()
        self.runner = EpisodeRunner(params.env, params.options, params.task)
        self.env_build_s = time.perf_counter() - t0
        self.step_mode = params.resolved_step_mode(self.runner.pick_and_place)
        self.problems = ProblemLog(lambda text: self.get_logger().warning(text))
        self.step_ms = LatencyWindow(10_000)  # env.step alone
        self.publish_ms = LatencyWindow(10_000)  # observation -> messages -> published
        self.steps = 0
        self.live_s = 0.0  # wall time with an episode running (for the achieved step rate)
        self._live_since: Optional[float] = None
        self._obs_stamp = Time()
        self._episode_stamp_s = 0.0  # stamp of the current episode's first observation
        self._obs_messages: list[tuple[object, object]] = []  # (publisher, message) of the current observation
        self._pairer = PoseCommandPairer()
        self._held = HeldTarget()
        steady = Clock(clock_type=ClockType.STEADY_TIME)  # the bridge drives simulated time: never wait for it

        env = self.runner.env
        self._cameras = list(env.camera_names)
        self._image_pubs = {c: self.create_publisher(Image, f"camera/{c}/image_raw", SENSOR_QOS) for c in self._cameras}
        self._info_pubs = {c: self.create_publisher(CameraInfo, f"camera/{c}/camera_info", SENSOR_QOS)
                           for c in self._cameras}
        self._mask_pubs = ({c: self.create_publisher(Image, f"camera/{c}/mask", SENSOR_QOS) for c in self._cameras}
                           if env.sensor_info().get("masks") else {})
        self._proprio_names = self.runner.proprio_names
        self._proprio_pub = self.create_publisher(JointState, "proprio", SENSOR_QOS) if self._proprio_names else None
        self._ee_pose_pub = self.create_publisher(PoseStamped, "ee_pose", SENSOR_QOS) if self._proprio_names else None
        # joint positions where the env offers them (an optional extra of the Env protocol)
        self._joints_pub = (self.create_publisher(JointState, "joint_states", SENSOR_QOS)
                            if callable(getattr(env, "joint_state", None)) else None)
        self._event_pub = self.create_publisher(EpisodeEvent, "episode_event", EVENT_QOS)
        self._clock_pub = self.create_publisher(ClockMsg, "/clock", CLOCK_QOS) if params.publish_clock else None
        if self.runner.pick_and_place:
            self.create_subscription(PickPlaceSE2, "pick_place", self._on_pick_place, COMMAND_QOS)
        else:
            self.create_subscription(PoseStamped, "target_pose", self._on_target_pose, COMMAND_QOS)
            self.create_subscription(GripperCommand, "gripper_command", self._on_gripper, COMMAND_QOS)
        self._expert_pubs: dict[str, object] = {}
        if params.publish_expert:
            if self.runner.pick_and_place:
                self._expert_pubs["pick_place"] = self.create_publisher(PickPlaceSE2, "expert/pick_place", COMMAND_QOS)
            else:
                self._expert_pubs["target_pose"] = self.create_publisher(PoseStamped, "expert/target_pose", COMMAND_QOS)
                self._expert_pubs["gripper_command"] = self.create_publisher(GripperCommand, "expert/gripper_command",
                                                                             COMMAND_QOS)
        self.create_service(ResetEpisode, "reset_episode", self._on_reset)
        self.create_service(GetOutcome, "get_outcome", self._on_get_outcome)
        if self.step_mode == "per_command":
            self.create_timer(1.0 / params.republish_rate_hz, self._republish, clock=steady)
        else:
            rate = params.step_rate_hz or float(env.control_rate_hz)
            self.create_timer(1.0 / rate, self._on_step_timer, clock=steady)
        if self.get_parameter("use_sim_time").value:
            self.get_logger().warning("use_sim_time is set on the bridge, which is the clock's source: its own stamps "
                                      "and timers ignore it (set publish_clock instead)")
        self.get_logger().info(
            f"{params.env} {self.runner.env_options} ready in {self.env_build_s:.1f}s: cameras {self._cameras}, "
            f"masks {bool(self._mask_pubs)}, proprioception {self._proprio_names or 'none'}, action space "
            f"{self.runner.action_kind} in frame {params.frame_id!r}, stepping {self.step_mode}"
            + (f" at {params.step_rate_hz or env.control_rate_hz} Hz" if self.step_mode == "fixed_rate" else "")
            + f", {'simulated time on /clock' if params.publish_clock else 'system-time stamps'}, "
              f"torch threads {self.torch_threads}")
        if params.initial_seed >= 0:
            self._start_episode(params.initial_seed, params.task)

    # -- time --------------------------------------------------------------------------------------

    def _stamp_now(self) -> Time:
        """Simulated time with publish_clock, else this node's (system) clock."""
        if self.params.publish_clock:
            sec, nanosec = seconds_to_stamp_parts(self.runner.sim_time_s)
            return Time(sec=sec, nanosec=nanosec)
        return self.get_clock().now().to_msg()

    def _publish_clock(self) -> None:
        if self._clock_pub is not None:
            self._clock_pub.publish(ClockMsg(clock=self._stamp_now()))

    def _not_before_s(self) -> float:
        """Commands stamped earlier than this cannot answer the current state (sim_commands)."""
        if self.step_mode == "per_command" or self.runner.record is None:
            return stamp_to_seconds(self._obs_stamp)
        return self._episode_stamp_s

    # -- episodes ----------------------------------------------------------------------------------

    def _start_episode(self, seed: int, task: str) -> EpisodeRecord:
        record, aborted = self.runner.reset(seed, task)
        if aborted is not None:
            self._publish_event(aborted)
        self._pairer.clear()
        self._held.clear()
        self._mark_live(True)
        self._publish_clock()
        self._publish_observation(self.runner.observation)
        self._episode_stamp_s = stamp_to_seconds(self._obs_stamp)
        self._publish_event(record)
        self.get_logger().info(f"episode {record.episode}: seed {seed}, task {record.task or '(configured)'}: "
                               f"{record.instruction!r}")
        return record

    def _mark_live(self, live: bool) -> None:
        now = time.monotonic()
        if self._live_since is not None:
            self.live_s += now - self._live_since
        self._live_since = now if live else None

    def _on_reset(self, request: ResetEpisode.Request, response: ResetEpisode.Response) -> ResetEpisode.Response:
        try:
            record = self._start_episode(int(request.seed), request.task)
        except Exception as err:  # unknown task, env construction failure: nothing changed
            response.ok, response.message = False, f"{type(err).__name__}: {err}"
            self.problems.report("reset", response.message)
            return response
        response.ok, response.message = True, f"episode {record.episode} started"
        response.instruction, response.episode, response.stamp = record.instruction, record.episode, self._obs_stamp
        return response

    def _on_get_outcome(self, request, response: GetOutcome.Response) -> GetOutcome.Response:
        record = self.runner.record
        if record is None:
            response.ok, response.message = False, "no episode was started yet"
            return response
        response.ok = True
        response.episode, response.seed, response.task, response.instruction = (
            record.episode, record.seed, record.task, record.instruction)
        response.done, response.event, response.success = record.done, record.event, record.success
        response.steps, response.commands_applied = record.steps, record.applied
        response.commands_refused = sum(record.refused.values())
        response.refused_by_reason, response.message = record.refused_text(), record.message
        return response

    def _publish_event(self, record: EpisodeRecord) -> None:
        msg = EpisodeEvent()
        msg.header.stamp, msg.header.frame_id = self._stamp_now(), self.params.frame_id
        msg.event, msg.episode, msg.seed = record.event, record.episode, record.seed
        msg.env, msg.task, msg.instruction = self.params.env, record.task, record.instruction
        msg.steps, msg.commands_applied = record.steps, record.applied
        msg.commands_refused = sum(record.refused.values())
        msg.message = record.message
        self._event_pub.publish(msg)
        if record.done:
            self.get_logger().info(f"episode {record.episode}: {EVENT_NAMES[record.event]} after {record.steps} steps "
                                   f"({record.message}; refused: {record.refused_text() or 'none'})")

    # -- commands ----------------------------------------------------------------------------------

    def _checked(self, header) -> bool:
        """Frame and stamp of a command; a refusal is counted and logged once per kind."""
        try:
            check_frame_and_stamp(header.frame_id, stamp_to_seconds(header.stamp), self.params.frame_id,
                                  self._not_before_s())
        except CommandRefused as err:
            self._refuse(err)
            return False
        return True

    def _refuse(self, err: CommandRefused) -> None:
        """A command refused before it reached the runner (frame, stamp, message contents)."""
        self.runner.refuse(err.reason, str(err))
        self.problems.report(err.reason, str(err))

    def _on_pick_place(self, msg: PickPlaceSE2) -> None:
        if not self._checked(msg.header):
            return
        try:
            values = se2_values(msg)
        except CommandRefused as err:
            self._refuse(err)
            return
        self._step(values)

    def _on_target_pose(self, msg: PoseStamped) -> None:
        self._on_pose_command_part(msg.header, "pose", lambda: pose_values(msg))

    def _on_gripper(self, msg: GripperCommand) -> None:
        self._on_pose_command_part(msg.header, "gripper", lambda: gripper_value(msg))

    def _on_pose_command_part(self, header, part: str, read) -> None:
        """A target pose or a gripper command: checked, then paired into one step (per_command)
        or made the held target's `part` (fixed_rate)."""
        if not self._checked(header):
            return
        try:
            value = read()
        except CommandRefused as err:
            self._refuse(err)
            return
        if self.step_mode == "per_command":
            add = self._pairer.add_pose if part == "pose" else self._pairer.add_gripper
            command = add(stamp_to_seconds(header.stamp), value)
            if command is not None:
                self._step(command)
        else:
            setattr(self._held, part, value)

    def _on_step_timer(self) -> None:
        """fixed_rate: one env step toward the held target (or holding still)."""
        if not self.runner.live:
            return
        try:
            hold = self.runner.hold_action()
        except RuntimeError as err:
            self.problems.report("hold", str(err))
            return
        if not self._held.empty:
            if self._step(self._held.values(hold)):
                return
            self._held.clear()  # the simulator refused the target (counted once): hold still until the next command
            if not self.runner.live:
                return
        self._step(hold)

    def _step(self, values: np.ndarray) -> bool:
        """One env step; publish what it shows. -> False when the command was refused (counted)."""
        try:
            outcome = self.runner.step(values)
        except CommandRefused as err:  # counted by the runner
            self.problems.report(err.reason, str(err))
            record = self.runner.record
            if err.reason == "simulator_error" and record is not None:
                self._mark_live(False)
                self._publish_event(record)
            return False
        self.steps += 1
        self.step_ms.add(outcome.step_ms)
        self._publish_clock()
        self._publish_observation(outcome.observation)
        if outcome.record.done:
            self._mark_live(False)
            self._obs_messages = []  # nothing is re-sent between episodes
            self._publish_event(outcome.record)
        return True

    # -- observations ------------------------------------------------------------------------------

    def _publish_observation(self, obs: Observation) -> None:
        """Build and publish every message of one observation, all with one new stamp."""
        t0 = time.perf_counter()
        self._obs_stamp = stamp = self._stamp_now()
        messages: list[tuple[object, object]] = []
        height, width = self.runner.env.image_size
        for camera in self._cameras:
            frame = camera_frame_id(camera)
            messages.append((self._image_pubs[camera], rgb_to_image(obs.images[camera], "rgb8", frame, stamp)))
            messages.append((self._info_pubs[camera], self._camera_info(camera, frame, stamp, height, width)))
            if camera in self._mask_pubs and camera in obs.masks:
                messages.append((self._mask_pubs[camera], labels_to_image(obs.masks[camera], frame, stamp)))
        if self._proprio_pub is not None and obs.proprio is not None:
            joints = JointState()
            joints.header.stamp, joints.header.frame_id = stamp, self.params.frame_id
            fill_joint_state(joints, self._proprio_names, obs.proprio)
            messages.append((self._proprio_pub, joints))
            pose = pose_from_proprio(self._proprio_names, obs.proprio)
            if pose is not None:
                ee = PoseStamped()
                ee.header.stamp, ee.header.frame_id = stamp, self.params.frame_id
                set_pose_from_xyzrpy(ee.pose, pose)
                messages.append((self._ee_pose_pub, ee))
        if self._joints_pub is not None:
            names, positions = self.runner.env.joint_state()  # the env of the current task
            joints = JointState()
            joints.header.stamp = stamp
            fill_joint_state(joints, names, positions)
            messages.append((self._joints_pub, joints))
        messages += self._expert_messages(stamp)
        for publisher, msg in messages:
            publisher.publish(msg)
        self._obs_messages = messages
        self.publish_ms.add((time.perf_counter() - t0) * 1e3)

    def _republish(self) -> None:
        """per_command: the simulated world waits for a command; re-send what it shows."""
        if self.runner.live:
            for publisher, msg in self._obs_messages:
                publisher.publish(msg)

    def _camera_info(self, camera: str, frame: str, stamp: Time, height: int, width: int) -> CameraInfo:
        """Size and frame; intrinsics where the env exposes them (`camera_matrices`), else K = 0
        (sensor_msgs' 'uncalibrated'). The table homography the policy uses is in the checkpoint."""
        info = CameraInfo()
        info.header.stamp, info.header.frame_id = stamp, frame
        info.height, info.width = int(height), int(width)
        matrices = getattr(self.runner.env, "camera_matrices", None)
        if matrices is not None:
            k = np.asarray(matrices(camera)[0], dtype=np.float64)
            info.k = [float(v) for v in k.reshape(-1)]
            info.p = [float(v) for v in np.hstack([k, np.zeros((3, 1))]).reshape(-1)]
            info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
            info.distortion_model = "plumb_bob"
            info.d = [0.0] * 5
        return info

    def _expert_messages(self, stamp: Time) -> list[tuple[object, object]]:
        if not self._expert_pubs or not self.runner.live:
            return []
        try:
            action = self.runner.expert_action()
        except Exception as err:  # an expert that fails must not stop the simulation
            self.problems.report("expert", f"{type(err).__name__}: {err}")
            return []
        frame = self.params.frame_id
        if "pick_place" in self._expert_pubs:
            msg = PickPlaceSE2()
            msg.header.stamp, msg.header.frame_id = stamp, frame
            msg.pick = SE2Pose(x=float(action[0]), y=float(action[1]), theta=float(action[2]))
            msg.place = SE2Pose(x=float(action[3]), y=float(action[4]), theta=float(action[5]))
            return [(self._expert_pubs["pick_place"], msg)]
        pose = PoseStamped()
        pose.header.stamp, pose.header.frame_id = stamp, frame
        set_pose_from_xyzrpy(pose.pose, action[:POSE_DIMS])
        gripper = GripperCommand(position=float(action[POSE_DIMS]))
        gripper.header.stamp, gripper.header.frame_id = stamp, frame
        return [(self._expert_pubs["target_pose"], pose), (self._expert_pubs["gripper_command"], gripper)]

    # -- exit --------------------------------------------------------------------------------------

    def shutdown(self) -> None:
        self._mark_live(False)
        self.runner.close()

    def summary(self) -> dict:
        """Counters and step timings of this run (one strict-JSON line on exit); refusals are in
        `problems` by reason, with the other problems."""
        record = self.runner.record
        return {
            "env": self.params.env,
            "step_mode": self.step_mode,
            "env_build_s": round(self.env_build_s, 3),
            "episodes": self.runner.episodes,
            "steps": self.steps,
            "live_s": round(self.live_s, 3),
            "steps_per_s": round(self.steps / self.live_s, 3) if self.live_s > 0 else None,
            "step_ms": self.step_ms.summary(),
            "publish_ms": self.publish_ms.summary(),
            "problems": dict(self.problems.counts),
            "last_episode": None if record is None else {"episode": record.episode, "event": EVENT_NAMES[record.event],
                                                         "steps": record.steps, "refused": dict(record.refused)},
            "torch_threads": self.torch_threads,
        }


def main(args: list[str] | None = None) -> int:
    """Run the bridge until SIGINT/SIGTERM (exit 0 after a summary line); exit 1 if it cannot start."""
    return run_plain_node(SimBridge, NODE_NAME, SUMMARY_PREFIX, args)


if __name__ == "__main__":
    sys.exit(main())
