"""On-disk format of an Astra dataset: layout, schema of the JSON files, and the chunk codec.

The full description, with the reasons behind each choice, is in ``docs/DATASET.md``. In short::

    ROOT/
      dataset.json                  cameras, image size, action space, control rate, episode index
      stats.json                    action (and proprio) statistics, written when the writer closes
      episodes/000042/
        manifest.json               instruction, success, num_steps, metadata, sha256 + size per file
        steps.npz                   actions (S, N) float64, timestamps (S,) float64, [proprio (S, P)]
        images/<camera>/000000.npz  one chunk: up to chunk_size PNG frames of one camera
        masks/<camera>/000000.npz   the same for instance-label masks (16-bit PNG), if the dataset has masks
      .staging/                     episodes being written (never read; renamed into episodes/)

Everything here is plain JSON and ``.npz`` read with ``allow_pickle=False``.

This module is the single place that knows file names and field names: the writer, the reader,
the statistics and the validator all go through it, so a format change happens in one file.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from astra_core.action_space import ActionSpaceSpec
from astra_core.data.errors import DatasetError

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1 had no masks, calibration or tolerances

DATASET_FILE = "dataset.json"
STATS_FILE = "stats.json"
EPISODES_DIR = "episodes"
STAGING_DIR = ".staging"
LOCK_FILE = ".lock"
MANIFEST_FILE = "manifest.json"
STEPS_FILE = "steps.npz"
IMAGES_DIR = "images"
MASKS_DIR = "masks"

IMAGE_CODEC = "png"
# zlib level 1: measured on 224x224 frames it compresses within ~3% of level 3-9 at the lowest
# encode time (docs/DATASET.md, "Why PNG").
PNG_COMPRESSION_LEVEL = 1
DEFAULT_CHUNK_SIZE = 32

# Arrays of steps.npz (name -> dtype on disk).
ACTIONS_KEY = "actions"
TIMESTAMPS_KEY = "timestamps"
PROPRIO_KEY = "proprio"
# Arrays of one image chunk: concatenated PNG files and their byte offsets (K + 1 entries).
CHUNK_PNG_KEY = "png"
CHUNK_OFFSETS_KEY = "offsets"

# Camera names become directory names, so they are restricted to a portable character set.
CAMERA_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


# ----------------------------------------------------------------------------------------------
# Paths


def episode_dirname(episode: int) -> str:
    return f"{episode:06d}"


def episode_dir(root: Path, episode: int) -> Path:
    return Path(root) / EPISODES_DIR / episode_dirname(episode)


def chunk_relpath(camera: str, chunk_index: int, kind: str = IMAGES_DIR) -> str:
    """Path of one image (or mask) chunk relative to its episode directory (also its manifest key)."""
    return f"{kind}/{camera}/{chunk_index:06d}.npz"


def num_chunks(num_steps: int, chunk_size: int) -> int:
    return -(-num_steps // chunk_size)


def check_camera_names(cameras: list[str]) -> None:
    if not cameras:
        raise ValueError("cameras: at least one camera name is required")
    for name in cameras:
        if not isinstance(name, str) or not CAMERA_NAME_RE.match(name):
            raise ValueError(
                f"camera name {name!r}: must match {CAMERA_NAME_RE.pattern} (it becomes a directory name)"
            )
    if len(set(cameras)) != len(cameras):
        raise ValueError(f"cameras: duplicate names in {cameras}")


# ----------------------------------------------------------------------------------------------
# Files


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_bytes_durable(path: Path, data: bytes) -> None:
    """Write and fsync, so a renamed episode directory never points at unflushed data."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Replace ``path`` with ``obj`` as JSON in one rename: readers see the old or the new file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    write_bytes_durable(tmp, (json.dumps(obj, indent=1, allow_nan=False) + "\n").encode())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # stored, not deflated: PNG payloads are already compressed
    return buf.getvalue()


