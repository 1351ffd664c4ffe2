"""Pose conversion math shared by everything that turns ROS poses into actions, without ROS.

Convention: roll-pitch-yaw are intrinsic Z-Y-X Euler angles (yaw about z, then pitch about the new
y, then roll about the new x), the convention of the pose6d action space and of the policy node's
published target poses. Quaternions are (x, y, z, w), as in geometry_msgs/Quaternion.

One copy of this math keeps training data and the live node in agreement: the rosbag and LeRobot
importers and the recorder (through :mod:`astra_core.data.ros_messages`) convert poses with these
functions, and so do the ROS nodes (``astra_ros/pose_conversion.py`` only wraps them for messages):
the policy node's proprioception and end-effector pose, the commands it publishes, the simulator
bridge. A quaternion further than the tolerance from unit length is refused by all of them alike.
"""

from __future__ import annotations

import math

import numpy as np

# Below this norm a quaternion has no direction to normalise to.
_MIN_NORM = 1e-9
# How far from 1 a quaternion's norm may be before the pose is refused (the default of the importers'
# and the recorder's quaternion_tolerance, and the policy node's rule): float32 messages and
# rounding stay far inside it, an uninitialised or corrupt orientation far outside.
QUATERNION_TOLERANCE = 0.01


class QuaternionError(ValueError):
    """A quaternion that is not finite or not (close enough to) unit length; ``kind`` says which."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind  # "nonfinite" | "norm"


def rpy_to_quaternion(roll: float, pitch: float, yaw: float) -> tuple[float, float, float, float]:
    """ZYX roll-pitch-yaw (radians) -> unit quaternion (x, y, z, w)."""
    cr, sr = math.cos(roll / 2), math.sin(roll / 2)
    cp, sp = math.cos(pitch / 2), math.sin(pitch / 2)
    cy, sy = math.cos(yaw / 2), math.sin(yaw / 2)
    return (sr * cp * cy - cr * sp * sy, cr * sp * cy + sr * cp * sy,
            cr * cp * sy - sr * sp * cy, cr * cp * cy + sr * sp * sy)  # fmt: skip


def quaternion_to_rpy(x: float, y: float, z: float, w: float) -> tuple[float, float, float]:
    """Quaternion (x, y, z, w), any non-zero norm -> ZYX (roll, pitch, yaw) in radians.

    Pitch is clamped to [-pi/2, pi/2] (asin of a value rounded past +-1 would be NaN).
    Raises ValueError for a zero or non-finite quaternion.
    """
    norm = math.sqrt(x * x + y * y + z * z + w * w)
    if not math.isfinite(norm) or norm < _MIN_NORM:
        raise ValueError(f"invalid quaternion ({x}, {y}, {z}, {w})")
    x, y, z, w = x / norm, y / norm, z / norm, w / norm
    roll = math.atan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
    pitch = math.asin(max(-1.0, min(1.0, 2 * (w * y - z * x))))
    yaw = math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    return roll, pitch, yaw


def normalize_quaternion(x: float, y: float, z: float, w: float,
                         tolerance: float = QUATERNION_TOLERANCE) -> tuple[float, float, float, float]:
    """Unit quaternion from one whose norm is within ``tolerance`` of 1.

    A recorded orientation far from unit length is a corrupt or uninitialised message (an all-zero
    quaternion is the classic one), not something to renormalise silently: QuaternionError.
    """
    values = (x, y, z, w)
    if not all(math.isfinite(v) for v in values):
        raise QuaternionError("nonfinite", f"quaternion ({x}, {y}, {z}, {w}) is not finite")
    norm = math.sqrt(sum(v * v for v in values))
    if abs(norm - 1.0) > tolerance:
        raise QuaternionError("norm", f"quaternion ({x}, {y}, {z}, {w}) has norm {norm:.6g}, not within {tolerance} of 1")
    return x / norm, y / norm, z / norm, w / norm


def pose_to_pose6d(position: tuple[float, float, float], orientation: tuple[float, float, float, float],
                   quaternion_tolerance: float = QUATERNION_TOLERANCE) -> np.ndarray:
    """Position (x, y, z) + quaternion (x, y, z, w) -> float64 (6,) x y z roll pitch yaw.

    Raises QuaternionError for a bad orientation and ValueError for a non-finite position.
    """
    q = normalize_quaternion(*(float(v) for v in orientation), tolerance=quaternion_tolerance)
    p = [float(v) for v in position]
    if not all(math.isfinite(v) for v in p):
        raise ValueError(f"position ({p[0]}, {p[1]}, {p[2]}) is not finite")
    return np.array([*p, *quaternion_to_rpy(*q)], dtype=np.float64)
