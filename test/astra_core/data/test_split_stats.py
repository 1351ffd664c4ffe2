"""Train/val split by episode; statistics computed once, saved with the dataset, equal to numpy's."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from astra_core.action_space import ActionStats, POSE6D_DIMS
from astra_core.data import (
    DatasetError,
    DatasetWriter,
    TrajectoryWindowDataset,
    compute_stats,
    load_action_stats,
    load_stats,
    split_episodes,
)

from dataset_factory import PROPRIO_NAMES, make_action, make_proprio, write_dataset


def test_split_is_by_episode_and_deterministic(tmp_path):
    written = write_dataset(tmp_path / "ds", steps=[2] * 10, with_proprio=False)
    train, val = split_episodes(written.root, val_fraction=0.2, seed=3)
    assert len(val) == 2 and len(train) == 8
    assert not set(train) & set(val) and sorted(train + val) == list(range(10))
    assert split_episodes(written.root, 0.2, seed=3) == (train, val)
    assert len({tuple(split_episodes(written.root, 0.2, seed=s)[1]) for s in range(10)}) > 1

    # Windows of the two datasets never share an episode (no step of a val episode is trained on).
    train_eps = set(TrajectoryWindowDataset(written.root, window=2, episodes=train).window_index()[:, 0].tolist())
    val_eps = set(TrajectoryWindowDataset(written.root, window=2, episodes=val).window_index()[:, 0].tolist())
    assert train_eps == set(train) and val_eps == set(val)


def test_split_edge_cases(tmp_path):
    written = write_dataset(tmp_path / "ds", steps=[2, 2, 2], with_proprio=False)
    assert split_episodes(written.root, 0.0) == ([0, 1, 2], [])
    train, val = split_episodes(written.root, 0.01)
    assert len(val) == 1 and len(train) == 2  # a requested val set is never empty
    train, val = split_episodes(written.root, 0.99)
    assert len(val) == 2 and len(train) == 1  # nor is the train set
    with pytest.raises(ValueError, match="val_fraction"):
        split_episodes(written.root, 1.0)
    single = write_dataset(tmp_path / "one", steps=[2], with_proprio=False)
    with pytest.raises(DatasetError, match="at least 2 episodes"):
        split_episodes(single.root, 0.5)
    with pytest.raises(DatasetError, match=r"requested episodes \[7\]"):
        TrajectoryWindowDataset(written.root, window=2, episodes=[0, 7])


def test_stats_match_numpy_on_raw_actions(small_dataset):
    actions = np.concatenate([small_dataset.actions(e) for e in range(4)])
    proprio = np.concatenate([small_dataset.proprio(e) for e in range(4)])
    saved = json.loads((small_dataset.root / "stats.json").read_text())
    assert saved["episodes"] == [0, 1, 2, 3] and saved["num_steps"] == len(actions) == 29

    stats = load_stats(small_dataset.root)
    for got, raw, names in [(stats.action, actions, list(POSE6D_DIMS)), (stats.proprio, proprio, PROPRIO_NAMES)]:
        assert got.names == names and got.count == len(raw)
        np.testing.assert_allclose(got.min, raw.min(0), rtol=0, atol=0)
        np.testing.assert_allclose(got.max, raw.max(0), rtol=0, atol=0)
        np.testing.assert_allclose(got.mean, raw.mean(0), rtol=1e-12)
        np.testing.assert_allclose(got.std, raw.std(0), rtol=1e-12)
    assert isinstance(load_action_stats(small_dataset.root), ActionStats)
    assert load_action_stats(small_dataset.root) == stats.action

    subset = compute_stats(small_dataset.root, episodes=[1, 3])
    raw = np.concatenate([small_dataset.actions(1), small_dataset.actions(3)])
    np.testing.assert_allclose(subset.action.mean, raw.mean(0), rtol=1e-12)
    assert subset.episodes == [1, 3] and subset.num_steps == 12


def test_appending_recomputes_stats_over_all_episodes(tmp_path):
    root = tmp_path / "ds"
    first = write_dataset(root, steps=[4, 6])
    before = root / "before_stats.json"
    shutil.copy(root / "stats.json", before)
    with DatasetWriter.append_to(root) as writer:
        with writer.begin_episode("appended") as ep:
            for s in range(5):
                ep.add_step(images={c: np.zeros((24, 32, 3), np.uint8) for c in ["front", "wrist"]},
                            action=make_action(2, s), proprio=make_proprio(2, s), timestamp=float(s))  # fmt: skip
            ep.end(success=True)
    raw = np.concatenate([first.actions(0), first.actions(1), np.stack([make_action(2, s) for s in range(5)])])
    stats = load_stats(root)
    assert stats.num_steps == 15 and stats.episodes == [0, 1, 2]
    np.testing.assert_allclose(stats.action.std, raw.std(0), rtol=1e-12)

    # Statistics from before the append are refused, not silently used.
    shutil.copy(before, root / "stats.json")
    with pytest.raises(DatasetError, match="stale: computed from 2 episodes / 10 steps, the index has 3 episodes / 15 steps"):
        load_action_stats(root)


def test_stats_cli_recomputes(small_dataset):
    from astra_core.data.stats import main

    (small_dataset.root / "stats.json").unlink()
    with pytest.raises(DatasetError, match="stats.json': file is missing"):
        load_stats(small_dataset.root)
    assert main([str(small_dataset.root)]) == 0
    assert load_stats(small_dataset.root).num_steps == 29


def test_empty_dataset_has_no_stats(tmp_path):
    from astra_core.action_space import ActionSpaceSpec

    with DatasetWriter(tmp_path / "ds", cameras=["front"], action_space=ActionSpaceSpec("discrete_se2"), control_rate_hz=1.0,
                       image_size=(8, 8)) as writer:  # fmt: skip
        assert writer.num_episodes == 0
    assert writer.stats is None and not (tmp_path / "ds/stats.json").exists()
    with pytest.raises(DatasetError, match="no episodes"):
        compute_stats(tmp_path / "ds")