def load_npz(data: bytes, episode: int | None, key: str) -> dict[str, np.ndarray]:
    """Parse ``.npz`` bytes without pickle; any damage becomes a DatasetError naming the file."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise DatasetError(episode, key, f"cannot read npz archive ({type(exc).__name__}: {exc})") from None


def read_verified(episode_path: Path, episode: int, relpath: str, entry: dict | None) -> bytes:
    """Read one episode file and check it against its manifest entry (size, then sha256)."""
    path = episode_path / relpath
    if entry is None:
        raise DatasetError(episode, relpath, "file is not listed in manifest.json")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(episode, relpath, f"file is missing ({path})") from None
    except OSError as exc:
        raise DatasetError(episode, relpath, f"cannot read {path}: {exc}") from None
    if len(data) != entry["bytes"]:
        raise DatasetError(
            episode, relpath, f"size is {len(data)} bytes, manifest says {entry['bytes']} (truncated or replaced)"
        )
    digest = sha256_bytes(data)
    if digest != entry["sha256"]:
        raise DatasetError(episode, relpath, f"sha256 mismatch: file {digest[:16]}..., manifest {entry['sha256'][:16]}...")
    return data


# ----------------------------------------------------------------------------------------------
# Image chunks


def encode_chunk(frames: list[np.ndarray]) -> bytes:
    """RGB uint8 frames (or uint16 instance masks) -> one chunk file (PNG per frame, so a reader can
    decode single frames)."""
    pngs = []
    for frame in frames:
        pixels = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        ok, png = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION_LEVEL])
        if not ok:
            raise RuntimeError("cv2.imencode failed to encode a PNG frame")
        pngs.append(png.reshape(-1))
    offsets = np.zeros(len(pngs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([p.size for p in pngs])
    return npz_bytes({CHUNK_PNG_KEY: np.concatenate(pngs), CHUNK_OFFSETS_KEY: offsets})


@dataclass
class ImageChunk:
    """A parsed (still PNG-compressed) chunk: frames are decoded one at a time on demand."""

    episode: int
    key: str
    png: np.ndarray  # uint8, all frames' PNG bytes back to back
    offsets: np.ndarray  # int64, (num_frames + 1,)

    @classmethod
    def from_bytes(cls, data: bytes, episode: int, key: str) -> "ImageChunk":
        arrays = load_npz(data, episode, key)
        png, offsets = arrays.get(CHUNK_PNG_KEY), arrays.get(CHUNK_OFFSETS_KEY)
        if png is None or offsets is None:
            raise DatasetError(episode, key, f"chunk must hold arrays '{CHUNK_PNG_KEY}' and '{CHUNK_OFFSETS_KEY}', has {sorted(arrays)}")
        if png.dtype != np.uint8 or png.ndim != 1 or offsets.dtype != np.int64 or offsets.ndim != 1 or offsets.size < 2:
            raise DatasetError(episode, key, f"chunk arrays have wrong dtype/shape: png {png.dtype}{png.shape}, offsets {offsets.dtype}{offsets.shape}")
        if offsets[0] != 0 or offsets[-1] != png.size or (np.diff(offsets) <= 0).any():
            raise DatasetError(episode, key, f"chunk offsets do not partition {png.size} bytes: {offsets.tolist()}")
        return cls(episode, key, png, offsets)

    @property
    def num_frames(self) -> int:
        return self.offsets.size - 1

    def decode(self, index: int, image_size: tuple[int, int]) -> np.ndarray:
        """Frame ``index`` of this chunk as RGB uint8 (H, W, 3)."""
        if not 0 <= index < self.num_frames:
            raise DatasetError(self.episode, self.key, f"frame {index} requested, chunk holds {self.num_frames}")
        bgr = cv2.imdecode(self.png[self.offsets[index] : self.offsets[index + 1]], cv2.IMREAD_COLOR)
        if bgr is None:
            raise DatasetError(self.episode, self.key, f"frame {index} is not a decodable PNG")
        if bgr.shape != (*image_size, 3):
            raise DatasetError(self.episode, self.key, f"frame {index} has shape {bgr.shape}, dataset says {(*image_size, 3)}")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def decode_mask(self, index: int, image_size: tuple[int, int]) -> np.ndarray:
        """Frame ``index`` of a mask chunk as uint16 (H, W) instance labels."""
        if not 0 <= index < self.num_frames:
            raise DatasetError(self.episode, self.key, f"frame {index} requested, chunk holds {self.num_frames}")
        mask = cv2.imdecode(self.png[self.offsets[index] : self.offsets[index + 1]], cv2.IMREAD_UNCHANGED)
        if mask is None:
            raise DatasetError(self.episode, self.key, f"mask {index} is not a decodable PNG")
        if mask.dtype != np.uint16 or mask.shape != tuple(image_size):
            raise DatasetError(self.episode, self.key, f"mask {index} is {mask.dtype}{mask.shape}, dataset needs uint16{tuple(image_size)}")
        return mask


# ----------------------------------------------------------------------------------------------
# dataset.json


@dataclass
class EpisodeRecord:
    """One entry of the episode index in dataset.json."""

    id: int
    num_steps: int
    success: bool
    instruction: str

    def to_dict(self) -> dict:
        return {"id": self.id, "num_steps": self.num_steps, "success": self.success, "instruction": self.instruction}


@dataclass
class DatasetInfo:
    """Everything in dataset.json: the dataset-wide schema plus the episode index."""

    cameras: list[str]
    image_size: tuple[int, int]  # (H, W)
    action_space: ActionSpaceSpec
    control_rate_hz: float
    proprio_names: list[str] | None = None
    chunk_size: int = DEFAULT_CHUNK_SIZE
    metadata: dict = field(default_factory=dict)
    episodes: list[EpisodeRecord] = field(default_factory=list)
    image_codec: str = IMAGE_CODEC
    format_version: int = FORMAT_VERSION
    # Every step has an instance-label mask per camera (object tokens are cut at its boxes).
    has_masks: bool = False
    # camera -> {"table_homography": 3x3}: normalised image (u, v) -> action-frame (x, y).
    calibration: dict = field(default_factory=dict)
    # action dimension -> how far from the recorded action an action still succeeds (metrics).
    tolerances: dict = field(default_factory=dict)
    _by_id: dict[int, EpisodeRecord] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_camera_names(self.cameras)
        h, w = self.image_size
        if not (isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0):
            raise ValueError(f"image_size={self.image_size}: must be two positive ints (H, W)")
        if not (isinstance(self.control_rate_hz, (int, float)) and math.isfinite(self.control_rate_hz) and self.control_rate_hz > 0):
            raise ValueError(f"control_rate_hz={self.control_rate_hz}: must be a positive number")
        if not (isinstance(self.chunk_size, int) and 1 <= self.chunk_size <= 4096):
            raise ValueError(f"chunk_size={self.chunk_size}: must be an int in [1, 4096]")
        if self.proprio_names is not None:
            if not self.proprio_names or len(set(self.proprio_names)) != len(self.proprio_names):
                raise ValueError(f"proprio_names={self.proprio_names}: must be non-empty and unique")
        if self.image_codec != IMAGE_CODEC:
            raise ValueError(f"image_codec={self.image_codec!r}: only {IMAGE_CODEC!r} is supported")
        if self.format_version not in READABLE_VERSIONS:
            raise ValueError(f"format_version={self.format_version}: this code reads versions {list(READABLE_VERSIONS)}")
        if not isinstance(self.has_masks, bool):
            raise ValueError(f"has_masks={self.has_masks!r}: must be true or false")
        check_calibration(self.calibration, self.cameras)
        check_tolerances(self.tolerances, self.action_space.dim_names)

    @property
    def action_names(self) -> list[str]:
        return self.action_space.dim_names

    @property
    def action_dim(self) -> int:
        return len(self.action_names)

    @property
    def proprio_dim(self) -> int | None:
        return None if self.proprio_names is None else len(self.proprio_names)

    def episode(self, episode_id: int) -> EpisodeRecord:
        # A dict rebuilt when the index grows: the validator looks up every episode.
        if len(self._by_id) != len(self.episodes):
            self._by_id = {e.id: e for e in self.episodes}
        record = self._by_id.get(episode_id)
        if record is None:
            raise DatasetError(episode_id, DATASET_FILE, "episode is not in the dataset index")
        return record

    def schema_dict(self) -> dict:
        """The schema fields without the episode index (what two writers must agree on)."""
        return {
            "format_version": self.format_version,
            "cameras": list(self.cameras),
            "image_size": list(self.image_size),
            "image_codec": self.image_codec,
            "chunk_size": self.chunk_size,
            "action_space": self.action_space.to_dict(),
            "action_names": self.action_names,
            "proprio_names": None if self.proprio_names is None else list(self.proprio_names),
            "control_rate_hz": float(self.control_rate_hz),
            "has_masks": self.has_masks,
            "calibration": self.calibration,
            "tolerances": self.tolerances,
        }

    def to_dict(self) -> dict:
        return {**self.schema_dict(), "metadata": self.metadata, "episodes": [e.to_dict() for e in self.episodes]}

    @classmethod
    def from_dict(cls, d: dict) -> "DatasetInfo":
        version = d.get("format_version")
        added = {"has_masks", "calibration", "tolerances"}  # new in version 2
        valid = {
            "format_version", "cameras", "image_size", "image_codec", "chunk_size", "action_space",
            "action_names", "proprio_names", "control_rate_hz", "metadata", "episodes",
        } | (added if version != 1 else set())  # fmt: skip
        unknown, missing = set(d) - valid, valid - set(d)
        if unknown or missing:
            raise ValueError(f"unknown keys {sorted(unknown)}, missing keys {sorted(missing)}; valid keys: {sorted(valid)}")
        spec = ActionSpaceSpec(**d["action_space"])
        if d["action_names"] != spec.dim_names:
            raise ValueError(f"action_names {d['action_names']} do not match action space {spec.kind} ({spec.dim_names})")
        episodes = []
        for i, e in enumerate(d["episodes"]):
            if set(e) != {"id", "num_steps", "success", "instruction"}:
                raise ValueError(f"episodes[{i}] must have keys id, num_steps, success, instruction; has {sorted(e)}")
            if not (isinstance(e["id"], int) and e["id"] >= 0 and isinstance(e["num_steps"], int) and e["num_steps"] > 0):
                raise ValueError(f"episodes[{i}]: id and num_steps must be non-negative / positive ints, got {e}")
            episodes.append(EpisodeRecord(e["id"], e["num_steps"], bool(e["success"]), str(e["instruction"])))
        ids = [e.id for e in episodes]
        if len(set(ids)) != len(ids):
            raise ValueError("episode ids in the index are not unique")
        return cls(
            cameras=list(d["cameras"]),
            image_size=tuple(d["image_size"]),
            action_space=spec,
            control_rate_hz=d["control_rate_hz"],
            proprio_names=d["proprio_names"],
            chunk_size=d["chunk_size"],
            metadata=d["metadata"],
            episodes=episodes,
            image_codec=d["image_codec"],
            format_version=d["format_version"],
            has_masks=d.get("has_masks", False),
            calibration=d.get("calibration", {}),
            tolerances=d.get("tolerances", {}),
        )


def check_calibration(calibration: dict, cameras: list[str]) -> None:
    """``{camera: {"table_homography": 3x3}}`` for a subset of ``cameras``."""
    from astra_core.objects import check_homography

    if not isinstance(calibration, dict):
        raise ValueError(f"calibration must be an object {{camera: {{table_homography: 3x3}}}}, got {calibration!r}")
    for camera, entry in calibration.items():
        if camera not in cameras:
            raise ValueError(f"calibration for unknown camera {camera!r}; cameras are {cameras}")
        if not isinstance(entry, dict) or set(entry) != {"table_homography"}:
            raise ValueError(f"calibration[{camera!r}] must be {{'table_homography': 3x3}}, got {entry!r}")
        check_homography(entry["table_homography"], f"calibration[{camera!r}]")


def check_tolerances(tolerances: dict, names: list[str]) -> None:
    if not isinstance(tolerances, dict):
        raise ValueError(f"tolerances must be an object {{action dimension: value}}, got {tolerances!r}")
    for name, value in tolerances.items():
        if name not in names:
            raise ValueError(f"tolerances: unknown action dimension {name!r}; dimensions are {names}")
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"tolerances[{name!r}]={value!r}: must be a positive number")


def read_json(path: Path, episode: int | None, key: str) -> dict:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise DatasetError(episode, key, f"file is missing ({path})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(episode, key, f"cannot read {path}: {exc}") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(episode, key, f"invalid JSON ({exc}); the file is truncated or corrupt") from None
    if not isinstance(obj, dict):
        raise DatasetError(episode, key, f"must hold a JSON object, holds {type(obj).__name__}")
    return obj


def load_dataset_info(root: str | os.PathLike) -> DatasetInfo:
    """Read and check ``ROOT/dataset.json``."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(None, DATASET_FILE, f"dataset root {root} is not a directory")
    d = read_json(root / DATASET_FILE, None, DATASET_FILE)
    try:
        return DatasetInfo.from_dict(d)
    except (ValueError, TypeError, KeyError) as exc:
        raise DatasetError(None, DATASET_FILE, f"invalid schema in {root / DATASET_FILE}: {exc}") from None


