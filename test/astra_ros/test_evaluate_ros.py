"""Closed-loop evaluation through ROS (bridge + policy node as processes over loopback DDS) against
the ROS-free astra_sim.evaluate, on tabletop seeds, with the shipped checkpoint and with an
untrained one of its configuration (object tokens from masks, pointer readout); and the main
job's command (astra_ros.demo_ros).

Why the two paths must agree here: the tabletop steps once per command, the node steps once per
new observation, the images and masks arrive bit-exact, the workspace limits are the env's action
bounds (astra_sim.evaluate's clip) and latency limits are relaxed because the simulated world
waits. The only arithmetic difference is the node's re-wrap of full-circle angles (~1e-16 rad),
hence actions are compared to 1e-9 and outcomes exactly.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from astra_ros.evaluate_ros import RosEvalSetup, evaluate_through_ros  # noqa: E402
from astra_sim.evaluate import DEFAULT_EVAL_SEED, evaluate_tasks  # noqa: E402
from astra_sim.tabletop import TASK_KINDS  # noqa: E402

from node_harness import REPO_ROOT, make_tabletop_checkpoint  # noqa: E402

ENV_OPTIONS = {"image_size": 64, "action_bins": 64}
SEEDS = [DEFAULT_EVAL_SEED + i for i in range(3)]


@pytest.fixture(scope="module")
def tabletop_checkpoint(tmp_path_factory):
    return make_tabletop_checkpoint(tmp_path_factory.mktemp("ckpt") / "tabletop_objects", ENV_OPTIONS)


class RecordingPolicy:
    """The ROS-free runtime, noting the executed actions of every step (test instrumentation)."""

    def __init__(self, policy) -> None:
        self.policy, self.actions = policy, []

    def __getattr__(self, name):
        return getattr(self.policy, name)

    def reset(self, instruction: str) -> None:
        self.actions.append([])
        self.policy.reset(instruction)

    def record_executed(self, values) -> None:
        self.actions[-1].append(np.asarray(values, dtype=np.float64))
        self.policy.record_executed(values)


@pytest.mark.parametrize("which", ["untrained", "shipped"])
def test_ros_and_ros_free_paths_agree_on_tabletop_seeds(which, tmp_path, ros_domain_id, tabletop_checkpoint):
    """The untrained checkpoint takes many steps per episode (long action sequences to compare);
    the shipped one (`make run`'s) succeeds, so outcomes of both kinds are compared."""
    import torch

    from astra_core.runtime import AstraPolicy
    from astra_sim.train_tabletop import ENV_OPTIONS as SHIPPED_ENV_OPTIONS, SHIPPED_CHECKPOINT

    checkpoint, env_options = ((tabletop_checkpoint, ENV_OPTIONS) if which == "untrained"
                               else (SHIPPED_CHECKPOINT, SHIPPED_ENV_OPTIONS))
    torch.set_num_threads(1)  # as the node: same kernels, same numbers
    policy = RecordingPolicy(AstraPolicy.from_checkpoint(checkpoint, "cpu"))
    ros_free = evaluate_tasks(policy, env_options, len(SEEDS), SEEDS[0])
    setup = RosEvalSetup(checkpoint, "tabletop", env_options, tmp_path / "eval", ros_domain_id)
    through_ros = evaluate_through_ros(setup, list(TASK_KINDS), SEEDS, video_episodes=1, progress=lambda line: None)

    pairs = list(zip(ros_free["per_episode"], policy.actions, through_ros["per_episode"]))
    assert len(pairs) == len(TASK_KINDS) * len(SEEDS)
    for free, free_actions, ros in pairs:
        where = f"{free['task']} seed {free['seed']}"
        assert (ros["task"], ros["seed"], ros["instruction"]) == (free["task"], free["seed"], free["instruction"])
        assert (ros["success"], ros["steps"]) == (free["success"], free["steps"]), where
        assert ros["commands_refused"] == 0, (where, ros["message"])
        np.testing.assert_allclose(np.array(ros["actions"]), np.array(free_actions), atol=1e-9, err_msg=where)
    assert through_ros["by_task"] == ros_free["by_task"]
    if which == "untrained":
        assert sum(e["steps"] for e in ros_free["per_episode"]) > 2 * len(pairs)  # several steps per episode
    else:
        assert sum(e["success"] for e in ros_free["per_episode"]) >= len(pairs) - 1  # 399/400 held out
    processes = through_ros["processes"]
    assert processes["policy_node_exit_code"] == 0 and processes["bridge_exit_code"] == 0
    assert processes["policy_node"]["late_commands"] == 0 and processes["policy_node"]["bad_messages"] == 0
    # one step per observation; the node may also step on an episode's final observation before
    # `stop` reaches it: that command is refused by the bridge and counted after the episode's end
    assert processes["policy_node"]["steps"] >= processes["bridge"]["steps"]
    assert (tmp_path / "eval" / "rollouts.mp4").stat().st_size > 0
    assert json.loads((tmp_path / "eval" / "eval_ros.json").read_text())["episodes"] == len(pairs)


def test_the_main_job_over_ros_prints_outcomes_a_table_and_a_video(tmp_path, ros_domain_id, tabletop_checkpoint):
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "astra_ros.demo_ros", "--checkpoint", str(tabletop_checkpoint), "--per-task", "1",
         "--out", str(out), "--domain-id", str(ros_domain_id)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert sum(line.startswith("[ros] ") and " seed 1000000: " in line for line in lines) == len(TASK_KINDS)
    assert any(line.strip().startswith("all ") for line in lines) and "95% CI" in result.stdout
    video = next(line.split(": ", 1)[1] for line in lines if line.startswith("video: "))
    assert video.endswith("rollouts.mp4") and (out / "rollouts.mp4").is_file()
