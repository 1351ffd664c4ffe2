"""Import a local LeRobotDataset folder (v2.x or v3.0 layout) into an Astra dataset.

    python -m astra_core.data.import_lerobot --mapping config/import/lerobot_example.yaml \\
        --out data/so100 LEROBOT_DIR [--episodes 0 3 7] [--append]
    astra-import-lerobot ...                                  (console script)

The mapping YAML (:class:`LeRobotMapping`) says which ``observation.images.*`` features become
which cameras, which feature is the proprioception (``observation.state``) and how the
``action`` feature fills the action space; each episode's task string is its instruction.
Frames keep their native size unless ``image_size`` is set (then
:func:`astra_core.imaging.resize_rgb`). Video is decoded with PyAV, parquet read with pyarrow;
an episode that cannot be read (missing video, a frame off its timestamp, NaN actions) is
reported and skipped, the others are imported. Report and exit status as in
:mod:`astra_core.data.import_rosbag`.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from astra_core.configuration import ConfigError, to_dict
from astra_core.data import format as fmt
from astra_core.data.errors import DatasetError
from astra_core.data.import_mapping import (
    ActionMapping, MappingError, VectorComposer, add_common_arguments, check_cameras, check_image_size,
    common_image_size, load_mapping, prepare_frame, select_elements,
)  # fmt: skip
from astra_core.data.import_report import EpisodeReport, ImportReport
from astra_core.data.lerobot_format import LeRobotEpisode, LeRobotError, LeRobotFolder, vector_column
from astra_core.data.writer import DatasetWriter
from astra_core.geometry import QUATERNION_TOLERANCE, QuaternionError

IMAGE_DTYPES = ("video", "image")


@dataclass
class LeRobotActionMapping(ActionMapping):
    feature: str = "action"  # the LeRobot feature holding the action vector


@dataclass
class LeRobotMapping:
    cameras: dict[str, str] = field(default_factory=dict)  # dataset camera name -> LeRobot image/video feature
    action: LeRobotActionMapping = field(default_factory=LeRobotActionMapping)
    proprio: str = "observation.state"  # feature for proprioception; "" for none
    proprio_names: list[Any] | None = None  # elements to keep (names or indices), default all
    instruction: str = ""  # for episodes without a task (never overrides one)
    episodes: list[int] | None = None  # LeRobot episode indices to import (default: all); --episodes overrides
    success: bool = True  # LeRobot has no success flag: the one given to every imported episode
    image_size: list[int] | None = None  # null: native size; [H, W]: resize_rgb
    video_tolerance_s: float | None = None  # a frame must be this close to its timestamp (default 0.25 / fps)
    quaternion_tolerance: float = QUATERNION_TOLERANCE  # action.quaternion: | |q| - 1 | beyond this is an error
    chunk_size: int = 32
    metadata: dict[str, Any] = field(default_factory=dict)  # copied into dataset.json metadata

    def __post_init__(self) -> None:
        check_cameras(self.cameras, "a LeRobot image feature (observation.images.*)")
        self.image_size = check_image_size(self.image_size)
        if self.video_tolerance_s is not None and not self.video_tolerance_s > 0:
            raise ConfigError(f"video_tolerance_s={self.video_tolerance_s}: must be null or > 0")
        if not self.quaternion_tolerance > 0:
            raise ConfigError(f"quaternion_tolerance={self.quaternion_tolerance}: must be > 0")
        if self.episodes is not None and not all(isinstance(e, int) and e >= 0 for e in self.episodes):
            raise ConfigError(f"episodes={self.episodes}: must be null or a list of episode indices")


class LeRobotImporter:
    """Converts the episodes of one LeRobot folder; :meth:`run` writes them and fills the report."""

    def __init__(self, folder: LeRobotFolder, mapping: LeRobotMapping, threads: int = 1, progress: bool = True) -> None:
        self.folder, self.mapping, self.threads, self.progress = folder, mapping, threads, progress
        m = mapping
        self.camera_features = {cam: folder.feature(key, IMAGE_DTYPES) for cam, key in m.cameras.items()}
        action = folder.feature(m.action.feature)
        self.composer = VectorComposer(m.action, action.names, f"{folder.root}: feature '{action.key}'")
        self.proprio_feature = folder.feature(m.proprio) if m.proprio else None
        self.proprio_index: list[int] | None = None
        self.proprio_names: list[str] | None = None
        if self.proprio_feature is not None:
            self.proprio_index = select_elements(self.proprio_feature.names, m.proprio_names, f"proprio '{m.proprio}'")
            self.proprio_names = [self.proprio_feature.names[i] for i in self.proprio_index]
        self.tolerance = m.video_tolerance_s if m.video_tolerance_s is not None else 0.25 / folder.fps
        self._tasks: dict[int, str] | None = None

    def image_size(self) -> tuple[int, int]:
        """The dataset's image size: the features' native one, unless the mapping resizes."""
        return common_image_size({cam: f.image_size() for cam, f in self.camera_features.items()}, self.mapping.image_size)

    def run(self, writer: DatasetWriter, report: ImportReport, only: Sequence[int] | None = None) -> None:
        episodes = self.folder.episodes()
        if only is not None:
            known = {e.index for e in episodes}
            absent = sorted(set(only) - known)
            if absent:
                raise LeRobotError(str(self.folder.root), f"episodes {absent} are not in the dataset ({len(known)} episodes)")
            episodes = [e for e in episodes if e.index in set(only)]
        bar = tqdm(total=sum(e.length for e in episodes), desc=self.folder.root.name, unit="frame", disable=not self.progress)
        try:
            for episode in episodes:
                r = EpisodeReport(f"{self.folder.root} episode {episode.index}", success=self.mapping.success)
                report.episodes.append(r)
                try:
                    r.episode = self._import_episode(episode, writer, r, bar)
                    report.frames_written += r.steps * len(self.camera_features)
                except (LeRobotError, MappingError, QuaternionError, ValueError) as err:
                    r.steps = 0
                    r.drop(str(err), status="failed")
        finally:
            bar.close()

    def _instruction(self, episode: LeRobotEpisode, table, r: EpisodeReport) -> str:
        tasks = [t for t in episode.tasks if t.strip()]
        if not tasks and "task_index" in table.column_names:
            if self._tasks is None:
                self._tasks = self.folder.tasks_by_index()
            index = table.column("task_index")[0].as_py()
            tasks = [self._tasks[index]] if index in self._tasks else []
        if len(tasks) > 1:
            r.warnings.append(f"episode has {len(tasks)} tasks; the first is its instruction: {tasks}")
        if tasks:
            return tasks[0]
        if self.mapping.instruction:
            return self.mapping.instruction
        raise LeRobotError(r.source, "has no task and the mapping gives no instruction")

    def _import_episode(self, episode: LeRobotEpisode, writer: DatasetWriter, r: EpisodeReport, bar) -> int:
        m, where = self.mapping, r.source
        columns = ["timestamp", m.action.feature] + ([m.proprio] if m.proprio else [])
        columns += [f.key for f in self.camera_features.values() if f.dtype == "image"]
        columns += ["task_index"] if "task_index" in self.folder.features else []
        table = self.folder.episode_table(episode, columns)
        timestamps = vector_column(table, "timestamp", where)[:, 0]
        if not np.isfinite(timestamps).all() or (len(timestamps) > 1 and not (np.diff(timestamps) > 0).all()):
            raise LeRobotError(where, "timestamps are not finite and strictly increasing")
        source_actions = vector_column(table, m.action.feature, where)
        actions = np.stack([self.composer.compose(row, m.quaternion_tolerance) for row in source_actions])
        proprio = None
        if self.proprio_feature is not None:
            proprio = vector_column(table, m.proprio, where)[:, self.proprio_index]
        for name, values in (("action", actions), ("proprio", proprio)):
            if values is not None and not np.isfinite(values).all():
                frame = int(np.argwhere(~np.isfinite(values))[0][0])
                raise LeRobotError(where, f"{name} is not finite at frame {frame}")
        frames = {cam: (self.folder.image_column_frames(table, f.key, where) if f.dtype == "image" else
                        self.folder.video_frames(episode.videos[f.key], f.key, timestamps, self.tolerance, where, self.threads))
                  for cam, f in self.camera_features.items()}
        r.instruction = self._instruction(episode, table, r)
        r.ticks = episode.length
        r.start_s, r.end_s = float(timestamps[0]), float(timestamps[-1])
        metadata = {"source": "lerobot", "dataset": str(self.folder.root), "episode_index": episode.index,
                    "codebase_version": self.folder.version}
        with writer.begin_episode(r.instruction, metadata=metadata) as ep:
            for k in range(episode.length):
                images = {cam: prepare_frame(_frame(frames[cam], where, cam), m.image_size) for cam in frames}
                ep.add_step(images=images, action=actions[k], proprio=None if proprio is None else proprio[k],
                            timestamp=float(timestamps[k]))
                bar.update(1)
            r.steps = episode.length
            return ep.end(success=m.success).id


def _frame(frames, where: str, camera: str) -> np.ndarray:
    frame = next(frames, None)
    if frame is None:
        raise LeRobotError(where, f"camera '{camera}' ran out of frames")
    return frame


def import_lerobot(
    root: str | os.PathLike,
    mapping: LeRobotMapping,
    out: str | os.PathLike,
    episodes: Sequence[int] | None = None,
    append: bool = False,
    threads: int = 1,
    progress: bool = True,
    report_path: str | os.PathLike | None = None,
) -> ImportReport:
    """Import the LeRobot folder ``root`` into the dataset ``out``; returns the report.

    Raises LeRobotError / MappingError when the folder or the mapping is unusable as a whole
    (nothing is written then); problems of single episodes are in the report.
    """
    out = Path(out)
    if (out / fmt.DATASET_FILE).exists() and not append:
        raise DatasetError(None, fmt.DATASET_FILE, f"a dataset already exists at {out}; pass --append to add episodes")
    report = ImportReport("lerobot", str(out), to_dict(mapping), sources=[str(root)])
    folder = LeRobotFolder(root)
    importer = LeRobotImporter(folder, mapping, threads=threads, progress=progress)
    metadata = {"source": "lerobot", "importer": "astra_core.data.import_lerobot", "lerobot_dataset": str(folder.root),
                "codebase_version": folder.version, "robot_type": folder.info.get("robot_type"), **mapping.metadata}
    try:
        with DatasetWriter(out, cameras=list(mapping.cameras), action_space=mapping.action.spec(), control_rate_hz=folder.fps,
                           image_size=importer.image_size(), proprio_names=importer.proprio_names,
                           chunk_size=mapping.chunk_size, metadata=metadata, append=append) as writer:
            importer.run(writer, report, episodes if episodes is not None else mapping.episodes)
    finally:
        report.finish()
        report.save(out, report_path)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="astra-import-lerobot", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="LeRobotDataset folder (holds meta/info.json)")
    add_common_arguments(parser, "config/import/lerobot_example.yaml")
    parser.add_argument("--episodes", type=int, nargs="+", default=None, help="LeRobot episode indices (default: all)")
    args = parser.parse_args(argv)
    cv2.setNumThreads(max(1, args.threads))
    try:
        mapping = load_mapping(LeRobotMapping, args.mapping, args.set)
        report = import_lerobot(args.root, mapping, args.out, episodes=args.episodes, append=args.append,
                                threads=args.threads, progress=not args.no_progress, report_path=args.report)
    except (ConfigError, DatasetError, LeRobotError, MappingError, FileNotFoundError) as err:
        parser.exit(2, f"error: {err}\n")
    return report.print()


if __name__ == "__main__":
    sys.exit(main())
