"""ROS messages -> numpy values, without ROS: the conversions of recorded (or live) messages.

The functions only read message fields by name, so they accept the message classes of rosbags
(what the rosbag importer deserialises) and of rclpy alike (what a recorder node receives): a
recorder that calls them stores exactly what the importer would. Every failure raises an
exception with a short ``kind`` (``ImageDecodeError``, ``QuaternionError`` or :class:`BadSample`)
so callers can count bad samples per kind.

Type names are rosbag2's (``package/msg/Name``).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from astra_core.geometry import pose_to_pose6d
from astra_core.imaging import decode_compressed, decode_labels, decode_raw

RAW_IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
POSE_STAMPED = "geometry_msgs/msg/PoseStamped"
JOINT_STATE = "sensor_msgs/msg/JointState"
PICK_PLACE_SE2 = "astra_ros/msg/PickPlaceSE2"
GRIPPER_COMMAND = "astra_ros/msg/GripperCommand"
STRING = "std_msgs/msg/String"
BOOL = "std_msgs/msg/Bool"
FLOAT64 = "std_msgs/msg/Float64"
FLOAT32 = "std_msgs/msg/Float32"

IMAGE_TYPES = (RAW_IMAGE, COMPRESSED_IMAGE)
MASK_TYPES = (RAW_IMAGE,)  # mono16 / mono8 instance labels
ACTION_TYPES = (POSE_STAMPED, PICK_PLACE_SE2, JOINT_STATE)
GRIPPER_TYPES = (GRIPPER_COMMAND, FLOAT64, FLOAT32)
PROPRIO_TYPES = (JOINT_STATE, POSE_STAMPED)
MARKER_TYPES = (STRING, BOOL)
INSTRUCTION_TYPES = (STRING,)
# The project's own messages (msg/*.msg): registered with the type store from their .msg text.
PROJECT_PACKAGE = "astra_ros"

JOINT_FIELDS = ("position", "velocity", "effort")
POSE6D_NAMES = ("x", "y", "z", "roll", "pitch", "yaw")


class BadSample(ValueError):
    """A message whose values cannot be used (non-finite, missing joints, ...)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def stamp_ns(stamp: Any) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def header_stamp_ns(msg: Any) -> int | None:
    """The message's header stamp in ns, or None for messages without a header (String, Float64)."""
    header = getattr(msg, "header", None)
    return None if header is None else stamp_ns(header.stamp)


def image_to_rgb(msg: Any, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """sensor_msgs Image (raw) or CompressedImage -> (H, W, 3) uint8 RGB via astra_core.imaging.

    Raw frames come back as a read-only view of the message buffer (copy before keeping them).
    """
    if hasattr(msg, "encoding"):
        return decode_raw(msg.data, msg.encoding, msg.height, msg.width, msg.step, bool(msg.is_bigendian), expected_size)
    return decode_compressed(msg.data, msg.format, expected_size)


def image_to_labels(msg: Any, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """sensor_msgs/Image mono16 / mono8 instance labels -> (H, W) uint16 / uint8 via astra_core.imaging
    (the policy node's mask decoder); ``expected_size``: the size of the frame the mask belongs to."""
    return decode_labels(msg.data, msg.encoding, msg.height, msg.width, msg.step, bool(msg.is_bigendian), expected_size)


def pose_stamped_to_pose6d(msg: Any, quaternion_tolerance: float) -> np.ndarray:
    """geometry_msgs/PoseStamped -> (6,) x y z roll pitch yaw (ZYX, astra_core.geometry)."""
    p, q = msg.pose.position, msg.pose.orientation
    try:
        return pose_to_pose6d((p.x, p.y, p.z), (q.x, q.y, q.z, q.w), quaternion_tolerance)
    except ValueError as err:
        if hasattr(err, "kind"):
            raise
        raise BadSample("nonfinite", str(err)) from None


def pick_place_to_se2(msg: Any) -> np.ndarray:
    """astra_ros/PickPlaceSE2 -> (6,) pick_x pick_y pick_theta place_x place_y place_theta."""
    values = np.array([msg.pick.x, msg.pick.y, msg.pick.theta, msg.place.x, msg.place.y, msg.place.theta], np.float64)
    _check_finite(values, "pick/place")
    return values


def joint_state_values(msg: Any, field: str, joints: Sequence[str] | None) -> tuple[list[str], np.ndarray]:
    """sensor_msgs/JointState -> (joint names, values of ``field``), selected and ordered by ``joints``.

    ``joints`` None: every joint, in the message's order.
    """
    names = [str(n) for n in msg.name]
    values = np.asarray(getattr(msg, field), dtype=np.float64).reshape(-1)
    if len(values) != len(names):
        raise BadSample("joint_names", f"{len(names)} joint names but {len(values)} {field} values")
    if joints is not None:
        where = {n: i for i, n in enumerate(names)}
        absent = [j for j in joints if j not in where]
        if absent:
            raise BadSample("joint_names", f"joints {absent} are not in the message (it has {names})")
        values = values[[where[j] for j in joints]]
        names = list(joints)
    _check_finite(values, field)
    return names, values


def gripper_value(msg: Any) -> float:
    """astra_ros/GripperCommand (.position, 0 closed .. 1 open) or std_msgs Float64/Float32 (.data)."""
    value = float(msg.position if hasattr(msg, "position") else msg.data)
    if not math.isfinite(value):
        raise BadSample("nonfinite", f"gripper value {value} is not finite")
    return value


def _check_finite(values: np.ndarray, what: str) -> None:
    if not np.isfinite(values).all():
        raise BadSample("nonfinite", f"{what} values {values.tolist()} are not all finite")
