"""Dataset write/read benchmark: ``python -m astra_core.data.bench`` prints one JSON object.

Writes a synthetic dataset (default: 50 episodes x 32 steps, cameras "front" and "wrist" at
224x224) into a temporary directory with :class:`DatasetWriter`, then reads shuffled training
windows through a DataLoader with 0 and 2 workers. Reported:

* ``write_raw_mb_per_s``: uncompressed RGB megabytes accepted per second of writer time
  (add_step + end, i.e. PNG encoding, hashing, fsync, commit; frame synthesis is not counted);
* ``bytes_per_frame``: on-disk bytes of image chunks per camera frame (vs. H*W*3 raw);
* ``read``: windows per second, per worker count, from creating the iterator to the last batch.

CPU times are reported next to wall-clock rates because on a shared machine the wall-clock rates
mostly measure the other load.

The frames are a rendered-looking scene (smooth background, moving coloured blocks) plus Gaussian
sensor noise (``--noise``, grey levels); compression depends strongly on that noise, so the result
is an estimate for simulator images, not for every camera.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from astra_core.action_space import ActionSpaceSpec
from astra_core.data.dataset import TrajectoryWindowDataset, collate_windows
from astra_core.data.format import STEPS_FILE
from astra_core.data.writer import DatasetWriter

CAMERAS = ["front", "wrist"]


class SceneRenderer:
    """Cheap synthetic frames: a fixed background per camera plus blocks that move with time."""

    def __init__(self, size: int, noise: float, seed: int = 0) -> None:
        self.size = size
        self.rng = np.random.default_rng(seed)
        y, x = np.mgrid[0:size, 0:size].astype(np.float32)
        self.backgrounds = [
            np.stack([90 + 40 * np.sin(x / 37 + c), 110 + 30 * np.cos(y / 23), 70 + 0.2 * x], -1) for c in range(len(CAMERAS))
        ]
        # A bank of noise fields, reused with random offsets: drawing fresh noise per frame would
        # cost more time than the writer we are measuring.
        self.noise = [self.rng.normal(0, noise, (size * 2, size * 2, 3)).astype(np.float32) for _ in range(4)]

    def frame(self, camera: int, t: int, episode: int) -> np.ndarray:
        img = self.backgrounds[camera].copy()
        s = self.size
        for k in range(4):
            cx = int(s * (0.15 + 0.18 * k) + 0.05 * s * np.sin(t / 5 + k + episode))
            cy = int(s * (0.25 + 0.13 * k) + 0.04 * s * np.cos(t / 7 + k))
            img[cy : cy + s // 7, cx : cx + s // 9] = (200 - 40 * k, 60 + 30 * k, 40 + 50 * k)
        oy, ox = self.rng.integers(0, s, 2)
        img += self.noise[(t + camera) % 4][oy : oy + s, ox : ox + s]
        return np.clip(img, 0, 255).astype(np.uint8)


def write_dataset(root: Path, episodes: int, steps: int, size: int, noise: float) -> dict:
    renderer = SceneRenderer(size, noise)
    writer_s = 0.0
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    writer = DatasetWriter(root, cameras=CAMERAS, action_space=ActionSpaceSpec("continuous_pose6d"),
                           control_rate_hz=10.0, image_size=(size, size), proprio_names=[f"q{i}" for i in range(7)])  # fmt: skip
    writer_s += time.perf_counter() - t0
    rng = np.random.default_rng(1)
    synth_cpu = 0.0
    for e in range(episodes):
        t0 = time.perf_counter()
        ep = writer.begin_episode(f"benchmark task {e % 5}")
        writer_s += time.perf_counter() - t0
        for t in range(steps):
            c0 = time.process_time()
            images = {cam: renderer.frame(m, t, e) for m, cam in enumerate(CAMERAS)}
            action, proprio = rng.normal(size=7), rng.normal(size=7)
            synth_cpu += time.process_time() - c0
            t0 = time.perf_counter()
            ep.add_step(images=images, action=action, proprio=proprio)
            writer_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        ep.end(success=True)
        writer_s += time.perf_counter() - t0
    t0 = time.perf_counter()
    writer.close()
    writer_s += time.perf_counter() - t0
    writer_cpu = time.process_time() - cpu0 - synth_cpu

    frames = episodes * steps * len(CAMERAS)
    raw = frames * size * size * 3
    image_bytes = sum(p.stat().st_size for p in (root / "episodes").rglob("images/*/*.npz"))
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    steps_bytes = sum(p.stat().st_size for p in (root / "episodes").rglob(STEPS_FILE))
    return {
        "frames": frames,
        "write_seconds": round(writer_s, 3),
        "write_raw_mb_per_s": round(raw / writer_s / 1e6, 2),
        "write_frames_per_s": round(frames / writer_s, 1),
        "write_cpu_ms_per_frame": round(writer_cpu / frames * 1e3, 2),
        "bytes_per_frame": round(image_bytes / frames),
        "raw_bytes_per_frame": size * size * 3,
        "compression_ratio": round(raw / image_bytes, 2),
        "dataset_bytes": total,
        "steps_bytes": steps_bytes,
    }


def read_speed(root: Path, window: int, batch_size: int, workers: int, max_batches: int) -> dict:
    ds = TrajectoryWindowDataset(root, window=window)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers, collate_fn=collate_windows,
                        generator=torch.Generator().manual_seed(0))  # fmt: skip
    t_start = time.perf_counter()
    first = None
    windows = 0
    cpu_start = time.process_time()
    for i, batch in enumerate(loader):
        if first is None:
            first = time.perf_counter()
        windows += len(batch["instruction"])
        if i + 1 >= max_batches:
            break
    end, cpu_end = time.perf_counter(), time.process_time()
    # Rates include worker start-up: timing only after the first batch would count the batches
    # the workers prefetched meanwhile as free.
    return {
        "workers": workers,
        "windows": windows,
        "windows_per_s": round(windows / (end - t_start), 1),
        "frames_per_s": round(windows * window * len(CAMERAS) / (end - t_start), 1),
        "first_batch_s": round(first - t_start, 3),
        # CPU time of this process only: with workers > 0 the decoding happens in the workers.
        "main_cpu_ms_per_window": round((cpu_end - cpu_start) / windows * 1e3, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--steps", type=int, default=32, help="steps per episode")
    parser.add_argument("--size", type=int, default=224, help="square image size")
    parser.add_argument("--noise", type=float, default=2.0, help="sensor noise std in grey levels")
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--read-batches", type=int, default=25, help="batches timed per worker count")
    parser.add_argument("--keep", type=Path, default=None, help="write here and keep it (default: a temp dir, removed)")
    args = parser.parse_args(argv)

    tmp = None
    if args.keep is None:
        tmp = tempfile.mkdtemp(prefix="astra-data-bench-")
        root = Path(tmp) / "dataset"
    else:
        root = args.keep
    try:
        result = {
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "cameras": CAMERAS,
            **write_dataset(root, args.episodes, args.steps, args.size, args.noise),
            "read": [read_speed(root, args.window, args.batch_size, w, args.read_batches) for w in (0, 2)],
        }
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