# ----------------------------------------------------------------------------------------------
# manifest.json and steps.npz of one episode

MANIFEST_KEYS_V1 = {
    "format_version", "episode", "instruction", "success", "num_steps", "cameras", "image_size",
    "chunk_size", "has_proprio", "metadata", "files",
}  # fmt: skip
MANIFEST_KEYS = MANIFEST_KEYS_V1 | {"has_masks"}


def expected_files(num_steps: int, cameras: list[str], chunk_size: int, has_masks: bool = False) -> list[str]:
    """Every file an episode of ``num_steps`` must have, in manifest order."""
    kinds = (IMAGES_DIR, MASKS_DIR) if has_masks else (IMAGES_DIR,)
    chunks = [chunk_relpath(cam, c, kind) for kind in kinds for cam in cameras
              for c in range(num_chunks(num_steps, chunk_size))]
    return [STEPS_FILE, *chunks]


def load_manifest(root: Path, info: DatasetInfo, episode: int) -> dict:
    """Read an episode's manifest and check it agrees with dataset.json and its index entry."""
    path = episode_dir(root, episode) / MANIFEST_FILE
    m = read_json(path, episode, MANIFEST_FILE)
    keys = MANIFEST_KEYS_V1 if m.get("format_version") == 1 else MANIFEST_KEYS
    if set(m) != keys:
        raise DatasetError(
            episode, MANIFEST_FILE, f"keys differ from the schema: missing {sorted(keys - set(m))}, unknown {sorted(set(m) - keys)}"
        )
    m.setdefault("has_masks", False)
    record = info.episode(episode)
    checks = {
        "episode": (m["episode"], episode),
        "num_steps": (m["num_steps"], record.num_steps),
        "success": (m["success"], record.success),
        "instruction": (m["instruction"], record.instruction),
        "cameras": (m["cameras"], info.cameras),
        "image_size": (list(m["image_size"]), list(info.image_size)),
        "chunk_size": (m["chunk_size"], info.chunk_size),
        "has_proprio": (m["has_proprio"], info.proprio_names is not None),
        "has_masks": (m["has_masks"], info.has_masks),
    }
    for key, (found, expected) in checks.items():
        if found != expected:
            raise DatasetError(episode, MANIFEST_FILE, f"'{key}' is {found!r}, dataset.json says {expected!r}")
    files = m["files"]
    want = expected_files(record.num_steps, info.cameras, info.chunk_size, info.has_masks)
    if not isinstance(files, dict) or sorted(files) != sorted(want):
        have = set(files) if isinstance(files, dict) else set()
        raise DatasetError(
            episode, MANIFEST_FILE, f"file list is wrong: missing {sorted(set(want) - have)}, unexpected {sorted(have - set(want))}"
        )
    for relpath, entry in files.items():
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and isinstance(entry.get("bytes"), int)):
            raise DatasetError(episode, MANIFEST_FILE, f"entry for '{relpath}' needs 'sha256' (str) and 'bytes' (int), got {entry!r}")
    return m


