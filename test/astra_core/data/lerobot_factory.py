"""Tiny LeRobotDataset folders (v2.1 and v3.0 layouts) written with pyarrow and PyAV, for the tests.

A plain module imported by name (test/conftest.py puts this folder on sys.path). The files
follow the layouts of LeRobot's own writer: meta/info.json with features and path templates,
episodes/tasks metadata (jsonl in v2.1, parquet in v3.0), data parquet with the default
columns (timestamp, frame_index, episode_index, index, task_index) and one MP4 per camera and
episode (v2.1) or per camera and file, episodes back to back (v3.0). Values are deterministic
functions of (episode, frame) so a test can check every one.
"""

from __future__ import annotations

import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from astra_core.data.bench_import import write_mp4

os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its whole configuration otherwise (read once)

CAMERAS = {"observation.images.top": 0, "observation.images.wrist": 1}
SIZE = (32, 48)  # H, W (even: yuv420p)
STATE_NAMES = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
ACTION_NAMES = ["x", "y", "z", "qx", "qy", "qz", "qw", "gripper"]  # an end-effector pose + quaternion + gripper
TASKS = ["pick up the cube", "open the drawer"]


def frame(episode: int, index: int, camera: int) -> np.ndarray:
    """Smooth frames (video-friendly) with a bright square that moves 3 px per frame."""
    h, w = SIZE
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 4 + 20 * camera, y * 6 + 10 * episode, np.full_like(x, 80 + 40 * camera)], axis=-1)
    r, c = 8, (index * 3 + 5 * episode) % (w - 10)
    img[r:r + 10, c:c + 10] = [250, 250, 40]
    return np.clip(img, 0, 255).astype(np.uint8)


def state(episode: int, index: int) -> np.ndarray:
    return np.array([0.1 * index, -0.2 * episode, 0.5, math.sin(index), 0.01 * index * episode, 0.8], np.float32)


def action(episode: int, index: int) -> np.ndarray:
    yaw = 0.2 * index - 0.5
    return np.array([0.3 + 0.01 * index, -0.1 * episode, 0.2, 0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2),
                     float(index % 2)], np.float32)


@dataclass
class Written:
    root: Path
    lengths: list[int]
    fps: int
    tasks: list[int] = field(default_factory=list)  # task index per episode


def write_video(path: Path, frames: list[np.ndarray], fps: int, codec: str) -> None:
    # LeRobot's defaults are g=2 and crf=30; crf 18 keeps the test's pixel tolerance tight
    write_mp4(path, frames, fps, codec, crf=18)


