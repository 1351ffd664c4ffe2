"""The main job end to end at toy size: demos -> real training subprocess -> closed-loop eval -> JSON."""

import json
import os
import subprocess
import sys
from pathlib import Path

from astra_core.data import format as fmt
from astra_sim.demo import prepare_demos

REPO = Path(__file__).resolve().parents[2]


def run_demo(out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-m", "astra_sim.demo", "--out", str(out), "--episodes", "6", "--steps", "2",
            "--eval-episodes", "2", "--image-size", "32",
            "batch_size=2", "optim.warmup_steps=1", "progress_bar=false", "data.val_fraction=0.2"]
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPO, timeout=280)


def test_demo_job_end_to_end(tmp_path):
    out = tmp_path / "demo"
    proc = run_demo(out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["dataset"]["episodes"] == 6 and not summary["dataset"]["reused"]
    training = summary["training"]
    assert training["steps"] == 2 and Path(training["checkpoint"]).is_dir()
    assert all(isinstance(training[k], float) for k in ("loss_start", "loss_end"))
    evaluation = summary["evaluation"]
    assert evaluation["episodes"] == 2 and 0.0 <= evaluation["success_rate"] <= 1.0
    assert evaluation["seeds"] == [1_000_000, 1_000_002]

    # The recording is reused when asked for again with the same parameters, re-recorded otherwise.
    recording = {"env": "tabletop", "env_options": {"image_size": 32, "action_bins": 64}, "episodes": 6, "seed": 0}
    assert prepare_demos(out / "data", recording)["reused"]
    assert not prepare_demos(out / "data", {**recording, "episodes": 3})["reused"]
    assert fmt.load_dataset_info(out / "data").episodes[-1].id == 2


def test_demo_never_deletes_data_it_did_not_record(tmp_path):
    foreign = tmp_path / "data"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("not ours")
    recording = {"env": "tabletop", "env_options": {"image_size": 32}, "episodes": 1, "seed": 0}
    try:
        prepare_demos(foreign, recording)
    except FileExistsError as exc:
        assert "not recorded by astra_sim.demo" in str(exc)
    else:
        raise AssertionError("an existing foreign directory was overwritten")
    assert (foreign / "keep.txt").read_text() == "not ours"
