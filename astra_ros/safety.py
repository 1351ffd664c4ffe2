"""Command checks between the policy and the robot: pure numpy, no ROS, no torch.

Every command the node publishes goes through `filter_command` first, in this order:

1. finite check: any NaN/inf rejects the whole command (nothing is published);
2. step limit: each dimension moves at most `max_step[i]` away from `reference` (the last executed
   command, or the robot's current pose for delta action spaces); angles use the wrapped difference;
3. workspace: each dimension is clamped into [lower[i], upper[i]] (gripper range included); an
   angle whose range spans the whole circle is wrapped into [lower, lower + 2 pi) instead.

The workspace clamp comes last so it always holds, even when the reference itself lies outside
the workspace. The result says what was clipped and why, so the node can report it.

`late_command_reason` is the last check before a command goes out: a step that took long may
have been computed from frames that are stale by now (issue: 250-900 ms steps on 4000x4000
frames went out against a 0.5 s frame timeout), so freshness is checked again at publish time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

# Dimensions whose values are angles in radians (differences are taken on the circle).
ANGULAR_DIMS = frozenset({"roll", "pitch", "yaw", "theta", "pick_theta", "place_theta"})


def wrap_angle(x: np.ndarray | float) -> np.ndarray:
    """Wrap into [-pi, pi)."""
    return (np.asarray(x, dtype=np.float64) + math.pi) % (2.0 * math.pi) - math.pi


@dataclass(frozen=True)
class SafetyLimits:
    """Per-dimension limits, in the order of the action space's `dim_names`.

    `max_step[i] = inf` means no step limit for that dimension.
    """

    names: tuple[str, ...]
    lower: np.ndarray
    upper: np.ndarray
    max_step: np.ndarray

    @classmethod
    def build(cls, names: Sequence[str], lower: Sequence[float], upper: Sequence[float],
              max_step: Sequence[float] | None = None) -> "SafetyLimits":
        names = tuple(names)
        n = len(names)
        lower_arr = np.asarray(lower, dtype=np.float64).reshape(-1)
        upper_arr = np.asarray(upper, dtype=np.float64).reshape(-1)
        step_arr = (np.full(n, np.inf) if max_step is None or len(max_step) == 0
                    else np.asarray(max_step, dtype=np.float64).reshape(-1))
        for label, arr in (("lower", lower_arr), ("upper", upper_arr), ("max_step", step_arr)):
            if arr.shape != (n,):
                raise ValueError(f"safety limits: '{label}' has {arr.size} values for {n} dimensions {list(names)}")
            if np.isnan(arr).any():
                raise ValueError(f"safety limits: '{label}' contains NaN: {arr.tolist()}")
        if not (np.isfinite(lower_arr).all() and np.isfinite(upper_arr).all()):
            raise ValueError("safety limits: workspace bounds must be finite")
        bad = [f"{nm}: {lo} > {hi}" for nm, lo, hi in zip(names, lower_arr, upper_arr) if lo > hi]
        if bad:
            raise ValueError(f"safety limits: lower > upper for {', '.join(bad)}")
        if (step_arr <= 0).any():
            raise ValueError(f"safety limits: max_step must be > 0 (inf for no limit), got {step_arr.tolist()}")
        for arr in (lower_arr, upper_arr, step_arr):
            arr.flags.writeable = False
        return cls(names, lower_arr, upper_arr, step_arr)

    @property
    def angular(self) -> np.ndarray:
        return np.array([name in ANGULAR_DIMS for name in self.names], dtype=bool)


@dataclass(frozen=True)
class Clip:
    """One dimension changed by the filter."""

    dim: str
    reason: str  # "step" or "workspace"
    requested: float
    applied: float

    def __str__(self) -> str:
        return f"{self.dim} {self.reason}: {self.requested:.4g} -> {self.applied:.4g}"


@dataclass
class FilterResult:
    command: np.ndarray | None  # None: rejected, publish nothing
    clips: list[Clip] = field(default_factory=list)
    rejected: str | None = None

    @property
    def ok(self) -> bool:
        return self.command is not None


def filter_command(proposal: np.ndarray, limits: SafetyLimits, reference: np.ndarray | None = None) -> FilterResult:
    """Check one proposed command (physical units, shape (N,)); see the module docstring."""
    values = np.asarray(proposal, dtype=np.float64).reshape(-1)
    n = len(limits.names)
    if values.shape != (n,):
        return FilterResult(None, rejected=f"command has {values.size} values, expected {n} ({list(limits.names)})")
    finite = np.isfinite(values)
    if not finite.all():
        bad = [f"{name}={v}" for name, v, ok in zip(limits.names, values, finite) if not ok]
        return FilterResult(None, rejected=f"non-finite command values: {', '.join(bad)}")

    angular = limits.angular
    # An angle whose workspace is the whole circle has no edge: it is wrapped, never clamped. A
    # partial arc [lower, upper] is an interval the joint may not leave (not even through +-pi),
    # so it is clamped linearly, like a position.
    full_circle = angular & (limits.upper - limits.lower >= 2.0 * math.pi - 1e-9)
    partial_arc = angular & ~full_circle
    clips: list[Clip] = []
    command = values.copy()

    if reference is not None:
        ref = np.asarray(reference, dtype=np.float64).reshape(-1)
        if ref.shape != (n,) or not np.isfinite(ref).all():
            return FilterResult(None, rejected=f"step-limit reference is invalid: {ref.tolist()}")
        delta = command - ref
        delta[angular] = wrap_angle(delta[angular])  # the short way round
        limited = np.clip(delta, -limits.max_step, limits.max_step)
        for i in np.flatnonzero(limited != delta):
            clips.append(Clip(limits.names[i], "step", float(command[i]), float(ref[i] + limited[i])))
        command = ref + limited
    else:
        # no reference: take the representative of each angle nearest its arc's centre
        centre = (limits.lower + limits.upper) / 2.0
        command[partial_arc] = centre[partial_arc] + wrap_angle(command[partial_arc] - centre[partial_arc])

    lower = limits.lower[full_circle]
    command[full_circle] = lower + np.mod(command[full_circle] - lower, 2.0 * math.pi)
    clamped = np.clip(command, limits.lower, limits.upper)
    for i in np.flatnonzero(clamped != command):
        clips.append(Clip(limits.names[i], "workspace", float(command[i]), float(clamped[i])))
    return FilterResult(clamped, clips)


def late_command_reason(oldest_frame_age_s: float, step_latency_s: float, image_timeout_s: float,
                        max_step_latency_s: float) -> str:
    """Empty when a command may still go out; otherwise why not.

    `oldest_frame_age_s`: age, at publish time, of the oldest camera frame the command was
    computed from (local receive time); `step_latency_s`: control tick -> now."""
    problems = []
    if oldest_frame_age_s > image_timeout_s:
        problems.append(f"its oldest frame is {oldest_frame_age_s:.3f}s old (image_timeout_s={image_timeout_s:g})")
    if step_latency_s > max_step_latency_s:
        problems.append(f"its step took {step_latency_s:.3f}s (max_step_latency_s={max_step_latency_s:g})")
    return "command withheld: " + " and ".join(problems) if problems else ""
