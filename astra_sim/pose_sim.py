"""What the 6-D pose simulator backends (:mod:`astra_sim.maniskill`, :mod:`astra_sim.metaworld`) share.

* Rotation conventions. The project's ``continuous_pose6d`` actions carry ``roll pitch yaw`` as
  Z-Y-X Euler angles: ``R = Rz(yaw) @ Ry(pitch) @ Rx(roll)`` (yaw about the fixed z axis, then
  pitch, then roll; the ROS / URDF ``rpy`` convention). ManiSkill's ``pd_ee_pose`` controller
  reads its three rotation numbers as ``R = Rx(a) @ Ry(b) @ Rz(c)`` (pytorch3d's ``"XYZ"``),
  a different convention: :func:`rpy_to_matrix`, :func:`matrix_to_euler_xyz` and their inverses
  convert between them through rotation matrices.
* Action checks. :func:`check_pose_action` turns a command into a validated float64 array or
  raises :class:`ActionRejected` (a ``ValueError``) naming what is wrong, before anything is
  executed; a bridge can count rejections by ``reason``.
* Camera calibration. :func:`table_homography` gives the ``table_homography`` of
  :meth:`astra_sim.env.Env.sensor_info` for a fixed pinhole camera (OpenCV convention: x right,
  y down, z forward), :func:`project_points` the pixel of a 3-D point (used by the tests to check
  that masks sit on the objects).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable, Sequence, TypeVar

import numpy as np

from astra_core.action_space import ActionSpaceSpec

TWO_PI = 2.0 * math.pi
# Bounds are checked with this slack so that values written as float32 (datasets, ROS messages)
# and read back are not rejected for rounding.
BOUNDS_SLACK = 1e-6


class ActionRejected(ValueError):
    """An action a backend refuses; nothing was executed.

    ``reason`` is one of ``"malformed"`` (wrong shape / not numbers), ``"nonfinite"``,
    ``"out_of_bounds"`` (outside :attr:`Env.action_bounds`) or ``"unreachable"`` (inside the
    bounds but the robot cannot get there, e.g. no inverse-kinematics solution).
    """

    REASONS = ("malformed", "nonfinite", "out_of_bounds", "unreachable")

    def __init__(self, reason: str, message: str) -> None:
        if reason not in self.REASONS:
            raise ValueError(f"ActionRejected reason {reason!r} is not one of {self.REASONS}")
        super().__init__(message)
        self.reason = reason


ConfigT = TypeVar("ConfigT")


def config_from_dict(cls: type[ConfigT], options: dict[str, Any], backend: str) -> ConfigT:
    """A backend config dataclass from keyword options; unknown keys -> ValueError listing the valid ones."""
    valid = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(options) - valid
    if unknown:
        raise ValueError(f"{backend}: unknown options {sorted(unknown)}; valid options: {sorted(valid)}")
    return cls(**options)


class PoseEnvBase:
    """The :class:`astra_sim.env.Env` properties both pose backends compute the same way, from
    ``config.cameras``, ``config.image_size`` (square images), ``_spec`` and ``_low`` / ``_high``."""

    config: Any
    _spec: ActionSpaceSpec
    _low: np.ndarray
    _high: np.ndarray

    @property
    def camera_names(self) -> list[str]:
        return list(self.config.cameras)

    @property
    def image_size(self) -> tuple[int, int]:
        return (int(self.config.image_size), int(self.config.image_size))

    @property
    def action_space(self) -> ActionSpaceSpec:
        return self._spec

    @property
    def action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self._low.copy(), self._high.copy()


# ---- rotations ---------------------------------------------------------------------------------
def _rx(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _ry(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rz(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rpy_to_matrix(rpy: Sequence[float]) -> np.ndarray:
    """Project convention: (roll, pitch, yaw) -> ``Rz(yaw) @ Ry(pitch) @ Rx(roll)``."""
    roll, pitch, yaw = (float(v) for v in rpy)
    return _rz(yaw) @ _ry(pitch) @ _rx(roll)


def matrix_to_rpy(rotation: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rpy_to_matrix`: roll, yaw in (-pi, pi], pitch in [-pi/2, pi/2]."""
    r = np.asarray(rotation, dtype=np.float64)
    pitch = math.asin(max(-1.0, min(1.0, -r[2, 0])))
    roll = math.atan2(r[2, 1], r[2, 2])
    yaw = math.atan2(r[1, 0], r[0, 0])
    return np.array([roll, pitch, yaw])


