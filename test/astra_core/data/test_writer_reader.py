"""Writer -> reader round trip, DataLoader workers, interruption safety, bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from astra_core.action_space import ActionSpaceSpec
from astra_core.data import (
    DatasetError,
    DatasetWriter,
    TrajectoryWindowDataset,
    collate_windows,
    load_dataset_info,
    load_stats,
    validate_dataset,
)
from astra_core.data.dataset import window_starts

from dataset_factory import CAMERAS, CHUNK_SIZE, IMAGE_SIZE, PROPRIO_NAMES, make_action, make_frame, write_dataset

REPO = Path(__file__).resolve().parents[3]


def check_window(item: dict, written, window: int) -> None:
    """Compare one window with what was written: pixel-exact images, exact actions, zero padding."""
    ep, start = item["episode"], item["start"]
    n = min(window, written.steps[ep] - start)
    assert item["instruction"] == written.instructions[ep]
    assert item["images"].dtype == torch.uint8 and item["images"].shape == (window, len(CAMERAS), *IMAGE_SIZE, 3)
    np.testing.assert_array_equal(item["images"][:n].numpy(), written.frames(ep)[start : start + n])
    np.testing.assert_array_equal(item["actions"][:n].numpy(), written.actions(ep)[start : start + n])  # exactly as recorded (float64)
    np.testing.assert_array_equal(item["proprio"][:n].numpy(), written.proprio(ep)[start : start + n].astype(np.float32))
    np.testing.assert_array_equal(item["timestamps"][:n].numpy(), written.timestamps[ep][start : start + n])
    assert item["step_mask"].tolist() == [True] * n + [False] * (window - n)
    assert not item["images"][n:].any() and not item["actions"][n:].any() and not item["proprio"][n:].any()


def test_round_trip_is_pixel_exact(small_dataset):
    window = 6
    ds = TrajectoryWindowDataset(small_dataset.root, window=window)
    # Steps (5, 9, 12, 3) with window 6: starts 0 | 0..3 | 0..6 | 0 -> 1 + 4 + 7 + 1 windows.
    assert len(ds) == 13
    for i in range(len(ds)):
        check_window(ds[i], small_dataset, window)


def test_dataset_json_describes_the_dataset(small_dataset):
    info = load_dataset_info(small_dataset.root)
    assert info.cameras == CAMERAS and info.image_size == IMAGE_SIZE and info.chunk_size == CHUNK_SIZE
    assert info.action_space == ActionSpaceSpec("continuous_pose6d") and info.proprio_names == PROPRIO_NAMES
    assert info.control_rate_hz == 5.0 and info.metadata == {"source": "test"}
    assert [(e.id, e.num_steps, e.success, e.instruction) for e in info.episodes] == [
        (i, n, s, t) for i, (n, s, t) in enumerate(zip(small_dataset.steps, small_dataset.success, small_dataset.instructions))
    ]
    manifest = json.loads((small_dataset.root / "episodes/000002/manifest.json").read_text())
    assert manifest["metadata"] == {"seed": 2} and manifest["num_steps"] == 12
    # 12 steps in chunks of 4 -> 3 chunks per camera, plus steps.npz; every file hashed and sized.
    assert len(manifest["files"]) == 1 + 3 * len(CAMERAS)
    for rel, entry in manifest["files"].items():
        assert (small_dataset.root / "episodes/000002" / rel).stat().st_size == entry["bytes"]


def test_default_timestamps_follow_control_rate(tmp_path):
    written = write_dataset(tmp_path / "ds", steps=[4], explicit_timestamps=False, with_proprio=False)
    item = TrajectoryWindowDataset(written.root, window=4)[0]
    np.testing.assert_allclose(item["timestamps"].numpy(), [0.0, 0.2, 0.4, 0.6])
    assert "proprio" not in item


def test_window_starts_cover_every_step():
    assert window_starts(10, 4, 1, 0) == [0, 1, 2, 3, 4, 5, 6]
    assert window_starts(10, 4, 4, 0) == [0, 4, 6]  # last full window always included
    assert window_starts(10, 4, 4, 3) == [3, 6]
    assert window_starts(3, 4, 2, 1) == [0]  # short episode: one padded window
    for num_steps, window, stride in [(17, 5, 3), (40, 8, 7), (5, 5, 2)]:
        for offset in range(stride):
            starts = window_starts(num_steps, window, stride, offset)
            covered = {s + t for s in starts for t in range(window) if s + t < num_steps}
            assert covered >= set(range(offset, num_steps)), (num_steps, window, stride, offset)


def test_window_sampling_is_deterministic_given_seed(small_dataset):
    a = TrajectoryWindowDataset(small_dataset.root, window=3, stride=3, seed=7).window_index()
    b = TrajectoryWindowDataset(small_dataset.root, window=3, stride=3, seed=7).window_index()
    np.testing.assert_array_equal(a, b)
    seeds = {TrajectoryWindowDataset(small_dataset.root, window=3, stride=3, seed=s).window_index().tobytes() for s in range(6)}
    assert len(seeds) > 1  # the seed picks per-episode offsets
    only = TrajectoryWindowDataset(small_dataset.root, window=3, episodes=[1, 3]).window_index()
    assert set(only[:, 0].tolist()) == {1, 3}


def test_dataloader_with_two_workers(small_dataset):
    window = 5
    ds = TrajectoryWindowDataset(small_dataset.root, window=window)
    loader = DataLoader(
        ds, batch_size=3, shuffle=True, num_workers=2, collate_fn=collate_windows, generator=torch.Generator().manual_seed(0)
    )
    seen = []
    for batch in loader:
        b = len(batch["instruction"])
        assert batch["images"].shape == (b, window, len(CAMERAS), *IMAGE_SIZE, 3) and batch["images"].dtype == torch.uint8
        assert batch["actions"].shape == (b, window, 7) and batch["actions"].dtype == torch.float64
        assert batch["step_mask"].dtype == torch.bool and batch["proprio"].shape == (b, window, 3)
        for j in range(b):
            item = {k: v[j] for k, v in batch.items()}
            item["episode"], item["start"] = int(item["episode"]), int(item["start"])
            check_window(item, small_dataset, window)
            seen.append((item["episode"], item["start"]))
    assert sorted(seen) == sorted(map(tuple, ds.window_index().tolist()))


def test_memory_is_bounded_by_caches_not_dataset_size(tmp_path):
    written = write_dataset(tmp_path / "ds", steps=[16] * 8)
    disk = sum(p.stat().st_size for p in (written.root / "episodes").rglob("*") if p.is_file())

    tracemalloc.start()
    try:
        ds = TrajectoryWindowDataset(written.root, window=4, stride=2, cache_chunks=2, cache_episodes=2)
        _, construct_peak = tracemalloc.get_traced_memory()
        assert ds.cached_bytes() == 0  # nothing read yet: only the window index is held
        assert ds.window_index().nbytes < 1000
        largest_chunk = max(p.stat().st_size for p in (written.root / "episodes").rglob("images/*/*.npz"))
        largest_steps = max(p.stat().st_size for p in (written.root / "episodes").rglob("steps.npz"))
        bound = 2 * largest_chunk + 2 * largest_steps
        assert disk > 10 * bound  # so "bounded by the caches" is a real claim
        item_bytes = 0
        for i in range(len(ds)):
            item = ds[i]
            item_bytes = max(item_bytes, sum(v.nbytes for v in item.values() if isinstance(v, torch.Tensor)))
            assert ds.cached_bytes() <= bound
        del item
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert construct_peak < disk / 10, (construct_peak, disk)
    # Reading everything costs the caches, one window, one file being read and decode buffers.
    assert read_peak < bound + 4 * item_bytes + 2 * largest_chunk + 200_000, (read_peak, disk)


def test_exception_inside_episode_leaves_dataset_valid(tmp_path):
    written = write_dataset(tmp_path / "ds", steps=[5, 6])
    with pytest.raises(RuntimeError, match="simulator crashed"):
        with DatasetWriter.append_to(written.root) as writer:
            with writer.begin_episode("doomed episode") as ep:
                for s in range(CHUNK_SIZE + 2):  # past one chunk, so files were already written
                    ep.add_step(images={c: make_frame(9, s, m) for m, c in enumerate(CAMERAS)}, action=make_action(9, s), proprio=[0, 0, 0])
                raise RuntimeError("simulator crashed")
    info = load_dataset_info(written.root)
    assert [e.id for e in info.episodes] == [0, 1]
    assert sorted(p.name for p in (written.root / "episodes").iterdir()) == ["000000", "000001"]
    assert not (written.root / ".staging").exists()
    summary = validate_dataset(written.root)
    assert summary["ok"] and summary["episodes"] == 2, summary
    ds = TrajectoryWindowDataset(written.root, window=6)
    for i in range(len(ds)):
        check_window(ds[i], written, 6)


def test_killed_writer_leaves_previous_episodes_intact(tmp_path):
    """A real process is SIGKILLed in the middle of an episode (no cleanup code runs at all)."""
    root = tmp_path / "ds"
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from dataset_factory import write_dataset, make_frame, make_action, CAMERAS
        from astra_core.data import DatasetWriter
        write_dataset(__import__("pathlib").Path({str(root)!r}), steps=[5, 7])
        writer = DatasetWriter.append_to({str(root)!r})
        for _ in range(2):
            ep = writer.begin_episode("finished")
            for s in range(3):
                ep.add_step(images={{c: make_frame(5, s, m) for m, c in enumerate(CAMERAS)}}, action=make_action(5, s), proprio=[0, 0, 0])
            ep.end(success=True)
        ep = writer.begin_episode("killed half way")
        for s in range(6):
            ep.add_step(images={{c: make_frame(6, s, m) for m, c in enumerate(CAMERAS)}}, action=make_action(6, s), proprio=[0, 0, 0])
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    info = load_dataset_info(root)
    assert [e.num_steps for e in info.episodes] == [5, 7, 3, 3]  # committed episodes survive
    assert any((root / ".staging").iterdir())  # the half episode is only in staging...
    assert sorted(p.name for p in (root / "episodes").iterdir()) == ["000000", "000001", "000002", "000003"]
    ds = TrajectoryWindowDataset(root, window=8)  # ...and readers never see it
    assert set(ds.window_index()[:, 0].tolist()) == {0, 1, 2, 3}
    # stats.json is from before the two appended episodes: refused as stale, and the validator says so.
    with pytest.raises(DatasetError, match="stale") as err:
        load_stats(root)
    assert err.value.key == "stats.json"
    summary = validate_dataset(root)
    assert not summary["ok"] and summary["warnings"], summary
    # Opening a writer clears the leftover and closing recomputes the statistics.
    DatasetWriter.append_to(root).close()
    assert not (root / ".staging").exists()
    assert load_stats(root).num_steps == 18
    assert validate_dataset(root)["ok"]


def test_add_step_rejects_bad_input(tmp_path):
    with DatasetWriter(tmp_path / "ds", cameras=CAMERAS, action_space=ActionSpaceSpec("continuous_pose6d"),
                       control_rate_hz=10.0, image_size=IMAGE_SIZE) as writer:  # fmt: skip
        ep = writer.begin_episode("task")
        good = {c: make_frame(0, 0, m) for m, c in enumerate(CAMERAS)}
        with pytest.raises(ValueError, match=r"cameras \['front'\]"):
            ep.add_step(images={"front": good["front"]}, action=np.zeros(7))
        with pytest.raises(ValueError, match="image 'wrist' is uint8\\(24, 32, 4\\)"):
            ep.add_step(images={**good, "wrist": np.zeros((*IMAGE_SIZE, 4), np.uint8)}, action=np.zeros(7))
        with pytest.raises(ValueError, match="image 'front' is float32"):
            ep.add_step(images={**good, "front": np.zeros((*IMAGE_SIZE, 3), np.float32)}, action=np.zeros(7))
        with pytest.raises(ValueError, match=r"action has shape \(6,\)"):
            ep.add_step(images=good, action=np.zeros(6))
        with pytest.raises(ValueError, match="action contains NaN"):
            ep.add_step(images=good, action=[0, 0, np.nan, 0, 0, 0, 0])
        with pytest.raises(ValueError, match="proprio given"):
            ep.add_step(images=good, action=np.zeros(7), proprio=[1.0])
        ep.add_step(images=good, action=np.zeros(7), timestamp=1.0)
        with pytest.raises(ValueError, match="not after the previous"):
            ep.add_step(images=good, action=np.zeros(7), timestamp=1.0)
        with pytest.raises(ValueError, match="every step or at none"):
            ep.add_step(images=good, action=np.zeros(7))
        with pytest.raises(RuntimeError, match="still open"):
            writer.begin_episode("second")
        ep.end(success=True)
        with pytest.raises(RuntimeError, match="already ended"):
            ep.add_step(images=good, action=np.zeros(7), timestamp=2.0)
        with pytest.raises(ValueError, match="instruction"):
            writer.begin_episode("  ")
        with pytest.raises(ValueError, match="episode metadata must be JSON-serialisable"):
            writer.begin_episode("task", metadata={"pose": np.zeros(3)})
        ep3 = writer.begin_episode("metadata added while recording")
        ep3.add_step(images=good, action=np.zeros(7))
        ep3.metadata["bad"] = float("nan")
        with pytest.raises(ValueError, match="episode 1 metadata must be JSON-serialisable"):
            ep3.end(success=True)
        assert not ep3.is_open and not any((tmp_path / "ds/.staging").iterdir())  # dropped, writer usable
        with pytest.raises(RuntimeError, match="without end"):
            with writer.begin_episode("forgot to end") as ep2:
                ep2.add_step(images=good, action=np.zeros(7))
    assert [e.instruction for e in load_dataset_info(tmp_path / "ds").episodes] == ["task"]
    with pytest.raises(ValueError, match="camera name"):
        DatasetWriter(tmp_path / "x", cameras=["front/left"], action_space=ActionSpaceSpec(), control_rate_hz=10.0, image_size=(8, 8))


def test_existing_dataset_needs_append_with_the_same_schema(small_dataset):
    spec = ActionSpaceSpec("continuous_pose6d")
    kwargs = dict(action_space=spec, control_rate_hz=5.0, image_size=IMAGE_SIZE, proprio_names=PROPRIO_NAMES, chunk_size=CHUNK_SIZE)
    with pytest.raises(DatasetError, match="append=True"):
        DatasetWriter(small_dataset.root, cameras=CAMERAS, **kwargs)
    with pytest.raises(DatasetError, match="'cameras' is \\['front', 'wrist'\\] in the dataset") as err:
        DatasetWriter(small_dataset.root, cameras=["front"], append=True, **kwargs)
    assert err.value.key == "dataset.json" and err.value.episode is None
    with DatasetWriter(small_dataset.root, cameras=CAMERAS, append=True, **kwargs) as writer:
        with pytest.raises(RuntimeError, match="another DatasetWriter"):
            DatasetWriter.append_to(small_dataset.root)
        assert writer.num_episodes == 4


def test_writer_memory_holds_at_most_one_chunk(tmp_path):
    with DatasetWriter(tmp_path / "ds", cameras=CAMERAS, action_space=ActionSpaceSpec(), control_rate_hz=10.0,
                       image_size=IMAGE_SIZE, chunk_size=CHUNK_SIZE) as writer:  # fmt: skip
        ep = writer.begin_episode("long")
        for s in range(3 * CHUNK_SIZE + 1):
            ep.add_step(images={c: make_frame(0, s, m) for m, c in enumerate(CAMERAS)}, action=make_action(0, s))
            assert all(len(frames) < CHUNK_SIZE for frames in ep._frames.values())
        # Three full chunks per camera are already on disk in staging before end().
        staged = list((tmp_path / "ds/.staging").rglob("*.npz"))
        assert len(staged) == 3 * len(CAMERAS)
        ep.end(success=False)
    assert len(list((tmp_path / "ds/episodes/000000/images/front").iterdir())) == 4
