"""Dataset statistics: per-dimension min / max / mean / std of actions (and proprioception).

They define the action bins (min/max) and the normalisation (mean/std) of
:class:`astra_core.action_space.ActionSpace`, so they are computed once, when the writer closes,
and saved as ``ROOT/stats.json``; training copies them into every checkpoint.

``stats.json`` also records which episodes it was computed from, so a dataset that gained
episodes after its statistics were written (e.g. a writer killed before ``close``) is caught by
:func:`load_stats` instead of silently training with stale bins. Recompute with::

    python -m astra_core.data.stats ROOT
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from astra_core.action_space import ActionStats
from astra_core.data.errors import DatasetError
from astra_core.data.format import (
    FORMAT_VERSION,
    READABLE_VERSIONS,
    STATS_FILE,
    DatasetInfo,
    load_dataset_info,
    load_manifest,
    load_steps,
    read_json,
    write_json_atomic,
)


@dataclass
class DatasetStats:
    """What stats.json holds."""

    action: ActionStats
    proprio: ActionStats | None
    episodes: list[int]  # ids of the episodes the statistics were computed from
    num_steps: int

    def to_dict(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "action": self.action.to_dict(),
            "proprio": None if self.proprio is None else self.proprio.to_dict(),
            "episodes": list(self.episodes),
            "num_steps": self.num_steps,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "DatasetStats":
        valid = {"format_version", "action", "proprio", "episodes", "num_steps"}
        if set(d) != valid:
            raise ValueError(f"unknown keys {sorted(set(d) - valid)}, missing keys {sorted(valid - set(d))}; valid keys: {sorted(valid)}")
        if d["format_version"] not in READABLE_VERSIONS:
            raise ValueError(f"format_version={d['format_version']}: this code reads versions {list(READABLE_VERSIONS)}")
        proprio = None if d["proprio"] is None else ActionStats.from_dict(d["proprio"])
        return cls(ActionStats.from_dict(d["action"]), proprio, [int(e) for e in d["episodes"]], int(d["num_steps"]))


def compute_stats(root: str | os.PathLike, episodes: Sequence[int] | None = None) -> DatasetStats:
    """Statistics over ``episodes`` (default: every indexed episode), read from their steps.npz.

    Only the small per-step arrays are read (hash-checked), never images.
    """
    root = Path(root)
    info = load_dataset_info(root)
    ids = [e.id for e in info.episodes] if episodes is None else [int(e) for e in episodes]
    if not ids:
        raise DatasetError(None, STATS_FILE, "cannot compute statistics of a dataset with no episodes")
    actions, proprio = [], []
    for episode in ids:
        steps = load_steps(root, info, episode, load_manifest(root, info, episode))
        actions.append(steps.actions)
        if steps.proprio is not None:
            proprio.append(steps.proprio)
    all_actions = np.concatenate(actions)
    return DatasetStats(
        action=ActionStats.from_actions(all_actions, info.action_names),
        proprio=ActionStats.from_actions(np.concatenate(proprio), info.proprio_names) if proprio else None,
        episodes=ids,
        num_steps=int(all_actions.shape[0]),
    )


def write_stats(root: str | os.PathLike) -> DatasetStats:
    """Compute statistics over every indexed episode and save them as ROOT/stats.json."""
    stats = compute_stats(root)
    write_json_atomic(Path(root) / STATS_FILE, stats.to_dict())
    return stats


def stats_are_current(stats: DatasetStats, info: DatasetInfo) -> bool:
    return sorted(stats.episodes) == sorted(e.id for e in info.episodes) and stats.num_steps == sum(
        e.num_steps for e in info.episodes
    )


def load_stats(root: str | os.PathLike, require_current: bool = True) -> DatasetStats:
    """Read ROOT/stats.json; with ``require_current`` it must cover exactly the indexed episodes."""
    root = Path(root)
    d = read_json(root / STATS_FILE, None, STATS_FILE)
    try:
        stats = DatasetStats.from_dict(d)
    except (ValueError, TypeError, KeyError) as exc:
        raise DatasetError(None, STATS_FILE, f"invalid schema in {root / STATS_FILE}: {exc}") from None
    if require_current:
        info = load_dataset_info(root)
        if not stats_are_current(stats, info):
            raise DatasetError(
                None,
                STATS_FILE,
                f"stale: computed from {len(stats.episodes)} episodes / {stats.num_steps} steps, the index has "
                f"{len(info.episodes)} episodes / {sum(e.num_steps for e in info.episodes)} steps; "
                f"recompute with `python -m astra_core.data.stats {root}`",
            )
        if stats.action.names != info.action_names:
            raise DatasetError(None, STATS_FILE, f"action names {stats.action.names} differ from dataset.json {info.action_names}")
    return stats


def load_action_stats(root: str | os.PathLike) -> ActionStats:
    """The ActionStats a model trained on this dataset must use (checked to be current)."""
    return load_stats(root).action


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Recompute ROOT/stats.json from every indexed episode.")
    parser.add_argument("root", type=Path)
    args = parser.parse_args(argv)
    try:
        stats = write_stats(args.root)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(stats.to_dict(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
