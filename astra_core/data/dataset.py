"""Reading datasets for training: windows of consecutive steps, streamed by a DataLoader.

:class:`TrajectoryWindowDataset` is map-style: item ``i`` is a fixed (episode, start) pair, so
sampling is the DataLoader's job (``shuffle=True`` + a seeded generator) and resuming is exact.
Construction reads only dataset.json; each worker opens files lazily and keeps two small LRU
caches (episode manifests + step arrays, and still-compressed image chunks), so memory depends on
the cache sizes and the batch, not on the size of the dataset. Frames are decoded one by one from
the cached chunk: with shuffled windows a worker rarely reuses the other frames of a chunk, so
decoding whole chunks would mostly be wasted work.

Every file is checked against the sha256 in its episode manifest when it is first read, so a
corrupt or truncated dataset fails with a :class:`DatasetError` naming the episode and the key.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Hashable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from astra_core.data import format as fmt
from astra_core.data.errors import DatasetError
from astra_core.data.format import DatasetInfo, EpisodeSteps, ImageChunk
from astra_core.objects import OBJECT_FIELDS, boxes_from_mask


class _LRU:
    """A tiny least-recently-used cache (per process; never shared between workers)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[Hashable, Any] = OrderedDict()

    def get(self, key: Hashable, load: Callable[[], Any]) -> Any:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = load()
        self._items[key] = value
        if len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._items)

    def values(self) -> list[Any]:
        return list(self._items.values())


def window_starts(num_steps: int, window: int, stride: int, offset: int) -> list[int]:
    """Start steps of the windows cut from one episode.

    Starts are ``offset, offset + stride, ...`` up to the last start that still fills a whole
    window (``num_steps - window``); that last start is always included so the final steps are
    covered. An episode shorter than ``window`` gives one right-padded window at step 0.
    """
    last = max(num_steps - window, 0)
    starts = list(range(min(offset, last), last + 1, stride))
    if starts[-1] != last:
        starts.append(last)
    return starts


