"""The project's own messages (msg/*.msg): generated classes import, survive rclpy
serialization, and travel between two processes over DDS (loopback, own domain id)."""
import math
import os
import subprocess
import sys
import textwrap
import time

import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402

from astra_ros.msg import (  # noqa: E402
    ActionSegment,
    GripperCommand,
    PickPlaceSE2,
    PolicyStatus,
    SE2Pose,
)

TOPIC = "astra_test/action_segment"


def make_action_segment(step: int = 7) -> ActionSegment:
    msg = ActionSegment()
    msg.header.stamp.sec = 1234
    msg.header.stamp.nanosec = 5678
    msg.header.frame_id = "workspace"
    msg.step = step
    msg.instruction = "pick up the red block and place it on the plate"
    msg.action_space = "discrete_se2"
    msg.dimension_names = ["pick_x", "pick_y", "pick_theta", "place_x", "place_y", "place_theta"]
    msg.proposed = [0.1, -0.2, 0.3, 0.4, -0.5, math.pi]
    msg.executed = [0.1, -0.2, 0.3, 0.4, -0.45, math.pi]
    msg.bins = [0, 1, 127, 128, 254, 255]
    msg.inference_latency_ms = 12.5
    msg.dry_run = True
    return msg


def assert_action_segment_equal(a: ActionSegment, b: ActionSegment) -> None:
    assert a.header.stamp.sec == b.header.stamp.sec
    assert a.header.stamp.nanosec == b.header.stamp.nanosec
    assert a.header.frame_id == b.header.frame_id
    assert a.step == b.step
    assert a.instruction == b.instruction
    assert a.action_space == b.action_space
    assert list(a.dimension_names) == list(b.dimension_names)
    assert list(a.proposed) == list(b.proposed)
    assert list(a.executed) == list(b.executed)
    assert list(a.bins) == list(b.bins)
    assert a.inference_latency_ms == pytest.approx(b.inference_latency_ms)
    assert a.dry_run == b.dry_run


def roundtrip(msg):
    data = serialize_message(msg)
    assert isinstance(data, bytes) and len(data) > 0
    return deserialize_message(data, type(msg))


def test_message_classes_import_from_package_namespace():
    import astra_ros
    import astra_ros.msg as generated

    for cls in (ActionSegment, GripperCommand, PickPlaceSE2, PolicyStatus, SE2Pose):
        assert cls.__module__.startswith("astra_ros.msg.")
        assert getattr(generated, cls.__name__) is cls
    # the generated package and the hand-written sources are one package namespace
    assert any(os.path.isdir(os.path.join(p, "msg")) for p in astra_ros.__path__)


def test_action_segment_roundtrip():
    msg = make_action_segment()
    out = roundtrip(msg)
    assert_action_segment_equal(msg, out)
    assert out == msg


def test_action_segment_continuous_has_empty_bins():
    msg = make_action_segment()
    msg.action_space = "continuous_pose6d"
    msg.dimension_names = ["x", "y", "z", "roll", "pitch", "yaw", "gripper"]
    msg.proposed = [0.0] * 7
    msg.executed = [0.0] * 7
    msg.bins = []
    out = roundtrip(msg)
    assert list(out.bins) == []
    assert out == msg


def test_se2_pick_place_and_gripper_roundtrip():
    pp = PickPlaceSE2()
    pp.header.frame_id = "table"
    pp.pick = SE2Pose(x=0.25, y=-0.125, theta=1.5)
    pp.place = SE2Pose(x=-0.5, y=0.75, theta=-3.0)
    out = roundtrip(pp)
    assert out == pp
    assert (out.pick.x, out.pick.y, out.pick.theta) == (0.25, -0.125, 1.5)
    assert (out.place.x, out.place.y, out.place.theta) == (-0.5, 0.75, -3.0)

    g = GripperCommand(position=0.75)
    assert roundtrip(g).position == 0.75


def test_policy_status_roundtrip():
    st = PolicyStatus()
    st.state = "active"
    st.commands_enabled = True
    st.hold_reason = ""
    st.last_error = "camera 'wrist' stale for 0.6 s"
    st.step = 2**40
    st.frames_received = 1000
    st.frames_dropped = 3
    st.frames_stale = 2
    st.bad_messages = 1
    st.latency_p50_ms = 20.0
    st.latency_p99_ms = 55.5
    st.control_rate_hz = 10.0
    out = roundtrip(st)
    assert out == st
    assert out.step == 2**40


PUBLISHER = textwrap.dedent(
    """
    import sys, time
    import rclpy
    from rclpy.node import Node
    sys.path.insert(0, sys.argv[1])
    from test_messages import make_action_segment
    rclpy.init()
    node = Node("astra_test_publisher")
    pub = node.create_publisher(make_action_segment().__class__, sys.argv[2], 10)
    print("publisher ready", flush=True)
    deadline = time.monotonic() + float(sys.argv[3])
    step = 0
    while time.monotonic() < deadline:
        pub.publish(make_action_segment(step=42))
        step += 1
        time.sleep(0.05)
    node.destroy_node()
    rclpy.shutdown()
    """
)


def test_action_segment_over_dds_between_processes(ros_domain_id):
    """A publisher subprocess and an in-process subscriber (own rclpy context) exchange
    an ActionSegment over DDS, with the loopback profile and this test's domain id."""
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    env = dict(os.environ)
    assert env["ROS_DOMAIN_ID"] == str(ros_domain_id)
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert os.path.isfile(env["FASTDDS_DEFAULT_PROFILES_FILE"])

    publisher = subprocess.Popen(
        [sys.executable, "-c", PUBLISHER, os.path.dirname(__file__), TOPIC, "60"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    received = []
    ctx = Context()
    rclpy.init(context=ctx, domain_id=ros_domain_id)
    try:
        node = Node("astra_test_subscriber", context=ctx)
        node.create_subscription(ActionSegment, TOPIC, received.append, 10)
        executor = SingleThreadedExecutor(context=ctx)
        executor.add_node(node)
        deadline = time.monotonic() + 45.0
        while not received and time.monotonic() < deadline and publisher.poll() is None:
            executor.spin_once(timeout_sec=0.1)
        executor.shutdown()
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)
        publisher.terminate()
        try:
            output, _ = publisher.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            publisher.kill()
            output, _ = publisher.communicate()

    assert received, f"no ActionSegment received over DDS; publisher output:\n{output}"
    assert_action_segment_equal(received[0], make_action_segment(step=42))
