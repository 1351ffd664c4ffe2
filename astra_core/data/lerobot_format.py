"""Reading a local LeRobotDataset folder (layouts v2.x and v3.0) with pyarrow and PyAV.

Not the ``lerobot`` package (it pins a huggingface-hub that clashes with transformers 5) and
never a hub: only files under the given folder are read.

v2.x (one file per episode)::

    meta/info.json  meta/episodes.jsonl  meta/tasks.jsonl
    data/chunk-000/episode_000000.parquet
    videos/chunk-000/<video_key>/episode_000000.mp4

v3.0 (many episodes per file, located through the episodes table)::

    meta/info.json  meta/tasks.parquet  meta/episodes/chunk-000/file-000.parquet
    data/chunk-000/file-000.parquet                  rows of many episodes (column episode_index)
    videos/<video_key>/chunk-000/file-000.mp4        episodes back to back; an episode's frame at
                                                     parquet timestamp t is at from_timestamp + t

``info.json`` gives fps, the path templates and the features: ``{key: {dtype, shape, names}}``
with dtype ``video`` (MP4), ``image`` (PNG/JPEG bytes in a parquet struct column) or a numeric
type (a fixed-length list column, or a scalar column for shape [1]).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import av
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from astra_core.imaging import decode_compressed

SUPPORTED_VERSIONS = ("v2.0", "v2.1", "v3.0")


class LeRobotError(Exception):
    """A LeRobot folder (or one of its episodes) that cannot be read: where, and what is wrong."""

    def __init__(self, where: str, problem: str) -> None:
        self.where, self.problem = where, problem
        super().__init__(f"{where}: {problem}")


@dataclass
class Feature:
    key: str
    dtype: str  # video | image | float32 | int64 | ...
    shape: list[int]
    names: list[str]  # element names of a vector feature (generated when info.json has none)
    axes: list[str] | None = None  # the names as info.json gives them (images: height, width, channels)

    def image_size(self) -> tuple[int, int]:
        """(H, W) of an image/video feature, whether info.json says HWC or CHW."""
        if len(self.shape) != 3:
            raise LeRobotError(self.key, f"shape {self.shape} is not an image shape [H, W, C]")
        if self.axes and list(self.axes)[:1] == ["channels"]:
            return int(self.shape[1]), int(self.shape[2])
        return int(self.shape[0]), int(self.shape[1])


@dataclass
class VideoRef:
    path: Path
    from_timestamp: float  # where the episode starts in the file (v3.0; 0 in v2.x)


@dataclass
class LeRobotEpisode:
    index: int
    length: int
    tasks: list[str]
    data_path: Path
    videos: dict[str, VideoRef] = field(default_factory=dict)


def _read_json(path: Path, where: str) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise LeRobotError(where, f"{path} is missing") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise LeRobotError(where, f"{path} is not valid JSON: {err}") from None


def _read_jsonl(path: Path, where: str) -> list[dict]:
    if not path.is_file():
        raise LeRobotError(where, f"{path} is missing")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise LeRobotError(where, f"{path} line {n} is not valid JSON: {err}") from None
    return rows


def _parquet(read, path: Path, where: str, **kwargs):
    """``read(path, **kwargs)`` (pq.read_table / pq.read_schema) with errors that name the file."""
    try:
        return read(path, **kwargs)
    except FileNotFoundError:
        raise LeRobotError(where, f"{path} is missing") from None
    except (OSError, pa.ArrowException) as err:
        raise LeRobotError(where, f"{path} cannot be read as parquet: {err}") from None


def _read_parquet(path: Path, where: str, columns: Sequence[str] | None = None) -> pa.Table:
    return _parquet(pq.read_table, path, where, columns=list(columns) if columns is not None else None)


def _element_names(key: str, spec: dict) -> list[str]:
    names, shape = spec.get("names"), list(spec.get("shape") or [1])
    if isinstance(names, dict):  # v2.0 style: {"motors": [...]}
        lists = [v for v in names.values() if isinstance(v, list)]
        names = lists[0] if len(lists) == 1 else None
    size = int(np.prod(shape)) if shape else 1
    if isinstance(names, list) and len(names) == size and all(isinstance(n, str) for n in names):
        return list(names)
    return [f"{key}[{i}]" for i in range(size)]


def vector_column(table: pa.Table, key: str, where: str) -> np.ndarray:
    """A numeric column (scalar, list or fixed-size list) -> float64 (rows, K)."""
    if key not in table.column_names:
        raise LeRobotError(where, f"column '{key}' is missing; the data has {table.column_names}")
    array = table.column(key).combine_chunks()
    if array.null_count:
        raise LeRobotError(where, f"column '{key}' has {array.null_count} null value(s)")
    rows = len(array)
    if pa.types.is_list(array.type) or pa.types.is_large_list(array.type) or pa.types.is_fixed_size_list(array.type):
        flat = array.flatten().to_numpy(zero_copy_only=False).astype(np.float64)
        if rows and len(flat) % rows:
            raise LeRobotError(where, f"column '{key}' has rows of different lengths")
        return flat.reshape(rows, -1) if rows else flat.reshape(0, 0)
    return array.to_numpy(zero_copy_only=False).astype(np.float64).reshape(rows, 1)


class LeRobotFolder:
    """A LeRobotDataset on disk: metadata, episodes, and readers for their rows and frames."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        where = str(self.root)
        if not self.root.is_dir():
            raise LeRobotError(where, "is not a directory")
        self.info = _read_json(self.root / "meta" / "info.json", where)
        self.version = str(self.info.get("codebase_version", ""))
        if self.version not in SUPPORTED_VERSIONS:
            raise LeRobotError(where, f"codebase_version {self.version!r} is not supported ({', '.join(SUPPORTED_VERSIONS)})")
        try:
            self.fps = float(self.info["fps"])
            self.data_path = str(self.info["data_path"])
            self.video_path = self.info.get("video_path")
            self.chunks_size = int(self.info.get("chunks_size", 1000))
            self.features = {k: Feature(k, str(v["dtype"]), list(v.get("shape") or []), _element_names(k, v),
                                        v.get("names") if isinstance(v.get("names"), list) else None)
                             for k, v in self.info["features"].items()}
        except (KeyError, TypeError, ValueError) as err:
            raise LeRobotError(where, f"meta/info.json lacks or has an invalid {err}") from None
        if not self.fps > 0:
            raise LeRobotError(where, f"meta/info.json: fps {self.fps} must be > 0")
        self._table_cache: tuple[Path, pa.Table] | None = None

    @property
    def is_v3(self) -> bool:
        return self.version.startswith("v3")

    def feature(self, key: str, dtypes: Sequence[str] | None = None) -> Feature:
        feature = self.features.get(key)
        if feature is None:
            raise LeRobotError(str(self.root), f"feature '{key}' is not in meta/info.json; features: {sorted(self.features)}")
        if dtypes is not None and feature.dtype not in dtypes:
            raise LeRobotError(str(self.root), f"feature '{key}' has dtype {feature.dtype}, expected {' or '.join(dtypes)}")
        return feature

    # -- episodes -------------------------------------------------------------------------------

    def episodes(self) -> list[LeRobotEpisode]:
        return self._episodes_v3() if self.is_v3 else self._episodes_v2()

    def _videos(self) -> list[str]:
        return [k for k, f in self.features.items() if f.dtype == "video"]

    def _episodes_v2(self) -> list[LeRobotEpisode]:
        where = str(self.root)
        out = []
        for row in _read_jsonl(self.root / "meta" / "episodes.jsonl", where):
            index = int(row["episode_index"])
            chunk = index // self.chunks_size
            data = self.root / self.data_path.format(episode_chunk=chunk, episode_index=index)
            videos = {key: VideoRef(self.root / str(self.video_path).format(episode_chunk=chunk, video_key=key, episode_index=index), 0.0)
                      for key in self._videos()}
            out.append(LeRobotEpisode(index, int(row["length"]), [str(t) for t in row.get("tasks", [])], data, videos))
        return sorted(out, key=lambda e: e.index)

    def _episodes_v3(self) -> list[LeRobotEpisode]:
        where = str(self.root)
        files = sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        if not files:
            raise LeRobotError(where, "meta/episodes/chunk-*/file-*.parquet: no episodes table")
        table = pa.concat_tables([_read_parquet(f, where) for f in files], promote_options="default")
        cols = {name: table.column(name).to_pylist() for name in table.column_names}
        need = ["episode_index", "length", "data/chunk_index", "data/file_index"]
        for key in self._videos():
            need += [f"videos/{key}/chunk_index", f"videos/{key}/file_index", f"videos/{key}/from_timestamp"]
        missing = [c for c in need if c not in cols]
        if missing:
            raise LeRobotError(where, f"episodes table lacks columns {missing}")
        out = []
        for i, index in enumerate(cols["episode_index"]):
            data = self.root / self.data_path.format(chunk_index=cols["data/chunk_index"][i], file_index=cols["data/file_index"][i])
            videos = {}
            for key in self._videos():
                path = str(self.video_path).format(video_key=key, chunk_index=cols[f"videos/{key}/chunk_index"][i],
                                                   file_index=cols[f"videos/{key}/file_index"][i])
                videos[key] = VideoRef(self.root / path, float(cols[f"videos/{key}/from_timestamp"][i]))
            tasks = cols["tasks"][i] if "tasks" in cols else None
            out.append(LeRobotEpisode(int(index), int(cols["length"][i]), [str(t) for t in tasks or []], data, videos))
        return sorted(out, key=lambda e: e.index)

    def tasks_by_index(self) -> dict[int, str]:
        """task_index -> task text (for episodes whose metadata lists no tasks)."""
        where = str(self.root)
        if not self.is_v3:
            return {int(r["task_index"]): str(r["task"]) for r in _read_jsonl(self.root / "meta" / "tasks.jsonl", where)}
        table = _read_parquet(self.root / "meta" / "tasks.parquet", where)
        text_column = "task" if "task" in table.column_names else None
        if text_column is None:  # written by pandas with the task strings as the index
            meta = json.loads((table.schema.metadata or {}).get(b"pandas", b"{}"))
            index_columns = [c for c in meta.get("index_columns", []) if isinstance(c, str)]
            text_column = index_columns[0] if index_columns else None
        if text_column is None or "task_index" not in table.column_names:
            raise LeRobotError(where, f"meta/tasks.parquet: expected columns task_index and task, has {table.column_names}")
        return dict(zip(table.column("task_index").to_pylist(), map(str, table.column(text_column).to_pylist())))

    # -- rows and frames ------------------------------------------------------------------------

    def episode_table(self, episode: LeRobotEpisode, columns: Sequence[str]) -> pa.Table:
        """The episode's rows (in frame order) with ``columns``."""
        where = f"{self.root} episode {episode.index}"
        wanted = sorted(set(columns) | {"episode_index", "frame_index"})
        if self._table_cache is not None and self._table_cache[0] == episode.data_path and \
                set(wanted) <= set(self._table_cache[1].column_names):
            table = self._table_cache[1]
        else:
            present = set(_parquet(pq.read_schema, episode.data_path, where).names)
            table = _read_parquet(episode.data_path, where, [c for c in wanted if c in present])
            self._table_cache = (episode.data_path, table)  # v3.0: the next episodes are often in this file
        for column in wanted:
            if column not in table.column_names:
                raise LeRobotError(where, f"{episode.data_path.name} has no column '{column}'; it has {table.column_names}")
        rows = table.filter(pc.equal(table.column("episode_index"), episode.index))
        order = pc.sort_indices(rows, sort_keys=[("frame_index", "ascending")])
        rows = rows.take(order)
        if rows.num_rows != episode.length:
            raise LeRobotError(where, f"{episode.data_path.name} holds {rows.num_rows} rows, the episode metadata says {episode.length}")
        return rows

    def image_column_frames(self, table: pa.Table, key: str, where: str) -> Iterator[np.ndarray]:
        """Frames of an ``image`` feature: PNG/JPEG bytes in a struct column {bytes, path}."""
        for i, cell in enumerate(table.column(key).to_pylist()):
            data = cell.get("bytes") if isinstance(cell, dict) else cell
            if not data:
                raise LeRobotError(where, f"'{key}' frame {i} has no embedded image bytes")
            yield decode_compressed(data, key)

    def video_frames(self, ref: VideoRef, key: str, timestamps: np.ndarray, tolerance_s: float, where: str,
                     threads: int = 1) -> Iterator[np.ndarray]:
        """RGB frames of ``ref`` at ``from_timestamp + t`` for each t, in order, each within tolerance."""
        return _decode_at(ref.path, ref.from_timestamp + np.asarray(timestamps, np.float64), tolerance_s,
                          f"{where}, video '{key}' ({ref.path.name})", threads)


