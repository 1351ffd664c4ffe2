"""Policy commands as the simulator bridge receives them -> checked action values. Pure Python
(duck-typed messages), no ROS.

What a command must be before it may become a simulator action (every refusal is counted by
reason; none crashes the bridge):

* in the bridge's action frame (``frame_id``; reason ``frame``);
* not *outdated*: stamped no earlier than the observation it can answer. Stepping once per
  command (the tabletop), that is the current observation: an older command was computed from
  an earlier state (e.g. the last command of a finished episode still in flight when the next
  episode began). Stepping at a fixed rate, a command holds until the next one, so only commands
  from before the episode began are outdated. Stamps must come from the bridge's clock: the same
  machine's system clock, or /clock when the bridge publishes it and the nodes use sim time;
* made of finite numbers in the action space's order (``malformed`` / ``nonfinite``). Bounds and
  reachability are the simulator's to judge (astra_sim.pose_sim.ActionRejected reasons).

A 6-D pose command arrives as two messages, ``target_pose`` (PoseStamped) and ``gripper_command``
(GripperCommand), that the policy node stamps identically. Stepping per command, the two are
paired by stamp (:class:`PoseCommandPairer`), so a step never combines a new pose with the
previous gripper value; at a fixed rate the newest of each is the target (:class:`HeldTarget`).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Optional

import numpy as np

from astra_ros.pose_conversion import POSE_DIMS, pose_to_xyzrpy

PAIRING_DEPTH = 8  # unmatched halves of pose commands kept, per kind


class CommandRefused(ValueError):
    """A command that does not become an action; ``reason`` is one short word (counted per kind)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def check_frame_and_stamp(frame_id: str, stamp_s: float, expected_frame: str, not_before_s: float) -> None:
    """Raise CommandRefused unless the command is in `expected_frame` and stamped at `not_before_s` or later."""
    if frame_id != expected_frame:
        raise CommandRefused("frame", f"command in frame {frame_id!r}, the simulator's action frame is {expected_frame!r}")
    if stamp_s < not_before_s:
        raise CommandRefused("outdated", f"command stamped {stamp_s:.3f}s, before the observation it could answer "
                                         f"({not_before_s:.3f}s)")


def se2_values(msg) -> np.ndarray:
    """PickPlaceSE2 -> (6,) pick_x pick_y pick_theta place_x place_y place_theta; refused when not finite."""
    values = np.array([msg.pick.x, msg.pick.y, msg.pick.theta, msg.place.x, msg.place.y, msg.place.theta],
                      dtype=np.float64)
    return finite(values)


def pose_values(pose_msg) -> np.ndarray:
    """PoseStamped -> (6,) x y z roll pitch yaw; refused for a non-finite position or invalid quaternion."""
    try:
        return pose_to_xyzrpy(pose_msg.pose)
    except ValueError as err:
        raise CommandRefused("malformed", f"target pose: {err}") from None


def gripper_value(msg) -> float:
    """GripperCommand -> its position (0 closed .. 1 open; the simulator saturates past them)."""
    return float(finite(np.array([msg.position], dtype=np.float64))[0])


def finite(values: np.ndarray) -> np.ndarray:
    if not np.isfinite(values).all():
        raise CommandRefused("nonfinite", f"command has non-finite values: {values.tolist()}")
    return values


class PoseCommandPairer:
    """target_pose + gripper_command of the same stamp -> one (7,) command (stepping per command)."""

    def __init__(self, depth: int = PAIRING_DEPTH) -> None:
        self._poses: OrderedDict[float, np.ndarray] = OrderedDict()
        self._grippers: OrderedDict[float, float] = OrderedDict()
        self._depth = depth

    def add_pose(self, stamp_s: float, xyzrpy: np.ndarray) -> Optional[np.ndarray]:
        gripper = self._grippers.pop(stamp_s, None)
        if gripper is not None:
            return np.concatenate([xyzrpy, [gripper]])
        self._keep(self._poses, stamp_s, xyzrpy)
        return None

    def add_gripper(self, stamp_s: float, position: float) -> Optional[np.ndarray]:
        pose = self._poses.pop(stamp_s, None)
        if pose is not None:
            return np.concatenate([pose, [position]])
        self._keep(self._grippers, stamp_s, float(position))
        return None

    def clear(self) -> None:
        self._poses.clear()
        self._grippers.clear()

    def _keep(self, store: OrderedDict, stamp_s: float, value) -> None:
        store[stamp_s] = value
        while len(store) > self._depth:  # the other half never came (lost, or another sender)
            store.popitem(last=False)


class HeldTarget:
    """The newest pose and gripper commands (stepping at a fixed rate: the target holds until replaced)."""

    def __init__(self) -> None:
        self.pose: Optional[np.ndarray] = None
        self.gripper: Optional[float] = None

    def values(self, fallback: np.ndarray) -> np.ndarray:
        """(7,) target: the commanded parts, the rest from `fallback` (the hold-still action)."""
        out = np.array(fallback, dtype=np.float64)
        if self.pose is not None:
            out[:POSE_DIMS] = self.pose
        if self.gripper is not None:
            out[POSE_DIMS] = self.gripper
        return out

    @property
    def empty(self) -> bool:
        return self.pose is None and self.gripper is None

    def clear(self) -> None:
        self.pose = self.gripper = None
