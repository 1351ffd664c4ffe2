"""The simulator bridge's pure parts, on the real tabletop simulator: episodes (EpisodeRunner),
command checks and pairing (sim_commands), parameters (bridge_params), rollout videos."""

import math
from types import SimpleNamespace

import numpy as np
import pytest

from astra_ros.bridge_params import BridgeParams, format_env_options
from astra_ros.sim_commands import (CommandRefused, HeldTarget, PoseCommandPairer, check_frame_and_stamp,
                                    se2_values)
from astra_ros.sim_episode import (FAILURE, STARTED, SUCCESS, TIMEOUT, EpisodeRunner, pose_from_proprio,
                                   task_env_options)
from astra_sim.env import make_env
from astra_sim.pose_sim import ActionRejected

TABLETOP = {"image_size": 48, "supersample": 1}


def test_an_episode_is_the_scene_and_instruction_astra_sim_evaluate_gets():
    runner = EpisodeRunner("tabletop", TABLETOP)
    record, aborted = runner.reset(1_000_003, "place_pair")
    reference = make_env("tabletop", **TABLETOP, **task_env_options("tabletop", "place_pair"))
    obs, instruction = reference.reset(1_000_003)
    assert aborted is None and record.instruction == instruction and record.event == STARTED
    assert all(np.array_equal(runner.observation.images[c], obs.images[c]) for c in obs.images)
    assert all(np.array_equal(runner.observation.masks[c], obs.masks[c]) for c in obs.masks)
    outcome = None
    for _ in range(2):  # the expert solves place_pair in two pick-and-places
        outcome = runner.step(runner.expert_action())
    assert outcome.record.event == SUCCESS and outcome.record.applied == 2 and not runner.live
    with pytest.raises(CommandRefused) as err:
        runner.step(runner.expert_action())
    assert err.value.reason == "no_episode" and record.refused["no_episode"] == 1


def test_se2_commands_are_clipped_like_astra_sim_evaluate_and_bad_ones_refused():
    runner = EpisodeRunner("tabletop", TABLETOP, task="rotate")
    runner.reset(5)
    low, high = runner.env.action_bounds
    wild = np.array([9.0, -9.0, 0.1, 0.25, 0.0, 0.2])
    assert np.array_equal(runner.to_action(wild), np.clip(wild, low, high))
    for values, reason in [(np.array([np.nan] * 6), "nonfinite"), (np.zeros(5), "malformed")]:
        with pytest.raises(CommandRefused) as err:
            runner.step(values)
        assert err.value.reason == reason
    assert runner.record.refused == {"nonfinite": 1, "malformed": 1} and runner.record.steps == 0


def test_step_limit_is_a_timeout_and_a_reset_aborts_a_running_episode():
    runner = EpisodeRunner("tabletop", {**TABLETOP, "max_steps": 3}, task="place")
    first, _ = runner.reset(7)
    sim_t0 = runner.sim_time_s
    runner.step(np.array([0.0, 0.25, 0.0, 0.0, 0.25, 0.0]))  # picks nothing
    second, aborted = runner.reset(8)
    assert aborted is first and first.event == FAILURE and "aborted by a reset" in first.message
    assert runner.sim_time_s > sim_t0 and second.episode == 2
    for _ in range(3):
        outcome = runner.step(np.array([0.0, 0.25, 0.0, 0.0, 0.25, 0.0]))
    assert outcome.record.event == TIMEOUT and outcome.record.steps == 3


def test_a_simulator_error_ends_the_episode_not_the_bridge():
    class BrokenEnv:  # a test input: an Env whose step fails
        def __init__(self):
            self.inner = make_env("tabletop", **TABLETOP)

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def step(self, action):
            raise RuntimeError("physics exploded")

    runner = EpisodeRunner("tabletop", TABLETOP, make=lambda name, **options: BrokenEnv())
    runner.reset(1)
    with pytest.raises(CommandRefused) as err:
        runner.step(np.zeros(6))
    assert err.value.reason == "simulator_error" and runner.record.event == FAILURE
    assert "physics exploded" in runner.record.message


