"""Pose conversions shared by the ROS nodes (policy node, simulator bridges, recorder).

Convention: the pose6d action space's x y z roll pitch yaw, with ZYX (yaw-pitch-roll) Euler
angles, i.e. R = Rz(yaw) Ry(pitch) Rx(roll); quaternions are (x, y, z, w) as in
geometry_msgs/Quaternion. Pure math plus duck-typed message access: no ROS import, so the
functions are unit-tested without rclpy and reused by code that only has message-like objects.
"""

from __future__ import annotations

import math

import numpy as np

POSE_DIMS = 6  # x y z roll pitch yaw; a pose6d action's 7th dimension is the gripper


def rpy_to_quaternion(roll: float, pitch: float, yaw: float) -> tuple[float, float, float, float]:
    """ZYX Euler angles -> unit quaternion (x, y, z, w)."""
    cr, sr = math.cos(roll / 2), math.sin(roll / 2)
    cp, sp = math.cos(pitch / 2), math.sin(pitch / 2)
    cy, sy = math.cos(yaw / 2), math.sin(yaw / 2)
    return (sr * cp * cy - cr * sp * sy, cr * sp * cy + sr * cp * sy,
            cr * cp * sy - sr * sp * cy, cr * cp * cy + sr * sp * sy)


def quaternion_to_rpy(x: float, y: float, z: float, w: float) -> tuple[float, float, float]:
    """Quaternion (normalised here) -> ZYX Euler angles; ValueError for a zero or non-finite one."""
    norm = math.sqrt(x * x + y * y + z * z + w * w)
    if not math.isfinite(norm) or norm < 1e-9:
        raise ValueError(f"invalid quaternion ({x}, {y}, {z}, {w})")
    x, y, z, w = x / norm, y / norm, z / norm, w / norm
    roll = math.atan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
    pitch = math.asin(max(-1.0, min(1.0, 2 * (w * y - z * x))))
    yaw = math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    return roll, pitch, yaw


def pose_to_xyzrpy(pose) -> np.ndarray:
    """geometry_msgs/Pose (or anything with .position.x.. and .orientation.x..) -> (6,) float64;
    ValueError for a non-finite position or an invalid orientation."""
    p, q = pose.position, pose.orientation
    values = np.array([p.x, p.y, p.z, *quaternion_to_rpy(q.x, q.y, q.z, q.w)], dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError(f"non-finite position ({p.x}, {p.y}, {p.z})")
    return values


def set_pose_from_xyzrpy(pose, values) -> None:
    """Fill a geometry_msgs/Pose in place from x y z roll pitch yaw."""
    x, y, z, roll, pitch, yaw = (float(v) for v in values[:POSE_DIMS])
    pose.position.x, pose.position.y, pose.position.z = x, y, z
    q = pose.orientation
    q.x, q.y, q.z, q.w = rpy_to_quaternion(roll, pitch, yaw)


def stamp_to_seconds(stamp) -> float:
    """builtin_interfaces/Time -> seconds (float)."""
    return stamp.sec + stamp.nanosec * 1e-9
