"""A few hundred steps fit a small real dataset: the loss falls by a large factor, accuracy ~100%."""

import json
import time

from astra_core.training.config import TrainConfig
from astra_core.training.loop import Trainer


def overfit_config(data_root, out, **extra) -> TrainConfig:
    raw = {
        "data": {"root": str(data_root), "window": 4, "val_fraction": 0.0},
        "model": {"preset": "tiny", "overrides": {"vision": {"image_size": 16}}},
        "optim": {"lr": 3e-3, "warmup_steps": 10, "weight_decay": 0.0, "min_lr_ratio": 0.1},
        "cdl": {"alpha": 0.1, "num_negatives": 2},
        "batch_size": 8, "total_steps": 160, "log_every": 1, "val_every": 0,
        "checkpoint_every": 1000, "output_dir": str(out), "progress_bar": False, "device": "cpu",
    }  # fmt: skip
    for key, value in extra.items():
        raw[key] = value
    return TrainConfig.from_dict(raw)


def test_overfits_small_dataset(tmp_path, dataset_writer):
    root = dataset_writer(tmp_path / "data", num_episodes=4, num_steps=8, cameras=("front",), image_size=16)
    cfg = overfit_config(root, tmp_path / "run")
    start = time.perf_counter()
    trainer = Trainer(cfg)
    try:
        trainer.fit()
        train_metrics = trainer.evaluate(trainer.train_set, prefix="train_eval")
    finally:
        trainer.close()
    elapsed = time.perf_counter() - start

    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    bc = [r["bc_loss"] for r in records if "bc_loss" in r]
    assert len(bc) == 160
    first, last = sum(bc[:5]) / 5, sum(bc[-5:]) / 5
    assert last < first / 10, f"BC loss only fell from {first:.3f} to {last:.3f}"
    assert train_metrics["train_eval/acc"] > 0.95, train_metrics
    assert "cdl_acc" in records[-1]
    # The final checkpoint exists and loads as a model.
    from astra_core.checkpoint import load_checkpoint

    model = load_checkpoint(tmp_path / "run" / "checkpoints" / "step_00000160")
    assert model.camera_names == ["front"]
    print(f"overfit: bc loss {first:.3f} -> {last:.4f}, train acc {train_metrics['train_eval/acc']:.3f}, {elapsed:.1f} s")


def test_corrupt_dataset_names_episode_and_key(tmp_path, dataset_writer):
    import pytest

    from astra_core.data.errors import DatasetError

    root = dataset_writer(tmp_path / "data", num_episodes=2, num_steps=6, cameras=("front",), image_size=16)
    chunk = root / "episodes" / "000001" / "images" / "front" / "000000.npz"
    chunk.write_bytes(chunk.read_bytes()[:-20])  # truncated
    cfg = overfit_config(root, tmp_path / "run", batch_size=2, total_steps=20)
    trainer = Trainer(cfg)
    try:
        with pytest.raises(DatasetError) as info:
            trainer.fit()
    finally:
        trainer.close()
    assert info.value.episode == 1 and info.value.key == "images/front/000000.npz"
    assert "episode 1" in str(info.value) and "images/front/000000.npz" in str(info.value)