def _png(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def _features(fps: int, vector_type: str, image_keys: tuple[str, ...] = ()) -> dict:
    video = {"dtype": "video", "shape": [*SIZE, 3], "names": ["height", "width", "channels"],
             "info": {"video.fps": fps, "video.height": SIZE[0], "video.width": SIZE[1], "video.codec": "h264",
                      "video.pix_fmt": "yuv420p", "video.is_depth_map": False, "has_audio": False}}
    scalar = lambda dtype: {"dtype": dtype, "shape": [1], "names": None}
    image = {"dtype": "image", "shape": [*SIZE, 3], "names": ["height", "width", "channels"]}
    return {
        **{key: image if key in image_keys else video for key in CAMERAS},
        "observation.state": {"dtype": vector_type, "shape": [len(STATE_NAMES)], "names": STATE_NAMES},
        "action": {"dtype": vector_type, "shape": [len(ACTION_NAMES)], "names": ACTION_NAMES},
        "timestamp": scalar("float32"), "frame_index": scalar("int64"), "episode_index": scalar("int64"),
        "index": scalar("int64"), "task_index": scalar("int64"),
    }


def _rows(episode: int, length: int, first_index: int, task: int, fps: int, fixed_size: bool,
          image_keys: tuple[str, ...] = ()) -> pa.Table:
    vec = (lambda n: pa.list_(pa.float32(), n)) if fixed_size else (lambda n: pa.list_(pa.float32()))
    images = {key: pa.array([{"bytes": _png(frame(episode, i, CAMERAS[key])), "path": f"frame_{i:06d}.png"}
                             for i in range(length)], pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
              for key in image_keys}
    return pa.table({
        **images,
        "observation.state": pa.array([state(episode, i).tolist() for i in range(length)], vec(len(STATE_NAMES))),
        "action": pa.array([action(episode, i).tolist() for i in range(length)], vec(len(ACTION_NAMES))),
        "timestamp": pa.array(np.arange(length, dtype=np.float32) / fps, pa.float32()),
        "frame_index": pa.array(np.arange(length), pa.int64()),
        "episode_index": pa.array(np.full(length, episode), pa.int64()),
        "index": pa.array(first_index + np.arange(length), pa.int64()),
        "task_index": pa.array(np.full(length, task), pa.int64()),
    })


def _info(version: str, lengths: list[int], fps: int, data_path: str, video_path: str, image_keys=(), **extra) -> dict:
    return {"codebase_version": version, "robot_type": "so100", "total_episodes": len(lengths),
            "total_frames": sum(lengths), "total_tasks": len(TASKS), "chunks_size": 1000, "fps": fps,
            "splits": {"train": f"0:{len(lengths)}"}, "data_path": data_path, "video_path": video_path,
            "features": _features(fps, "float32", tuple(image_keys)), **extra}


def write_v21(root: Path, lengths: list[int] = (5, 7, 4), fps: int = 10, codec: str = "libx264",
              image_keys: tuple[str, ...] = ()) -> Written:
    """``image_keys``: cameras stored as PNG bytes in the parquet rows (dtype image) instead of MP4."""
    root = Path(root)
    (root / "meta").mkdir(parents=True)
    info = _info("v2.1", list(lengths), fps, "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
                 "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4", image_keys=image_keys,
                 total_videos=len(lengths) * (len(CAMERAS) - len(image_keys)), total_chunks=1)
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    (root / "meta" / "tasks.jsonl").write_text("".join(json.dumps({"task_index": i, "task": t}) + "\n" for i, t in enumerate(TASKS)))
    written = Written(root, list(lengths), fps)
    episodes, index = [], 0
    for e, n in enumerate(lengths):
        task = e % len(TASKS)
        written.tasks.append(task)
        episodes.append(json.dumps({"episode_index": e, "tasks": [TASKS[task]], "length": n}) + "\n")
        path = root / info["data_path"].format(episode_chunk=0, episode_index=e)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(_rows(e, n, index, task, fps, fixed_size=False, image_keys=image_keys), path)
        for key, cam in CAMERAS.items():
            if key in image_keys:
                continue
            write_video(root / info["video_path"].format(episode_chunk=0, video_key=key, episode_index=e),
                        [frame(e, i, cam) for i in range(n)], fps, codec)
        index += n
    (root / "meta" / "episodes.jsonl").write_text("".join(episodes))
    return written


def write_v30(root: Path, lengths: list[int] = (5, 7, 4), fps: int = 10, codec: str = "libsvtav1") -> Written:
    """Episodes 0..1 in data file-000 and episode 2+ in file-001; the top camera's video holds every
    episode in one file, the wrist camera's is split like the data (so file indices matter)."""
    root = Path(root)
    (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
    info = _info("v3.0", list(lengths), fps, "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
                 "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
                 data_files_size_in_mb=100, video_files_size_in_mb=200)
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    pq.write_table(pa.table({"task": TASKS, "task_index": list(range(len(TASKS)))}), root / "meta" / "tasks.parquet")
    written = Written(root, list(lengths), fps)
    file_of = lambda e: 0 if e < 2 else 1
    tables: dict[int, list[pa.Table]] = {}
    videos: dict[tuple[str, int], list[np.ndarray]] = {}
    rows: dict[str, list] = {k: [] for k in ("episode_index", "tasks", "length", "data/chunk_index", "data/file_index",
                                             "dataset_from_index", "dataset_to_index")}
    index = 0
    for e, n in enumerate(lengths):
        task = (e + 1) % len(TASKS)
        written.tasks.append(task)
        tables.setdefault(file_of(e), []).append(_rows(e, n, index, task, fps, fixed_size=True))
        for column, value in (("episode_index", e), ("tasks", [TASKS[task]]), ("length", n), ("data/chunk_index", 0),
                              ("data/file_index", file_of(e)), ("dataset_from_index", index), ("dataset_to_index", index + n)):
            rows[column].append(value)
        for key, cam in CAMERAS.items():
            file_index = 0 if key.endswith("top") else file_of(e)
            frames = videos.setdefault((key, file_index), [])
            for column, value in ((f"videos/{key}/chunk_index", 0), (f"videos/{key}/file_index", file_index),
                                  (f"videos/{key}/from_timestamp", len(frames) / fps),
                                  (f"videos/{key}/to_timestamp", (len(frames) + n) / fps)):
                rows.setdefault(column, []).append(value)
            frames.extend(frame(e, i, cam) for i in range(n))
        index += n
    for file_index, parts in tables.items():
        path = root / info["data_path"].format(chunk_index=0, file_index=file_index)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.concat_tables(parts), path)
    for (key, file_index), frames in videos.items():
        write_video(root / info["video_path"].format(video_key=key, chunk_index=0, file_index=file_index), frames, fps, codec)
    rows["meta/episodes/chunk_index"] = [0] * len(lengths)
    rows["meta/episodes/file_index"] = [0] * len(lengths)
    pq.write_table(pa.table(rows), root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    return written


LEROBOT_MAPPING = {
    "cameras": {"top": "observation.images.top", "wrist": "observation.images.wrist"},
    "action": {"space": "continuous_pose6d", "feature": "action", "dims": {"x": "x", "y": "y", "z": "z", "gripper": "gripper"},
               "quaternion": ["qx", "qy", "qz", "qw"]},
    "proprio": "observation.state",
}