def test_pose_commands_pass_to_the_env_which_refuses_with_its_reason():
    class PoseEnv:  # a test input: the ActionRejected contract of astra_sim.pose_sim
        action_space = SimpleNamespace(kind="continuous_pose6d")
        action_bounds = (np.zeros(7), np.ones(7))
        control_rate_hz = 10.0
        camera_names = ["cam"]

        def sensor_info(self):
            return {"proprio_names": ["tcp_x", "tcp_y", "tcp_z", "gripper_opening"]}

        def reset(self, seed):
            return SimpleNamespace(images={}, masks={}, proprio=np.array([0.1, 0.2, 0.3, 0.8])), "reach"

        def step(self, action):
            raise ActionRejected("unreachable", "no IK solution")

    runner = EpisodeRunner("pose", {}, make=lambda name, **options: PoseEnv())
    runner.reset(0)
    assert not runner.pick_and_place
    assert runner.hold_action().tolist() == [0.1, 0.2, 0.3, 0.0, 0.0, 0.0, 0.8]  # where it is, gripper as it is
    with pytest.raises(CommandRefused) as err:
        runner.step(np.full(7, 5.0))  # not clipped: the env judges bounds and reach
    assert err.value.reason == "unreachable" and runner.record.refused["unreachable"] == 1


def test_end_effector_pose_from_proprioception_names():
    ms = ["tcp_x", "tcp_y", "tcp_z", "tcp_roll", "tcp_pitch", "tcp_yaw", "gripper_opening"]
    assert pose_from_proprio(ms, np.arange(7.0)).tolist() == [0, 1, 2, 3, 4, 5]
    assert pose_from_proprio(["hand_x", "hand_y", "hand_z", "gripper_opening"], np.arange(4.0)).tolist() == \
        [0, 1, 2, 0, 0, 0]
    assert pose_from_proprio(["joint_1"], np.zeros(1)) is None


def test_commands_in_another_frame_or_from_before_the_observation_are_refused():
    check_frame_and_stamp("base_link", 10.0, "base_link", 10.0)
    for args, reason in [(("world", 10.0, "base_link", 9.0), "frame"), (("base_link", 9.9, "base_link", 10.0), "outdated")]:
        with pytest.raises(CommandRefused) as err:
            check_frame_and_stamp(*args)
        assert err.value.reason == reason
    pick = SimpleNamespace(x=0.1, y=0.2, theta=0.3)
    place = SimpleNamespace(x=0.4, y=math.inf, theta=0.6)
    with pytest.raises(CommandRefused, match="non-finite"):
        se2_values(SimpleNamespace(pick=pick, place=place))


def test_pose_and_gripper_pair_by_stamp_and_a_held_target_keeps_the_newest_of_each():
    pairer = PoseCommandPairer(depth=2)
    assert pairer.add_pose(1.0, np.arange(6.0)) is None
    assert pairer.add_gripper(2.0, 0.0) is None  # another command's gripper
    assert pairer.add_gripper(1.0, 1.0).tolist() == [0, 1, 2, 3, 4, 5, 1.0]
    assert pairer.add_pose(2.0, np.ones(6)).tolist() == [1] * 6 + [0.0]
    held = HeldTarget()
    hold = np.full(7, 0.5)
    assert held.empty and held.values(hold).tolist() == hold.tolist()
    held.gripper = 0.0
    assert held.values(hold).tolist() == [0.5] * 6 + [0.0]


def test_bridge_parameters_are_validated_and_env_options_round_trip():
    options = {"image_size": 96, "cameras": ["top"], "tasks": ["place"]}
    params = BridgeParams.from_values({"env_options": format_env_options(options)})
    assert params.options == options and params.resolved_step_mode(pick_and_place_env=True) == "per_command"
    assert BridgeParams.from_values({}).resolved_step_mode(pick_and_place_env=False) == "fixed_rate"
    with pytest.raises(ValueError, match="no 'hold still' action"):
        BridgeParams.from_values({"step_mode": "fixed_rate"}).resolved_step_mode(pick_and_place_env=True)
    with pytest.raises(ValueError, match="publish_clock' needs step_mode fixed_rate"):
        BridgeParams.from_values({"publish_clock": True}).resolved_step_mode(pick_and_place_env=True)
    with pytest.raises(ValueError) as err:
        BridgeParams.from_values({"env_options": ["size"], "initial_seed": -5, "step_mode": "sometimes"})
    assert all(text in str(err.value) for text in ("'env_options'", "expected key=value", "initial_seed", "step_mode"))
    with pytest.raises(ValueError, match="unknown parameter"):
        BridgeParams.from_values({"envv": "tabletop"})


