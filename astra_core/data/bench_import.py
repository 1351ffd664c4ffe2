"""Import speed: ``python -m astra_core.data.bench_import [--size 480 640] [--seconds 20] [--threads 1]``

Writes synthetic recordings in a temporary folder, imports them, prints one JSON object:

* rosbag2, sqlite3 and MCAP: two cameras at 30 Hz (one raw rgb8, one JPEG), a PoseStamped
  action at 20 Hz, a GripperCommand at 10 Hz, JointState at 50 Hz, imported at 10 Hz;
* LeRobot v3.0: two cameras as MP4 (``--codec``, LeRobot's default is AV1), state and action.

``frames_per_s`` counts frames written into the dataset (steps x cameras) per second of import,
bag reading, decoding, PNG encoding and fsyncs included; ``source_frames_per_s`` the camera
messages (or video frames) read per second. Threads (OpenCV, PyAV) and the load average are in
the output: on a shared machine the numbers depend on what else runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import av
import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from astra_core.configuration import from_dict
from astra_core.data.import_lerobot import LeRobotMapping, import_lerobot
from astra_core.data.import_rosbag import import_bags
from astra_core.data.rosbag_mapping import RosbagMapping
from astra_core.data.rosbag_writer import BagWriter

CAMERA_HZ, POSE_HZ, GRIPPER_HZ, JOINTS_HZ, CONTROL_HZ = 30.0, 20.0, 10.0, 50.0, 10.0


def synthetic_frame(t: float, camera: int, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A camera-like frame: gradients, a moving block and sensor noise (so PNG/JPEG do real work)."""
    h, w = size
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 200 // w + 30 * camera, y * 200 // h, np.full_like(x, 90)], axis=-1)
    r, c = int((0.5 + 0.3 * math.sin(t)) * (h - h // 5)), int((0.5 + 0.3 * math.cos(t)) * (w - w // 5))
    img[r:r + h // 5, c:c + w // 5] = (200, 60, 40)
    img = img + rng.integers(-3, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_bag(path: Path, storage: str, seconds: float, size: tuple[int, int]) -> int:
    """A teleoperation-like recording; returns the number of camera messages."""
    rng = np.random.default_rng(0)
    events = sorted([(i / CAMERA_HZ, "cam") for i in range(int(seconds * CAMERA_HZ) + 1)]
                    + [(i / POSE_HZ, "pose") for i in range(int(seconds * POSE_HZ) + 1)]
                    + [(i / GRIPPER_HZ, "gripper") for i in range(int(seconds * GRIPPER_HZ) + 1)]
                    + [(i / JOINTS_HZ, "joints") for i in range(int(seconds * JOINTS_HZ) + 1)])
    frames = 0
    with BagWriter(path, storage, t0_ns=1_700_000_000 * 10**9) as bag:
        bag.string("/instruction", 0.0, "put the cube in the bowl")
        for t, kind in events:
            if kind == "cam":
                bag.image("/front/image_raw", t, synthetic_frame(t, 0, size, rng), "rgb8")
                bag.image("/wrist/image_raw/compressed", t, synthetic_frame(t, 1, size, rng), "jpeg")
                frames += 2
            elif kind == "pose":
                bag.pose("/target_pose", t, [0.4, 0.1 * math.sin(t), 0.3, 0.0, 0.1, 0.5 * t % 3])
            elif kind == "gripper":
                bag.gripper("/gripper_command", t, float(t % 4 > 2))
            else:
                bag.joint_state("/joint_states", t, [f"j{i}" for i in range(6)], np.full(6, 0.1 * t))
    return frames


ROSBAG_MAPPING = {
    "cameras": {"front": "/front/image_raw", "wrist": "/wrist/image_raw/compressed"},
    "action": {"space": "continuous_pose6d", "topic": "/target_pose"},
    "gripper": {"topic": "/gripper_command"},
    "proprio": [{"topic": "/joint_states"}],
    "instruction": {"topic": "/instruction"},
    "control_rate_hz": CONTROL_HZ,
    "tolerance_s": 0.1,
}


def write_mp4(path: Path, frames: Sequence[np.ndarray], fps: float, codec: str, crf: int = 30, threads: int = 1) -> None:
    """Frames -> an MP4 as LeRobot writes them (yuv420p, a keyframe every 2 frames)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=int(fps))
        stream.height, stream.width, stream.pix_fmt = h, w, "yuv420p"
        stream.codec_context.thread_count = threads
        stream.options = {"g": "2", "crf": str(crf), **({"preset": "12"} if codec == "libsvtav1" else {})}
        for i, rgb in enumerate(frames):
            video_frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            video_frame.pts = i
            for packet in stream.encode(video_frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_lerobot_v30(root: Path, episodes: int, length: int, size: tuple[int, int], fps: float, codec: str) -> int:
    """A LeRobot v3.0 folder: all episodes in one data file and one MP4 per camera; returns frames."""
    rng = np.random.default_rng(0)
    keys = ["observation.images.front", "observation.images.wrist"]
    video = {"dtype": "video", "shape": [*size, 3], "names": ["height", "width", "channels"]}
    vector = lambda n: {"dtype": "float32", "shape": [n], "names": None}
    scalar = lambda dtype: {"dtype": dtype, "shape": [1], "names": None}
    info = {"codebase_version": "v3.0", "fps": fps, "chunks_size": 1000,
            "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
            "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
            "features": {**{k: video for k in keys}, "observation.state": vector(6), "action": vector(7),
                         **{k: scalar(d) for k, d in (("timestamp", "float32"), ("frame_index", "int64"),
                                                      ("episode_index", "int64"), ("index", "int64"), ("task_index", "int64"))}}}
    (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
    (root / "meta" / "info.json").write_text(json.dumps(info))
    pq.write_table(pa.table({"task": ["put the cube in the bowl"], "task_index": [0]}), root / "meta" / "tasks.parquet")
    n = episodes * length
    t = np.tile(np.arange(length), episodes) / fps
    vectors = lambda k: pa.array(rng.normal(size=(n, k)).astype(np.float32).tolist(), pa.list_(pa.float32(), k))
    (root / "data" / "chunk-000").mkdir(parents=True)
    pq.write_table(pa.table({"observation.state": vectors(6), "action": vectors(7), "timestamp": pa.array(t, pa.float32()),
                             "frame_index": np.tile(np.arange(length), episodes), "episode_index": np.repeat(np.arange(episodes), length),
                             "index": np.arange(n), "task_index": np.zeros(n, np.int64)}),
                   root / "data" / "chunk-000" / "file-000.parquet")
    rows = {"episode_index": list(range(episodes)), "tasks": [["put the cube in the bowl"]] * episodes,
            "length": [length] * episodes, "data/chunk_index": [0] * episodes, "data/file_index": [0] * episodes}
    for cam, key in enumerate(keys):
        write_mp4(root / "videos" / key / "chunk-000" / "file-000.mp4",
                  [synthetic_frame(i / fps, cam, size, rng) for i in range(n)], fps, codec)
        rows |= {f"videos/{key}/chunk_index": [0] * episodes, f"videos/{key}/file_index": [0] * episodes,
                 f"videos/{key}/from_timestamp": [e * length / fps for e in range(episodes)]}
    pq.write_table(pa.table(rows), root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    return n * len(keys)


def _result(report, importer: str, source_frames: int, **extra) -> dict:
    d = report.to_dict()
    return {"importer": importer, **extra, "episodes": d["episodes_written"], "steps": d["steps_written"],
            "frames": d["frames_written"], "seconds": d["seconds"], "frames_per_s": d["frames_per_s"],
            "source_frames_per_s": round(source_frames / report.seconds, 1) if report.seconds > 0 else None}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, nargs=2, default=[480, 640], metavar=("H", "W"), help="camera frame size")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the synthetic recording")
    parser.add_argument("--threads", type=int, default=1, help="OpenCV and video decoder threads")
    parser.add_argument("--codec", default="libsvtav1", help="LeRobot video codec (libsvtav1, libx264)")
    parser.add_argument("--keep", type=Path, default=None, help="write the recordings and datasets here, and keep them")
    args = parser.parse_args(argv)
    cv2.setNumThreads(args.threads)
    size = tuple(args.size)
    results = []
    with tempfile.TemporaryDirectory(prefix="astra-bench-import-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        mapping = from_dict(RosbagMapping, ROSBAG_MAPPING)
        for storage in ("sqlite3", "mcap"):
            bag = work / f"bag_{storage}"
            frames = write_bag(bag, storage, args.seconds, size)
            report = import_bags([bag], mapping, work / f"ds_{storage}", progress=False)
            results.append(_result(report, "rosbag2", frames, storage=storage, cameras="rgb8 + jpeg"))
        length = int(CONTROL_HZ * args.seconds / 4)
        frames = write_lerobot_v30(work / "lerobot", 4, length, size, CONTROL_HZ, args.codec)
        lerobot_mapping = from_dict(LeRobotMapping, {"cameras": {"front": "observation.images.front", "wrist": "observation.images.wrist"},
                                                     "action": {"space": "continuous_pose6d"}})
        report = import_lerobot(work / "lerobot", lerobot_mapping, work / "ds_lerobot", threads=args.threads, progress=False)
        results.append(_result(report, "lerobot", frames, layout="v3.0", codec=args.codec))
    print(json.dumps({"benchmark": "import", "image_size": list(size), "seconds_recorded": args.seconds,
                      "threads": args.threads, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                      "cpu_count": os.cpu_count(), "loadavg": [round(v, 2) for v in os.getloadavg()],
                      "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
