"""Meta-World backend (astra_sim.metaworld): protocol, action conversion, masks, expert.

Runs only where `make sim-metaworld` was run (metaworld + MuJoCo with EGL); skipped otherwise.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
pytest.importorskip("metaworld", reason="Meta-World is not installed (run `make sim-metaworld`)")

from astra_sim.env import Env, Observation, make_env  # noqa: E402
from astra_sim.metaworld import MetaWorldConfig, MetaWorldEnv  # noqa: E402
from astra_sim.pose_sim import ActionRejected, project_points  # noqa: E402


@pytest.fixture(scope="module")
def env() -> MetaWorldEnv:
    e = make_env("metaworld", task="push")
    yield e
    e.close()


def test_protocol_and_shapes(env: MetaWorldEnv) -> None:
    assert isinstance(env, Env)
    assert env.camera_names == ["corner", "gripperPOV"]
    assert env.action_space.kind == "continuous_pose6d" and env.action_space.frame == "absolute"
    low, high = env.action_bounds
    # orientation is ignored: zero-width bounds say so
    np.testing.assert_array_equal(low[3:6], 0.0)
    np.testing.assert_array_equal(high[3:6], 0.0)
    assert (low[:3] < high[:3]).all() and (low[6], high[6]) == (0.0, 1.0)
    obs, instruction = env.reset(0)
    assert isinstance(obs, Observation) and instruction
    for cam in env.camera_names:
        assert obs.images[cam].shape == (128, 128, 3) and obs.images[cam].dtype == np.uint8
        assert obs.images[cam].std() > 5, f"{cam} image is blank"
        assert obs.masks[cam].shape == (128, 128)
    info = env.sensor_info()
    assert obs.proprio is not None and obs.proprio.shape == (len(info["proprio_names"]),) == (4,)
    np.testing.assert_allclose(obs.proprio[:3], env.hand_position())
    assert list(info["calibration"]) == ["corner"]  # the hand camera moves: no fixed homography
    assert env.control_rate_hz == 80.0


def test_reset_is_deterministic(env: MetaWorldEnv) -> None:
    a, text_a = env.reset(11)
    a1 = env.step(env.expert_action()).observation
    b, text_b = env.reset(11)
    b1 = env.step(env.expert_action()).observation
    assert text_a == text_b
    for cam in env.camera_names:
        np.testing.assert_array_equal(a.images[cam], b.images[cam])
        np.testing.assert_array_equal(a1.masks[cam], b1.masks[cam])
    np.testing.assert_array_equal(a1.proprio, b1.proprio)
    c, _ = env.reset(12)
    assert not np.array_equal(a.images["corner"], c.images["corner"])


def test_expert_conversion_reproduces_the_policy(env: MetaWorldEnv) -> None:
    env.reset(3)
    for _ in range(5):
        raw = np.clip(env._policy.get_action(env._obs), -1, 1)
        action = env.expert_action()
        np.testing.assert_allclose(env.to_metaworld_action(action), raw, atol=1e-5)
        env.step(action)


def test_absolute_targets_use_a_clipped_proportional_step(env: MetaWorldEnv) -> None:
    env.reset(4)
    hand = env.hand_position()
    gain = env.config.position_gain
    near = np.array([*(hand + [0.04, -0.02, 0.0]), 0, 0, 0, 1.0])
    np.testing.assert_allclose(env.to_metaworld_action(near), [4 * gain, -2 * gain, 0.0, -1.0], atol=1e-5)
    far = np.array([*(hand + [0.3, 0.0, -0.1]), 0, 0, 0, 0.0])
    np.testing.assert_allclose(env.to_metaworld_action(far), [1.0, 0.0, -1.0, 1.0], atol=1e-6)
    target = hand + np.array([0.05, 0.03, 0.0])
    for _ in range(40):
        env.step(np.array([*target, 0, 0, 0, 1.0]))
    np.testing.assert_allclose(env.hand_position(), target, atol=0.005)


def test_bad_actions_are_rejected_without_stepping(env: MetaWorldEnv) -> None:
    env.reset(5)
    good = np.array([*env.hand_position(), 0, 0, 0, 1.0])
    cases = {
        "malformed": [np.zeros(4), None, [[1, 2, 3, 4, 5, 6, 7]]],
        "nonfinite": [np.where(np.arange(7) == 1, np.nan, good), np.where(np.arange(7) == 4, -np.inf, good)],
        "out_of_bounds": [np.where(np.arange(7) == 2, -0.2, good), np.where(np.arange(7) == 1, 1.5, good)],
    }
    for reason, actions in cases.items():
        for action in actions:
            with pytest.raises(ActionRejected) as err:
                env.step(action)
            assert err.value.reason == reason, (action, err.value)
            assert "metaworld" in str(err.value)
    assert env.steps == 0
    # any finite orientation is ignored; a gripper past open saturates
    env.step(good + np.array([0, 0, 0, 0.3, -2.0, 7.0, 0.5]))
    assert env.steps == 1


def test_masks_cover_the_objects(env: MetaWorldEnv) -> None:
    obs, _ = env.reset(6)
    assert env.instance_names == {1: "obj", 2: "goal"}
    assert env.camera_upside_down("corner") and not env.camera_upside_down("gripperPOV")
    k, ext = env.camera_matrices("corner")
    size = env.image_size[0]
    data = env._env.data
    for label, point in ((1, data.body("obj").xpos), (2, data.site("goal").xpos)):
        col, row = project_points(k, ext, point, size, size, rotate180=True)[0]
        assert obs.masks["corner"][int(row), int(col)] == label
    # the table homography inverts the projection of a point on the table
    xy = np.array([0.1, 0.7])
    col, row = project_points(k, ext, np.array([*xy, 0.0]), size, size, rotate180=True)[0]
    h = np.asarray(env.sensor_info()["calibration"]["corner"]["table_homography"])
    out = h @ np.array([col / size, row / size, 1.0])
    np.testing.assert_allclose(out[:2] / out[2], xy, atol=1e-6)


@pytest.mark.parametrize("task", ["reach", "push", "pick-place", "door-open", "drawer-open", "button-press"])
def test_expert_solves_the_task(task: str) -> None:
    e = MetaWorldEnv(MetaWorldConfig(task=task, image_size=32, cameras=("corner",)))
    try:
        _, instruction = e.reset(1)
        assert instruction
        done = success = False
        while not done:
            _, success, done, _ = e.step(e.expert_action())
        assert success, f"{task} expert failed on seed 1"
    finally:
        e.close()


def test_config_is_validated() -> None:
    for bad in (dict(image_size=4), dict(cameras=[]), dict(max_steps=501), dict(size=3), dict(position_gain=0.0)):
        with pytest.raises(ValueError):
            MetaWorldConfig.from_dict(bad)
    with pytest.raises(ValueError, match="unknown"):
        MetaWorldEnv(MetaWorldConfig(task="juggle"))
    with pytest.raises(ValueError, match="not in the scene"):
        MetaWorldEnv(MetaWorldConfig(task="reach", cameras=("wrist",)))
    assert math.isclose(MetaWorldConfig(task="reach-v3").step_limit, MetaWorldConfig(task="reach").step_limit)
