"""rosbag2 recordings for the importer tests (sqlite3 or MCAP storage), written with the package's
:class:`astra_core.data.rosbag_writer.BagWriter` (rosbags; the project's own messages registered
from msg/*.msg).

A plain module imported by name (test/conftest.py puts this folder on sys.path). Frames and poses are deterministic functions of time, so a test can recompute what the
importer must have produced at every control tick.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from astra_core.data import rosbag_writer
from astra_core.data.rosbag_source import project_typestore

T0_NS = 1_700_000_000 * 1_000_000_000  # recordings start at a realistic epoch time
TYPESTORE = project_typestore()


def BagWriter(path: str | os.PathLike, storage: str = "sqlite3") -> rosbag_writer.BagWriter:
    """The package's bag writer, with times in seconds after T0_NS."""
    return rosbag_writer.BagWriter(path, storage, t0_ns=T0_NS, typestore=TYPESTORE)


def ns(seconds: float) -> int:
    return T0_NS + int(round(seconds * 1e9))


def frame(t: float, camera: int, size: tuple[int, int] = (24, 32)) -> np.ndarray:
    """A smooth RGB frame that changes with time (JPEG-friendly, distinct per camera)."""
    h, w = size
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([(x * 255 // max(1, w - 1) + int(t * 40)) % 256,
                    (y * 255 // max(1, h - 1) + 60 * camera) % 256,
                    np.full_like(x, int(t * 90 + 30 * camera) % 256)], axis=-1)
    return img.astype(np.uint8)


def labels(i: int, camera: int, size: tuple[int, int] = (24, 32)) -> np.ndarray:
    """The instance mask of frame i of a camera: two objects labelled 2i+1 and 2i+2 that move with i,
    so a test can tell from a stored mask which frame it was paired with."""
    h, w = size
    mask = np.zeros(size, np.uint16)
    x = (i + 5 * camera) % (w // 2)
    mask[h // 4: h // 2, x: x + w // 4] = 2 * i + 1
    mask[h // 2 + 2: h - 2, w // 2: w // 2 + 3 + i % 5] = 2 * i + 2
    return mask


MASK_TOPICS = {"front": "/front/mask", "wrist": "/wrist/mask"}


def pose_rpy(t: float) -> np.ndarray:
    """The commanded pose at time t: x y z roll pitch yaw (angles stay well inside their ranges)."""
    return np.array([0.4 + 0.1 * math.sin(t), -0.2 + 0.05 * math.cos(t), 0.3, 0.2 * math.sin(t),
                     -0.3 + 0.1 * math.sin(0.7 * t), 1.0 - 0.4 * math.sin(1.3 * t)])


def joints(t: float) -> np.ndarray:
    return np.array([0.1 * t, -0.5 + 0.2 * t, 1.0, math.cos(t)])


def se2(i: int) -> np.ndarray:
    return np.array([0.1 + 0.01 * i, -0.1, 0.2 * i, 0.3, 0.05 * i, -0.5])


JOINTS = ["shoulder", "elbow", "wrist", "finger"]


def record_episode(bag: rosbag_writer.BagWriter, t0: float, duration: float, instruction: str | None = "put the cube in the bowl",
                   camera_hz: float = 30.0, pose_hz: float = 20.0, skip_camera: tuple[float, float] | None = None,
                   bad_quaternion_at: float | None = None, wrist: str = "jpeg", size: tuple[int, int] = (24, 32),
                   mask_delays_s: tuple[float, float] | None = None) -> None:
    """One teleoperated episode on the standard topics (see ``MAPPING``), from t0 for ``duration`` s.

    ``skip_camera`` = (from, to): the front camera sends nothing then (a dropout -> a gap).
    ``bad_quaternion_at``: the pose message nearest that time has an all-zero quaternion.
    ``mask_delays_s`` = (front, wrist): a segmenter publishes frame i's mask (``labels(i, camera)``,
    the frame's header stamp) on ``MASK_TOPICS``, received this long after the frame (< 0: before it).
    """
    if instruction is not None:
        bag.string("/instruction", t0, instruction)
    n_cam = int(duration * camera_hz) + 1
    n_pose = int(duration * pose_hz) + 1
    events: list[tuple[float, int, object]] = []
    for i in range(n_cam):
        events.append((t0 + i / camera_hz, 0, ("cam", i)))
        for camera, delay in enumerate(mask_delays_s or ()):
            events.append((t0 + i / camera_hz + delay, 0, (f"mask{camera}", i)))
    for i in range(n_pose):
        events.append((t0 + i / pose_hz, 1, ("pose", i)))
    for i in range(int(duration * 50) + 1):
        events.append((t0 + i / 50, 2, ("joints", i)))
    for i in range(int(duration * 10) + 1):
        events.append((t0 + i / 10, 3, ("gripper", i)))
    bad_pose = None if bad_quaternion_at is None else round((bad_quaternion_at - t0) * pose_hz)
    for t, _, (kind, i) in sorted(events, key=lambda e: (e[0], e[1])):
        if kind.startswith("mask"):
            camera, stamp = int(kind[-1]), t0 + i / camera_hz
            if not (camera == 0 and skip_camera and skip_camera[0] <= stamp - t0 < skip_camera[1]):
                bag.labels(list(MASK_TOPICS.values())[camera], t, labels(i, camera, size), stamp=stamp)
        elif kind == "cam":
            if not (skip_camera and skip_camera[0] <= t - t0 < skip_camera[1]):
                bag.image("/front/image_raw", t, frame(t, 0, size), "rgb8")
            bag.image("/wrist/image_raw/compressed" if wrist in ("jpeg", "png") else "/wrist/image_raw", t,
                      frame(t, 1, size), wrist)
        elif kind == "pose":
            bag.pose("/target_pose", t, pose_rpy(t), (0.0, 0.0, 0.0, 0.0) if i == bad_pose else None)
        elif kind == "joints":
            bag.joint_state("/joint_states", t, JOINTS, joints(t))
        else:
            bag.gripper("/gripper_command", t, 0.0 if t - t0 < duration / 2 else 1.0)


MAPPING = {
    "cameras": {"front": "/front/image_raw", "wrist": "/wrist/image_raw/compressed"},
    "action": {"space": "continuous_pose6d", "topic": "/target_pose"},
    "gripper": {"topic": "/gripper_command"},
    "proprio": [{"topic": "/joint_states", "joints": ["shoulder", "elbow", "wrist"]}],
    "instruction": {"topic": "/instruction"},
    "control_rate_hz": 10.0,
    "tolerance_s": 0.1,
}


def truncate(path: Path, fraction: float) -> Path:
    """Cut a storage file to ``fraction`` of its size (a recorder killed mid-write)."""
    files = [p for p in Path(path).iterdir() if p.suffix in (".mcap", ".db3")]
    assert len(files) == 1, files
    size = files[0].stat().st_size
    with files[0].open("r+b") as f:
        f.truncate(int(size * fraction))
    return files[0]
