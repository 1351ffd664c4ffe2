"""Command filter: finite check, step limit (with angle wrapping), workspace clamp, reporting."""

import math

import numpy as np
import pytest

from astra_ros.safety import SafetyLimits, filter_command, wrap_angle

POSE = ["x", "y", "z", "roll", "pitch", "yaw", "gripper"]
LIMITS = SafetyLimits.build(
    POSE,
    lower=[-0.5, -0.5, 0.0, -math.pi, -math.pi, -math.pi, 0.0],
    upper=[0.5, 0.5, 0.8, math.pi, math.pi, math.pi, 1.0],
    max_step=[0.05, 0.05, 0.05, 0.2, 0.2, 0.2, math.inf],
)


def test_inside_limits_passes_unchanged():
    cmd = np.array([0.1, 0.2, 0.3, 0.0, 0.1, -0.1, 0.5])
    result = filter_command(cmd, LIMITS, reference=cmd + 0.01)
    assert result.ok and not result.clips
    np.testing.assert_allclose(result.command, cmd)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_rejects_the_whole_command(bad):
    cmd = np.array([0.1, 0.2, 0.3, 0.0, bad, 0.0, 0.5])
    result = filter_command(cmd, LIMITS)
    assert not result.ok and result.command is None
    assert "pitch" in result.rejected


def test_wrong_length_is_rejected():
    assert not filter_command(np.zeros(6), LIMITS).ok


def test_workspace_clamp_per_dimension_including_gripper():
    result = filter_command(np.array([2.0, -3.0, 0.4, 0.0, 0.0, 0.0, 1.7]), LIMITS)
    np.testing.assert_allclose(result.command, [0.5, -0.5, 0.4, 0.0, 0.0, 0.0, 1.0])
    assert {(c.dim, c.reason) for c in result.clips} == {("x", "workspace"), ("y", "workspace"),
                                                          ("gripper", "workspace")}


def test_step_limit_against_the_reference():
    ref = np.array([0.0, 0.0, 0.4, 0.0, 0.0, 0.0, 0.0])
    result = filter_command(np.array([0.3, -0.01, 0.4, 0.0, 0.0, 1.0, 1.0]), LIMITS, reference=ref)
    np.testing.assert_allclose(result.command, [0.05, -0.01, 0.4, 0.0, 0.0, 0.2, 1.0])
    assert {(c.dim, c.reason) for c in result.clips} == {("x", "step"), ("yaw", "step")}
    assert np.all(np.abs(result.command - ref)[:6] <= LIMITS.max_step[:6] + 1e-12)


def test_angle_steps_go_the_short_way_round():
    ref = np.array([0.0, 0.0, 0.4, 0.0, 0.0, 3.1, 0.0])
    cmd = ref.copy()
    cmd[5] = -3.1  # 0.083 rad away across +-pi, not 6.2 rad
    result = filter_command(cmd, LIMITS, reference=ref)
    assert not result.clips
    assert abs(wrap_angle(result.command[5] - (-3.1))) < 1e-9


def test_workspace_wins_when_the_reference_is_outside_it():
    ref = np.array([0.9, 0.0, 0.4, 0.0, 0.0, 0.0, 0.0])  # robot outside the workspace
    result = filter_command(ref.copy(), LIMITS, reference=ref)
    assert result.command[0] == 0.5


def test_limits_are_validated():
    with pytest.raises(ValueError, match="lower > upper for x"):
        SafetyLimits.build(["x"], [1.0], [0.0])
    with pytest.raises(ValueError, match="'upper' has 1 values for 2"):
        SafetyLimits.build(["x", "y"], [0.0, 0.0], [1.0])
    with pytest.raises(ValueError, match="max_step must be > 0"):
        SafetyLimits.build(["x"], [0.0], [1.0], [0.0])
    with pytest.raises(ValueError, match="finite"):
        SafetyLimits.build(["x"], [-np.inf], [1.0])


def test_random_commands_always_respect_the_limits():
    rng = np.random.default_rng(1)
    ref = np.array([0.0, 0.0, 0.4, 0.0, 0.0, 0.0, 0.5])
    for _ in range(500):
        cmd = rng.normal(0, 3, size=7)
        result = filter_command(cmd, LIMITS, reference=ref)
        out = result.command
        assert np.all(out >= LIMITS.lower) and np.all(out <= LIMITS.upper)
        step = np.abs(out - ref)
        step[3:6] = np.abs(wrap_angle(out[3:6] - ref[3:6]))
        assert np.all(step <= LIMITS.max_step + 1e-9)
        ref = out


PARTIAL = SafetyLimits.build(["roll"], lower=[-3.0], upper=[3.0], max_step=[0.5])


def test_a_partial_arc_is_an_interval_even_across_pi():
    # 2.95 -> -2.9 is 0.43 rad the short way, but that way crosses the forbidden gap (3, pi]
    result = filter_command(np.array([-2.9]), PARTIAL, reference=np.array([2.95]))
    assert result.command[0] == 3.0 and [c.reason for c in result.clips] == ["workspace"]


def test_random_angles_on_a_partial_arc_respect_step_and_range():
    rng = np.random.default_rng(2)
    ref = np.array([2.9])
    for _ in range(2000):
        out = filter_command(rng.uniform(-math.pi, math.pi, 1), PARTIAL, reference=ref).command
        assert -3.0 <= out[0] <= 3.0
        assert abs(out[0] - ref[0]) <= 0.5 + 1e-12
        ref = out


def test_without_a_reference_angles_wrap_to_the_arc():
    full = SafetyLimits.build(["yaw"], [-math.pi], [math.pi])
    assert filter_command(np.array([3.5]), full).command[0] == pytest.approx(3.5 - 2 * math.pi)
    assert filter_command(np.array([-3.2]), PARTIAL).command[0] == 3.0  # -3.2 is 3.083 on the circle
