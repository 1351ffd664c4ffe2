"""The node as an operator runs it: signals and the exit summary, a parameters file that matches
the checkpoint, frames too large to process, and commands that would go out too late.
Each case is its own node process over real DDS (loopback, own domain id)."""

from __future__ import annotations

import signal
import time

import pytest

rclpy = pytest.importorskip("rclpy")

from geometry_msgs.msg import PoseStamped  # noqa: E402

from astra_ros.msg import ActionSegment, PickPlaceSE2  # noqa: E402
from node_harness import REPO_ROOT, NodeProcess, RosPeer, make_checkpoint, rgb_frame, write_params  # noqa: E402

SHIPPED_CONFIG = REPO_ROOT / "config" / "policy.yaml"


@pytest.fixture
def peer(ros_domain_id):
    p = RosPeer(ros_domain_id)
    yield p
    p.close()


@pytest.fixture(scope="module")
def demo_like_checkpoint(tmp_path_factory):
    """Like the demo's: SE(2), 6 dimensions, cameras [top, front] (config/policy.yaml used to say
    [front, wrist] and 7 limits, so its documented command failed with such a checkpoint)."""
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_se2_top_front", "discrete_se2", ["top", "front"])


@pytest.mark.parametrize("signals", [("SIGINT", "SIGINT"), ("SIGTERM",), ("SIGINT", "SIGINT", "SIGTERM")],
                         ids=["sigint-twice", "sigterm", "sigint-twice-then-sigterm"])
def test_signals_end_the_node_with_exit_0_and_a_strict_json_summary(tmp_path, ros_domain_id, peer, pose_checkpoint,
                                                                    signals):
    """Issue 12, defects 4 and 5: `ros2 launch` sends SIGINT twice on Ctrl-C (then SIGTERM); the
    node must exit 0 with its summary, and the summary must be JSON even when it never stepped."""
    node = NodeProcess(SHIPPED_CONFIG, ros_domain_id, tmp_path / "node.log",
                       ["-p", f"checkpoint:={pose_checkpoint}", "-p", "warmup_steps:=0"])
    try:
        peer.wait_for_status(lambda s: s.state == "active", 90, "an active node")
        for name in signals:
            node.proc.send_signal(getattr(signal, name))
            time.sleep(0.02)  # separate deliveries, as from launch (group signal, then its own)
        code = node.proc.wait(30)
    finally:
        node.stop()
    assert code == 0, f"exit code {code} after {signals}; log:\n{node.log()[-3000:]}"
    summary = node.summary()  # strict JSON: a NaN here fails
    assert summary["steps"] == 0 and summary["step_ms"] == {"p50": None, "p99": None, "count": 0}
    assert summary["torch_threads"] == 1  # chosen deliberately (cpu_threads 0: $OMP_NUM_THREADS or 1)
    assert "Traceback" not in node.log()


def test_shipped_config_works_with_a_checkpoint_of_other_cameras_and_dimensions(tmp_path, ros_domain_id, peer,
                                                                                 demo_like_checkpoint):
    """Issue 12, defect 7: cameras and action dimensions left unset come from the checkpoint."""
    node = NodeProcess(SHIPPED_CONFIG, ros_domain_id, tmp_path / "node.log",
                       ["-p", f"checkpoint:={demo_like_checkpoint}", "-p", "warmup_steps:=1"])
    try:
        segments = peer.record(ActionSegment, "/action_segment")
        peer.wait_for_status(lambda s: s.state == "active", 90, f"an active node; log:\n{node.log()}")
        peer.stream({"/camera/top/image_raw": lambda: rgb_frame("top", peer),
                     "/camera/front/image_raw": lambda: rgb_frame("front", peer)}, 20.0)
        peer.instruct("put the red square into the blue bowl")
        peer.wait_for(lambda: len(segments.items) >= 3, 30, f"action segments; log:\n{node.log()}")
        assert segments.last().action_space == "discrete_se2" and len(segments.last().executed) == 6
        assert "cameras ['top', 'front']" in node.log() and "torch intra-op threads 1" in node.log()
    finally:
        peer.stop_stream()
        node.stop()