def euler_xyz_to_matrix(angles: Sequence[float]) -> np.ndarray:
    """ManiSkill's ``pd_ee_pose`` convention: (a, b, c) -> ``Rx(a) @ Ry(b) @ Rz(c)``."""
    a, b, c = (float(v) for v in angles)
    return _rx(a) @ _ry(b) @ _rz(c)


def matrix_to_euler_xyz(rotation: np.ndarray) -> np.ndarray:
    """Inverse of :func:`euler_xyz_to_matrix` (b in [-pi/2, pi/2])."""
    r = np.asarray(rotation, dtype=np.float64)
    b = math.asin(max(-1.0, min(1.0, r[0, 2])))
    a = math.atan2(-r[1, 2], r[2, 2])
    c = math.atan2(-r[0, 1], r[0, 0])
    return np.array([a, b, c])


def quaternion_wxyz_to_matrix(q: Sequence[float]) -> np.ndarray:
    """Unit quaternion (w, x, y, z), as SAPIEN / ManiSkill and MuJoCo store them -> rotation matrix."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def wrap_angle(angle: float, low: float = -math.pi) -> float:
    """``angle`` moved by whole turns into ``[low, low + 2 pi)``."""
    return (float(angle) - low) % TWO_PI + low


# ---- action checks -----------------------------------------------------------------------------
def check_pose_action(action: object, names: Sequence[str], low: np.ndarray, high: np.ndarray,
                      periodic: Iterable[int] = (), saturating: Iterable[int] = (), ignored: Iterable[int] = (),
                      backend: str = "env") -> np.ndarray:
    """Validate one action against ``(low, high)``; returns it as float64, or raises :class:`ActionRejected`.

    ``periodic`` dimensions (angles) are first moved by whole turns into ``[low, low + 2 pi)``:
    the same orientation written with another turn count is the same command. ``saturating``
    dimensions (the gripper: a command past fully open / closed means fully open / closed) are
    clipped into their bounds instead of being rejected. ``ignored`` dimensions (what a backend
    cannot command, e.g. Meta-World's fixed hand orientation) must be finite and are then replaced
    by their lower bound. Any other dimension outside its bounds rejects the whole action.
    """
    n = len(names)
    try:
        a = np.array(action, dtype=np.float64)
    except (TypeError, ValueError):
        raise ActionRejected("malformed", f"{backend}: action must be {n} numbers ({' '.join(names)}), "
                                          f"got {action!r}") from None
    if a.shape != (n,):
        raise ActionRejected("malformed", f"{backend}: action must have shape ({n},) ({' '.join(names)}), "
                                          f"got shape {a.shape}")
    if not np.isfinite(a).all():
        bad = [names[i] for i in np.flatnonzero(~np.isfinite(a))]
        raise ActionRejected("nonfinite", f"{backend}: action has non-finite {bad}: {a.tolist()}")
    for i in ignored:
        a[i] = low[i]
    for i in periodic:
        a[i] = wrap_angle(a[i], low[i])
    for i in saturating:
        a[i] = min(max(a[i], low[i]), high[i])
    outside = [i for i in range(n) if not low[i] - BOUNDS_SLACK <= a[i] <= high[i] + BOUNDS_SLACK]
    if outside:
        details = ", ".join(f"{names[i]}={a[i]:.4g} not in [{low[i]:.4g}, {high[i]:.4g}]" for i in outside)
        raise ActionRejected("out_of_bounds", f"{backend}: action outside the action bounds: {details}")
    return np.clip(a, low, high)


# ---- instructions ------------------------------------------------------------------------------
def pick_template(templates: Sequence[str], seed: int, salt: int) -> str:
    """One template per seed, deterministic and independent of any simulator RNG."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, salt])
    return templates[int(rng.integers(len(templates)))]


# ---- cameras -----------------------------------------------------------------------------------
def mujoco_camera_to_cv(position: np.ndarray, xmat: np.ndarray) -> np.ndarray:
    """MuJoCo camera pose (x right, y up, looking along -z) -> OpenCV world-to-camera 3x4 extrinsics."""
    axes = np.asarray(xmat, dtype=np.float64).reshape(3, 3) @ np.diag([1.0, -1.0, -1.0])  # columns: cv axes in world
    rotation = axes.T
    return np.hstack([rotation, (-rotation @ np.asarray(position, dtype=np.float64)).reshape(3, 1)])


def pinhole_intrinsics(fovy_rad: float, width: int, height: int) -> np.ndarray:
    """Square-pixel intrinsics for a vertical field of view; pixel (0, 0) is the top-left corner of
    the image, so the centre is (width / 2, height / 2) (the convention of SAPIEN's intrinsic_cv)."""
    f = (height / 2.0) / math.tan(fovy_rad / 2.0)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def _rotate180(width: int, height: int) -> np.ndarray:
    """Pixel map of an image turned by 180 degrees (a camera mounted upside down, flipped upright)."""
    return np.array([[-1.0, 0.0, float(width)], [0.0, -1.0, float(height)], [0.0, 0.0, 1.0]])


def project_points(intrinsics: np.ndarray, extrinsics: np.ndarray, points: np.ndarray, width: int, height: int,
                   rotate180: bool = False) -> np.ndarray:
    """World points (N, 3) -> continuous pixel coordinates (N, 2) as (column, row) of the delivered image."""
    pts = np.atleast_2d(np.asarray(points, dtype=np.float64))
    cam = pts @ extrinsics[:, :3].T + extrinsics[:, 3]
    pix = cam @ np.asarray(intrinsics, dtype=np.float64).T
    pix = np.hstack([pix[:, :2] / pix[:, 2:3], np.ones((len(pix), 1))])
    if rotate180:
        pix = pix @ _rotate180(width, height).T
    return pix[:, :2]


def table_homography(intrinsics: np.ndarray, extrinsics: np.ndarray, width: int, height: int, plane_z: float,
                     world_to_action_xy: Sequence[float] = (0.0, 0.0), rotate180: bool = False) -> list[list[float]]:
    """3x3 map from normalised image coordinates ``(u, v, 1)`` (u = column / width, v = row / height)
    of the delivered image to action-frame ``(x, y, 1)`` on the plane ``z = plane_z`` (world frame).

    ``world_to_action_xy`` is the translation from world to action coordinates in the plane (the
    action frames of both backends differ from their world frames by a translation at most).
    """
    k = np.asarray(intrinsics, dtype=np.float64)
    r, t = extrinsics[:, :3], extrinsics[:, 3]
    plane_to_pixel = k @ np.column_stack([r[:, 0], r[:, 1], r[:, 2] * plane_z + t])
    normalised_to_pixel = np.diag([float(width), float(height), 1.0])
    if rotate180:  # delivered pixel -> rendered pixel (the turn is its own inverse)
        normalised_to_pixel = _rotate180(width, height) @ normalised_to_pixel
    shift = np.array([[1.0, 0.0, world_to_action_xy[0]], [0.0, 1.0, world_to_action_xy[1]], [0.0, 0.0, 1.0]])
    h = shift @ np.linalg.inv(plane_to_pixel) @ normalised_to_pixel
    return (h / h[2, 2]).tolist()


def label_lookup(ids_to_labels: dict[int, int], size: int) -> np.ndarray:
    """A lookup table ``lut[simulator_id] -> instance label`` (0 for every id not listed)."""
    lut = np.zeros(max(size, max(ids_to_labels, default=0) + 1), dtype=np.uint16)
    for sim_id, label in ids_to_labels.items():
        lut[sim_id] = label
    return lut
