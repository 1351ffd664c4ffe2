"""ManiSkill3 and Meta-World through ROS (runs where `make sim-maniskill` / `make sim-metaworld` was
run; skipped otherwise): one bridge + policy node per backend, as the ROS evaluation starts them.

* an expert episode: the bridge's scripted-expert commands (expert/target_pose +
  expert/gripper_command) relayed onto its command topics, stepping at a fixed rate, must succeed;
* a policy episode: an untrained tiny checkpoint with object tokens and proprioception (so masks
  and the proprio JointState travel too) drives the arm until the episode ends. The point is the
  plumbing: commands flow, the arm moves, refused commands are counted, nothing crashes.
The achieved step rates are printed (pytest -s) for docs/SIMULATORS.md.
"""

from __future__ import annotations

import importlib.util
import math

import pytest

rclpy = pytest.importorskip("rclpy")

from geometry_msgs.msg import PoseStamped  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402

from astra_ros.evaluate_ros import RosEvalSetup, RosEvaluation  # noqa: E402
from astra_ros.msg import EpisodeEvent, GripperCommand  # noqa: E402
from astra_ros.qos import COMMAND_QOS, EVENT_QOS, SENSOR_QOS  # noqa: E402
from astra_ros.srv import ResetEpisode  # noqa: E402

from node_harness import RosPeer, make_checkpoint  # noqa: E402

HALF_PI = math.pi / 2
BACKENDS = {
    # env, task, cameras, proprio names, action bounds (low, high) as in docs/SIMULATORS.md
    "maniskill": ("PickCube-v1", ["base_camera", "hand_camera"],
                  ("tcp_x", "tcp_y", "tcp_z", "tcp_roll", "tcp_pitch", "tcp_yaw", "gripper_opening"),
                  ([0.25, -0.45, 0.0, HALF_PI, -HALF_PI, -math.pi, 0.0],
                   [0.95, 0.45, 0.6, 3 * HALF_PI, HALF_PI, math.pi, 1.0])),
    "metaworld": ("reach", ["corner", "gripperPOV"], ("hand_x", "hand_y", "hand_z", "gripper_opening"),
                  ([-0.5, 0.4, 0.05, 0.0, 0.0, 0.0, 0.0], [0.5, 1.0, 0.5, 0.0, 0.0, 0.0, 1.0])),
}
INSTALLED = {"maniskill": "mani_skill", "metaworld": "metaworld"}


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_expert_and_policy_episodes_through_ros(backend, tmp_path, ros_domain_id):
    if importlib.util.find_spec(INSTALLED[backend]) is None:
        pytest.skip(f"{backend} is not installed (run `make sim-{backend}`)")
    task, cameras, proprio, bounds = BACKENDS[backend]
    checkpoint = make_checkpoint(tmp_path / "ckpt", "continuous_pose6d", cameras, state_tokens="objects",
                                 proprio_names=proprio, bounds=bounds)
    namespace = f"/astra_{backend}_test"
    setup = RosEvalSetup(checkpoint, backend, {"task": task}, tmp_path / "eval", ros_domain_id, namespace,
                         bridge_overrides={"publish_expert": True})
    with RosEvaluation(setup) as evaluation:
        peer = RosPeer(ros_domain_id)
        try:
            events = peer.record(EpisodeEvent, f"{namespace}/episode_event", EVENT_QOS)
            joints = peer.record(JointState, f"{namespace}/joint_states", SENSOR_QOS)
            pose_pub = peer.node.create_publisher(PoseStamped, f"{namespace}/target_pose", COMMAND_QOS)
            gripper_pub = peer.node.create_publisher(GripperCommand, f"{namespace}/gripper_command", COMMAND_QOS)
            relays = [peer.node.create_subscription(PoseStamped, f"{namespace}/expert/target_pose", pose_pub.publish,
                                                    COMMAND_QOS),
                      peer.node.create_subscription(GripperCommand, f"{namespace}/expert/gripper_command",
                                                    gripper_pub.publish, COMMAND_QOS)]
            reset = peer.call(ResetEpisode, f"{namespace}/reset_episode", ResetEpisode.Request(seed=1000, task=task),
                              timeout_s=120)
            assert reset.ok, reset.message
            peer.wait_for(lambda: any(e.episode == reset.episode and e.event != EpisodeEvent.STARTED
                                      for e in events.messages()), 240, f"the {backend} expert episode to end")
            expert = next(e for e in events.messages() if e.episode == reset.episode and e.event != EpisodeEvent.STARTED)
            for relay in relays:
                peer.node.destroy_subscription(relay)
            joint_names = list(joints.last().name) if joints.last() is not None else []
        finally:
            peer.close()
        assert expert.event == EpisodeEvent.SUCCESS, (expert.message, expert.steps)
        assert ("panda_joint1" in joint_names) == (backend == "maniskill"), joint_names  # Meta-World has no joint_state()

        # the env the bridge built at start-up (the task of its env options), not one built for a
        # reset: a renderer bound to the thread that made it must still work (Meta-World's EGL)
        policy = evaluation.run_episode(1001, "")
    assert policy["event"] in ("timeout", "success", "failure") and policy["steps"] > 0, policy
    bridge, node = evaluation.summaries["bridge"], evaluation.summaries["policy_node"]
    assert evaluation.summaries["bridge_exit_code"] == 0 and evaluation.summaries["policy_node_exit_code"] == 0
    assert node["steps"] > 0 and node["masks_received"] > 0 and node["bad_messages"] == 0, node
    print(f"\n{backend} through ROS: expert {expert.steps} steps, policy episode {policy['event']} after "
          f"{policy['steps']} steps ({policy['commands_refused']} commands refused: {policy['message']}); bridge "
          f"{bridge['steps_per_s']} steps/s (env.step p50 {bridge['step_ms']['p50']} ms), policy node "
          f"{node['steps']} steps, model p50 {node['model_ms']['p50']} ms")
