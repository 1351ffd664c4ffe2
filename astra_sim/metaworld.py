"""Meta-World v3 tasks (Sawyer arm, MuJoCo 3) behind the :class:`astra_sim.env.Env` protocol.

Install with ``make sim-metaworld`` (scripts/setup_metaworld.sh). Tasks (Meta-World's own names,
with or without the ``-v3`` suffix): ``reach``, ``push``, ``pick-place``, ``door-open``,
``drawer-open``, ``button-press``; any other v3 task that has a scripted policy also works.

Actions (``continuous_pose6d``, absolute): ``x y z roll pitch yaw gripper``.

* ``x y z``: target position of the hand (Meta-World's ``hand`` body, what its observations call
  the hand position) in Meta-World's world frame, metres (x to the robot's right, y away from
  it, z up; the table top is z = 0). Meta-World itself takes *delta* actions: each step moves
  its mocap target by ``clip(a, -1, 1) * 1 cm`` and the hand follows the mocap through a soft
  weld. :meth:`MetaWorldEnv.step` converts with a clipped proportional step,
  ``a = clip(position_gain * (target - hand) / 1 cm, -1, 1)``: a target more than
  ``1 cm / position_gain`` (6.7 cm at the default gain 0.15) away is approached at full speed,
  a nearer one proportionally. Held, a target is reached and kept (within 5 mm in ~20-45 steps);
  a gain near 1 makes the lagging hand oscillate around it by ~2 cm.
  The action bounds are the mocap box (``mocap_low`` .. ``mocap_high``); a target outside it is
  refused as unreachable.
* ``roll pitch yaw``: **ignored**. Meta-World welds the hand to a mocap body whose orientation is
  fixed (quaternion (1, 0, 1, 0)); no command can turn it. The bounds are [0, 0] to say so, the
  expert writes 0, and any finite value is accepted and has no effect (non-finite is refused).
* ``gripper``: 0 = closed .. 1 = open, mapped to Meta-World's grab effort ``1 - 2 g``
  (+1 closes, -1 opens); values past 0 / 1 saturate.

Observations: two cameras of the Meta-World scene (default ``corner``, turned upright because
MuJoCo renders it upside down, and ``gripperPOV`` on the hand), rendered with MuJoCo's offscreen
renderer with multisampling and shadows off (~15 ms per 128x128 image instead of ~125 ms);
a uint16 instance mask per camera from MuJoCo's segmentation rendering (the task's own bodies,
grouped by their root body, and the goal marker; labels in :attr:`MetaWorldEnv.instance_names});
proprio = hand xyz + gripper opening (Meta-World's finger distance / 0.1 m, 0 closed .. 1 open).

The expert is Meta-World's scripted policy for the task (``metaworld.policies``), whose delta
action is turned into the absolute target ``hand + delta * 1 cm / position_gain``: through the
conversion above it reproduces the policy's action exactly (unless the target falls outside the
action bounds and is clipped into them).
"""

from __future__ import annotations

import atexit
import os
import warnings
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from astra_core.action_space import POSE6D_DIMS, ActionSpaceSpec
from astra_sim.env import Observation, StepResult
from astra_sim.pose_sim import (
    PoseEnvBase,
    check_pose_action,
    config_from_dict,
    label_lookup,
    mujoco_camera_to_cv,
    pick_template,
    pinhole_intrinsics,
    table_homography,
)

CAMERAS: tuple[str, ...] = ("corner", "gripperPOV")
# MuJoCo object types in a segmentation image (mjtObj): geoms carry bodies, sites the goal marker.
MJ_OBJ_GEOM, MJ_OBJ_SITE = 5, 6
# Root bodies that are not task objects: the robot (root of "hand"), the table, its wall, the mocap.
SCENE_BODIES = ("hand", "tablelink", "RetainingWall", "mocap")
GOAL_SITE = "goal"
CONTROL_RATE_HZ = 80.0  # Meta-World: 5 physics steps of 2.5 ms per step
MAX_PATH_LENGTH = 500  # Meta-World refuses to step past this
ACTION_SCALE = 0.01  # metres per Meta-World step for a full delta action (its action_scale)

