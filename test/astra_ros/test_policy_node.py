"""The policy node in its own process, over real DDS (loopback, own domain id).

One node process (pose6d checkpoint, raw images, dry_run off) serves the tests of this module in
order: commands at the control rate with the right frame/shape/limits, reset on a new
instruction, a stale camera, pause/resume/stop, and 1,000+ malformed messages.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from geometry_msgs.msg import PoseStamped  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from astra_ros.msg import ActionSegment, GripperCommand  # noqa: E402
from astra_core.geometry import rpy_to_quaternion  # noqa: E402

from node_harness import (NodeProcess, RosPeer, assert_only_the_running_step_finishes,  # noqa: E402
                       module_domain_id, publish_until_counted, rgb_frame, stamp_seconds, stamped_after,
                       watch_hold, write_params)

RATE_HZ = 10.0
FRAME = "panda_link0"
LOWER = [-0.2, -0.2, 0.05, -3.0, -3.0, -3.0, 0.1]
UPPER = [0.2, 0.2, 0.45, 3.0, 3.0, 3.0, 0.9]
MAX_STEP = [0.05, 0.05, 0.05, 0.5, 0.5, 0.5, 0.0]  # 0: gripper unlimited
CAMERAS = {"front": "/cam/front/image", "wrist": "/cam/wrist/image"}


@pytest.fixture(scope="module")
def running(tmp_path_factory, pose_checkpoint):
    tmp = tmp_path_factory.mktemp("node")
    domain = module_domain_id()
    params = write_params(tmp / "params.yaml", {
        "checkpoint": str(pose_checkpoint),
        "camera_names": list(CAMERAS),
        "camera_topics": list(CAMERAS.values()),
        "image_size": [64, 64],
        "control_rate_hz": RATE_HZ,
        "output_frame": FRAME,
        "workspace_lower": LOWER,
        "workspace_upper": UPPER,
        "max_step_change": MAX_STEP,
        "image_timeout_s": 0.5,
        "dry_run": False,
        "warmup_steps": 1,
        # status (with its bad-message count and hold reason) is what the tests wait on: keep it quick
        "status_rate_hz": 20.0,
    })
    node = NodeProcess(params, domain, tmp / "node.log")
    peer = RosPeer(domain)
    peer.poses = peer.record(PoseStamped, "/target_pose")
    peer.grippers = peer.record(GripperCommand, "/gripper_command")
    peer.segments = peer.record(ActionSegment, "/action_segment")
    try:
        peer.wait_for_status(lambda s: s.state == "active", 90, f"the node to become active; log:\n{node.log()}")
        yield node, peer
    finally:
        peer.close()
        node.stop()


def stream_all(peer: RosPeer, rate_hz: float = 20.0) -> None:
    peer.stream({topic: (lambda cam=cam: rgb_frame(cam, peer)) for cam, topic in CAMERAS.items()}, rate_hz)


def command_rate(times: list[float]) -> float:
    return (len(times) - 1) / (times[-1] - times[0])


def test_commands_arrive_at_the_control_rate_with_frame_shape_and_limits(running):
    node, peer = running
    stream_all(peer)
    peer.instruct("pick up the red cube")
    peer.wait_for(lambda: len(peer.segments.items) > 2, 30, "first action segments")
    t0 = time.monotonic()
    time.sleep(3.0)  # the measurement window
    t_window_end = time.monotonic()
    poses, grippers, segments = peer.poses.since(t0), peer.grippers.since(t0), peer.segments.since(t0)

    rate = command_rate([stamp_seconds(pose.header.stamp) for _, pose in poses])  # the node's clock
    assert 0.8 * RATE_HZ <= rate <= 1.2 * RATE_HZ, f"command rate {rate:.2f} Hz, expected ~{RATE_HZ}"
    assert len(poses) == len(grippers) == len(segments) >= 25

    lower, upper, max_step = np.array(LOWER), np.array(UPPER), np.array(MAX_STEP)
    previous = None
    for (_, pose), (_, gripper), (_, seg) in zip(poses, grippers, segments):
        assert pose.header.frame_id == FRAME and gripper.header.frame_id == FRAME
        q = pose.pose.orientation
        assert math.isclose(q.x**2 + q.y**2 + q.z**2 + q.w**2, 1.0, rel_tol=1e-9)
        assert seg.dimension_names == ["x", "y", "z", "roll", "pitch", "yaw", "gripper"]
        assert len(seg.proposed) == len(seg.executed) == len(seg.bins) == 7
        assert seg.action_space == "discrete_pose6d" and not seg.dry_run
        assert seg.instruction == "pick up the red cube" and seg.inference_latency_ms > 0
        executed = np.array(seg.executed)
        assert np.all(executed >= lower - 1e-9) and np.all(executed <= upper + 1e-9)
        # what was sent is what was recorded (orientation compared as quaternions: Euler angles
        # with |pitch| > pi/2 have an equivalent representation)
        p = pose.pose.position
        np.testing.assert_allclose([p.x, p.y, p.z, gripper.position], executed[[0, 1, 2, 6]], atol=1e-9)
        q_sent = np.array([q.x, q.y, q.z, q.w])
        q_expected = np.array(rpy_to_quaternion(*executed[3:6]))
        assert min(np.abs(q_sent - q_expected).max(), np.abs(q_sent + q_expected).max()) < 1e-9
        if previous is not None and seg.step == previous.step + 1:
            delta = np.abs(executed - np.array(previous.executed))[:6]
            delta[3:] = np.abs((delta[3:] + math.pi) % (2 * math.pi) - math.pi)
            assert np.all(delta <= max_step[:6] + 1e-9), f"step limit violated: {delta}"
        previous = seg
    steps = [seg.step for _, seg in segments]
    assert steps == list(range(steps[0], steps[0] + len(steps))), f"steps not consecutive: {steps}"

    # the node's own rate estimate (its newest 50 steps); taken after the 3 s window so that it
    # spans 30+ steps, not the first few of the episode
    status = peer.wait_for_status(lambda s: s.control_rate_hz > 0, 5, "a status with a measured rate",
                                  after=t_window_end)
    assert status.commands_enabled and status.hold_reason == ""
    assert 0.8 * RATE_HZ <= status.control_rate_hz <= 1.2 * RATE_HZ
    assert status.latency_p50_ms > 0 and status.latency_p99_ms >= status.latency_p50_ms


def test_a_new_instruction_resets_the_history(running):
    node, peer = running
    stream_all(peer)
    peer.instruct("open the drawer")
    peer.wait_for(lambda: any(s.instruction == "open the drawer" and s.step >= 3 for s in peer.segments.messages()),
                  20, "steps with the first instruction")
    t0 = time.monotonic()
    peer.instruct("close the drawer")
    peer.wait_for(lambda: sum(s.instruction == "close the drawer" for s in peer.segments.messages(t0)) >= 3,
                  20, "steps with the new instruction")
    new = [s.step for s in peer.segments.messages(t0) if s.instruction == "close the drawer"]
    assert new[:3] == [0, 1, 2], f"history was not reset: steps {new[:3]}"


def test_a_stale_camera_stops_the_commands_and_the_status_says_why(running):
    node, peer = running
    stream_all(peer)
    peer.instruct("push the block")
    peer.wait_for(lambda: len(peer.poses.since(time.monotonic() - 0.5)) >= 3, 20, "commands")
    peer.set_streams({CAMERAS["front"]: lambda: rgb_frame("front", peer)})  # wrist camera stops
    t_stop = time.monotonic()
    held = peer.wait_for_status(lambda s: "wrist" in s.hold_reason, 5, "a status naming the wrist camera",
                                after=t_stop)
    assert "stale" in held.hold_reason and not held.commands_enabled
    assert held.frames_stale > 0
    assert_only_the_running_step_finishes(peer, peer.poses, held, lambda s: "wrist" in s.hold_reason,
                                          "the wrist camera went stale")
    stream_all(peer)
    t_back = time.monotonic()
    peer.wait_for(lambda: len(peer.poses.since(t_back)) >= 3, 10, "commands after the camera came back")


def test_an_instruction_that_is_not_utf8_is_refused_counted_and_named(running):
    """Issue 12, defect 1: bytes that are not UTF-8 reach the callback as text with U+FFFD; they
    must not start an episode: refused, counted as bad input, named in the status."""
    node, peer = running
    stream_all(peer)
    peer.instruct("lift the lid")
    peer.wait_for(lambda: any(s.instruction == "lift the lid" and s.step >= 2 for s in peer.segments.messages()),
                  20, "steps with a valid instruction")
    t0 = time.monotonic()
    counted = peer.wait_for_status(lambda s: True, 5, "a status", after=t0).bad_messages
    for raw in (b"\xff\xfe\xfd", b"pick \xc3\x28 up"):
        t_sent = time.monotonic()
        peer.instruct_raw(raw)
        status = peer.wait_for_status(lambda s, n=counted: s.bad_messages > n, 10,
                                      f"the node to count {raw!r} as bad input", after=t_sent)
        counted = status.bad_messages
        assert status.last_error.startswith("invalid_utf8:"), status.last_error
    time.sleep(0.5)  # steps after the garbage: the episode goes on, not reset
    segments = peer.segments.messages(t0)
    assert segments and {s.instruction for s in segments} == {"lift the lid"}
    steps = [s.step for s in segments]
    assert steps == list(range(steps[0], steps[0] + len(steps))) and steps[0] > 0, steps
    log = node.log()
    assert log.count("[invalid_utf8]") == 1 and "\ufffd" not in log
    assert "new instruction (history reset): 'lift the lid'" in log


def test_pause_resume_and_stop_services(running):
    node, peer = running
    stream_all(peer)
    peer.instruct("stack the blocks")
    peer.wait_for(lambda: len(peer.poses.since(time.monotonic() - 0.5)) >= 3, 20, "commands")
    assert peer.call_trigger("/pause").success
    t_pause = time.monotonic()
    status = peer.wait_for_status(lambda s: s.hold_reason == "paused", 5, "a 'paused' status", after=t_pause)
    assert not status.commands_enabled
    # a step already running when the pause came is withheld too (checked after the model ran)
    watch_hold(peer, status, lambda s: s.hold_reason == "paused", 0.5)
    assert not stamped_after(peer.poses, status), "commands sent while paused"
    assert peer.call_trigger("/resume").success
    t_resume = time.monotonic()
    peer.wait_for(lambda: len(peer.poses.since(t_resume)) >= 3, 10, "commands after resume")
    assert peer.call_trigger("/stop").success
    t_stop = time.monotonic()
    status = peer.wait_for_status(lambda s: s.hold_reason == "no instruction", 5, "a 'no instruction' status",
                                  after=t_stop)
    watch_hold(peer, status, lambda s: s.hold_reason == "no instruction", 0.5)
    assert not stamped_after(peer.poses, status), "commands sent after stop"
    peer.instruct("stack the blocks again")
    t_again = time.monotonic()
    peer.wait_for(lambda: len(peer.poses.since(t_again)) >= 2, 10, "commands after a new instruction")
    assert [s.step for s in peer.segments.messages(t_again)][:2] == [0, 1]


def _garbage_images(peer: RosPeer):
    """Yield (kind, Image) of varied malformations, forever."""
    rng = np.random.default_rng(7)
    good = rgb_frame("front", peer)
    while True:
        yield "encoding", Image(height=64, width=64, encoding=rng.choice(["16UC1", "yuv422", "", "RGB9"]),
                                step=192, data=bytes(good.data))
        yield "size", rgb_frame("front", peer, size=(int(rng.integers(2, 50)), int(rng.integers(2, 50))))
        yield "empty", Image(height=64, width=64, encoding="rgb8", step=192)
        msg = Image(height=64, width=64, encoding="rgb8", step=int(rng.integers(0, 191)))
        msg.data = bytes(good.data)
        yield "step", msg
        msg = Image(height=64, width=64, encoding="bgr8", step=192)
        msg.data = bytes(good.data[: int(rng.integers(1, len(good.data) - 1))])  # truncated
        yield "step", msg
        yield "size", Image(height=0, width=64, encoding="mono8", step=64, data=b"\x00" * 64)


def _garbage_sends(peer: RosPeer):
    """Yield callables that each publish one malformed message: images of varied kinds on both
    cameras (alternating), and every 20th an empty or an over-long instruction."""
    cameras = [peer.camera_publisher(CAMERAS["wrist"]), peer.camera_publisher(CAMERAS["front"])]
    for n, (_, msg) in enumerate(_garbage_images(peer), start=1):
        yield lambda publisher=cameras[n % 2], msg=msg: publisher.publish(msg)
        if n % 20 == 0:  # valid instructions must survive garbage ones in between
            yield lambda text="" if n % 40 else "x" * 5000: peer.instruct(text)


def test_a_thousand_malformed_messages_do_not_hurt_the_node(running):
    node, peer = running
    peer.stop_stream()
    # Paced so that every message reaches the node's callbacks (see publish_until_counted):
    # batches of 8 put at most 4 on each camera topic. 1,050 counted, about 50 of them instructions.
    sent, counted = publish_until_counted(peer, _garbage_sends(peer), count=1050, batch=8, timeout_s=40)
    assert node.alive(), node.log()
    assert 1050 <= counted <= sent, f"node counted {counted} of {sent} malformed messages"
    log = node.log()
    for kind in ("encoding", "size", "empty", "step", "empty_instruction", "long_instruction"):
        assert log.count(f"[{kind}]") == 1, f"'{kind}' problems must be logged exactly once:\n{log[-3000:]}"

    # ...and it still answers correctly: a real instruction and real frames give commands again
    stream_all(peer)
    peer.instruct("place the cube in the bowl")
    t_good = time.monotonic()
    peer.wait_for(lambda: len(peer.poses.since(t_good)) >= 5, 20, "commands after the garbage")
    segs = [s for s in peer.segments.messages(t_good) if s.instruction == "place the cube in the bowl"]
    assert segs and segs[0].step == 0
    assert all(np.all(np.array(s.executed) >= np.array(LOWER) - 1e-9) for s in segs)
    assert node.alive()


def test_delta_actions_become_absolute_targets_and_back():
    from astra_ros.policy_node import PolicyNode
    from astra_ros.safety import SafetyLimits, filter_command

    ee_pose = np.array([0.1, 0.2, 0.3, 0.0, 0.0, 3.1])
    delta = np.array([0.01, -0.02, 0.0, 0.0, 0.0, 0.1, 0.7])  # gripper stays absolute
    target, reference = PolicyNode._delta_to_target(delta, ee_pose, None)
    np.testing.assert_allclose(target, [0.11, 0.18, 0.3, 0.0, 0.0, 3.2, 0.7])
    np.testing.assert_allclose(reference, [*ee_pose, 0.7])
    limits = SafetyLimits.build(["x", "y", "z", "roll", "pitch", "yaw", "gripper"],
                                [-1, -1, 0, -math.pi, -math.pi, -math.pi, 0], [1, 1, 1, math.pi, math.pi, math.pi, 1],
                                [0.015, 0.015, 0.015, 0.5, 0.5, 0.5, math.inf])
    checked = filter_command(target, limits, reference).command
    assert checked[5] == pytest.approx(3.2 - 2 * math.pi)  # wrapped across pi
    executed = PolicyNode._executed_in_action_frame(checked, ee_pose, "delta")
    # the step limit shortened y; the executed delta is what the robot was really asked to do
    np.testing.assert_allclose(executed, [0.01, -0.015, 0.0, 0.0, 0.0, 0.1, 0.7], atol=1e-12)