def test_a_params_file_for_the_checkpoint_runs_and_empty_lists_clear_earlier_values(tmp_path, ros_domain_id, peer,
                                                                                     demo_like_checkpoint):
    """params_for_checkpoint + write_params_file give a file the node runs with (what the demo
    writes); `-p max_step_change:=[]`, which rcl drops, still clears the file's step limits."""
    from astra_ros.checkpoint_params import params_for_checkpoint, write_params_file

    params = params_for_checkpoint(str(demo_like_checkpoint), camera_topics=["/sim/top", "/sim/front"],
                                   dry_run=False, max_step_change=[0.01] * 6, warmup_steps=1)
    path = write_params_file(tmp_path / "policy.yaml", params)
    node = NodeProcess(path, ros_domain_id, tmp_path / "node.log", ["-p", "max_step_change:=[]"])
    try:
        picks = peer.record(PickPlaceSE2, "/pick_place")
        peer.wait_for_status(lambda s: s.state == "active", 90, f"an active node; log:\n{node.log()}")
        peer.stream({"/sim/top": lambda: rgb_frame("top", peer), "/sim/front": lambda: rgb_frame("front", peer)}, 20.0)
        peer.instruct("put the block in the bowl")
        peer.wait_for(lambda: len(picks.items) >= 3, 30, f"pick_place commands; log:\n{node.log()}")
        assert "max_step=[inf, inf, inf, inf, inf, inf]" in node.log(), node.log()
        assert "'max_step_change' set to []" in node.log()
    finally:
        peer.stop_stream()
        node.stop()


def test_frames_with_too_many_pixels_are_refused_counted_and_named(tmp_path, ros_domain_id, peer, pose_checkpoint):
    """Issue 12, defect 2: a frame size the node cannot process in time never reaches the model."""
    params = write_params(tmp_path / "p.yaml", {
        "checkpoint": str(pose_checkpoint), "max_image_pixels": 64 * 64, "dry_run": False, "warmup_steps": 1,
        "status_rate_hz": 20.0})
    node = NodeProcess(params, ros_domain_id, tmp_path / "node.log")
    try:
        segments = peer.record(ActionSegment, "/action_segment")
        peer.wait_for_status(lambda s: s.state == "active", 90, f"an active node; log:\n{node.log()}")
        peer.stream({"/camera/front/image_raw": lambda: rgb_frame("front", peer, size=(64, 65)),
                     "/camera/wrist/image_raw": lambda: rgb_frame("wrist", peer)}, 20.0)
        peer.instruct("wipe the table")
        held = peer.wait_for_status(lambda s: "frames refused: too_large" in s.hold_reason, 15,
                                    f"a hold naming the refused frames; log:\n{node.log()}")
        assert "front" in held.hold_reason and not held.commands_enabled and held.bad_messages > 0
        assert held.last_error.startswith("too_large: camera 'front': image is 64x65 = 4160 pixels")
        assert not segments.items, "a step ran on a refused frame"
        assert node.log().count("[too_large]") == 1
    finally:
        peer.stop_stream()
        node.stop()
    assert node.summary()["problems"]["too_large"] > 0


def test_a_command_that_would_go_out_late_is_withheld_and_named(tmp_path, ros_domain_id, peer, pose_checkpoint):
    """Issue 12, defect 2: freshness is checked again at publish time. A step latency limit no
    step can meet makes every command late: none may reach the robot, and the status says why."""
    params = write_params(tmp_path / "p.yaml", {
        "checkpoint": str(pose_checkpoint), "max_step_latency_s": 0.0005, "dry_run": False, "warmup_steps": 1,
        "status_rate_hz": 20.0})
    node = NodeProcess(params, ros_domain_id, tmp_path / "node.log")
    try:
        poses = peer.record(PoseStamped, "/target_pose")
        segments = peer.record(ActionSegment, "/action_segment")
        peer.wait_for_status(lambda s: s.state == "active", 90, f"an active node; log:\n{node.log()}")
        peer.stream({"/camera/front/image_raw": lambda: rgb_frame("front", peer),
                     "/camera/wrist/image_raw": lambda: rgb_frame("wrist", peer)}, 20.0)
        peer.instruct("wipe the table")
        held = peer.wait_for_status(lambda s: s.hold_reason.startswith("command withheld: its step took"), 20,
                                    f"a status naming the withheld command; log:\n{node.log()}")
        assert not held.commands_enabled and held.frames_stale > 0
        peer.wait_for(lambda: len(segments.items) >= 5, 10, "action segments")
        assert all(s.dry_run for s in segments.messages()), "a late command was marked as sent"
        assert not poses.items, "a late command reached the robot"
        assert node.log().count("[late_command]") == 1
    finally:
        peer.stop_stream()
        node.stop()
    summary = node.summary()
    assert summary["late_commands"] >= 5 and summary["late_commands"] == summary["problems"]["late_command"]
