"""Writing datasets: :class:`DatasetWriter` and its per-episode :class:`EpisodeWriter`.

Every producer of demonstrations (the built-in simulator, a rosbag2 importer, ManiSkill or
Meta-World demo generators) records through this one API::

    with DatasetWriter(root, cameras=["front", "wrist"], action_space=ActionSpaceSpec("continuous_pose6d"),
                       control_rate_hz=10.0, image_size=(224, 224)) as writer:
        with writer.begin_episode("put the red block in the bowl") as ep:
            for obs, action in rollout:
                ep.add_step(images={"front": f, "wrist": w}, action=action, proprio=None, timestamp=t)
            ep.end(success=True)
    # close() computes the statistics once and writes stats.json

Guarantees:

* An episode is written into ``ROOT/.staging/`` and renamed into ``ROOT/episodes/`` only by
  ``end()``, after every file is fsynced and listed (sha256 + size) in its manifest; only then is it
  added to the index in dataset.json (itself replaced atomically). An exception inside the episode
  (or a killed process) therefore never leaves a half episode that looks valid.
* Memory is bounded by one chunk of frames per camera: full chunks are encoded and written as
  they fill.
* Bad input (wrong camera set, shape, dtype, non-finite action, non-increasing timestamp) is
  rejected at ``add_step`` with an error naming the step and the key.
* One writer per dataset at a time (an advisory lock on ``ROOT/.lock``).
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from astra_core.action_space import ActionSpaceSpec
from astra_core.data import format as fmt
from astra_core.data.errors import DatasetError
from astra_core.data.format import DatasetInfo, EpisodeRecord
from astra_core.data.stats import DatasetStats, write_stats

log = logging.getLogger(__name__)


class EpisodeWriter:
    """Writes one episode; made by :meth:`DatasetWriter.begin_episode`. Use as a context manager."""

    def __init__(self, writer: "DatasetWriter", episode_id: int, instruction: str, metadata: dict) -> None:
        self._writer = writer
        self._info = writer.info
        self.episode_id = episode_id
        self.instruction = instruction
        self.metadata = metadata
        self._staging = writer.root / fmt.STAGING_DIR / f"{fmt.episode_dirname(episode_id)}-{uuid.uuid4().hex[:8]}"
        self._kinds = (fmt.IMAGES_DIR, fmt.MASKS_DIR) if self._info.has_masks else (fmt.IMAGES_DIR,)
        for kind in self._kinds:
            for camera in self._info.cameras:
                (self._staging / kind / camera).mkdir(parents=True)
        # (kind, camera) -> frames of the chunk being filled
        self._frames: dict[tuple[str, str], list[np.ndarray]] = {
            (kind, camera): [] for kind in self._kinds for camera in self._info.cameras}
        self._chunks_written = 0
        self._files: dict[str, dict] = {}
        self._actions: list[np.ndarray] = []
        self._proprio: list[np.ndarray] = []
        self._timestamps: list[float] = []
        self._explicit_timestamps: bool | None = None
        self._open = True

    @property
    def num_steps(self) -> int:
        return len(self._actions)

    @property
    def is_open(self) -> bool:
        return self._open

    # -- recording ------------------------------------------------------------------------------

    def add_step(
        self,
        images: Mapping[str, np.ndarray],
        action: np.ndarray | Sequence[float],
        proprio: np.ndarray | Sequence[float] | None = None,
        timestamp: float | None = None,
        masks: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Record one step: the observation (one RGB frame per camera) and the action taken.

        ``timestamp`` is in seconds; give it at every step or at none (then step / control_rate).
        ``masks`` (datasets with ``has_masks``): one (H, W) integer instance-label mask per camera,
        0 = background, labels < 65536.
        """
        self._check_open()
        step = self.num_steps
        info = self._info

        if set(images) != set(info.cameras):
            raise ValueError(f"episode {self.episode_id} step {step}: images for cameras {sorted(images)}, dataset has {info.cameras}")
        for camera in info.cameras:
            frame = images[camera]
            if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.shape != (*info.image_size, 3):
                got = f"{frame.dtype}{frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
                raise ValueError(
                    f"episode {self.episode_id} step {step}: image '{camera}' is {got}, needs uint8{(*info.image_size, 3)} RGB"
                )

        if info.has_masks != (masks is not None):
            need = "needs" if info.has_masks else "was created without"
            raise ValueError(f"episode {self.episode_id} step {step}: masks {'missing' if masks is None else 'given'}; "
                             f"the dataset {need} instance masks")
        if masks is not None:
            if set(masks) != set(info.cameras):
                raise ValueError(f"episode {self.episode_id} step {step}: masks for cameras {sorted(masks)}, dataset has {info.cameras}")
            for camera in info.cameras:
                m = masks[camera]
                if (not isinstance(m, np.ndarray) or not np.issubdtype(m.dtype, np.integer) or m.shape != tuple(info.image_size)
                        or (m.size and (m.min() < 0 or m.max() > 65535))):
                    got = f"{m.dtype}{m.shape}" if isinstance(m, np.ndarray) else type(m).__name__
                    raise ValueError(f"episode {self.episode_id} step {step}: mask '{camera}' is {got}, needs integer labels "
                                     f"in [0, 65535] of shape {tuple(info.image_size)}")

        action = self._vector(action, info.action_dim, "action", step)
        if proprio is not None and info.proprio_dim is None:
            raise ValueError(f"episode {self.episode_id} step {step}: proprio given but the dataset was created without proprio_names")
        if proprio is None and info.proprio_dim is not None:
            raise ValueError(f"episode {self.episode_id} step {step}: proprio missing; the dataset has proprio {info.proprio_names}")
        proprio_vec = None if proprio is None else self._vector(proprio, info.proprio_dim, "proprio", step)

        if self._explicit_timestamps is None:
            self._explicit_timestamps = timestamp is not None
        if (timestamp is not None) != self._explicit_timestamps:
            raise ValueError(f"episode {self.episode_id} step {step}: give a timestamp at every step or at none")
        t = float(timestamp) if timestamp is not None else step / info.control_rate_hz
        if not math.isfinite(t):
            raise ValueError(f"episode {self.episode_id} step {step}: timestamp {timestamp} is not finite")
        if self._timestamps and t <= self._timestamps[-1]:
            raise ValueError(f"episode {self.episode_id} step {step}: timestamp {t} is not after the previous one ({self._timestamps[-1]})")

        # Copy: callers often reuse their frame buffers (renderers, ROS message views).
        for camera in info.cameras:
            self._frames[(fmt.IMAGES_DIR, camera)].append(np.array(images[camera], copy=True))
            if masks is not None:
                self._frames[(fmt.MASKS_DIR, camera)].append(masks[camera].astype(np.uint16))
        self._actions.append(action)
        if proprio_vec is not None:
            self._proprio.append(proprio_vec)
        self._timestamps.append(t)
        if len(self._frames[(fmt.IMAGES_DIR, info.cameras[0])]) == info.chunk_size:
            self._flush_chunk()

    def end(self, success: bool) -> EpisodeRecord:
        """Finish the episode: write the remaining files and commit it atomically into the dataset."""
        self._check_open()
        if not isinstance(success, (bool, np.bool_)):
            raise TypeError(f"episode {self.episode_id}: success must be a bool, got {type(success).__name__}")
        if self.num_steps == 0:
            raise ValueError(f"episode {self.episode_id}: cannot end an episode with no steps (use abort())")
        try:
            return self._finish(bool(success))
        except BaseException:
            # e.g. disk full: drop the staged files so the writer can go on with the next episode.
            self._open = True
            self.abort()
            raise

    def _finish(self, success: bool) -> EpisodeRecord:
        if self._frames[(fmt.IMAGES_DIR, self._info.cameras[0])]:
            self._flush_chunk()
        arrays = {fmt.ACTIONS_KEY: np.stack(self._actions), fmt.TIMESTAMPS_KEY: np.asarray(self._timestamps, np.float64)}
        if self._proprio:
            arrays[fmt.PROPRIO_KEY] = np.stack(self._proprio)
        self._write_file(fmt.STEPS_FILE, fmt.npz_bytes(arrays))
        manifest = {
            "format_version": fmt.FORMAT_VERSION,
            "episode": self.episode_id,
            "instruction": self.instruction,
            "success": success,
            "num_steps": self.num_steps,
            "cameras": list(self._info.cameras),
            "image_size": list(self._info.image_size),
            "chunk_size": self._info.chunk_size,
            "has_proprio": self._info.proprio_names is not None,
            "has_masks": self._info.has_masks,
            # Re-checked here: producers may add to ep.metadata while recording (e.g. outcomes).
            "metadata": _json_dict(self.metadata, f"episode {self.episode_id} metadata"),
            "files": {k: self._files[k] for k in fmt.expected_files(self.num_steps, self._info.cameras, self._info.chunk_size,
                                                                    self._info.has_masks)},
        }
        fmt.write_bytes_durable(self._staging / fmt.MANIFEST_FILE, (json.dumps(manifest, indent=1, allow_nan=False) + "\n").encode())
        for kind in self._kinds:
            for d in [*(self._staging / kind).iterdir(), self._staging / kind]:
                fmt.fsync_dir(d)
        fmt.fsync_dir(self._staging)
        record = EpisodeRecord(self.episode_id, self.num_steps, success, self.instruction)
        self._writer._commit(self._staging, record)
        self._open = False
        return record

    def abort(self) -> None:
        """Drop the episode: nothing of it stays on disk."""
        if not self._open:
            return
        self._open = False
        self._frames = {}
        shutil.rmtree(self._staging, ignore_errors=True)
        self._writer._episode_closed(self)

    # -- context manager: an exception inside the block aborts the episode ------------------------

    def __enter__(self) -> "EpisodeWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
            return
        if self._open:
            self.abort()
            raise RuntimeError(f"episode {self.episode_id} left its context without end(success=...); it was discarded")

    # -- internals ------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if not self._open:
            raise RuntimeError(f"episode {self.episode_id} is already ended or aborted")

    def _vector(self, value: Any, dim: int, name: str, step: int) -> np.ndarray:
        try:
            vec = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"episode {self.episode_id} step {step}: {name} is not numeric ({exc})") from None
        if vec.shape != (dim,):
            raise ValueError(f"episode {self.episode_id} step {step}: {name} has shape {vec.shape}, needs ({dim},)")
        if not np.isfinite(vec).all():
            raise ValueError(f"episode {self.episode_id} step {step}: {name} contains NaN or inf: {vec.tolist()}")
        return vec.copy()

    def _flush_chunk(self) -> None:
        for (kind, camera), frames in self._frames.items():
            self._write_file(fmt.chunk_relpath(camera, self._chunks_written, kind), fmt.encode_chunk(frames))
            self._frames[(kind, camera)] = []
        self._chunks_written += 1

    def _write_file(self, relpath: str, data: bytes) -> None:
        fmt.write_bytes_durable(self._staging / relpath, data)
        self._files[relpath] = {"sha256": fmt.sha256_bytes(data), "bytes": len(data)}


