"""The built-in tabletop simulator: determinism, expert, dynamics, rendering, config validation."""

import math

import numpy as np
import pytest

from astra_sim.env import Env, StepResult, make_env
from astra_sim.tabletop import TASK_KINDS, TabletopConfig, TabletopEnv, canonical_angle, symmetric_angle_error


def rollout_expert(env: TabletopEnv, seed: int) -> tuple[bool, int, list[np.ndarray]]:
    env.reset(seed)
    actions = []
    done = success = False
    while not done:
        action = env.expert_action()
        actions.append(action)
        _, success, done, _ = env.step(action)
    return success, len(actions), actions


def test_implements_env_protocol_and_registry():
    env = make_env("tabletop", image_size=64, cameras=["top"])
    assert isinstance(env, Env) and isinstance(env, TabletopEnv)
    assert env.camera_names == ["top"] and env.image_size == (64, 64)
    assert env.action_space.kind == "discrete_se2" and env.action_space.dim == 6
    low, high = env.action_bounds
    assert low.shape == high.shape == (6,) and (low < high).all()
    with pytest.raises(ValueError, match="unknown environment"):
        make_env("no_such_env")


def test_unknown_and_invalid_options_are_named():
    with pytest.raises(ValueError, match=r"unknown options \['imagesize'\].*image_size"):
        TabletopEnv.from_options(imagesize=64)
    with pytest.raises(ValueError, match="cameras"):
        TabletopConfig(cameras=("top", "wrist"))
    with pytest.raises(ValueError, match="max_steps"):
        TabletopConfig(max_steps=2)


def test_reset_is_deterministic_per_seed():
    a, b = TabletopEnv(), TabletopEnv()
    obs_a, instr_a = a.reset(123)
    b.reset(7)  # a different history must not matter
    obs_b, instr_b = b.reset(123)
    assert instr_a == instr_b
    for cam in a.camera_names:
        np.testing.assert_array_equal(obs_a.images[cam], obs_b.images[cam])
        np.testing.assert_array_equal(obs_a.masks[cam], obs_b.masks[cam])
    _, _, actions_a = rollout_expert(a, 123)
    _, _, actions_b = rollout_expert(b, 123)
    np.testing.assert_array_equal(np.stack(actions_a), np.stack(actions_b))
    # Different seeds give different scenes.
    obs_c, _ = a.reset(124)
    assert not np.array_equal(obs_a.images["top"], obs_c.images["top"])


def test_expert_solves_every_task():
    env = TabletopEnv(TabletopConfig(image_size=32))
    steps_by_task: dict[str, list[int]] = {k: [] for k in TASK_KINDS}
    for seed in range(200):
        success, steps, _ = rollout_expert(env, seed)
        assert success, f"expert failed seed {seed}: {env.task.instruction}"
        assert steps == env.num_expert_steps
        steps_by_task[env.task.kind].append(steps)
    assert all(steps_by_task[k] for k in TASK_KINDS), "every task kind is sampled"
    assert set(steps_by_task["place"]) == {1} and set(steps_by_task["rotate"]) == {1}
    assert set(steps_by_task["place_pair"]) == {2}
    assert set(steps_by_task["place_all"]) == {2, 3}  # multi-step: progress lives in the history


def test_instruction_names_the_targets():
    env = TabletopEnv()
    for seed in range(40):
        _, instruction = env.reset(seed)
        task = env.task
        if task.kind == "place_all":
            color = env.objects[task.targets[0]].color
            assert f" {color} " in instruction
            assert sorted(task.targets) == [i for i, o in enumerate(env.objects) if o.color == color]
        else:
            assert all(env.objects[i].name in instruction for i in task.targets)
        if task.container is not None:
            assert env.containers[task.container].name in instruction


def test_a_missed_pick_changes_nothing():
    env = TabletopEnv()
    obs, _ = env.reset(5)
    before = [(o.x, o.y, o.theta) for o in env.objects]
    expert = env.expert_action()
    # A pick on empty table: farther than the tolerance from every object.
    empty = next((x, y) for x in np.linspace(0.02, 0.48, 24) for y in np.linspace(-0.23, 0.23, 24)
                 if all(math.dist((x, y), (o.x, o.y)) > 0.05 for o in env.objects))
    result = env.step(np.array([*empty, 0.0, *expert[3:]]))
    assert isinstance(result, StepResult)
    assert result.info["picked"] is None and not result.success
    assert [(o.x, o.y, o.theta) for o in env.objects] == before
    np.testing.assert_array_equal(result.observation.images["top"], obs.images["top"])
    np.testing.assert_array_equal(result.observation.images["front"], obs.images["front"])


