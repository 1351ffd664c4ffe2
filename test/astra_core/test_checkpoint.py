"""Checkpoints round-trip without pickle and fail loudly when broken."""

import json

import numpy as np
import pytest
import torch
import yaml

from astra_core.action_space import ActionStats
from astra_core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from astra_core.runtime import AstraPolicy


def stats_for(names):
    rng = np.random.default_rng(0)
    return ActionStats.from_actions(rng.normal(size=(100, len(names))), names)


@pytest.fixture
def saved(tmp_path, tiny_model_factory):
    model = tiny_model_factory()
    model.action_space = type(model.action_space)(model.cfg.action_space, stats_for(model.action_space.dim_names))
    path = save_checkpoint(tmp_path / "ckpt", model, meta={"step": 12})
    return model, path


def test_round_trip_restores_weights_stats_and_config(saved):
    model, path = saved
    assert sorted(p.name for p in path.iterdir()) == ["config.yaml", "meta.json", "model.safetensors", "stats.json"]
    loaded = load_checkpoint(path)
    assert loaded.cfg == model.cfg
    assert loaded.action_space.stats == model.action_space.stats
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    assert json.loads((path / "meta.json").read_text())["meta"] == {"step": 12}
    # the frozen language encoder is referenced, not copied
    from safetensors import safe_open

    with safe_open(str(path / "model.safetensors"), "pt") as f:
        assert not any(k.startswith("language.") for k in f.keys())


def test_policy_from_checkpoint_runs(saved):
    _, path = saved
    policy = AstraPolicy.from_checkpoint(path, device="cpu")
    policy.reset("pick the cube")
    out = policy.step({c: np.zeros((32, 32, 3), np.uint8) for c in policy.camera_names})
    assert out.values.shape == (7,)


def test_saving_over_an_existing_checkpoint_replaces_it(saved, tiny_model_factory):
    _, path = saved
    other = tiny_model_factory(seed=3)
    save_checkpoint(path, other)
    loaded = load_checkpoint(path)
    assert torch.equal(loaded.head_weight, other.head_weight)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_truncated_weights(saved):
    _, path = saved
    w = path / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="model.safetensors is corrupt"):
        load_checkpoint(path)


def test_flipped_byte_in_weights(saved):
    _, path = saved
    w = path / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-10] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(path)


def test_garbage_weights_without_a_checksum(saved):
    _, path = saved
    meta = json.loads((path / "meta.json").read_text())
    meta.pop("weights_sha256")
    (path / "meta.json").write_text(json.dumps(meta))
    (path / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="model.safetensors is corrupt or truncated"):
        load_checkpoint(path)


def test_mismatched_config_names_the_tensors(saved):
    _, path = saved
    cfg = yaml.safe_load((path / "config.yaml").read_text())
    cfg["n_embd"] = 32
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(CheckpointError, match="does not match config.yaml: .*shape mismatches"):
        load_checkpoint(path)


def test_missing_file_unknown_key_and_bad_stats(saved):
    _, path = saved
    cfg_text = (path / "config.yaml").read_text()
    (path / "config.yaml").write_text(cfg_text + "\nmystery: 1\n")
    with pytest.raises(CheckpointError, match="config.yaml is invalid.*mystery"):
        load_checkpoint(path)
    (path / "config.yaml").write_text(cfg_text)
    (path / "stats.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="stats.json is invalid"):
        load_checkpoint(path)
    (path / "stats.json").unlink()
    with pytest.raises(CheckpointError, match="missing stats.json"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(path / "nope")


def test_unknown_format_version(saved):
    _, path = saved
    meta = json.loads((path / "meta.json").read_text())
    meta["format_version"] = 99
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format_version 99"):
        load_checkpoint(path)
