"""Training with the new state inputs: a frozen encoder stays bit-identical, proprioception is
normalised by statistics that travel with the checkpoint, object tokens train end to end."""

import numpy as np
import torch

from astra_core.action_space import ActionSpaceSpec
from astra_core.checkpoint import load_checkpoint
from astra_core.data.writer import DatasetWriter
from astra_core.runtime import AstraPolicy
from astra_core.training.config import TrainConfig
from astra_core.training.loop import Trainer


def config(data_root, out, **extra) -> TrainConfig:
    raw = {
        "data": {"root": str(data_root), "window": 3, "val_fraction": 0.0},
        "model": {"preset": "tiny", "overrides": {"vision": {"image_size": 16}}},
        "optim": {"lr": 3e-3, "warmup_steps": 1},
        "cdl": {"alpha": 0.1, "num_negatives": 2},
        "batch_size": 4, "total_steps": 4, "log_every": 1, "val_every": 0, "checkpoint_every": 1000,
        "output_dir": str(out), "progress_bar": False, "device": "cpu",
    }  # fmt: skip
    raw.update(extra)
    return TrainConfig.from_dict(raw)


def test_frozen_encoder_stays_bit_identical_through_training(tmp_path, dataset_writer):
    root = dataset_writer(tmp_path / "data", num_episodes=4, num_steps=6, cameras=("front",), image_size=16)
    overrides = {"vision": {"image_size": 16, "freeze": True, "norm": "frozen_batch"}}
    trainer = Trainer(config(root, tmp_path / "run", model={"preset": "tiny", "overrides": overrides}))
    # The backbone is what freezes; the tiny preset's spatial-softmax keypoint maps on top still learn.
    before = {k: v.clone() for k, v in trainer.model.vision.backbone.state_dict().items()}
    head_before = trainer.model.head_weight.detach().clone()
    try:
        trainer.fit()
    finally:
        trainer.close()
    after = trainer.model.vision.backbone.state_dict()
    assert any("running_mean" in k for k in after), "the encoder has BatchNorm statistics to protect"
    for key, value in before.items():
        assert torch.equal(value, after[key]), f"frozen encoder changed: {key}"
    assert not torch.equal(head_before, trainer.model.head_weight), "the rest of the model trained"


def write_proprio_dataset(root, episodes=4, steps=5):
    rng = np.random.default_rng(0)
    names = ["ee_x", "ee_y", "gripper"]
    with DatasetWriter(root, cameras=["front"], action_space=ActionSpaceSpec("continuous_pose6d"),
                       control_rate_hz=10.0, image_size=(16, 16), proprio_names=names) as writer:
        for e in range(episodes):
            with writer.begin_episode(f"reach target {e}") as ep:
                for t in range(steps):
                    proprio = np.array([0.3 + 0.05 * t, -0.1 * e, 1.0])  # not zero-mean, not unit-std
                    ep.add_step(images={"front": rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)},
                                action=rng.normal(size=7), proprio=proprio)
                ep.end(success=True)
    return root, names


def test_proprio_token_trains_and_travels_with_the_checkpoint(tmp_path):
    root, names = write_proprio_dataset(tmp_path / "data")
    trainer = Trainer(config(root, tmp_path / "run", model={"preset": "tiny", "proprio": True,
                                                            "overrides": {"vision": {"image_size": 16}}},
                             checkpoint_every=4))
    try:
        trainer.fit()
    finally:
        trainer.close()
    model = load_checkpoint(tmp_path / "run" / "checkpoints" / "step_00000004")
    assert model.cfg.proprio_dim == 3 and model.proprio_stats.names == names
    assert abs(model.proprio_stats.mean[0] - 0.4) < 1e-9  # dataset statistics, not placeholders
    policy = AstraPolicy(model, "cpu")
    policy.reset("reach target 1")
    image = {"front": np.zeros((16, 16, 3), np.uint8)}
    a = policy.step(image, proprio=np.array([0.3, 0.0, 1.0])).head_output
    policy.reset("reach target 1")
    b = policy.step(image, proprio=np.array([0.5, -0.3, 0.0])).head_output
    assert not np.allclose(a, b), "the proprio token reaches the prediction"


def test_proprio_requested_from_a_dataset_without_it_is_an_error(tmp_path, dataset_writer):
    import pytest

    root = dataset_writer(tmp_path / "data", num_episodes=2, num_steps=4, cameras=("front",), image_size=16)
    with pytest.raises(ValueError, match="has no proprioception"):
        Trainer(config(root, tmp_path / "run", model={"preset": "tiny", "proprio": True}))


def test_cdl_on_a_subset_of_anchors_trains(tmp_path, dataset_writer):
    root = dataset_writer(tmp_path / "data", num_episodes=4, num_steps=6, cameras=("front",), image_size=16)
    trainer = Trainer(config(root, tmp_path / "run", cdl={"alpha": 0.1, "num_negatives": 2, "max_anchors": 2}))
    try:
        trainer.fit()
    finally:
        trainer.close()
    last = trainer.history[-1]
    assert np.isfinite(last["cdl_loss"]) and 0.0 <= last["cdl_acc"] <= 1.0