def test_a_wrongly_oriented_pick_changes_nothing():
    env = TabletopEnv()
    seed = next(s for s in range(100) if env.reset(s) and env.objects[env.task.targets[0]].shape == "square")
    env.reset(seed)
    expert = env.expert_action()
    before = [(o.x, o.y, o.theta) for o in env.objects]
    wrong = expert.copy()
    wrong[2] += math.pi / 4  # a square's worst orientation
    result = env.step(wrong)
    assert result.info["picked"] is None and "orientation" in result.info["pick_failure"]
    assert [(o.x, o.y, o.theta) for o in env.objects] == before


def test_pick_moves_object_and_rotates_with_gripper():
    env = TabletopEnv()
    env.reset(3)
    target = env.objects[0]
    theta0 = target.theta
    pick_theta = canonical_angle(theta0, target.shape)
    result = env.step(np.array([target.x + 0.01, target.y, pick_theta, 0.25, 0.0, pick_theta + 0.3]))
    assert result.info["picked"] == target.name
    assert (target.x, target.y) == (0.25, 0.0)
    assert symmetric_angle_error(target.theta, theta0 + 0.3, target.shape) < 1e-9


def test_step_limit_and_done():
    env = TabletopEnv(TabletopConfig(max_steps=3))
    env.reset(0)
    miss = np.array([0.0, -0.25, 0.0, 0.0, -0.25, 0.0])  # table corner: objects are kept away from edges
    dones = [env.step(miss).done for _ in range(3)]
    assert dones == [False, False, True]
    with pytest.raises(RuntimeError, match="reset"):
        env.step(miss)


def test_bad_actions_are_rejected():
    env = TabletopEnv()
    env.reset(0)
    with pytest.raises(ValueError, match="6 finite numbers"):
        env.step(np.zeros(5))
    with pytest.raises(ValueError, match="6 finite numbers"):
        env.step(np.array([np.nan, 0, 0, 0, 0, 0]))


def test_rendering_shapes_dtypes_and_cameras_differ():
    for size in (64, 96, 224):
        env = TabletopEnv(TabletopConfig(image_size=size))
        obs, _ = env.reset(11)
        assert set(obs.images) == set(obs.masks) == {"top", "front"} and obs.proprio is None
        for image in obs.images.values():
            assert image.shape == (size, size, 3) and image.dtype == np.uint8
            assert image.std() > 10  # not blank
        for mask in obs.masks.values():
            assert mask.shape == (size, size) and mask.dtype == np.uint16
        assert np.abs(obs.images["top"].astype(int) - obs.images["front"].astype(int)).mean() > 20


@pytest.mark.parametrize("camera, tolerance_m", [("top", 0.006), ("front", 0.012)])
def test_masks_and_calibration_locate_every_object(camera, tolerance_m):
    """Each instance label covers its object; the camera's table homography maps the label's box
    centre back to the object's position on the table (what object tokens and the pointer use)."""
    import torch

    from astra_core.objects import apply_homography, box_centres, boxes_from_mask

    env = TabletopEnv(TabletopConfig(image_size=96))
    homography = torch.tensor(env.sensor_info()["calibration"][camera]["table_homography"])
    for seed in range(5):
        obs, _ = env.reset(seed)
        mask = obs.masks[camera]
        things = [*env.containers, *env.objects]
        assert set(np.unique(mask)) - {0} == set(range(1, len(things) + 1)), "every object and container visible"
        boxes, valid = boxes_from_mask(mask, 8)
        xy = apply_homography(homography[None], box_centres(torch.from_numpy(boxes))[None])[0].numpy()
        for label, thing in enumerate(things, start=1):
            k = sorted(np.unique(mask[mask > 0])).index(label)
            colour = obs.images[camera][mask == label].mean(0)
            assert np.hypot(*(xy[k] - (thing.x, thing.y))) < tolerance_m + (0.02 if label <= 2 else 0), (seed, label)
            if label > 2:  # objects: the labelled pixels have the object's colour
                from astra_sim.tabletop import COLORS

                assert np.abs(colour - COLORS[thing.color]).max() < 60


def test_sensor_info_describes_masks_and_tolerances():
    info = TabletopEnv().sensor_info()
    assert info["masks"] is True and info["proprio_names"] == []
    assert set(info["tolerances"]) == {"pick_x", "pick_y", "pick_theta", "place_x", "place_y", "place_theta"}
    assert set(info["calibration"]) == {"top", "front"}


def test_successful_step_is_visible_in_top_image():
    env = TabletopEnv()
    obs, _ = env.reset(2)
    result = env.step(env.expert_action())
    assert result.info["picked"] is not None
    assert not np.array_equal(obs.images["top"], result.observation.images["top"])
