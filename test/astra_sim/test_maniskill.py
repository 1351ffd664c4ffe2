"""ManiSkill3 backend (astra_sim.maniskill): protocol, action conversion, masks, expert.

Runs only where `make sim-maniskill` was run (mani_skill + a Vulkan driver); skipped otherwise.
One two-camera PickCube env is shared by the module (the first ManiSkill env in a process takes
~10-15 s to build); the Push/Stack expert checks use base-camera-only envs (a third of the
render cost).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("mani_skill", reason="ManiSkill3 is not installed (run `make sim-maniskill`)")

import torch  # noqa: E402

from astra_sim.env import Env, Observation, make_env  # noqa: E402
from astra_sim.maniskill import TASKS, ManiSkillConfig, ManiSkillEnv  # noqa: E402
from astra_sim.pose_sim import (  # noqa: E402
    ActionRejected,
    euler_xyz_to_matrix,
    matrix_to_rpy,
    pick_template,
    project_points,
    rpy_to_matrix,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def env() -> ManiSkillEnv:
    e = make_env("maniskill", task="PickCube-v1")
    yield e
    e.close()


def test_protocol_and_shapes(env: ManiSkillEnv) -> None:
    assert isinstance(env, Env)
    assert env.camera_names == ["base_camera", "hand_camera"]
    assert env.action_space.kind == "continuous_pose6d" and env.action_space.frame == "absolute"
    low, high = env.action_bounds
    assert low.shape == high.shape == (7,) and (low < high).all()
    obs, instruction = env.reset(0)
    assert isinstance(obs, Observation) and isinstance(instruction, str) and instruction
    for cam in env.camera_names:
        assert obs.images[cam].shape == (128, 128, 3) and obs.images[cam].dtype == np.uint8
        assert obs.masks[cam].shape == (128, 128) and np.issubdtype(obs.masks[cam].dtype, np.integer)
    info = env.sensor_info()
    assert obs.proprio is not None and obs.proprio.shape == (len(info["proprio_names"]),)
    assert info["masks"] is True
    assert np.asarray(info["calibration"]["base_camera"]["table_homography"]).shape == (3, 3)
    assert set(info["tolerances"]) <= set(env.action_space.dim_names)
    # proprio is the TCP pose in the action frame: pointing down, gripper open at reset
    assert obs.proprio[3] == pytest.approx(math.pi, abs=0.15) and obs.proprio[6] > 0.9


def test_reset_is_deterministic(env: ManiSkillEnv) -> None:
    a_obs, a_text = env.reset(7)
    a_step = env.step(env.expert_action()).observation
    b_obs, b_text = env.reset(7)
    b_step = env.step(env.expert_action()).observation
    assert a_text == b_text
    for cam in env.camera_names:
        np.testing.assert_array_equal(a_obs.images[cam], b_obs.images[cam])
        np.testing.assert_array_equal(a_step.masks[cam], b_step.masks[cam])
    np.testing.assert_allclose(a_step.proprio, b_step.proprio, atol=1e-6)
    c_obs, _ = env.reset(8)
    assert not np.array_equal(a_obs.images["base_camera"], c_obs.images["base_camera"])
    texts = {pick_template(TASKS["PickCube-v1"].templates, seed, salt=0) for seed in range(12)}
    assert len(texts) >= 2, "instructions should come from several templates"


def test_euler_conversion_matches_maniskill_and_round_trips() -> None:
    from mani_skill.utils.geometry.rotation_conversions import euler_angles_to_matrix

    rng = np.random.default_rng(0)
    for _ in range(50):
        angles = rng.uniform(-1.4, 1.4, size=3)
        ours = euler_xyz_to_matrix(angles)
        theirs = euler_angles_to_matrix(torch.tensor(angles[None]), "XYZ")[0].numpy()
        np.testing.assert_allclose(ours, theirs, atol=1e-9)
        action = np.array([0.6, 0.0, 0.2, rng.uniform(math.pi / 2, 3 * math.pi / 2), rng.uniform(-1.5, 1.5),
                           rng.uniform(-math.pi, math.pi), rng.uniform(0, 1)])
        ms = ManiSkillEnv.to_maniskill_action(action)
        # ManiSkill's rotation of the converted action is the project rotation of the original one
        np.testing.assert_allclose(euler_angles_to_matrix(torch.tensor(ms[None, 3:6].astype(np.float64)), "XYZ")[0],
                                   rpy_to_matrix(action[3:6]), atol=1e-5)
        np.testing.assert_allclose(ManiSkillEnv.from_maniskill_action(ms), action, atol=1e-5)
    assert ManiSkillEnv.to_maniskill_action(np.array([0.6, 0, 0.2, math.pi, 0, 0, 0.0]))[6] == -1.0  # closed
    assert ManiSkillEnv.to_maniskill_action(np.array([0.6, 0, 0.2, math.pi, 0, 0, 1.0]))[6] == 1.0  # open


def test_commanded_pose_is_reached(env: ManiSkillEnv) -> None:
    env.reset(1)
    target = np.array([0.58, 0.05, 0.15, math.pi, 0.1, math.pi / 2 + 0.3, 1.0])
    for _ in range(12):
        env.step(target)
    p, rpy = env.tcp_pose()
    np.testing.assert_allclose(p, target[:3], atol=0.01)
    np.testing.assert_allclose(rpy_to_matrix(rpy), rpy_to_matrix(target[3:6]), atol=0.03)


def test_bad_actions_are_rejected_without_stepping(env: ManiSkillEnv) -> None:
    env.reset(2)
    good = np.array([0.6, 0.0, 0.2, math.pi, 0.0, math.pi / 2, 1.0])
    cases = {
        "malformed": [np.zeros(6), "abc", np.zeros((7, 1))],
        "nonfinite": [np.where(np.arange(7) == 0, np.nan, good), np.where(np.arange(7) == 2, np.inf, good)],
        "out_of_bounds": [np.where(np.arange(7) == 0, 2.0, good),  # x far outside the workspace
                          np.where(np.arange(7) == 3, 0.0, good)],  # TCP pointing up
        "unreachable": [np.array([0.95, 0.45, 0.6, math.pi, 0.0, 0.0, 1.0])],  # corner of the box
    }
    for reason, actions in cases.items():
        for action in actions:
            with pytest.raises(ActionRejected) as err:
                env.step(action)
            assert err.value.reason == reason, (action, err.value)
            assert isinstance(err.value, ValueError) and "maniskill" in str(err.value)
    assert env.steps == 0
    # a full turn on roll / yaw is the same pose; a gripper past fully open saturates
    env.step(good + np.array([0, 0, 0, -2 * math.pi, 0, 2 * math.pi, 0.5]))
    assert env.steps == 1


def test_masks_cover_the_objects(env: ManiSkillEnv) -> None:
    env.reset(3)
    assert env.instance_names == {1: "red cube", 2: "green goal sphere"}
    for _ in range(8):  # move the arm aside: at rest it hides the goal sphere from the base camera
        obs = env.step(np.array([0.45, 0.25, 0.35, math.pi, 0.0, math.pi / 2, 1.0])).observation
    k, ext = env._base_camera
    size = env.image_size[0]
    for label, actor in ((1, "cube"), (2, "goal_site")):
        world = env.actor_position(actor) + env._root_p
        col, row = project_points(k, ext, world, size, size)[0]
        assert obs.masks["base_camera"][int(row), int(col)] == label
    # the table homography maps the pixel of the cube's footprint back to its (x, y)
    cube = env.actor_position("cube")
    col, row = project_points(k, ext, np.array([*(cube[:2] + env._root_p[:2]), 0.0]), size, size)[0]
    h = np.asarray(env.sensor_info()["calibration"]["base_camera"]["table_homography"])
    xy = h @ np.array([col / size, row / size, 1.0])
    np.testing.assert_allclose(xy[:2] / xy[2], cube[:2], atol=1e-4)
    assert set(np.unique(obs.masks["hand_camera"])) <= {0, 1, 2}


def test_expert_solves_pickcube(env: ManiSkillEnv) -> None:
    for seed in (100,):
        env.reset(seed)
        done = success = False
        while not done:
            _, success, done, _ = env.step(env.expert_action())
        assert success, f"PickCube expert failed on seed {seed}"


@pytest.mark.parametrize("task", ["PushCube-v1", "StackCube-v1"])
def test_expert_solves_push_and_stack(task: str) -> None:
    e = ManiSkillEnv(ManiSkillConfig(task=task, cameras=("base_camera",), image_size=64))
    try:
        e.reset(5)
        done = success = False
        while not done:
            _, success, done, _ = e.step(e.expert_action())
        assert success, f"{task} expert failed"
        assert e.steps < e.config.step_limit
    finally:
        e.close()


def test_config_is_validated() -> None:
    for bad in (dict(task="OpenCabinetDrawer-v1"), dict(image_size=8), dict(cameras=["hand_camera"]),
                dict(control_rate_hz=30), dict(max_steps=-1), dict(colour="red")):
        with pytest.raises(ValueError):
            ManiSkillConfig.from_dict(bad)


def test_matrix_to_rpy_inverts_rpy_to_matrix() -> None:
    rng = np.random.default_rng(1)
    for _ in range(100):
        rpy = rng.uniform([-math.pi, -1.5, -math.pi], [math.pi, 1.5, math.pi])
        np.testing.assert_allclose(matrix_to_rpy(rpy_to_matrix(rpy)), rpy, atol=1e-9)