@dataclass
class EpisodeSteps:
    """Per-step arrays of one episode (small: no images)."""

    actions: np.ndarray  # (S, N) float64
    timestamps: np.ndarray  # (S,) float64
    proprio: np.ndarray | None  # (S, P) float64


def parse_steps(data: bytes, info: DatasetInfo, episode: int, num_steps: int) -> EpisodeSteps:
    """Parse steps.npz and check shapes, dtypes, finiteness and timestamp order."""
    arrays = load_npz(data, episode, STEPS_FILE)
    want = {ACTIONS_KEY: (num_steps, info.action_dim), TIMESTAMPS_KEY: (num_steps,)}
    if info.proprio_dim is not None:
        want[PROPRIO_KEY] = (num_steps, info.proprio_dim)
    if set(arrays) != set(want):
        raise DatasetError(episode, STEPS_FILE, f"holds arrays {sorted(arrays)}, schema needs {sorted(want)}")
    for key, shape in want.items():
        a = arrays[key]
        if a.dtype != np.float64 or a.shape != shape:
            raise DatasetError(episode, key, f"is {a.dtype}{a.shape}, schema needs float64{shape}")
        bad = ~np.isfinite(a)
        if bad.any():
            step = int(np.argwhere(bad)[0][0])
            raise DatasetError(episode, key, f"{int(bad.sum())} non-finite value(s), first at step {step}")
    ts = arrays[TIMESTAMPS_KEY]
    if num_steps > 1 and not (np.diff(ts) > 0).all():
        step = int(np.argwhere(np.diff(ts) <= 0)[0][0]) + 1
        raise DatasetError(episode, TIMESTAMPS_KEY, f"not strictly increasing at step {step} ({ts[step - 1]} -> {ts[step]})")
    return EpisodeSteps(arrays[ACTIONS_KEY], ts, arrays.get(PROPRIO_KEY))


def load_steps(root: Path, info: DatasetInfo, episode: int, manifest: dict) -> EpisodeSteps:
    path = episode_dir(root, episode)
    data = read_verified(path, episode, STEPS_FILE, manifest["files"].get(STEPS_FILE))
    return parse_steps(data, info, episode, manifest["num_steps"])


def load_chunk(root: Path, episode: int, manifest: dict, camera: str, chunk_index: int,
               kind: str = IMAGES_DIR) -> ImageChunk:
    key = chunk_relpath(camera, chunk_index, kind)
    data = read_verified(episode_dir(root, episode), episode, key, manifest["files"].get(key))
    chunk = ImageChunk.from_bytes(data, episode, key)
    expected = min(manifest["chunk_size"], manifest["num_steps"] - chunk_index * manifest["chunk_size"])
    if chunk.num_frames != expected:
        raise DatasetError(episode, key, f"holds {chunk.num_frames} frames, expected {expected}")
    return chunk
