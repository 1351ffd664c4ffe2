"""Import rosbag2 recordings (sqlite3 or MCAP) into an Astra dataset, with ``rosbags`` (no ROS).

    python -m astra_core.data.import_rosbag --mapping config/import/rosbag_example.yaml \\
        --out data/real BAG [BAG ...] [--instruction TEXT] [--bag-instruction BAG TEXT] [--append]
    astra-import-rosbag ...                                  (console script)

The mapping YAML (:class:`~astra_core.data.rosbag_mapping.RosbagMapping`) names the camera,
instance-mask, action, gripper, proprio, instruction and episode-marker topics and the resampling rule; see
docs/DATASET.md, "Importing recordings". Each bag is read by
:class:`~astra_core.data.rosbag_episodes.BagEpisodes`; its episodes go into one
:class:`~astra_core.data.writer.DatasetWriter` (atomic per episode). A bag that cannot be read
(missing topic, wrong type, unreadable file) is reported and skipped; a truncated bag keeps its
complete episodes. The report (``OUT/import_report.json`` and a table on stdout) lists per
episode the steps written, gaps, bad samples, trimmed and misaligned ticks.

Exit status: 0 if every bag was read and every episode written, 1 if something was dropped or a
bag failed (the rest is still imported), 2 for a bad mapping or command line.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

import cv2

from astra_core.configuration import ConfigError, to_dict
from astra_core.data import format as fmt
from astra_core.data.errors import DatasetError
from astra_core.data.import_mapping import MappingError, add_common_arguments, common_image_size, load_mapping
from astra_core.data.import_report import ImportReport
from astra_core.data.rosbag_episodes import BagEpisodes, ImportSchema, Step
from astra_core.data.rosbag_mapping import RosbagMapping
from astra_core.data.rosbag_source import BagError, BagSource, project_typestore
from astra_core.data.writer import DatasetWriter, EpisodeWriter


class WriterSink:
    """The episodes' destination: a DatasetWriter created at the first step, when the image size
    (native unless the mapping resizes) and the proprio names are known."""

    def __init__(self, out: Path, mapping: RosbagMapping, schema: ImportSchema, append: bool, metadata: dict) -> None:
        self.out, self.mapping, self.schema, self.append, self.metadata = out, mapping, schema, append, metadata
        self.writer: DatasetWriter | None = None

    def begin(self, instruction: str, metadata: dict) -> "_EpisodeHandle":
        return _EpisodeHandle(self, instruction, metadata)

    def writer_for(self, step: Step) -> DatasetWriter:
        if self.writer is None:
            size = common_image_size({c: im.shape[:2] for c, im in step.images.items()}, self.mapping.image_size)
            self.writer = DatasetWriter(
                self.out, cameras=list(self.mapping.cameras), action_space=self.mapping.action.spec(),
                control_rate_hz=self.mapping.control_rate_hz, image_size=size, proprio_names=self.schema.proprio_names,
                chunk_size=self.mapping.chunk_size, metadata=self.metadata, append=self.append,
                has_masks=bool(self.mapping.mask_topics),
            )  # fmt: skip
        return self.writer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class _EpisodeHandle:
    def __init__(self, sink: WriterSink, instruction: str, metadata: dict) -> None:
        self.sink, self.instruction, self.metadata = sink, instruction, metadata
        self.episode: EpisodeWriter | None = None

    def add_step(self, step: Step) -> None:
        if self.episode is None:
            self.episode = self.sink.writer_for(step).begin_episode(self.instruction, self.metadata)
        self.episode.add_step(images=step.images, action=step.action, proprio=step.proprio, timestamp=step.timestamp,
                              masks=step.masks)

    def commit(self, success: bool, metadata: dict) -> int:
        self.episode.metadata.update(metadata)  # the writer stores metadata when the episode ends
        return self.episode.end(success=success).id

    def abort(self) -> None:
        if self.episode is not None:
            self.episode.abort()


def import_bags(
    bags: Sequence[str | os.PathLike],
    mapping: RosbagMapping,
    out: str | os.PathLike,
    instruction: str = "",
    bag_instructions: dict[str, str] | None = None,
    append: bool = False,
    progress: bool = True,
    tmp_dir: str | os.PathLike | None = None,
    report_path: str | os.PathLike | None = None,
) -> ImportReport:
    """Import ``bags`` into the dataset ``out``; returns the report (also when bags failed).

    ``instruction`` applies to every bag, ``bag_instructions`` (bag path or folder name -> text)
    to single bags; both override the mapping's instruction topic. The report is written to
    ``report_path`` (default: ``OUT/import_report.json`` once the dataset exists).
    """
    out = Path(out)
    if (out / fmt.DATASET_FILE).exists() and not append:
        raise DatasetError(None, fmt.DATASET_FILE, f"a dataset already exists at {out}; pass --append to add episodes")
    mapping_dict = to_dict(mapping)
    report = ImportReport("rosbag2", str(out), mapping_dict)
    typestore = project_typestore(mapping.msg_dir or None)
    schema = ImportSchema()
    sink = WriterSink(out, mapping, schema, append, {"source": "rosbag2", "importer": "astra_core.data.import_rosbag",
                                                     **mapping.metadata})
    per_bag = bag_instructions or {}
    try:
        for i, bag in enumerate(bags):
            report.sources.append(str(bag))
            text = per_bag.get(str(bag), per_bag.get(Path(bag).name, instruction))
            episodes: BagEpisodes | None = None
            try:
                with BagSource(bag, typestore, tmp_dir) as source:
                    episodes = BagEpisodes(source, mapping, schema, sink, instruction=text, progress=progress)
                    report.episodes += episodes.run()
                    report.frames_written += episodes.frames_written
            except (BagError, MappingError, ValueError) as err:
                _keep_partial(report, episodes, err)
                report.fail_source(str(bag), str(err))
            except DatasetError as err:  # the dataset cannot take these episodes: no bag can be imported
                _keep_partial(report, episodes, err)
                report.fail_source(str(bag), str(err))
                for rest in bags[i + 1:]:
                    report.sources.append(str(rest))
                    report.fail_source(str(rest), "not attempted: the dataset refused an earlier bag")
                break
    finally:
        sink.close()
        report.finish()
        report.save(out, report_path)
    return report


def _keep_partial(report: ImportReport, episodes: BagEpisodes | None, err: BaseException) -> None:
    """Episodes of a bag that failed half-way: the committed ones stay in the report."""
    if episodes is None or episodes.reports is None:
        return
    report.frames_written += episodes.frames_written
    for r in episodes.reports:
        if r.status == "written" and r.episode is None:
            r.drop(f"not imported: the bag failed ({err})", status="failed")
        report.episodes.append(r)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="astra-import-rosbag", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bags", nargs="+", help="rosbag2 folders (or .mcap / .db3 files), one or more episodes each")
    add_common_arguments(parser, "config/import/rosbag_example.yaml")
    parser.add_argument("--instruction", default="", help="instruction for every bag (overrides the instruction topic)")
    parser.add_argument("--bag-instruction", nargs=2, action="append", default=[], metavar=("BAG", "TEXT"),
                        help="instruction for one bag (path or folder name); repeatable")
    parser.add_argument("--tmp-dir", default=None, help="where truncated MCAP files are salvaged (default: system temp)")
    args = parser.parse_args(argv)
    cv2.setNumThreads(max(1, args.threads))
    try:
        mapping = load_mapping(RosbagMapping, args.mapping, args.set)
        report = import_bags(args.bags, mapping, args.out, instruction=args.instruction,
                             bag_instructions=dict(args.bag_instruction), append=args.append,
                             progress=not args.no_progress, tmp_dir=args.tmp_dir, report_path=args.report)
    except (ConfigError, DatasetError, FileNotFoundError) as err:
        parser.exit(2, f"error: {err}\n")
    return report.print()


if __name__ == "__main__":
    sys.exit(main())
