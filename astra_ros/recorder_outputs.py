"""Where recorded episodes go: the Astra dataset (one DatasetWriter episode per recording) and
rosbag2 folders (one per episode). Pure Python, no ROS.

Both are atomic per episode:

* dataset: :class:`astra_core.data.writer.DatasetWriter` stages the episode and renames it into the
  dataset only when it is committed; a discarded, dropped or crashed episode leaves the dataset
  as it was. Statistics (stats.json) are rewritten after every commit, so the dataset is valid for
  training and for the validator whenever no episode is being committed.
* bag: the episode is written to ``BAG_PATH/.staging/<name>`` and renamed to ``BAG_PATH/<name>``
  when it ends; a discarded one is deleted. A recorder killed mid-episode leaves its bag in
  ``.staging`` (no metadata.yaml, maybe a truncated MCAP file), which the importer can still read.

The bag holds the serialised messages exactly as received (raw subscriptions), at their receive
times, plus episode markers (std_msgs/String ``start`` / ``stop`` / ``fail``) and, at the start,
the newest message of every topic from before the episode (the importer's first tick may use
them, as the recorder's did). ``BAG_PATH/import_mapping.yaml`` is the importer's mapping for them.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import yaml

from astra_core.action_space import ActionSpaceSpec
from astra_core.configuration import to_dict
from astra_core.data import format as fmt
from astra_core.data.errors import DatasetError
from astra_core.data.rosbag_mapping import RosbagMapping
from astra_core.data.rosbag_source import project_typestore
from astra_core.data.rosbag_writer import BagWriter
from astra_core.data.ros_messages import STRING
from astra_core.data.stats import write_stats
from astra_core.data.writer import DatasetWriter, EpisodeWriter
from astra_ros.recorder_episode import RecordedStep

log = logging.getLogger(__name__)

MAPPING_FILE = "import_mapping.yaml"
BAG_STAGING = ".staging"
EPISODE_PREFIX = "episode_"


class DatasetOutput:
    """The dataset the recorder appends episodes to.

    An existing dataset fixes the schema: cameras, action space, control rate, chunk size, masks and
    proprioception must agree (checked when the recorder starts, so a wrong setting fails at once),
    and its image size and proprio names become the expected ones. A new dataset is created at the
    first step, when the frames' native size and the proprio names are known.
    """

    def __init__(self, root: str | os.PathLike, cameras: Sequence[str], action_space: ActionSpaceSpec,
                 control_rate_hz: float, chunk_size: int, has_masks: bool, has_proprio: bool,
                 image_size: tuple[int, int] | None, metadata: dict | None = None) -> None:
        self.root = Path(root)
        self._schema = dict(cameras=list(cameras), action_space=action_space, control_rate_hz=float(control_rate_hz),
                            chunk_size=int(chunk_size), has_masks=bool(has_masks), metadata=metadata or {})
        self._has_proprio = has_proprio
        self.image_size = image_size
        self.proprio_names: list[str] | None = None
        self.writer: DatasetWriter | None = None
        if (self.root / fmt.DATASET_FILE).exists():
            info = fmt.load_dataset_info(self.root)
            if image_size is not None and tuple(info.image_size) != tuple(image_size):
                raise DatasetError(None, fmt.DATASET_FILE, f"cannot append: the dataset's image_size is "
                                                           f"{list(info.image_size)}, image_size asks for {list(image_size)}")
            if (info.proprio_names is not None) != has_proprio:
                raise DatasetError(None, fmt.DATASET_FILE, "cannot append: the dataset " + (
                    f"has proprioception {info.proprio_names}, the recorder records none" if info.proprio_names
                    else "has no proprioception, the recorder records some (proprio_topic)"))
            self.image_size, self.proprio_names = tuple(info.image_size), info.proprio_names  # type: ignore[assignment]
            self.writer = self._open(append=True)  # schema mismatches raise DatasetError now

    def _open(self, append: bool) -> DatasetWriter:
        return DatasetWriter(self.root, image_size=self.image_size, proprio_names=self.proprio_names,  # type: ignore[arg-type]
                             append=append, **self._schema)

    def begin(self, instruction: str, metadata: dict, proprio_names: list[str] | None) -> "DatasetEpisode":
        return DatasetEpisode(self, instruction, metadata, proprio_names)

    def writer_for(self, step: RecordedStep, proprio_names: list[str] | None) -> DatasetWriter:
        if self.writer is None:
            self.image_size = self.image_size or next(iter(step.images.values())).shape[:2]
            self.proprio_names = proprio_names
            self.writer = self._open(append=False)
        elif self._has_proprio and proprio_names != self.proprio_names:
            raise DatasetError(None, "proprio", f"proprio names {proprio_names} differ from the dataset's {self.proprio_names}")
        return self.writer

    def committed(self) -> None:
        """After each commit: statistics cover every episode again."""
        write_stats(self.root)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class DatasetEpisode:
    """One episode of the dataset, opened at its first step (the schema may only be known then)."""

    def __init__(self, output: DatasetOutput, instruction: str, metadata: dict, proprio_names: list[str] | None) -> None:
        self.output, self.instruction, self.metadata = output, instruction, metadata
        self.proprio_names = proprio_names
        self.episode: EpisodeWriter | None = None

    def add_step(self, step: RecordedStep) -> None:
        if self.episode is None:
            self.episode = self.output.writer_for(step, self.proprio_names).begin_episode(self.instruction, self.metadata)
        self.episode.add_step(images=step.images, action=step.action, proprio=step.proprio,
                              timestamp=step.timestamp, masks=step.masks)

    @property
    def num_steps(self) -> int:
        return 0 if self.episode is None else self.episode.num_steps

    def commit(self, success: bool, metadata: dict) -> int:
        """-> the dataset episode id; statistics are rewritten."""
        assert self.episode is not None, "commit() of an episode without steps"
        self.episode.metadata.update(metadata)  # the writer stores metadata when the episode ends
        episode_id = self.episode.end(success=success).id
        self.output.committed()
        return episode_id

    def abort(self) -> None:
        if self.episode is not None:
            self.episode.abort()
            self.episode = None


class BagOutput:
    """The folder of the episode bags and their import mapping."""

    def __init__(self, folder: str | os.PathLike, storage: str) -> None:
        self.folder = Path(folder)
        self.storage = storage
        self.typestore = project_typestore()
        (self.folder / BAG_STAGING).mkdir(parents=True, exist_ok=True)
        leftovers = sorted(p.name for p in (self.folder / BAG_STAGING).iterdir())
        if leftovers:  # kept: a killed recorder's bag can still be imported (docs/DATASET.md)
            log.warning("bags of interrupted recordings are in %s: %s", self.folder / BAG_STAGING, leftovers)

    def next_name(self) -> str:
        """episode_NNNNNN, after every bag in the folder (finished or staged)."""
        used = [p.name for d in (self.folder, self.folder / BAG_STAGING) for p in d.iterdir()]
        numbers = [int(n[len(EPISODE_PREFIX):]) for n in used if n.startswith(EPISODE_PREFIX) and n[len(EPISODE_PREFIX):].isdigit()]
        return f"{EPISODE_PREFIX}{max(numbers, default=-1) + 1:06d}"

    def begin(self, name: str) -> "BagEpisode":
        return BagEpisode(self.folder / BAG_STAGING / name, self.folder / name, self.storage, self.typestore)

    def write_mapping(self, mapping: RosbagMapping) -> Path:
        """BAG_PATH/import_mapping.yaml, replaced atomically."""
        path = self.folder / MAPPING_FILE
        tmp = path.with_name(path.name + ".tmp")
        header = ("# Import mapping of the bags in this folder, written by the Astra recorder:\n"
                  f"#   python -m astra_core.data.import_rosbag --mapping {path} --out DATASET {self.folder}/{EPISODE_PREFIX}*\n")
        tmp.write_text(header + yaml.safe_dump(to_dict(mapping), sort_keys=False))
        os.replace(tmp, path)
        return path


class BagEpisode:
    """One episode's rosbag2 folder, written in staging and renamed when committed.

    Opened by its first write, in the thread that writes it: sqlite3 storage may only be used from
    the thread that opened it (the recorder's writer thread)."""

    def __init__(self, staging: Path, final: Path, storage: str, typestore: Any) -> None:
        self.staging, self.final = staging, final
        self.storage = storage
        self.typestore = typestore
        self._bag: BagWriter | None = None
        self._closed = False
        self.messages = 0

    def write(self, topic: str, msgtype: str, t_ns: int, data: bytes) -> None:
        if self._bag is None:
            if self._closed:
                raise RuntimeError(f"bag {self.staging} is closed")
            self._bag = BagWriter(self.staging, self.storage, typestore=self.typestore)
            self._bag.__enter__()
        self._bag.write_serialized(topic, msgtype, t_ns, data)
        self.messages += 1

    def marker(self, topic: str, t_ns: int, value: str) -> None:
        msg = self.typestore.types[STRING](data=value)
        self.write(topic, STRING, t_ns, bytes(self.typestore.serialize_cdr(msg, STRING)))

    def commit(self) -> Path:
        self.close()
        os.rename(self.staging, self.final)
        fmt.fsync_dir(self.final.parent)
        return self.final

    def abort(self) -> None:
        self.close()
        shutil.rmtree(self.staging, ignore_errors=True)

    def close(self) -> None:
        """Close the storage (what was written stays in staging; commit() renames it)."""
        self._closed = True
        if self._bag is not None:
            bag, self._bag = self._bag, None
            bag.__exit__(None, None, None)