class DatasetWriter:
    """Creates (or, with ``append=True``, extends) a dataset at ``root``. See the module docstring."""

    def __init__(
        self,
        root: str | os.PathLike,
        cameras: Sequence[str],
        action_space: ActionSpaceSpec,
        control_rate_hz: float,
        image_size: tuple[int, int],
        proprio_names: Sequence[str] | None = None,
        chunk_size: int = fmt.DEFAULT_CHUNK_SIZE,
        metadata: Mapping[str, Any] | None = None,
        append: bool = False,
        has_masks: bool = False,
        calibration: Mapping[str, Any] | None = None,
        tolerances: Mapping[str, float] | None = None,
    ) -> None:
        self.root = Path(root)
        metadata = _json_dict(metadata, "dataset metadata")
        requested = DatasetInfo(
            cameras=list(cameras),
            image_size=tuple(int(x) for x in image_size),
            action_space=action_space,
            control_rate_hz=float(control_rate_hz),
            proprio_names=None if proprio_names is None else list(proprio_names),
            chunk_size=int(chunk_size),
            metadata=metadata,
            has_masks=bool(has_masks),
            calibration=_json_dict(calibration, "calibration"),
            tolerances=_json_dict(tolerances, "tolerances"),
        )
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _acquire_lock(self.root)
        try:
            self.info = self._open_dataset(requested, append)
            self._clear_staging()
        except BaseException:
            os.close(self._lock_fd)
            raise
        (self.root / fmt.EPISODES_DIR).mkdir(exist_ok=True)
        self._next_id = self._first_free_id()
        self._current: EpisodeWriter | None = None
        self._closed = False
        self.stats: DatasetStats | None = None

    @classmethod
    def append_to(cls, root: str | os.PathLike) -> "DatasetWriter":
        """Open an existing dataset to add episodes, with the schema it already has."""
        info = fmt.load_dataset_info(root)
        return cls(
            root, info.cameras, info.action_space, info.control_rate_hz, info.image_size,
            proprio_names=info.proprio_names, chunk_size=info.chunk_size, metadata=info.metadata, append=True,
            has_masks=info.has_masks, calibration=info.calibration, tolerances=info.tolerances,
        )  # fmt: skip

    @property
    def num_episodes(self) -> int:
        return len(self.info.episodes)

    def begin_episode(self, instruction: str, metadata: Mapping[str, Any] | None = None) -> EpisodeWriter:
        """Start recording an episode conditioned on ``instruction`` (one open episode at a time)."""
        if self._closed:
            raise RuntimeError(f"dataset writer for {self.root} is closed")
        if self._current is not None:
            raise RuntimeError(f"episode {self._current.episode_id} is still open; end() or abort() it first")
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError(f"instruction must be a non-empty string, got {instruction!r}")
        self._current = EpisodeWriter(self, self._next_id, instruction, _json_dict(metadata, "episode metadata"))
        self._next_id += 1
        return self._current

    def close(self) -> DatasetStats | None:
        """Abort an open episode, compute and save statistics (if any episode), release the lock."""
        if self._closed:
            return self.stats
        try:
            if self._current is not None:
                log.warning("dataset writer closed with episode %d open: discarding it", self._current.episode_id)
                self._current.abort()
            if self.info.episodes:
                self.stats = write_stats(self.root)
            else:
                (self.root / fmt.STATS_FILE).unlink(missing_ok=True)
            staging = self.root / fmt.STAGING_DIR
            if staging.is_dir() and not any(staging.iterdir()):
                staging.rmdir()
        finally:
            self._closed = True
            os.close(self._lock_fd)
        return self.stats

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # Also on an exception: the open episode is dropped and the committed ones keep valid stats.
        self.close()

    # -- internals ------------------------------------------------------------------------------

    def _open_dataset(self, requested: DatasetInfo, append: bool) -> DatasetInfo:
        if not (self.root / fmt.DATASET_FILE).exists():
            stray = sorted(p.name for p in self.root.iterdir() if p.name not in (fmt.LOCK_FILE, fmt.STAGING_DIR, fmt.EPISODES_DIR))
            if stray or any((self.root / fmt.EPISODES_DIR).glob("*")):
                raise DatasetError(None, fmt.DATASET_FILE, f"{self.root} is not empty and has no dataset.json (found {stray[:5]})")
            fmt.write_json_atomic(self.root / fmt.DATASET_FILE, requested.to_dict())
            return requested
        if not append:
            raise DatasetError(None, fmt.DATASET_FILE, f"a dataset already exists at {self.root}; pass append=True to add episodes")
        existing = fmt.load_dataset_info(self.root)
        stored, wanted = existing.schema_dict(), requested.schema_dict()
        for key in stored:
            if stored[key] != wanted[key]:
                raise DatasetError(None, fmt.DATASET_FILE, f"cannot append: '{key}' is {stored[key]!r} in the dataset, {wanted[key]!r} requested")
        return existing

    def _clear_staging(self) -> None:
        # We hold the lock, so anything in .staging is left over from a writer that was killed.
        staging = self.root / fmt.STAGING_DIR
        if staging.exists():
            for leftover in staging.iterdir():
                log.warning("removing unfinished episode %s left by an interrupted writer", leftover)
                shutil.rmtree(leftover, ignore_errors=True)
        staging.mkdir(exist_ok=True)

    def _first_free_id(self) -> int:
        # Directories count too: a writer killed between rename and index update leaves one.
        ids = [e.id for e in self.info.episodes]
        ids += [int(p.name) for p in (self.root / fmt.EPISODES_DIR).iterdir() if p.name.isdigit()]
        return max(ids, default=-1) + 1

    def _commit(self, staging: Path, record: EpisodeRecord) -> None:
        target = fmt.episode_dir(self.root, record.id)
        os.rename(staging, target)
        fmt.fsync_dir(target.parent)
        # The index gains the episode only once dataset.json says so (if this write fails, the
        # directory stays an orphan: ignored by readers, its id skipped by later writers).
        index = self.info.to_dict()
        index["episodes"].append(record.to_dict())
        fmt.write_json_atomic(self.root / fmt.DATASET_FILE, index)
        self.info.episodes.append(record)
        self._current = None

    def _episode_closed(self, episode: EpisodeWriter) -> None:
        if self._current is episode:
            self._current = None


def _acquire_lock(root: Path) -> int:
    fd = os.open(root / fmt.LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RuntimeError(f"another DatasetWriter holds {root / fmt.LOCK_FILE}; one writer per dataset") from None
    return fd


def _json_dict(value: Mapping[str, Any] | None, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} must be a mapping, got {type(value).__name__}")
    try:
        return json.loads(json.dumps(dict(value), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be JSON-serialisable (str keys; str/number/bool/None/list/dict values): {exc}") from None