class TrajectoryWindowDataset(Dataset):
    """Windows of up to ``window`` consecutive steps of one episode, right-padded.

    Each item is a dict:

    * ``instruction`` str
    * ``images``      uint8 (T, M, H, W, 3), RGB, cameras in dataset order (``cameras``: a subset)
    * ``actions``     float64 (T, N), physical units, exactly as recorded: the runtime turns the
      executed float64 command into model form, and so must training (on a dimension of almost
      no spread, float32 rounding alone moves a value by a bin)
    * ``timestamps``  float64 (T,), seconds
    * ``step_mask``   bool (T,), True for real steps
    * ``proprio``     float32 (T, P), only if the dataset has proprioception
    * ``object_boxes`` float32 (T, M, K, 6), ``object_valid`` bool (T, M, K): only with
      ``max_objects=K`` on a dataset with instance masks; the boxes of each mask's instances
      (:func:`astra_core.objects.boxes_from_mask`, the function the runtime uses on live masks)
    * ``episode``, ``start`` int: where the window comes from

    Padded steps are zero. ``stride`` > 1 thins out the starts; each episode then gets a start
    offset in ``[0, stride)`` drawn from ``seed``, so which windows exist is deterministic.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        window: int,
        episodes: Sequence[int] | None = None,
        stride: int = 1,
        seed: int = 0,
        cache_chunks: int = 16,
        cache_episodes: int = 16,
        verify: bool = True,
        max_objects: int | None = None,
        cameras: Sequence[str] | None = None,
    ) -> None:
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"window={window}: must be a positive int")
        if not isinstance(stride, int) or stride < 1:
            raise ValueError(f"stride={stride}: must be a positive int")
        if cache_chunks < 1 or cache_episodes < 1:
            raise ValueError(f"cache_chunks={cache_chunks}, cache_episodes={cache_episodes}: must be >= 1")
        self.root = Path(root)
        self.info: DatasetInfo = fmt.load_dataset_info(self.root)
        self.window, self.stride, self.seed, self.verify = window, stride, seed, verify
        if max_objects is not None and not self.info.has_masks:
            raise DatasetError(None, fmt.DATASET_FILE, f"object boxes were asked for (max_objects={max_objects}) but "
                                                       f"{self.root} has no instance masks")
        self.max_objects = max_objects
        unknown = sorted(set(cameras or []) - set(self.info.cameras))
        if unknown:
            raise DatasetError(None, fmt.DATASET_FILE, f"cameras {unknown} are not in {self.root} "
                                                       f"(it has {self.info.cameras})")
        # The cameras an item holds, in dataset order (a model may use a subset of those recorded).
        self.cameras = [c for c in self.info.cameras if cameras is None or c in cameras]
        self._cache_sizes = (cache_episodes, cache_chunks)

        by_id = {e.id: e for e in self.info.episodes}
        ids = sorted(by_id) if episodes is None else [int(e) for e in episodes]
        unknown = sorted(set(ids) - set(by_id))
        if unknown:
            raise DatasetError(unknown[0], fmt.DATASET_FILE, f"requested episodes {unknown[:10]} are not in the index of {self.root}")
        if not ids:
            raise ValueError(f"no episodes selected from {self.root}")
        if len(set(ids)) != len(ids):
            raise ValueError(f"episodes: duplicate ids in {ids}")
        self.episode_ids = ids
        self._instructions = {i: by_id[i].instruction for i in ids}

        rng = np.random.default_rng(seed)
        offsets = rng.integers(0, stride, size=len(ids))
        pairs = [(e, s) for e, off in zip(ids, offsets) for s in window_starts(by_id[e].num_steps, window, stride, int(off))]
        # The only per-dataset state this object keeps: 8 bytes per window.
        self._windows = np.asarray(pairs, dtype=np.int32).reshape(-1, 2)
        self._caches_pid: int | None = None

    def __len__(self) -> int:
        return len(self._windows)

    @property
    def num_cameras(self) -> int:
        return len(self.cameras)

    def window_index(self) -> np.ndarray:
        """(len(self), 2) int array of (episode, start), in item order."""
        return self._windows.copy()

    def cached_bytes(self) -> int:
        """Bytes held by this process's caches (for checking that memory stays bounded)."""
        if self._caches_pid != os.getpid():
            return 0
        total = 0
        for _, steps in self._episodes.values():
            total += sum(a.nbytes for a in (steps.actions, steps.timestamps, steps.proprio) if a is not None)
        for chunk in self._chunks.values():
            total += chunk.png.nbytes + chunk.offsets.nbytes
        return total

    def __getitem__(self, index: int) -> dict[str, Any]:
        episode, start = (int(x) for x in self._windows[index])
        manifest, steps = self._episode(episode)
        n = min(self.window, manifest["num_steps"] - start)
        T, info = self.window, self.info
        H, W = info.image_size

        images = np.zeros((T, self.num_cameras, H, W, 3), dtype=np.uint8)
        size = info.chunk_size
        for m, camera in enumerate(self.cameras):
            for t in range(n):
                step = start + t
                chunk = self._chunk(episode, manifest, camera, step // size)
                images[t, m] = chunk.decode(step % size, (H, W))

        actions = np.zeros((T, info.action_dim), dtype=np.float64)
        actions[:n] = steps.actions[start : start + n]
        timestamps = np.zeros(T, dtype=np.float64)
        timestamps[:n] = steps.timestamps[start : start + n]
        step_mask = np.zeros(T, dtype=bool)
        step_mask[:n] = True
        item = {
            "instruction": self._instructions[episode],
            "images": torch.from_numpy(images),
            "actions": torch.from_numpy(actions),
            "timestamps": torch.from_numpy(timestamps),
            "step_mask": torch.from_numpy(step_mask),
            "episode": episode,
            "start": start,
        }
        if self.max_objects is not None:
            K = self.max_objects
            boxes = np.zeros((T, self.num_cameras, K, OBJECT_FIELDS), dtype=np.float32)
            valid = np.zeros((T, self.num_cameras, K), dtype=bool)
            for m, camera in enumerate(self.cameras):
                for t in range(n):
                    step = start + t
                    chunk = self._chunk(episode, manifest, camera, step // size, fmt.MASKS_DIR)
                    boxes[t, m], valid[t, m] = boxes_from_mask(chunk.decode_mask(step % size, (H, W)), K)
            item["object_boxes"] = torch.from_numpy(boxes)
            item["object_valid"] = torch.from_numpy(valid)
        if steps.proprio is not None:
            proprio = np.zeros((T, info.proprio_dim), dtype=np.float32)
            proprio[:n] = steps.proprio[start : start + n]
            item["proprio"] = torch.from_numpy(proprio)
        return item

    # -- lazy, per-process file access ----------------------------------------------------------

    def _ensure_caches(self) -> None:
        # Created on first use in each process: a forked DataLoader worker starts with empty caches
        # instead of a copy of the parent's.
        if self._caches_pid != os.getpid():
            self._episodes = _LRU(self._cache_sizes[0])
            self._chunks = _LRU(self._cache_sizes[1])
            self._caches_pid = os.getpid()

    def _episode(self, episode: int) -> tuple[dict, EpisodeSteps]:
        self._ensure_caches()

        def load() -> tuple[dict, EpisodeSteps]:
            manifest = fmt.load_manifest(self.root, self.info, episode)
            if self.verify:
                steps = fmt.load_steps(self.root, self.info, episode, manifest)
            else:
                data = (fmt.episode_dir(self.root, episode) / fmt.STEPS_FILE).read_bytes()
                steps = fmt.parse_steps(data, self.info, episode, manifest["num_steps"])
            return manifest, steps

        return self._episodes.get(episode, load)

    def _chunk(self, episode: int, manifest: dict, camera: str, chunk_index: int,
               kind: str = fmt.IMAGES_DIR) -> ImageChunk:
        def load() -> ImageChunk:
            if self.verify:
                return fmt.load_chunk(self.root, episode, manifest, camera, chunk_index, kind)
            key = fmt.chunk_relpath(camera, chunk_index, kind)
            path = fmt.episode_dir(self.root, episode) / key
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise DatasetError(episode, key, f"cannot read {path}: {exc}") from None
            return ImageChunk.from_bytes(data, episode, key)

        return self._chunks.get((kind, episode, camera, chunk_index), load)


def collate_windows(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack windows into a batch: tensors get a leading batch dim, instructions stay a list."""
    if not items:
        raise ValueError("collate_windows: empty batch")
    batch: dict[str, Any] = {
        "instruction": [it["instruction"] for it in items],
        "episode": torch.tensor([it["episode"] for it in items], dtype=torch.long),
        "start": torch.tensor([it["start"] for it in items], dtype=torch.long),
    }
    keys = ["images", "actions", "timestamps", "step_mask"]
    keys += [k for k in ("proprio", "object_boxes", "object_valid") if k in items[0]]
    for key in keys:
        batch[key] = torch.stack([it[key] for it in items])
    return batch


def split_episodes(dataset_root: str | os.PathLike, val_fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Split the episode ids into (train, val), by episode, never by step.

    ``round(val_fraction * E)`` episodes go to validation, at least one when ``val_fraction > 0``
    (and at least one stays in training). Deterministic for a given episode set and seed.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction}: must be in [0, 1)")
    ids = sorted(e.id for e in fmt.load_dataset_info(dataset_root).episodes)
    if val_fraction > 0 and len(ids) < 2:
        raise DatasetError(None, fmt.DATASET_FILE, f"a train/val split needs at least 2 episodes, {dataset_root} has {len(ids)}")
    n_val = 0 if val_fraction == 0 else min(max(1, round(val_fraction * len(ids))), len(ids) - 1)
    order = np.random.default_rng(seed).permutation(len(ids))
    val = sorted(ids[i] for i in order[:n_val])
    train = sorted(ids[i] for i in order[n_val:])
    return train, val
