"""A run killed mid-way (SIGKILL) and resumed ends with the same weights as an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from astra_core.training.config import TrainConfig
from astra_core.training.loop import Trainer

REPO = Path(__file__).resolve().parents[3]


def _overrides(root: Path, out: Path) -> list[str]:
    # 3 episodes x 4 windows = 12 windows, 3 batches per epoch: checkpoints land mid-epoch.
    return [
        f"data.root={root}", f"output_dir={out}", "data.window=3", "data.val_fraction=0", "model.preset=tiny",
        "model.overrides.vision.image_size=16", "model.overrides.dropout=0.1", "batch_size=4", "total_steps=10",
        "checkpoint_every=2", "keep_last=2", "log_every=1", "val_every=0", "cdl.num_negatives=2", "optim.warmup_steps=3",
        "device=cpu", "progress_bar=false",
    ]  # fmt: skip


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / "step_00000010" / "model.safetensors"))


def test_killed_and_resumed_run_matches_uninterrupted(tmp_path, dataset_writer):
    root = dataset_writer(tmp_path / "data", num_episodes=3, num_steps=6, cameras=("front",), image_size=16)
    config = REPO / "config" / "train" / "tiny.yaml"

    straight = tmp_path / "straight"
    trainer = Trainer(TrainConfig.load(config, _overrides(root, straight)))
    try:
        trainer.fit()
    finally:
        trainer.close()

    # Same run in a separate process, killed hard as soon as its first checkpoint is complete.
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "astra_core.train", "--config", str(config), *_overrides(root, killed)]
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    first = killed / "checkpoints" / "step_00000002" / "training_state"
    deadline = time.monotonic() + 240
    while not first.is_dir() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL, "the run finished before it could be killed"
    steps = sorted(p.name for p in (killed / "checkpoints").glob("step_*"))
    assert steps and "step_00000010" not in steps, steps

    resumed = Trainer(TrainConfig.load(config, _overrides(root, killed)), resume="latest")
    resumed_from = resumed.step
    try:
        resumed.fit()
    finally:
        resumed.close()
    assert 2 <= resumed_from < 10

    a, b = _weights(straight), _weights(killed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after resume from step {resumed_from}"
    # The loss curve after resuming is the uninterrupted one, and metrics.jsonl has no duplicates.
    curve = lambda run: [(r["step"], r["loss"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]
    assert curve(straight) == curve(killed)
    # Only the last keep_last=2 checkpoints remain.
    assert sorted(p.name for p in (killed / "checkpoints").glob("step_*")) == ["step_00000008", "step_00000010"]


def test_same_seed_same_loss_curve(tmp_path, dataset_writer):
    root = dataset_writer(tmp_path / "data", num_episodes=3, num_steps=6, cameras=("front",), image_size=16)
    curves = []
    for name in ("a", "b", "c"):
        seed = "seed=1" if name == "c" else "seed=0"
        trainer = Trainer(TrainConfig.load(REPO / "config/train/tiny.yaml", _overrides(root, tmp_path / name) + ["total_steps=4", seed]))
        try:
            trainer.fit()
        finally:
            trainer.close()
        curves.append([r["loss"] for r in trainer.history])
    assert curves[0] == curves[1]
    assert curves[0] != curves[2]