TEMPLATES: dict[str, tuple[str, ...]] = {
    "reach-v3": ("reach the red goal point", "move the gripper to the red ball",
                 "put the gripper at the red target", "reach for the red sphere"),
    "push-v3": ("push the puck to the green goal", "slide the puck onto the green point",
                "push the red puck to the green target", "move the puck to the goal by pushing it"),
    "pick-place-v3": ("pick up the puck and place it at the blue goal", "move the puck to the blue point in the air",
                      "grasp the red puck and put it at the blue target", "pick and place the puck at the goal"),
    "door-open-v3": ("open the door", "pull the door open", "swing the door open by its handle",
                     "open the black box's door"),
    "drawer-open-v3": ("open the drawer", "pull the drawer out", "slide the green drawer open",
                       "pull the drawer open by its handle"),
    "button-press-v3": ("press the button", "push the red button in", "press the button on the yellow box",
                        "push the button forward"),
}
# Default step limits: about 1.5x the longest successful scripted-expert episode on 50 seeds.
DEFAULT_MAX_STEPS: dict[str, int] = {"reach-v3": 110, "push-v3": 110, "pick-place-v3": 100,
                                     "door-open-v3": 150, "drawer-open-v3": 140, "button-press-v3": 100}
GENERIC_TEMPLATES = ("complete the {task} task", "do the {task} task", "{task}")


def _import_metaworld() -> tuple[Any, Any, Any]:
    # MuJoCo picks its GL backend when it is first imported: headless EGL unless the user chose.
    os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        import mujoco
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS
        from metaworld.policies import ENV_POLICY_MAP
    except ImportError as exc:
        raise ImportError(f"Meta-World is not installed ({exc}); run `make sim-metaworld`") from exc
    return mujoco, ALL_V3_ENVIRONMENTS, ENV_POLICY_MAP


_LIVE_ENVS: "weakref.WeakSet[MetaWorldEnv]" = weakref.WeakSet()
_EXIT_HOOK: list[bool] = []


def _close_at_exit(env: "MetaWorldEnv") -> None:
    """Close ``env``'s GL contexts at interpreter exit, before MuJoCo's own exit hook terminates
    EGL (otherwise every renderer's __del__ prints an EGLError). atexit runs hooks last-in
    first-out, and this one is registered after MuJoCo's (which comes with the first renderer)."""
    _LIVE_ENVS.add(env)
    if not _EXIT_HOOK:
        atexit.register(lambda: [e.close() for e in list(_LIVE_ENVS)])
        _EXIT_HOOK.append(True)


def task_name(task: str) -> str:
    """``"push"`` / ``"push-v3"`` -> ``"push-v3"`` (Meta-World's name)."""
    return task if task.endswith("-v3") else f"{task}-v3"


@dataclass
class MetaWorldConfig:
    """Everything that defines a Meta-World env; validated at construction."""

    task: str = "reach"
    image_size: int = 128  # square images
    cameras: tuple[str, ...] = CAMERAS  # any cameras of the Meta-World scene (checked against the model)
    max_steps: int = 0  # step limit per episode; 0 = the task's default
    position_gain: float = 0.15  # of the absolute -> delta conversion (see the module docstring)

    def __post_init__(self) -> None:
        self.cameras = tuple(self.cameras)
        if not isinstance(self.task, str) or not self.task:
            raise ValueError(f"metaworld.task={self.task!r}: must be a task name such as 'push' or 'push-v3'")
        if not 16 <= int(self.image_size) <= 480:
            raise ValueError(f"metaworld.image_size={self.image_size}: must be in [16, 480]")
        if not self.cameras or len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"metaworld.cameras={list(self.cameras)}: must be distinct camera names")
        if not 0 <= int(self.max_steps) <= MAX_PATH_LENGTH:
            raise ValueError(f"metaworld.max_steps={self.max_steps}: must be in [0, {MAX_PATH_LENGTH}] (0 = task default)")
        if not 0.01 <= self.position_gain <= 1.0:
            raise ValueError(f"metaworld.position_gain={self.position_gain}: must be in [0.01, 1]")

    @property
    def task_id(self) -> str:
        return task_name(self.task)

    @property
    def step_limit(self) -> int:
        return int(self.max_steps) or DEFAULT_MAX_STEPS.get(self.task_id, 300)

    @classmethod
    def from_dict(cls, options: dict[str, Any]) -> "MetaWorldConfig":
        return config_from_dict(cls, options, "metaworld")


