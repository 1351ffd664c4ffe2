"""Corrupt datasets: readers raise a DatasetError naming episode and key; the validator reports it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from torch.utils.data import DataLoader

from astra_core.data import DatasetError, TrajectoryWindowDataset, collate_windows, compute_stats
from astra_core.data import format as fmt
from astra_core.data.validate import main as validate_main

REPO = Path(__file__).resolve().parents[3]
EPISODE = 2  # the corrupted episode (12 steps, 3 chunks per camera)


def rewrite_steps(root: Path, episode: int, edit) -> None:
    """Change steps.npz and re-sign it in the manifest, so only the content check can catch it."""
    ep_dir = fmt.episode_dir(root, episode)
    with np.load(ep_dir / fmt.STEPS_FILE, allow_pickle=False) as npz:
        arrays = {k: npz[k].copy() for k in npz.files}
    edit(arrays)
    data = fmt.npz_bytes(arrays)
    (ep_dir / fmt.STEPS_FILE).write_bytes(data)
    manifest = json.loads((ep_dir / fmt.MANIFEST_FILE).read_text())
    manifest["files"][fmt.STEPS_FILE] = {"sha256": fmt.sha256_bytes(data), "bytes": len(data)}
    (ep_dir / fmt.MANIFEST_FILE).write_text(json.dumps(manifest))


def truncate_chunk(root: Path) -> None:
    path = fmt.episode_dir(root, EPISODE) / "images/wrist/000001.npz"
    path.write_bytes(path.read_bytes()[:-100])


def flip_byte(root: Path) -> None:
    path = fmt.episode_dir(root, EPISODE) / "images/wrist/000001.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def delete_chunk(root: Path) -> None:
    (fmt.episode_dir(root, EPISODE) / "images/wrist/000001.npz").unlink()


def delete_steps(root: Path) -> None:
    (fmt.episode_dir(root, EPISODE) / fmt.STEPS_FILE).unlink()


def nan_action(root: Path) -> None:
    rewrite_steps(root, EPISODE, lambda a: a["actions"].__setitem__((5, 2), np.nan))


def inf_proprio(root: Path) -> None:
    rewrite_steps(root, EPISODE, lambda a: a["proprio"].__setitem__((7, 0), -np.inf))


def backwards_timestamp(root: Path) -> None:
    rewrite_steps(root, EPISODE, lambda a: a["timestamps"].__setitem__(6, a["timestamps"][4]))


def truncate_manifest(root: Path) -> None:
    path = fmt.episode_dir(root, EPISODE) / fmt.MANIFEST_FILE
    path.write_text(path.read_text()[:-40])


def wrong_step_count(root: Path) -> None:
    rewrite_steps(root, EPISODE, lambda a: a.update({k: v[:-1] for k, v in a.items()}))


CORRUPTIONS = {
    # name: (corrupt, key the error must name, what the message must say)
    "truncated_chunk": (truncate_chunk, "images/wrist/000001.npz", "truncated"),
    "flipped_byte": (flip_byte, "images/wrist/000001.npz", "sha256 mismatch"),
    "deleted_chunk": (delete_chunk, "images/wrist/000001.npz", "missing"),
    "deleted_steps": (delete_steps, "steps.npz", "missing"),
    "nan_action": (nan_action, "actions", "non-finite value(s), first at step 5"),
    "inf_proprio": (inf_proprio, "proprio", "first at step 7"),
    "backwards_timestamp": (backwards_timestamp, "timestamps", "not strictly increasing at step 6 (101.2 -> 101.0)"),
    "truncated_manifest": (truncate_manifest, "manifest.json", "invalid JSON"),
    "wrong_step_count": (wrong_step_count, "actions", "schema needs float64(12, 7)"),
}


def read_every_window(root: Path) -> None:
    ds = TrajectoryWindowDataset(root, window=4)
    for i in range(len(ds)):
        ds[i]


def test_valid_dataset_passes(small_dataset, capsys):
    assert validate_main([str(small_dataset.root)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(out[-1])
    assert len(out) == 1 and summary["ok"] and summary["episodes"] == 4 and summary["steps"] == 29 and summary["problems"] == 0


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corruption_is_named_by_reader_and_validator(small_dataset, capsys, name):
    corrupt, key, message = CORRUPTIONS[name]
    corrupt(small_dataset.root)

    with pytest.raises(DatasetError) as err:
        read_every_window(small_dataset.root)
    assert (err.value.episode, err.value.key) == (EPISODE, key)
    assert message in str(err.value) and f"episode {EPISODE}" in str(err.value) and key in str(err.value)

    assert validate_main([str(small_dataset.root)]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    assert not summary["ok"] and summary["episodes_with_problems"] == [EPISODE]
    problem_lines = lines[:-1]
    assert any(line.startswith(f"episode {EPISODE}, key '{key}'") and message in line for line in problem_lines), problem_lines
    # Other episodes are still checked and clean: every episode-level line is about EPISODE.
    assert all(line.startswith(f"episode {EPISODE},") or "stats.json" in line for line in problem_lines), problem_lines


def test_validator_command_exits_1_and_names_the_problem(small_dataset):
    flip_byte(small_dataset.root)
    proc = subprocess.run(
        [sys.executable, "-m", "astra_core.data.validate", str(small_dataset.root)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith(f"episode {EPISODE}, key 'images/wrist/000001.npz': sha256 mismatch")
    assert json.loads(lines[-1])["problems"] == 1


def test_stats_that_disagree_with_the_data_are_reported(small_dataset, capsys):
    path = small_dataset.root / fmt.STATS_FILE
    stats = json.loads(path.read_text())
    stats["action"]["mean"][3] += 0.01
    path.write_text(json.dumps(stats))
    assert validate_main([str(small_dataset.root)]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("dataset, key 'stats.json': action 'mean'")


def test_missing_dataset_json_is_named(tmp_path, capsys):
    assert validate_main([str(tmp_path)]) == 1
    assert "dataset, key 'dataset.json': file is missing" in capsys.readouterr().out
    with pytest.raises(DatasetError, match="dataset.json"):
        TrajectoryWindowDataset(tmp_path, window=2)


def test_corrupt_steps_stop_statistics_with_the_episode_named(small_dataset):
    nan_action(small_dataset.root)
    with pytest.raises(DatasetError) as err:
        compute_stats(small_dataset.root)
    assert (err.value.episode, err.value.key) == (EPISODE, "actions")


def test_error_from_a_dataloader_worker_names_episode_and_key(small_dataset):
    delete_chunk(small_dataset.root)
    ds = TrajectoryWindowDataset(small_dataset.root, window=4, episodes=[EPISODE])
    loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate_windows)
    # torch re-raises worker exceptions whose constructor takes more than one argument as
    # RuntimeError carrying the original message.
    with pytest.raises(Exception, match=rf"episode {EPISODE}, key 'images/wrist/000001.npz': file is missing"):
        for _ in loader:
            pass


def test_dataset_error_message_and_pickling():
    import pickle  # only to check the error survives a process boundary; nothing from disk is unpickled

    err = DatasetError(3, "actions", "NaN at step 4")
    assert str(err) == "episode 3, key 'actions': NaN at step 4"
    again = pickle.loads(pickle.dumps(err))
    assert (again.episode, again.key, again.problem) == (3, "actions", "NaN at step 4")
    assert str(DatasetError(None, "dataset.json", "missing")) == "dataset, key 'dataset.json': missing"
