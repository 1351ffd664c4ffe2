"""Expert demonstrations recorded through the real dataset writer, validated by the real validator."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from astra_core.data import format as fmt
from astra_sim.demos import record_demonstrations
from astra_sim.evaluate import check_held_out, training_seeds
from astra_sim.tabletop import TabletopConfig, TabletopEnv

REPO = Path(__file__).resolve().parents[2]


def run_module(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)


def test_cli_records_a_valid_dataset(tmp_path):
    out = tmp_path / "demos"
    proc = run_module("astra_sim.demos", "--out", str(out), "--episodes", "6", "--seed", "10", "--image-size", "48")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["episodes"] == 6 and summary["seeds"] == [10, 16] and summary["discarded_seeds"] == []

    check = run_module("astra_core.data.validate", str(out))
    assert check.returncode == 0, check.stdout + check.stderr
    report = json.loads(check.stdout.strip().splitlines()[-1])
    assert report["ok"] and report["episodes"] == 6 and report["steps"] == summary["steps"]

    info = fmt.load_dataset_info(out)
    assert info.cameras == ["top", "front"] and tuple(info.image_size) == (48, 48)
    assert info.action_space.kind == "discrete_se2"
    assert training_seeds(out) == set(range(10, 16))


def test_recorded_actions_replay_to_success(tmp_path):
    """The stored actions are exactly the ones that solved each seed: replaying them succeeds."""
    env = TabletopEnv(TabletopConfig(image_size=32))
    record_demonstrations(env, tmp_path / "d", episodes=5, seed=0)
    info = fmt.load_dataset_info(tmp_path / "d")
    for record in info.episodes:
        manifest = fmt.load_manifest(tmp_path / "d", info, record.id)
        steps = fmt.load_steps(tmp_path / "d", info, record.id, manifest)
        first_obs, instruction = env.reset(manifest["metadata"]["seed"])
        assert instruction == record.instruction
        chunk = fmt.load_chunk(tmp_path / "d", record.id, manifest, "top", 0)
        np.testing.assert_array_equal(chunk.decode(0, info.image_size), first_obs.images["top"])
        results = [env.step(a) for a in steps.actions]
        assert results[-1].success and all(not r.success for r in results[:-1])


def test_perturbed_demos_mark_and_recover(tmp_path):
    env = TabletopEnv(TabletopConfig(image_size=32))
    summary = record_demonstrations(env, tmp_path / "p", episodes=12, seed=100, perturb_prob=0.5)
    assert summary["episodes"] == 12
    info = fmt.load_dataset_info(tmp_path / "p")
    perturbed_total = 0
    for record in info.episodes:
        metadata = fmt.load_manifest(tmp_path / "p", info, record.id)["metadata"]
        perturbed = metadata["perturbed_steps"]
        perturbed_total += len(perturbed)
        assert all(0 <= t < record.num_steps - 1 for t in perturbed)  # the last step is always the expert's
        assert all(b - a > 1 for a, b in zip(perturbed, perturbed[1:]))  # never two in a row
    assert perturbed_total > 0


def test_held_out_check_rejects_training_seeds():
    check_held_out([5, 6], {1, 2, 3})
    try:
        check_held_out([2, 9], {1, 2, 3})
    except ValueError as exc:
        assert "used for training" in str(exc)
    else:
        raise AssertionError("overlapping seeds were accepted")


def test_an_interrupted_recording_resumes_after_its_last_seed(tmp_path):
    from astra_sim.tabletop import TabletopConfig, TabletopEnv

    env = TabletopEnv(TabletopConfig(image_size=32))
    first = record_demonstrations(env, tmp_path / "d", episodes=3, seed=10)
    assert first["expert_success_rate"] == 1.0 and first["seeds"] == [10, 13]
    again = record_demonstrations(env, tmp_path / "d", episodes=5, seed=10, resume=True)
    assert again["episodes"] == 5 and again["seeds"] == [13, 15]  # only the two missing ones
    from astra_sim.evaluate import training_seeds

    assert training_seeds(tmp_path / "d") == set(range(10, 15))
