"""Closed-loop evaluation through the real streaming runtime and a real (untrained) checkpoint."""

import json
import os
import subprocess
import sys
from pathlib import Path

from astra_core.checkpoint import save_checkpoint
from astra_core.data import load_action_stats
from astra_core.model import Astra, AstraConfig
from astra_core.presets import load_preset
from astra_core.runtime import AstraPolicy
from astra_sim.demos import record_demonstrations
from astra_sim.evaluate import evaluate_policy
from astra_sim.tabletop import TabletopConfig, TabletopEnv

REPO = Path(__file__).resolve().parents[2]


def tiny_checkpoint(tmp_path: Path, env: TabletopEnv) -> Path:
    data = tmp_path / "data"
    record_demonstrations(env, data, episodes=4, seed=0)
    cfg = load_preset("tiny").to_dict()
    cfg["cameras"] = env.camera_names
    cfg["action_space"] = env.action_space.to_dict()
    model = Astra(AstraConfig.from_dict(cfg), load_action_stats(data))
    save_checkpoint(tmp_path / "ckpt", model)
    return tmp_path / "ckpt"


def test_evaluate_untrained_checkpoint(tmp_path):
    env = TabletopEnv(TabletopConfig(image_size=64, action_bins=64, max_steps=3))
    checkpoint = tiny_checkpoint(tmp_path, env)
    policy = AstraPolicy.from_checkpoint(checkpoint, "cpu")
    result = evaluate_policy(policy, env, seeds=[1_000_000, 1_000_001])
    assert result["episodes"] == 2 and len(result["per_episode"]) == 2
    assert 0.0 <= result["success_rate"] <= 1.0
    # Each episode runs until success or the step limit; the latency of every step is measured.
    for episode in result["per_episode"]:
        assert 1 <= episode["steps"] <= 3 and (episode["success"] or episode["steps"] == 3)
    assert result["policy_latency_ms"]["mean"] > 0

    # The CLI refuses evaluation seeds that were used for training (demos used seeds 0..3).
    env_vars = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    base = [sys.executable, "-m", "astra_sim.evaluate", "--checkpoint", str(checkpoint), "--episodes", "1",
            "--image-size", "64", "--env-option", "action_bins=64", "--env-option", "max_steps=3",
            "--train-data", str(tmp_path / "data")]
    bad = subprocess.run([*base, "--seed", "2"], capture_output=True, text=True, env=env_vars, cwd=REPO, timeout=120)
    assert bad.returncode != 0 and "used for training" in bad.stderr
    good = subprocess.run([*base, "--json", str(tmp_path / "r.json")], capture_output=True, text=True,
                          env=env_vars, cwd=REPO, timeout=120)
    assert good.returncode == 0, good.stderr
    assert json.loads((tmp_path / "r.json").read_text())["episodes"] == 1


def test_policy_and_env_must_agree_on_cameras(tmp_path):
    env = TabletopEnv(TabletopConfig(image_size=64, action_bins=64))
    checkpoint = tiny_checkpoint(tmp_path, env)
    policy = AstraPolicy.from_checkpoint(checkpoint, "cpu")
    top_only = TabletopEnv(TabletopConfig(image_size=64, cameras=("top",)))
    try:
        evaluate_policy(policy, top_only, seeds=[1_000_000])
    except ValueError as exc:
        assert "front" in str(exc)
    else:
        raise AssertionError("a policy needing the front camera ran in a top-only environment")
