"""Pose conversions of the nodes (Pose messages <-> x y z roll pitch yaw): thin wrappers over
astra_core.geometry, so the policy node accepts and refuses exactly the poses the importer and the
recorder accept and refuse. No ROS."""

import math
from types import SimpleNamespace

import numpy as np
import pytest

from astra_core.data import ros_messages as rm
from astra_core.geometry import QUATERNION_TOLERANCE, QuaternionError, rpy_to_quaternion
from astra_ros.pose_conversion import pose_to_xyzrpy, set_pose_from_xyzrpy
from astra_ros.proprio import proprio_from_pose


def _pose(quaternion=(0.0, 0.0, 0.0, 1.0)):
    x, y, z, w = quaternion
    return SimpleNamespace(position=SimpleNamespace(x=0.1, y=-0.2, z=0.3),
                           orientation=SimpleNamespace(x=x, y=y, z=z, w=w))


def test_pose_round_trip_and_bad_poses():
    pose = _pose()
    values = np.array([0.1, -0.2, 0.3, 0.4, -0.5, 2.9])
    set_pose_from_xyzrpy(pose, values)
    np.testing.assert_allclose(pose_to_xyzrpy(pose), values, atol=1e-12)
    pose.position.x = math.nan
    with pytest.raises(ValueError, match="not finite"):
        pose_to_xyzrpy(pose)
    pose.position.x, pose.orientation.w = 0.0, 0.0
    pose.orientation.x = pose.orientation.y = pose.orientation.z = 0.0
    with pytest.raises(QuaternionError) as err:
        pose_to_xyzrpy(pose)
    assert err.value.kind == "norm"


def outcome(convert, msg):
    """(values, None) or (None, (kind, message)): what a converter makes of a message."""
    try:
        return convert(msg), None
    except ValueError as err:
        return None, (getattr(err, "kind", None), str(err))


@pytest.mark.parametrize("scale", [1.0, 1.004, 0.995, 1.011, 0.98, 1.05, 0.0, math.nan])
def test_the_node_refuses_a_non_unit_quaternion_as_the_importer_does(scale):
    """A pose the importer (and the recorder: the same ros_messages function) turns into a bad sample
    of kind 'norm' / 'nonfinite', the policy node refuses as bad input with the same kind and
    message, for its proprioception and its end-effector pose; a pose it accepts, both accept
    with the same values. The node then counts it (kinds 'proprio', 'ee_pose') and holds when its
    last good pose goes stale (test_policy_node_config)."""
    q = [v * scale for v in rpy_to_quaternion(0.3, -0.2, 1.1)]
    msg = SimpleNamespace(header=SimpleNamespace(), pose=_pose(q))
    importer = outcome(lambda m: rm.pose_stamped_to_pose6d(m, QUATERNION_TOLERANCE), msg)
    proprio = outcome(proprio_from_pose, msg)  # the node's proprio_msg_type 'pose' reader
    ee_pose = outcome(lambda m: pose_to_xyzrpy(m.pose), msg)  # the node's end-effector pose reader
    refused = math.isnan(scale) or abs(scale - 1.0) > QUATERNION_TOLERANCE
    assert (importer[0] is None) == refused
    for node in (proprio, ee_pose):
        assert node[1] == importer[1]
        if not refused:
            assert np.array_equal(node[0], importer[0])
    if refused:
        assert importer[1][0] == ("nonfinite" if math.isnan(scale) else "norm")