def _decode_at(path: Path, targets: np.ndarray, tolerance_s: float, where: str, threads: int) -> Iterator[np.ndarray]:
    """Decode sequentially from the keyframe before the first target; yield the frame whose time
    is within ``tolerance_s`` of each target (a missing or shifted frame is an error, not a neighbour)."""
    if not path.is_file():
        raise LeRobotError(where, "the video file is missing")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as err:
        raise LeRobotError(where, f"cannot open: {err}") from None
    with container:
        if not container.streams.video:
            raise LeRobotError(where, "has no video stream")
        stream = container.streams.video[0]
        stream.codec_context.thread_count = max(1, threads)
        try:
            if len(targets) and targets[0] > tolerance_s:
                # backward seek: lands on the keyframe at or before the episode's first frame
                container.seek(int(max(0.0, targets[0] - tolerance_s) / stream.time_base), stream=stream)
            frames = container.decode(stream)
            current, current_t = None, -np.inf
            for target in targets:
                while current_t < target - tolerance_s:
                    current = next(frames, None)
                    if current is None:
                        raise LeRobotError(where, f"ends before t={target:.4f} s")
                    if current.time is None:
                        raise LeRobotError(where, "a frame has no timestamp")
                    current_t = float(current.time)
                if abs(current_t - target) > tolerance_s:
                    raise LeRobotError(where, f"no frame within {tolerance_s} s of t={target:.4f} s (nearest at {current_t:.4f} s)")
                yield current.to_ndarray(format="rgb24")
        except av.FFmpegError as err:
            raise LeRobotError(where, f"cannot be decoded: {err}") from None
