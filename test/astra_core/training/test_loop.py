"""Pieces of the loop that need no data: LR schedule, weight-decay groups, data order."""

import math

import pytest
import torch.nn as nn

from astra_core.training.config import TrainConfig
from astra_core.training.loop import EpochBatches, build_optimizer, lr_at


def _cfg(**optim) -> TrainConfig:
    return TrainConfig.from_dict({"data": {"root": "/d"}, "total_steps": 110, "optim": {"lr": 1.0, "warmup_steps": 10, "min_lr_ratio": 0.1, **optim}})


def test_warmup_then_cosine_to_min_lr():
    cfg = _cfg()
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(60, cfg) == pytest.approx(0.1 + 0.5 * (1 + math.cos(math.pi * 0.5)) * 0.9)
    assert lr_at(110, cfg) == pytest.approx(0.1)
    lrs = [lr_at(s, cfg) for s in range(10, 110)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_no_weight_decay_on_norms_biases_embeddings():
    model = nn.ModuleDict({"emb": nn.Embedding(4, 3), "lin": nn.Linear(3, 3), "ln": nn.LayerNorm(3)})
    decay, no_decay = build_optimizer(model, _cfg(weight_decay=0.1)).param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert [p.shape for p in decay["params"]] == [model["lin"].weight.shape]
    assert len(no_decay["params"]) == 4  # embedding, linear bias, layernorm weight + bias


def test_epoch_batches_are_seeded_sharded_and_resumable():
    rank0, rank1 = EpochBatches(23, 4, seed=0, rank=0, world_size=2), EpochBatches(23, 4, seed=0, rank=1, world_size=2)
    a, b = rank0.epoch(0), rank1.epoch(0)
    assert len(a) == len(b) == 2 and all(len(x) == 4 for x in a + b)
    assert not set(sum(a, [])) & set(sum(b, []))
    assert rank0.epoch(0) == a and rank0.epoch(1) != a
    assert rank0.epoch(0, start=1) == a[1:]
    with pytest.raises(ValueError, match="cannot fill one batch"):
        EpochBatches(3, 4, seed=0)


def test_the_model_is_built_for_the_window_it_trains_on(tiny_dataset):
    """Windows shorter than the preset's max_timesteps shrink the model's context to the window:
    the runtime must never attend over more steps (or use timestep embeddings) than training saw."""
    from astra_core.training.loop import build_model_config

    def config(window: int) -> TrainConfig:
        return TrainConfig.from_dict({"data": {"root": str(tiny_dataset), "window": window},
                                      "model": {"preset": "tiny", "overrides": {"max_timesteps": 4}}})

    assert build_model_config(config(4), tiny_dataset).max_timesteps == 4
    assert build_model_config(config(1), tiny_dataset).max_timesteps == 1
    with pytest.raises(ValueError, match="exceeds the model's max_timesteps=4"):
        build_model_config(config(5), tiny_dataset)
