"""Proprioception messages -> the vector a checkpoint takes. Pure Python (duck-typed messages), no ROS.

Two message kinds (the policy node's `proprio_msg_type`):

* ``pose``: geometry_msgs/PoseStamped -> ``x y z roll pitch yaw`` (ZYX, astra_core.geometry through
  astra_ros.pose_conversion); a quaternion further than ``QUATERNION_TOLERANCE`` from unit length is
  refused, as the importer and the recorder refuse it. For checkpoints whose proprioception is
  exactly an end-effector pose.
* ``joint_state``: sensor_msgs/JointState -> the ``position`` of each name the checkpoint's
  proprioception lists, in its order. Names are matched, not positions, because a JointState may
  list joints in any order (and robot_state_publisher-style topics carry more joints than a
  checkpoint uses). The simulator bridge publishes its env's proprioception this way (names =
  the env's ``proprio_names``), so any vector, e.g. TCP pose + gripper opening, has a carrier.

Normalisation is not done here: the model normalises with its own dataset statistics.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from astra_ros.pose_conversion import pose_to_xyzrpy


def proprio_from_pose(msg) -> np.ndarray:
    """PoseStamped -> (6,) x y z roll pitch yaw; ValueError (QuaternionError for the orientation) for a
    non-finite or non-unit pose."""
    return pose_to_xyzrpy(msg.pose)


class JointStateSelector:
    """Picks named positions out of JointState messages, in a fixed order."""

    def __init__(self, names: Sequence[str]) -> None:
        if not names or len(set(names)) != len(names):
            raise ValueError(f"joint names must be unique and non-empty, got {list(names)}")
        self.names = list(names)

    def __call__(self, msg) -> np.ndarray:
        """JointState -> (len(names),) float64; ValueError naming what is missing or wrong."""
        names, positions = list(msg.name), list(msg.position)
        if len(names) != len(positions):
            raise ValueError(f"joint state has {len(names)} names but {len(positions)} positions")
        index = {name: i for i, name in enumerate(names)}
        missing = [name for name in self.names if name not in index]
        if missing:
            raise ValueError(f"joint state lacks {missing} (it has {names})")
        values = np.array([positions[index[name]] for name in self.names], dtype=np.float64)
        if not np.isfinite(values).all():
            bad = [name for name, v in zip(self.names, values) if not np.isfinite(v)]
            raise ValueError(f"joint state has non-finite positions for {bad}")
        return values


def fill_joint_state(msg, names: Sequence[str], values: Sequence[float]) -> None:
    """Fill a JointState's names and positions in place (the bridge's side of `JointStateSelector`)."""
    msg.name = [str(n) for n in names]
    msg.position = [float(v) for v in values]
