"""ManiSkill3 tabletop tasks (Panda arm, CPU physics + Vulkan rendering) behind the :class:`astra_sim.env.Env` protocol.

Install with ``make sim-maniskill`` (scripts/setup_maniskill.sh). Tasks: ``PickCube-v1``,
``PushCube-v1``, ``StackCube-v1`` (their assets ship inside the wheel: nothing is downloaded).

Actions (``continuous_pose6d``, absolute): ``x y z roll pitch yaw gripper``.

* ``x y z``: target of the tool centre point (TCP, between the finger pads) in metres, in the
  **Panda base frame** (x away from the robot, y to its left, z up; the table top is z = 0 and the
  centre of the task area is x = 0.615). This is ManiSkill's ``pd_ee_pose`` frame ("root
  translation, root-aligned rotation"); ManiSkill's world frame is the base frame shifted by
  x - 0.615.
* ``roll pitch yaw``: TCP orientation in the base frame, project convention
  ``R = Rz(yaw) Ry(pitch) Rx(roll)``. ``pd_ee_pose`` reads ``Rx(a) Ry(b) Rz(c)`` instead, so
  :meth:`ManiSkillEnv.step` converts through the rotation matrix (:mod:`astra_sim.pose_sim`).
  The TCP pointing straight down is ``roll = pi``; roll's bounds are ``[pi/2, 3pi/2]`` so that this
  pose is not split across the +-pi seam (a regressed roll near +-pi would average to 0). Roll and
  yaw are angles: a command one full turn away is the same command and is accepted.
* ``gripper``: 0 = closed .. 1 = open (ManiSkill's ``-1 .. 1`` finger target); values past 0 / 1
  saturate.

A command outside :attr:`ManiSkillEnv.action_bounds` (the workspace box), with the wrong shape,
non-finite, or without an inverse-kinematics solution is refused with
:class:`astra_sim.pose_sim.ActionRejected` before anything moves.

Observations: ``base_camera`` (ManiSkill's fixed third-person sensor, looking at the table from
across it) and ``hand_camera`` (the Panda wrist camera), both ``image_size`` square RGB; a uint16
instance mask per camera from ManiSkill's segmentation (labels in :attr:`ManiSkillEnv.instance_names`,
0 = background, the table and the robot); proprio = TCP pose in the action frame and convention
+ gripper opening (0 closed .. 1 open). In PickCube the goal sphere, which ManiSkill hides from its
sensors, is shown: without it the goal would be invisible to a vision policy.

The expert (:meth:`ManiSkillEnv.expert_action`) is a privileged-state scripted controller in the
same action space: a top-down grasp aligned with the cube's faces, then lift / carry / stack, or a
closed-gripper push. It reads the true object poses and ManiSkill's grasp test and re-plans from
whatever state it finds, so it recovers from perturbed steps.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from astra_core.action_space import POSE6D_DIMS, ActionSpaceSpec
from astra_sim.env import Observation, StepResult
from astra_sim.pose_sim import (
    PoseEnvBase,
    ActionRejected,
    check_pose_action,
    config_from_dict,
    euler_xyz_to_matrix,
    label_lookup,
    matrix_to_euler_xyz,
    matrix_to_rpy,
    pick_template,
    quaternion_wxyz_to_matrix,
    rpy_to_matrix,
    table_homography,
    wrap_angle,
)

CAMERAS: tuple[str, ...] = ("base_camera", "hand_camera")
SIM_FREQ_HZ = 100  # ManiSkill's default physics rate; the control rate must divide it
CUBE_HALF = 0.02  # metres, all three tasks
DOWN_ROLL = math.pi  # roll of a TCP pointing straight down (pitch 0)
REST_YAW = math.pi / 2  # yaw of the Panda's rest pose; grasps pick the cube face closest to it
PANDA_MAX_OPENING = 0.08  # metres between the fingers, fully open
GRIPPER_OPEN, GRIPPER_CLOSED = 1.0, 0.0

# Workspace box of the action frame (Panda base): the task areas span x 0.41..0.82, |y| <= 0.3,
# goals up to z 0.34; the box leaves room around them and stays inside the arm's reach.
POSITION_LOW = (0.25, -0.45, 0.0)
POSITION_HIGH = (0.95, 0.45, 0.6)
ORIENTATION_LOW = (DOWN_ROLL - math.pi / 2, -math.pi / 2, -math.pi)
ORIENTATION_HIGH = (DOWN_ROLL + math.pi / 2, math.pi / 2, math.pi)


@dataclass(frozen=True)
class TaskSpec:
    """How one ManiSkill task is exposed: its instances (ManiSkill actor names -> mask labels 1..K
    in this order), its instruction templates and its default step limit (at 10 Hz)."""

    actors: tuple[str, ...]
    instance_names: tuple[str, ...]
    templates: tuple[str, ...]
    max_steps: int


TASKS: dict[str, TaskSpec] = {
    "PickCube-v1": TaskSpec(
        actors=("cube", "goal_site"),
        instance_names=("red cube", "green goal sphere"),
        templates=(
            "pick up the red cube and move it to the green sphere",
            "lift the red cube to the green target",
            "grasp the red cube and bring it to the green ball",
            "move the red cube to where the green sphere is",
        ),
        max_steps=60,
    ),
    "PushCube-v1": TaskSpec(
        actors=("cube", "goal_region"),
        instance_names=("blue cube", "red and white target"),
        templates=(
            "push the blue cube onto the red target",
            "slide the blue cube into the target region",
            "push the blue cube forward to the red and white target",
            "move the blue cube onto the target without lifting it",
        ),
        max_steps=50,
    ),
    "StackCube-v1": TaskSpec(
        actors=("cubeA", "cubeB"),
        instance_names=("red cube", "green cube"),
        templates=(
            "stack the red cube on the green cube",
            "put the red cube on top of the green cube",
            "place the red cube onto the green one",
            "pick up the red cube and set it on the green cube",
        ),
        max_steps=80,
    ),
}


@dataclass
class ManiSkillConfig:
    """Everything that defines a ManiSkill env; validated at construction."""

    task: str = "PickCube-v1"
    image_size: int = 128  # square images; rendering cost barely depends on it on the CPU renderer
    cameras: tuple[str, ...] = CAMERAS  # ("base_camera",) drops the wrist camera (and its render cost)
    control_rate_hz: float = 10.0  # physics runs at 100 Hz; must divide it
    max_steps: int = 0  # step limit per episode; 0 = the task's default (at 10 Hz, scaled with the rate)
    robot_init_qpos_noise: float = 0.02  # ManiSkill's default joint noise at reset (radians)
    expert_max_step: float = 0.03  # metres the expert moves its target per 10 Hz step

    def __post_init__(self) -> None:
        self.cameras = tuple(self.cameras)
        if self.task not in TASKS:
            raise ValueError(f"maniskill.task={self.task!r}: must be one of {sorted(TASKS)}")
        if not 16 <= int(self.image_size) <= 512:
            raise ValueError(f"maniskill.image_size={self.image_size}: must be in [16, 512]")
        if self.cameras not in (CAMERAS, ("base_camera",)):
            raise ValueError(f"maniskill.cameras={list(self.cameras)}: must be {list(CAMERAS)} or ['base_camera']")
        rate = float(self.control_rate_hz)
        if not (rate > 0 and float(SIM_FREQ_HZ / rate).is_integer()):
            raise ValueError(f"maniskill.control_rate_hz={self.control_rate_hz}: must divide {SIM_FREQ_HZ} "
                             "(e.g. 5, 10, 20, 25, 50)")
        if int(self.max_steps) < 0:
            raise ValueError(f"maniskill.max_steps={self.max_steps}: must be >= 0 (0 = task default)")
        if not 0 <= self.robot_init_qpos_noise <= 0.2:
            raise ValueError(f"maniskill.robot_init_qpos_noise={self.robot_init_qpos_noise}: must be in [0, 0.2]")
        if not 0.005 <= self.expert_max_step <= 0.1:
            raise ValueError(f"maniskill.expert_max_step={self.expert_max_step}: must be in [0.005, 0.1] metres")

    @property
    def step_limit(self) -> int:
        if self.max_steps:
            return int(self.max_steps)
        return int(math.ceil(TASKS[self.task].max_steps * self.control_rate_hz / 10.0))

    @classmethod
    def from_dict(cls, options: dict[str, Any]) -> "ManiSkillConfig":
        return config_from_dict(cls, options, "maniskill")


def _import_maniskill() -> Any:
    try:
        import gymnasium
        import mani_skill.envs  # noqa: F401  (registers the tasks)
    except ImportError as exc:
        raise ImportError(f"ManiSkill3 is not installed ({exc}); run `make sim-maniskill`") from exc
    return gymnasium


class ManiSkillEnv(PoseEnvBase):
    """One ManiSkill3 task as an :class:`astra_sim.env.Env` (see the module docstring)."""

    def __init__(self, config: ManiSkillConfig | None = None) -> None:
        self.config = config or ManiSkillConfig()
        c = self.config
        self.task_spec = TASKS[c.task]
        gym = _import_maniskill()
        import torch

        self._torch = torch
        # ManiSkill warns that panda_wristcam is not in PickCube's / PushCube's robot list (it is the
        # Panda with a wrist camera, same kinematics) and that there is no CUDA: both expected here.
        ms_logger = logging.getLogger("mani_skill")
        level = ms_logger.level
        ms_logger.setLevel(logging.ERROR)
        try:
            env = gym.make(
                c.task,
                obs_mode="rgb+segmentation",
                control_mode="pd_ee_pose",
                robot_uids="panda_wristcam" if "hand_camera" in c.cameras else "panda",
                sensor_configs=dict(width=int(c.image_size), height=int(c.image_size)),
                sim_config=dict(sim_freq=SIM_FREQ_HZ, control_freq=int(c.control_rate_hz)),
                sim_backend="cpu",
                render_backend="cpu",
                num_envs=1,
                robot_init_qpos_noise=float(c.robot_init_qpos_noise),
            )
        finally:
            ms_logger.setLevel(level)
        self._env: Any = env.unwrapped  # no gym wrappers: the step limit is ours (ManiSkill's is 50)
        u = self._env
        self._arm = u.agent.controller.controllers["arm"]
        self._actors = {name: getattr(u, attr) for name, attr in self._actor_attributes().items()}
        # ManiSkill hides PickCube's goal sphere from its sensors (its state observation carries the
        # goal instead); a vision policy must see it.
        goal = self._actors.get("goal_site")
        if goal is not None and goal in u._hidden_objects:
            u._hidden_objects.remove(goal)
            goal.show_visual()  # the env's first reset (in gym.make) already hid it
        self._lut = self._segmentation_lookup()
        root = u.agent.robot.pose
        self._root_p = root.p[0].cpu().numpy().astype(np.float64)
        self._root_r = quaternion_wxyz_to_matrix(root.q[0].cpu().numpy())
        self._spec = ActionSpaceSpec(kind="continuous_pose6d", frame="absolute")
        self._low = np.array([*POSITION_LOW, *ORIENTATION_LOW, GRIPPER_CLOSED])
        self._high = np.array([*POSITION_HIGH, *ORIENTATION_HIGH, GRIPPER_OPEN])
        self._calibration = self._base_camera_calibration()
        self.steps = 0
        self.seed: int | None = None
        self._done = True
        self._expert_phase = "approach"
        self._expert_timer = 0

    @classmethod
    def from_options(cls, **options: Any) -> "ManiSkillEnv":
        return cls(ManiSkillConfig.from_dict(options))

    def close(self) -> None:
        self._env.close()

    # ---- Env protocol ------------------------------------------------------------------------
    # camera_names, image_size, action_space, action_bounds: PoseEnvBase
    @property
    def control_rate_hz(self) -> float:
        return float(self.config.control_rate_hz)

    @property
    def instance_names(self) -> dict[int, str]:
        """Mask label -> what it is (the same labels in every camera)."""
        return {i + 1: name for i, name in enumerate(self.task_spec.instance_names)}

    @property
    def proprio_names(self) -> list[str]:
        return ["tcp_x", "tcp_y", "tcp_z", "tcp_roll", "tcp_pitch", "tcp_yaw", "gripper_opening"]

    def sensor_info(self) -> dict[str, Any]:
        return {
            "proprio_names": self.proprio_names,
            "masks": True,
            "calibration": self._calibration,
            # How far from the expert's command an action still does the job (rough, for hit rates):
            # half a cube side in position, ~6 degrees in angle, and the gripper's open / closed halves.
            "tolerances": {"x": 0.01, "y": 0.01, "z": 0.01, "roll": 0.1, "pitch": 0.1, "yaw": 0.1, "gripper": 0.5},
        }

    def reset(self, seed: int) -> tuple[Observation, str]:
        self.seed = int(seed)
        obs, _ = self._env.reset(seed=self.seed)
        self.steps = 0
        self._done = False
        self._expert_phase = "approach"
        self._expert_timer = 0
        instruction = pick_template(self.task_spec.templates, self.seed, salt=sorted(TASKS).index(self.config.task))
        return self._observation(obs), instruction

    def step(self, action: np.ndarray) -> StepResult:
        if self._done:
            raise RuntimeError("maniskill: the episode is over (or never started); call reset(seed) first")
        a = check_pose_action(action, POSE6D_DIMS, self._low, self._high, periodic=(3, 5), saturating=(6,),
                              backend=f"maniskill {self.config.task}")
        ms_action = self.to_maniskill_action(a)
        self._check_reachable(ms_action)
        obs, _, _, _, info = self._env.step(ms_action)
        self.steps += 1
        success = bool(info["success"].item())
        self._done = success or self.steps >= self.config.step_limit
        out = {key: bool(v.item()) for key, v in info.items() if key != "elapsed_steps"}
        out.update(task=self.config.task, steps=self.steps)
        return StepResult(self._observation(obs), success, self._done, out)

    def expert_action(self) -> np.ndarray:
        if self.seed is None:
            raise RuntimeError("maniskill: call reset(seed) first")
        return getattr(self, f"_expert_{self.config.task.split('-')[0].lower()}")()

    # ---- action conversion -------------------------------------------------------------------
    @staticmethod
    def to_maniskill_action(action: np.ndarray) -> np.ndarray:
        """Validated project action -> ManiSkill ``pd_ee_pose`` action (float32, 7)."""
        xyz_euler = matrix_to_euler_xyz(rpy_to_matrix(action[3:6]))
        return np.array([*action[:3], *xyz_euler, 2.0 * action[6] - 1.0], dtype=np.float32)

    @staticmethod
    def from_maniskill_action(ms_action: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_maniskill_action` (roll wrapped into the action bounds)."""
        rpy = matrix_to_rpy(euler_xyz_to_matrix(ms_action[3:6]))
        rpy[0] = wrap_angle(rpy[0], ORIENTATION_LOW[0])
        return np.array([*ms_action[:3], *rpy, (float(ms_action[6]) + 1.0) / 2.0])

    def _check_reachable(self, ms_action: np.ndarray) -> None:
        """Refuse a target pose without an IK solution (ManiSkill would silently hold still)."""
        torch = self._torch
        arm = self._arm
        target = arm.compute_target_pose(None, torch.from_numpy(ms_action[None, :6]))  # absolute: no previous pose
        qpos = arm.kinematics.compute_ik(pose=target, q0=arm.articulation.get_qpos(), is_delta_pose=False,
                                         current_pose=arm.ee_pose_at_base, solver_config=arm.config.delta_solver_config)
        if qpos is None:
            raise ActionRejected("unreachable", f"maniskill {self.config.task}: no inverse-kinematics solution for "
                                                f"TCP position {np.round(ms_action[:3], 4).tolist()} with that orientation")

    # ---- observations ------------------------------------------------------------------------
    def _observation(self, obs: dict) -> Observation:
        images, masks = {}, {}
        for cam in self.config.cameras:
            data = obs["sensor_data"][cam]
            images[cam] = np.ascontiguousarray(data["rgb"][0].cpu().numpy())
            masks[cam] = self._lut[data["segmentation"][0, ..., 0].cpu().numpy().astype(np.int64)]
        return Observation(images=images, masks=masks, proprio=self._proprio())

    def _proprio(self) -> np.ndarray:
        p, rpy = self.tcp_pose()
        return np.array([*p, *rpy, self.gripper_opening()])

    def tcp_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """TCP position and (roll, pitch, yaw) in the action frame (roll wrapped into its bounds)."""
        pose = self._env.agent.tcp.pose
        p = self._root_r.T @ (pose.p[0].cpu().numpy().astype(np.float64) - self._root_p)
        rpy = matrix_to_rpy(self._root_r.T @ quaternion_wxyz_to_matrix(pose.q[0].cpu().numpy()))
        rpy[0] = wrap_angle(rpy[0], ORIENTATION_LOW[0])
        return p, rpy

    def joint_state(self) -> tuple[list[str], np.ndarray]:
        """(names, positions) of the Panda's active joints (radians; fingers in metres), for a
        ROS bridge's joint_states. Not part of the Env protocol: an optional extra."""
        robot = self._env.agent.robot
        return [j.name for j in robot.get_active_joints()], robot.get_qpos()[0].cpu().numpy().astype(np.float64)

    def gripper_opening(self) -> float:
        fingers = self._env.agent.robot.get_qpos()[0, -2:].cpu().numpy()
        return float(np.clip(fingers.sum() / PANDA_MAX_OPENING, 0.0, 1.0))

    def actor_position(self, name: str) -> np.ndarray:
        """Centre of a task actor (ManiSkill name, e.g. ``"cube"``) in the action frame."""
        p = self._actors[name].pose.p[0].cpu().numpy().astype(np.float64)
        return self._root_r.T @ (p - self._root_p)

    def _actor_yaw(self, name: str) -> float:
        r = self._root_r.T @ quaternion_wxyz_to_matrix(self._actors[name].pose.q[0].cpu().numpy())
        return math.atan2(r[1, 0], r[0, 0])

    def _actor_attributes(self) -> dict[str, str]:
        """ManiSkill actor name -> attribute of the task env holding it."""
        u = self._env
        found = {}
        for attr, value in vars(u).items():
            name = getattr(value, "name", None)
            if name in self.task_spec.actors and hasattr(value, "pose"):
                found[name] = attr
        missing = set(self.task_spec.actors) - set(found)
        if missing:
            raise RuntimeError(f"maniskill {self.config.task}: actors {sorted(missing)} not found in the task "
                               "(ManiSkill version mismatch?)")
        return found

    def _segmentation_lookup(self) -> np.ndarray:
        """ManiSkill segmentation id -> our instance label (task actors 1..K, everything else 0)."""
        by_name = {name: i + 1 for i, name in enumerate(self.task_spec.actors)}
        ids = {int(seg_id): by_name[obj.name] for seg_id, obj in self._env.segmentation_id_map.items()
               if obj.name in by_name}
        if set(ids.values()) != set(by_name.values()):
            raise RuntimeError(f"maniskill {self.config.task}: segmentation ids missing for some of {list(by_name)}")
        return label_lookup(ids, size=max(self._env.segmentation_id_map) + 1)

    def _base_camera_calibration(self) -> dict[str, dict]:
        params = self._env.scene.sensors["base_camera"].get_params()
        k = params["intrinsic_cv"][0].cpu().numpy().astype(np.float64)
        ext = params["extrinsic_cv"][0].cpu().numpy().astype(np.float64)
        if not np.allclose(self._root_r, np.eye(3), atol=1e-6):
            raise RuntimeError("maniskill: the robot base is rotated; the action frame is not a shifted world frame")
        size = int(self.config.image_size)
        h = table_homography(k, ext, size, size, plane_z=0.0, world_to_action_xy=(-self._root_p[0], -self._root_p[1]))
        self._base_camera = (k, ext)  # kept for tests (projection of object centres)
        return {"base_camera": {"table_homography": h}}

    # ---- scripted expert ---------------------------------------------------------------------
    def _move(self, target: np.ndarray, yaw: float, gripper: float) -> np.ndarray:
        """One action toward ``target`` (TCP position), at most ``expert_max_step`` (per 10 Hz step) away.

        Near the edge of the arm's reach a top-down pose high above the table has no IK solution
        while a lower one has (the flange then sits closer to shoulder height): such a target is
        lowered, or the step shortened, until it is reachable.
        """
        p, _ = self.tcp_pose()
        limit = self.config.expert_max_step * 10.0 / self.config.control_rate_hz
        delta = np.asarray(target, dtype=np.float64) - p
        dist = float(np.linalg.norm(delta))
        goal = p + delta * (limit / dist) if dist > limit else np.asarray(target, dtype=np.float64)
        candidates = [goal] + [goal - np.array([0.0, 0.0, dz]) for dz in (0.02, 0.04, 0.06)] + [(p + goal) / 2, p]
        for candidate in candidates:
            action = np.array([*np.clip(candidate, POSITION_LOW, POSITION_HIGH), DOWN_ROLL, 0.0, yaw, gripper])
            action[2] = max(action[2], CUBE_HALF)  # never drive the fingers into the table
            if self.reachable(action):
                return action
        return action

    def reachable(self, action: np.ndarray) -> bool:
        """Whether a (valid) action's pose has an inverse-kinematics solution from the current joints."""
        try:
            self._check_reachable(self.to_maniskill_action(np.asarray(action, dtype=np.float64)))
        except ActionRejected:
            return False
        return True

    def _grasp_yaws(self, name: str) -> tuple[float, float]:
        """The two top-down gripper yaws that meet the cube's faces, nearest the rest yaw first
        (a cube looks the same every 90 degrees; both stay well inside the wrist's range)."""
        offset = (self._actor_yaw(name) - REST_YAW + math.pi / 4) % (math.pi / 2) - math.pi / 4
        first = REST_YAW + offset
        return first, first - math.pi / 2 if offset > 0 else first + math.pi / 2

    def _grasp_yaw(self, name: str, neighbour: str | None = None) -> float:
        """Grasp yaw for cube ``name``; with a ``neighbour`` cube, the one whose fingers open across
        the line to it, so the open fingers do not land on the neighbour."""
        yaws = self._grasp_yaws(name)
        if neighbour is None:
            return yaws[0]
        line = self.actor_position(neighbour)[:2] - self.actor_position(name)[:2]
        line = line / max(float(np.linalg.norm(line)), 1e-9)
        # Fingers open along the TCP's y axis: (sin yaw, -cos yaw) for a downward-pointing TCP.
        return min(yaws, key=lambda y: abs(math.sin(y) * line[0] - math.cos(y) * line[1]))

    def _grasped(self, name: str) -> bool:
        return bool(self._env.agent.is_grasping(self._actors[name]).item())

    def _pick(self, name: str, neighbour: str | None = None) -> np.ndarray | None:
        """Approach, descend and close on cube ``name``; None once it is held (the caller carries it)."""
        cube = self.actor_position(name)
        yaw = self._grasp_yaw(name, neighbour)
        p, rpy = self.tcp_pose()
        if self._grasped(name) and self._expert_phase in ("close", "carry"):
            self._expert_phase = "carry"
            return None
        if self._expert_phase == "carry":  # dropped it: start over
            self._expert_phase = "approach"
        if self._expert_phase == "close":
            self._expert_timer += 1
            if self._expert_timer > 6 or self.gripper_opening() < 0.5 * (2 * CUBE_HALF) / PANDA_MAX_OPENING:
                self._expert_phase = "retreat"  # closed on nothing
            return self._move(cube, yaw, GRIPPER_CLOSED)
        if self._expert_phase == "retreat":
            if p[2] > cube[2] + 0.07:
                self._expert_phase = "approach"
            return self._move(np.array([p[0], p[1], cube[2] + 0.1]), yaw, GRIPPER_OPEN)
        above = cube + np.array([0.0, 0.0, 0.08])
        xy_err = float(np.linalg.norm(p[:2] - cube[:2]))
        yaw_err = abs(wrap_angle(rpy[2] - yaw))
        if self._expert_phase == "approach":
            if xy_err < 0.01 and yaw_err < 0.08 and self.gripper_opening() > 0.8:
                self._expert_phase = "descend"
            else:
                return self._move(above, yaw, GRIPPER_OPEN)
        # descend
        if xy_err > 0.02:
            self._expert_phase = "approach"
            return self._move(above, yaw, GRIPPER_OPEN)
        if abs(p[2] - cube[2]) < 0.006:
            self._expert_phase = "close"
            self._expert_timer = 0
            return self._move(cube, yaw, GRIPPER_CLOSED)
        return self._move(cube, yaw, GRIPPER_OPEN)

    def _expert_pickcube(self) -> np.ndarray:
        action = self._pick("cube")
        if action is not None:
            return action
        p, rpy = self.tcp_pose()
        cube, goal = self.actor_position("cube"), self.actor_position("goal_site")
        # The cube sits between the fingers: move the TCP by the cube's remaining offset to the goal.
        return self._move(p + (goal - cube), rpy[2], GRIPPER_CLOSED)

    def _expert_stackcube(self) -> np.ndarray:
        a, b = self.actor_position("cubeA"), self.actor_position("cubeB")
        p, rpy = self.tcp_pose()
        on_top = b + np.array([0.0, 0.0, 2 * CUBE_HALF])
        placed = float(np.linalg.norm(a[:2] - b[:2])) < 0.01 and abs(a[2] - on_top[2]) < 0.006
        if self._expert_phase == "release":
            if not placed:  # knocked off while releasing: pick it up again
                self._expert_phase = "approach"
            else:  # let go, then back off upwards so the robot does not touch it
                up = p[2] + 0.02 if self.gripper_opening() > 0.7 else p[2]
                return self._move(np.array([p[0], p[1], min(up, on_top[2] + 0.12)]), rpy[2], GRIPPER_OPEN)
        action = self._pick("cubeA", neighbour="cubeB")
        if action is not None:
            return action
        if placed:
            self._expert_phase = "release"
            return self._move(p, rpy[2], GRIPPER_OPEN)
        # Carry above B first (clear of it), then lower onto it; the TCP keeps its offset to cube A.
        offset = p - a
        xy_err = float(np.linalg.norm(a[:2] - b[:2]))
        hover = on_top + np.array([0.0, 0.0, 0.04])
        if xy_err > 0.008:
            target = np.array([hover[0], hover[1], max(hover[2], a[2]) if xy_err > 0.03 else hover[2]])
        else:
            target = on_top + np.array([0.0, 0.0, 0.002])
        return self._move(target + offset, rpy[2], GRIPPER_CLOSED)

    def _expert_pushcube(self) -> np.ndarray:
        cube, goal = self.actor_position("cube"), self.actor_position("goal_region")
        p, _ = self.tcp_pose()
        direction = goal[:2] - cube[:2]
        distance = float(np.linalg.norm(direction))
        direction = direction / max(distance, 1e-9)
        push_z = CUBE_HALF + 0.005
        # Behind the cube (seen from the goal), a finger's width off its face.
        behind = cube[:2] - direction * (CUBE_HALF + 0.025)
        lateral = float(np.cross(direction, p[:2] - cube[:2]))
        along = float(np.dot(p[:2] - cube[:2], direction))
        yaw = REST_YAW
        if abs(lateral) < 0.01 and along < -CUBE_HALF and p[2] < push_z + 0.01:
            # In contact position: push through the cube's centre towards the goal centre.
            target = np.array([*(p[:2] + direction * min(distance, 0.05)), push_z])
            return self._move(target, yaw, GRIPPER_CLOSED)
        if np.linalg.norm(p[:2] - behind) > 0.01:
            # Travel high to the point behind the cube, then drop down there.
            return self._move(np.array([*behind, max(p[2], 0.08)]), yaw, GRIPPER_CLOSED)
        return self._move(np.array([*behind, push_z]), yaw, GRIPPER_CLOSED)