def test_shipped_bridge_yaml_documents_every_parameter(repo_root):
    import dataclasses

    import yaml

    from astra_ros.bridge_params import BRIDGE_PARAMETERS

    text = (repo_root / "config" / "sim_bridge.yaml").read_text()
    values = yaml.safe_load(text)["/**"]["ros__parameters"]
    assert set(values) == set(BRIDGE_PARAMETERS) == {f.name for f in dataclasses.fields(BridgeParams)}
    BridgeParams.from_values(values)
    lines = text.splitlines()
    for name in values:
        index = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{name}:"))
        assert lines[index - 1].strip().startswith("#"), f"'{name}' in config/sim_bridge.yaml is undocumented"


def test_event_constants_are_the_messages():
    from astra_ros.msg import EpisodeEvent

    assert (EpisodeEvent.STARTED, EpisodeEvent.SUCCESS, EpisodeEvent.FAILURE, EpisodeEvent.TIMEOUT) == \
        (STARTED, SUCCESS, FAILURE, TIMEOUT)


def test_rollout_video_is_a_playable_mp4(tmp_path):
    import av

    from astra_ros.rollout_video import compose_frame, write_video

    frames = [compose_frame([np.full((48, 48, 3), v, np.uint8), np.zeros((48, 48, 3), np.uint8)],
                            ["place the cube", f"step {v}"]) for v in (0, 128, 255)]
    assert frames[0].shape[1] >= 288  # small cameras are scaled up until the caption fits
    frames.append(compose_frame([np.zeros((48, 48, 3), np.uint8)] * 2, ["a caption long enough to need " * 3]))
    path = write_video(tmp_path / "clip.mp4", frames, fps=2)
    with av.open(str(path)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    tallest = max(f.shape[0] for f in frames)
    assert len(decoded) == 4 and decoded[0].shape == (tallest + tallest % 2, frames[0].shape[1], 3)
    assert write_video(tmp_path / "clip.gif", frames, fps=2).stat().st_size > 0


def test_sim_launch_file_wires_bridge_and_policy_through_sim_wiring(repo_root):
    """Static checks (launch/launch_ros are not installable here; the file was run with their
    sources out of tree, see docs/SIMULATORS.md): arguments, both executables, the shared wiring."""
    import ast

    tree = ast.parse((repo_root / "launch" / "sim.launch.py").read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    declared = {c.args[0].value for c in calls if c.func.id == "DeclareLaunchArgument"}
    assert declared == {"checkpoint", "env", "env_options", "task", "namespace", "use_sim_time", "dry_run",
                        "bridge_params_file", "policy_params_file"}
    executables = {c.func.id: {k.arg: getattr(k.value, "value", None) for k in c.keywords}["executable"]
                   for c in calls if c.func.id in ("Node", "LifecycleNode")}
    assert executables == {"Node": "sim_bridge", "LifecycleNode": "policy_node"}
    assert all((repo_root / "scripts" / name).is_file() for name in executables.values())
    imported = {alias.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "astra_ros.sim_wiring"
                for alias in n.names}
    assert imported == {"policy_params_for_bridge"}


def test_policy_wiring_follows_the_checkpoint(tmp_path):
    from node_harness import make_checkpoint

    from astra_ros.sim_wiring import policy_params_for_bridge

    se2 = make_checkpoint(tmp_path / "se2", "discrete_se2", ["top", "front"], state_tokens="objects")
    params = policy_params_for_bridge(str(se2), dry_run=False)
    assert params["mask_topics"] == ["camera/top/mask", "camera/front/mask"] and params["new_frames_only"] is True
    assert params["camera_topics"] == ["camera/top/image_raw", "camera/front/image_raw"] and not params["dry_run"]
    pose = make_checkpoint(tmp_path / "pose", "continuous_pose6d", ["cam"], proprio_names=("tcp_x", "tcp_y"))
    params = policy_params_for_bridge(str(pose), action_bounds=([0.0] * 7, [1.0] * 7))
    assert params["proprio_topic"] == "proprio" and "mask_topics" not in params and "new_frames_only" not in params
    assert params["workspace_lower"] == [0.0] * 7 and params["workspace_upper"] == [1.0] * 7
