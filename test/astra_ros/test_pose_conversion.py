"""Pose conversions shared by the nodes (ZYX Euler angles <-> quaternions, Pose messages). No ROS."""

import math
from types import SimpleNamespace

import numpy as np
import pytest

from astra_ros.pose_conversion import pose_to_xyzrpy, quaternion_to_rpy, rpy_to_quaternion, set_pose_from_xyzrpy


def test_quaternion_helpers_round_trip():
    rng = np.random.default_rng(3)
    for _ in range(200):
        rpy = rng.uniform([-math.pi, -1.5, -math.pi], [math.pi, 1.5, math.pi])
        back = quaternion_to_rpy(*rpy_to_quaternion(*rpy))
        np.testing.assert_allclose(back, rpy, atol=1e-9)
    with pytest.raises(ValueError):
        quaternion_to_rpy(0.0, 0.0, 0.0, 0.0)


def _pose():
    return SimpleNamespace(position=SimpleNamespace(x=0.0, y=0.0, z=0.0),
                           orientation=SimpleNamespace(x=0.0, y=0.0, z=0.0, w=1.0))


def test_pose_round_trip_and_bad_poses():
    pose = _pose()
    values = np.array([0.1, -0.2, 0.3, 0.4, -0.5, 2.9])
    set_pose_from_xyzrpy(pose, values)
    np.testing.assert_allclose(pose_to_xyzrpy(pose), values, atol=1e-12)
    pose.position.x = math.nan
    with pytest.raises(ValueError, match="non-finite"):
        pose_to_xyzrpy(pose)
    pose.position.x, pose.orientation.w = 0.0, 0.0
    pose.orientation.x = pose.orientation.y = pose.orientation.z = 0.0
    with pytest.raises(ValueError, match="invalid quaternion"):
        pose_to_xyzrpy(pose)
