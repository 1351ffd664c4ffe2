"""The main job and the retraining job: the shipped checkpoint loads and still succeeds; the
whole retraining pipeline runs end to end at toy size (real demos, real training subprocess,
real closed-loop evaluation)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from astra_core.data import format as fmt
from astra_sim.train_tabletop import PROVENANCE_FILE, SHIPPED_CHECKPOINT, prepare_demos

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def test_shipped_checkpoint_loads_and_still_succeeds(tmp_path):
    """`make run`'s policy, on the first 10 held-out seeds of every task (deterministic on CPU)."""
    provenance = json.loads((SHIPPED_CHECKPOINT / PROVENANCE_FILE).read_text())
    assert provenance["git"]["commit"] and provenance["dataset"]["seeds"][0] == 0
    proc = subprocess.run([sys.executable, "-m", "astra_sim.demo", "--per-task", "10", "--out", str(tmp_path)],
                          capture_output=True, text=True, env=ENV, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "eval.json").read_text())
    assert "task" in proc.stdout and "95% CI" in proc.stdout  # the table a person reads
    for task, r in result["by_task"].items():
        assert r["episodes"] == 10 and r["successes"] >= 9, (task, r)


def test_retraining_job_end_to_end(tmp_path):
    out = tmp_path / "job"
    args = [sys.executable, "-m", "astra_sim.train_tabletop", "--out", str(out), "--episodes", "8", "--steps", "3",
            "--eval-per-task", "1", "batch_size=4", "progress_bar=false", "data.val_fraction=0.25", "val_every=0"]
    proc = subprocess.run(args, capture_output=True, text=True, env=ENV, cwd=REPO, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"]["episodes"] == 8 and not summary["dataset"]["reused"]
    assert summary["training"]["steps"] == 3 and summary["hardware"]["torch_threads"] >= 1
    assert set(summary["evaluation"]["by_task"]) == {"place", "place_pair", "place_all", "rotate"}
    assert summary["git"]["commit"] and "train_tabletop" in summary["command"]
    assert "95% CI" in proc.stdout

    # The recording is reused when asked for again with the same parameters, re-recorded otherwise.
    recording = json.loads((out / "recording.json").read_text())["recording"]
    assert prepare_demos(out / "data", recording)["reused"]
    assert not prepare_demos(out / "data", {**recording, "episodes": 3})["reused"]
    assert fmt.load_dataset_info(out / "data").episodes[-1].id == 2


def test_retraining_never_deletes_data_it_did_not_record(tmp_path):
    foreign = tmp_path / "data"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("not ours")
    recording = {"env": "tabletop", "env_options": {"image_size": 32}, "episodes": 1, "seed": 0}
    with pytest.raises(FileExistsError, match="not recorded by astra_sim.train_tabletop"):
        prepare_demos(foreign, recording)
    assert (foreign / "keep.txt").read_text() == "not ours"
