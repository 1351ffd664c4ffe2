"""Pose messages <-> x y z roll pitch yaw for the ROS nodes (policy node, simulator bridge, recorder).

Only message access lives here: the math (ZYX Euler angles, quaternions (x, y, z, w) as in
geometry_msgs/Quaternion, the unit-length check) is :mod:`astra_core.geometry`, the one copy the
importers and the recorder use too, so a pose the importer refuses as a bad sample the node
refuses as bad input (a quaternion further than ``QUATERNION_TOLERANCE`` from unit length, or
non-finite values). Duck-typed messages, no ROS import: unit-tested without rclpy.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from astra_core.geometry import QUATERNION_TOLERANCE, pose_to_pose6d, rpy_to_quaternion

POSE_DIMS = 6  # x y z roll pitch yaw; a pose6d action's 7th dimension is the gripper


def pose_to_xyzrpy(pose: Any, quaternion_tolerance: float = QUATERNION_TOLERANCE) -> np.ndarray:
    """geometry_msgs/Pose (or anything with .position.x.. and .orientation.x..) -> (6,) float64.

    Raises :class:`astra_core.geometry.QuaternionError` (a ValueError; ``kind`` "norm" or
    "nonfinite") for an orientation the importer would refuse too, ValueError for a non-finite
    position."""
    p, q = pose.position, pose.orientation
    return pose_to_pose6d((p.x, p.y, p.z), (q.x, q.y, q.z, q.w), quaternion_tolerance)


def set_pose_from_xyzrpy(pose: Any, values: Sequence[float]) -> None:
    """Fill a geometry_msgs/Pose in place from x y z roll pitch yaw."""
    x, y, z, roll, pitch, yaw = (float(v) for v in values[:POSE_DIMS])
    pose.position.x, pose.position.y, pose.position.z = x, y, z
    q = pose.orientation
    q.x, q.y, q.z, q.w = rpy_to_quaternion(roll, pitch, yaw)


def stamp_to_seconds(stamp: Any) -> float:
    """builtin_interfaces/Time -> seconds (float)."""
    return stamp.sec + stamp.nanosec * 1e-9