class MetaWorldEnv(PoseEnvBase):
    """One Meta-World v3 task as an :class:`astra_sim.env.Env` (see the module docstring)."""

    def __init__(self, config: MetaWorldConfig | None = None) -> None:
        self.config = config or MetaWorldConfig()
        c = self.config
        mujoco, envs, policies = _import_metaworld()
        self._mujoco = mujoco
        if c.task_id not in envs or c.task_id not in policies:
            known = sorted(set(envs) & set(policies))
            raise ValueError(f"metaworld.task={c.task!r}: unknown; tasks with a scripted expert: {known}")
        env = envs[c.task_id]()
        # Goal observable (the scripted policies read the goal from the state vector) and a fresh
        # random scene per seed from the env's own seeded generator.
        env._partially_observable = False
        # The observation space is a cached property built for the hidden-goal variant; observations
        # are clipped to it, which would zero the goal. Drop it so it is rebuilt goal-observable.
        vars(env).pop("sawyer_observation_space", None)
        env._freeze_rand_vec = False
        env._set_task_called = True
        env.seeded_rand_vec = True
        self._env: Any = env
        self._policy = policies[c.task_id]()
        model = env.model
        missing = [cam for cam in c.cameras if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, cam) < 0]
        if missing:
            names = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_CAMERA, i) for i in range(model.ncam)]
            raise ValueError(f"metaworld.cameras: {missing} not in the scene; cameras: {names}")
        # Multisampling and shadow maps make each render ~8x slower on a software GL.
        model.vis.quality.offsamples = 0
        model.vis.quality.shadowsize = 0
        size = int(c.image_size)
        self._renderer = mujoco.Renderer(model, size, size)
        self._segmenter = mujoco.Renderer(model, size, size)
        self._segmenter.enable_segmentation_rendering()
        self._closed = False
        _close_at_exit(self)
        self._instance_names, self._geom_lut, self._site_lut = self._instances()
        self._spec = ActionSpaceSpec(kind="continuous_pose6d", frame="absolute")
        self._low = np.array([*env.mocap_low, 0.0, 0.0, 0.0, 0.0], dtype=np.float64)
        self._high = np.array([*env.mocap_high, 0.0, 0.0, 0.0, 1.0], dtype=np.float64)
        self._templates = TEMPLATES.get(c.task_id) or tuple(
            t.format(task=c.task_id[:-3].replace("-", " ")) for t in GENERIC_TEMPLATES)
        self._obs: np.ndarray | None = None
        env.seed(0)
        self._obs, _ = env.reset()  # camera poses (incl. the hand camera) need one forward pass
        self._upside_down = {cam: self._camera_upside_down(cam) for cam in c.cameras}
        self._calibration = self._fixed_camera_calibration()
        self.steps = 0
        self.seed: int | None = None
        self._done = True

    @classmethod
    def from_options(cls, **options: Any) -> "MetaWorldEnv":
        return cls(MetaWorldConfig.from_dict(options))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._renderer.close()
            self._segmenter.close()
            self._env.close()

    # ---- Env protocol ------------------------------------------------------------------------
    # camera_names, image_size, action_space, action_bounds: PoseEnvBase
    @property
    def control_rate_hz(self) -> float:
        return CONTROL_RATE_HZ

    @property
    def instance_names(self) -> dict[int, str]:
        """Mask label -> what it is (the same labels in every camera)."""
        return dict(self._instance_names)

    @property
    def proprio_names(self) -> list[str]:
        return ["hand_x", "hand_y", "hand_z", "gripper_opening"]

    def sensor_info(self) -> dict[str, Any]:
        return {
            "proprio_names": self.proprio_names,
            "masks": True,
            "calibration": self._calibration,
            # Rough per-dimension slack of a still-successful command: one Meta-World step (1 cm)
            # in position, and the gripper's open / closed halves; orientation is ignored.
            "tolerances": {"x": 0.01, "y": 0.01, "z": 0.01, "roll": 1.0, "pitch": 1.0, "yaw": 1.0, "gripper": 0.5},
        }

    def reset(self, seed: int) -> tuple[Observation, str]:
        self.seed = int(seed)
        # Meta-World's reset leaves MuJoCo's solver warm-start and the mocap of the previous
        # episode in place, so the same seed would differ in the last bits: clear all of it first.
        self._mujoco.mj_resetData(self._env.model, self._env.data)
        self._env.seed(self.seed)
        self._obs, _ = self._env.reset()
        self.steps = 0
        self._done = False
        instruction = pick_template(self._templates, self.seed, salt=len(self.config.task_id))
        return self._observation(), instruction

    def step(self, action: np.ndarray) -> StepResult:
        if self._done:
            raise RuntimeError("metaworld: the episode is over (or never started); call reset(seed) first")
        a = check_pose_action(action, POSE6D_DIMS, self._low, self._high, saturating=(6,), ignored=(3, 4, 5),
                              backend=f"metaworld {self.config.task_id}")
        self._obs, _, _, _, info = self._env.step(self.to_metaworld_action(a))
        self.steps += 1
        success = bool(info.get("success", 0.0) > 0.5)
        self._done = success or self.steps >= self.config.step_limit
        out = {key: float(v) for key, v in info.items() if np.isscalar(v)}
        out.update(task=self.config.task_id, steps=self.steps)
        return StepResult(self._observation(), success, self._done, out)

    def expert_action(self) -> np.ndarray:
        if self.seed is None or self._obs is None:
            raise RuntimeError("metaworld: call reset(seed) first")
        with warnings.catch_warnings():  # the policies warn on every call that their gains saturate
            warnings.simplefilter("ignore", UserWarning)
            delta = np.clip(np.asarray(self._policy.get_action(self._obs), dtype=np.float64), -1.0, 1.0)
        reach = ACTION_SCALE / self.config.position_gain
        target = np.clip(self.hand_position() + delta[:3] * reach, self._low[:3], self._high[:3])
        return np.array([*target, 0.0, 0.0, 0.0, (1.0 - delta[3]) / 2.0])

    # ---- action conversion -------------------------------------------------------------------
    def to_metaworld_action(self, action: np.ndarray) -> np.ndarray:
        """Validated absolute action -> Meta-World's (delta xyz, grab effort), each in [-1, 1]."""
        error = action[:3] - self.hand_position()
        delta = np.clip(self.config.position_gain * error / ACTION_SCALE, -1.0, 1.0)
        return np.array([*delta, 1.0 - 2.0 * action[6]], dtype=np.float32)

    def hand_position(self) -> np.ndarray:
        return np.array(self._env.get_endeff_pos(), dtype=np.float64)

    # ---- observations ------------------------------------------------------------------------
    def _observation(self) -> Observation:
        data = self._env.data
        images, masks = {}, {}
        for cam in self.config.cameras:
            self._renderer.update_scene(data, camera=cam)
            rgb = self._renderer.render()
            self._segmenter.update_scene(data, camera=cam)
            seg = self._segmenter.render()
            mask = self._label_image(seg)
            if self._upside_down[cam]:
                rgb, mask = rgb[::-1, ::-1], mask[::-1, ::-1]
            images[cam] = np.ascontiguousarray(rgb)
            masks[cam] = np.ascontiguousarray(mask)
        assert self._obs is not None
        proprio = np.array([*self.hand_position(), float(self._obs[3])])
        return Observation(images=images, masks=masks, proprio=proprio)

    def _label_image(self, seg: np.ndarray) -> np.ndarray:
        ids, types = seg[..., 0], seg[..., 1]
        labels = np.zeros(ids.shape, dtype=np.uint16)
        geom = types == MJ_OBJ_GEOM
        labels[geom] = self._geom_lut[ids[geom]]
        site = types == MJ_OBJ_SITE
        labels[site] = self._site_lut[ids[site]]
        return labels

    def _instances(self) -> tuple[dict[int, str], np.ndarray, np.ndarray]:
        """Task instances: one per root body outside the robot / table / wall / mocap, in body
        order, then the goal marker site; returns (label -> name, geom lut, site lut)."""
        mj, model = self._mujoco, self._env.model
        scene_roots = {0}
        for name in SCENE_BODIES:
            body = mj.mj_name2id(model, mj.mjtObj.mjOBJ_BODY, name)
            if body >= 0:
                scene_roots.add(int(model.body_rootid[body]))
        names: dict[int, str] = {}
        root_label: dict[int, int] = {}
        for body in range(model.nbody):
            root = int(model.body_rootid[body])
            if root not in scene_roots and root not in root_label:
                root_label[root] = len(root_label) + 1
                names[root_label[root]] = mj.mj_id2name(model, mj.mjtObj.mjOBJ_BODY, root) or f"body{root}"
        geoms = {g: root_label[int(model.body_rootid[model.geom_bodyid[g]])] for g in range(model.ngeom)
                 if int(model.body_rootid[model.geom_bodyid[g]]) in root_label}
        sites: dict[int, int] = {}
        goal = mj.mj_name2id(model, mj.mjtObj.mjOBJ_SITE, GOAL_SITE)
        if goal >= 0 and model.site_rgba[goal][3] > 0:
            sites[goal] = len(names) + 1
            names[sites[goal]] = GOAL_SITE
        return names, label_lookup(geoms, model.ngeom), label_lookup(sites, model.nsite)

    # ---- cameras -----------------------------------------------------------------------------
    def camera_matrices(self, cam: str) -> tuple[np.ndarray, np.ndarray]:
        """(intrinsics, OpenCV world-to-camera extrinsics) of a camera as rendered (before any flip)."""
        mj, model, data = self._mujoco, self._env.model, self._env.data
        cid = mj.mj_name2id(model, mj.mjtObj.mjOBJ_CAMERA, cam)
        size = int(self.config.image_size)
        k = pinhole_intrinsics(np.deg2rad(model.cam_fovy[cid]), size, size)
        return k, mujoco_camera_to_cv(data.cam_xpos[cid], data.cam_xmat[cid])

    def camera_upside_down(self, cam: str) -> bool:
        return self._upside_down[cam]

    def _camera_upside_down(self, cam: str) -> bool:
        """A camera whose image-up direction points below the horizon renders upside down
        (Meta-World's corner cameras): its images are turned by 180 degrees."""
        mj, model, data = self._mujoco, self._env.model, self._env.data
        cid = mj.mj_name2id(model, mj.mjtObj.mjOBJ_CAMERA, cam)
        up = data.cam_xmat[cid].reshape(3, 3)[:, 1]  # the camera's y axis (image up) in the world
        return bool(up[2] < 0)

    def _fixed_camera_calibration(self) -> dict[str, dict]:
        """Table homographies of the cameras fixed in the world (not of the hand camera)."""
        model, out = self._env.model, {}
        size = int(self.config.image_size)
        for cam in self.config.cameras:
            cid = self._mujoco.mj_name2id(model, self._mujoco.mjtObj.mjOBJ_CAMERA, cam)
            if int(model.cam_bodyid[cid]) != 0:
                continue  # mounted on a moving body
            k, ext = self.camera_matrices(cam)
            out[cam] = {"table_homography": table_homography(k, ext, size, size, plane_z=0.0,
                                                             rotate180=self._upside_down[cam])}
        return out
