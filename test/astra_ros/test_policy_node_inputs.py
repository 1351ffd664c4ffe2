"""The policy node's inputs for object-token + proprioception checkpoints, in its own process over
real DDS: instance masks paired with frames by stamp, a JointState proprioception topic, holds
that name the missing or stale input, and configure failures that name the parameter."""

from __future__ import annotations

import threading

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from sensor_msgs.msg import JointState  # noqa: E402

from astra_ros.checkpoint_params import params_for_checkpoint, write_params_file  # noqa: E402
from astra_ros.image_conversion import labels_to_image, rgb_to_image  # noqa: E402
from astra_ros.msg import ActionSegment, PickPlaceSE2  # noqa: E402
from astra_ros.proprio import fill_joint_state  # noqa: E402

from node_harness import (NodeProcess, RosPeer, assert_only_the_running_step_finishes, make_checkpoint,  # noqa: E402
                       write_params)

CAMERAS = ["top", "front"]
PROPRIO = ("tcp_x", "tcp_y", "tcp_z", "gripper_opening")
SIZE = (48, 48)


@pytest.fixture(scope="module")
def inputs_checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "objects_proprio", "discrete_se2", CAMERAS,
                           state_tokens="objects", proprio_names=PROPRIO)


class Observations:
    """What the test's 'robot' publishes each cycle: per camera a frame and its mask (same stamp,
    or shifted), and the proprioception. Switches are flipped by the test."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.mask_shift_ns = 0  # != 0: masks carry another stamp than their frames
        self.masked = set(CAMERAS)  # cameras whose masks are published
        self.proprio = True
        rng = np.random.default_rng(0)
        self.images = {cam: rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8) for cam in CAMERAS}
        self.labels = np.zeros(SIZE, np.uint16)
        self.labels[10:20, 10:20], self.labels[30:40, 5:25] = 1, 2

    def __call__(self, stamp) -> list:
        from builtin_interfaces.msg import Time

        with self.lock:
            shift, masked, proprio = self.mask_shift_ns, set(self.masked), self.proprio
        out = []
        for cam in CAMERAS:
            out.append((f"/cam/{cam}", rgb_to_image(self.images[cam], "rgb8", cam, stamp)))
            if cam in masked:
                ns = stamp.sec * 1_000_000_000 + stamp.nanosec + shift
                out.append((f"/cam/{cam}/mask", labels_to_image(self.labels, cam, Time(sec=ns // 10**9,
                                                                                       nanosec=ns % 10**9))))
        if proprio:
            joints = JointState()
            joints.header.stamp = stamp
            fill_joint_state(joints, ["elbow", *reversed(PROPRIO)], [9.0, 0.5, 0.1, -0.1, 0.2])
            out.append(("/proprio", joints))
        return out

    def set(self, **changes) -> None:
        with self.lock:
            for name, value in changes.items():
                setattr(self, name, value)


def test_masks_and_proprioception_feed_the_model_and_their_absence_holds_it(ros_domain_id, tmp_path,
                                                                           inputs_checkpoint):
    params = params_for_checkpoint(
        str(inputs_checkpoint), camera_topics=[f"/cam/{c}" for c in CAMERAS],
        mask_topics=[f"/cam/{c}/mask" for c in CAMERAS], proprio_topic="/proprio", dry_run=False,
        image_timeout_s=0.5, proprio_timeout_s=0.5, status_rate_hz=20.0, warmup_steps=1, cpu_threads=1)
    node = NodeProcess(write_params_file(tmp_path / "params.yaml", params), ros_domain_id, tmp_path / "node.log")
    peer = RosPeer(ros_domain_id)
    commands = peer.record(PickPlaceSE2, "/pick_place")
    segments = peer.record(ActionSegment, "/action_segment")
    observations = Observations()
    try:
        peer.wait_for_status(lambda s: s.state == "active", 120, f"the node to become active; log:\n{node.log()}")
        peer.stream_observations(observations, 20.0)
        peer.instruct("put the red square into the blue bowl")
        peer.wait_for(lambda: len(segments.items) >= 3, 60, f"steps with masks and proprioception; log:\n{node.log()}")
        assert len(commands.items) >= 3 and not segments.last().dry_run

        for changes, reason in [({"mask_shift_ns": 1_000_000}, "front: no mask with the stamp of a recent frame"),
                                ({"mask_shift_ns": 0, "masked": {"top"}}, "stale mask(s): front: last mask"),
                                ({"masked": set(CAMERAS), "proprio": False}, "stale proprioception: last one")]:
            observations.set(**changes)
            held = peer.wait_for_status(lambda s, r=reason: r in s.hold_reason, 20, f"hold '{reason}'")
            assert_only_the_running_step_finishes(peer, commands, held, lambda s, r=reason: r in s.hold_reason, reason)
        observations.set(proprio=True)
        resumed = peer.wait_for_status(lambda s: s.hold_reason == "", 20, "commands again with every input back")
        peer.wait_for(lambda: any(m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 >
                                  resumed.header.stamp.sec + resumed.header.stamp.nanosec * 1e-9
                                  for m in commands.messages()), 20, "a command after the inputs came back")
    finally:
        peer.close()
        code = node.stop()
    assert code == 0, node.log()[-3000:]
    summary = node.summary()
    assert summary["masks_received"] > 0 and summary["bad_messages"] == 0, summary


def test_configure_names_the_missing_mask_and_proprioception_parameters(ros_domain_id, tmp_path, inputs_checkpoint):
    params = write_params(tmp_path / "params.yaml", {"checkpoint": str(inputs_checkpoint), "warmup_steps": 0})
    node = NodeProcess(params, ros_domain_id, tmp_path / "node.log")
    peer = RosPeer(ros_domain_id)
    try:
        status = peer.wait_for_status(lambda s: s.last_error.startswith("configure"), 60,
                                      f"a configure failure; log:\n{node.log()}")
    finally:
        peer.close()
        node.stop()
    assert status.state == "unconfigured" and "set 'mask_topics'" in status.last_error
