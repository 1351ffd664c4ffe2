"""Closed-loop evaluation of a checkpoint in a simulator, with the streaming runtime.

    python -m astra_sim.evaluate --checkpoint runs/demo/checkpoint --episodes 50 \
        [--seed 1000000] [--train-data data/tabletop] [--json results.json]

Per episode: ``obs, instruction = env.reset(seed)``, ``policy.reset(instruction)``, then
``policy.step(obs)`` -> clip to the env's action bounds -> ``env.step`` ->
``policy.record_executed(clipped)`` until the env says done. Reports the success rate, mean steps
(over all and over successful episodes), per-task success and policy latency, as JSON.

Evaluation seeds start at 1,000,000 by default, far from the demonstration seeds (which start at 0
by default); with ``--train-data`` the seeds of the training episodes are read from the dataset and
any overlap is an error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from astra_sim.env import Env, make_env

DEFAULT_EVAL_SEED = 1_000_000


def evaluate_policy(policy: Any, env: Env, seeds: Sequence[int]) -> dict[str, Any]:
    """Run one episode per seed; ``policy`` follows the AstraPolicy contract (reset/step/record_executed)."""
    missing = [c for c in policy.camera_names if c not in env.camera_names]
    if missing:
        raise ValueError(f"the policy needs cameras {missing} that the environment does not have "
                         f"(environment cameras: {env.camera_names})")
    if policy.action_space.spec.kind != env.action_space.kind:
        raise ValueError(f"the policy outputs '{policy.action_space.spec.kind}' actions, "
                         f"the environment takes '{env.action_space.kind}'")
    low, high = env.action_bounds
    episodes: list[dict[str, Any]] = []
    latencies: list[float] = []
    t0 = time.perf_counter()
    for seed in seeds:
        obs, instruction = env.reset(int(seed))
        policy.reset(instruction)
        done = success = False
        steps = clipped_steps = 0
        while not done:
            out = policy.step({camera: obs[camera] for camera in policy.camera_names})
            latencies.append(float(out.latency_ms))
            proposed = np.asarray(out.values, dtype=np.float64)
            action = np.clip(proposed, low, high)
            clipped_steps += int(not np.array_equal(action, proposed))
            obs, success, done, _ = env.step(action)
            policy.record_executed(action)
            steps += 1
        episodes.append({"seed": int(seed), "task": getattr(getattr(env, "task", None), "kind", None),
                         "instruction": instruction, "success": bool(success), "steps": steps,
                         "clipped_steps": clipped_steps})
    return summarize(episodes, latencies, time.perf_counter() - t0)


def summarize(episodes: list[dict[str, Any]], latencies_ms: list[float], seconds: float) -> dict[str, Any]:
    successes = [e for e in episodes if e["success"]]
    by_task: dict[str, list[bool]] = defaultdict(list)
    for e in episodes:
        by_task[str(e["task"])].append(e["success"])
    return {
        "episodes": len(episodes),
        "success_rate": len(successes) / len(episodes) if episodes else 0.0,
        "mean_steps": float(np.mean([e["steps"] for e in episodes])) if episodes else 0.0,
        "mean_steps_success": float(np.mean([e["steps"] for e in successes])) if successes else None,
        "success_rate_by_task": {k: sum(v) / len(v) for k, v in sorted(by_task.items())},
        "episodes_by_task": {k: len(v) for k, v in sorted(by_task.items())},
        "policy_latency_ms": {"mean": float(np.mean(latencies_ms)), "p95": float(np.percentile(latencies_ms, 95))}
        if latencies_ms else None,
        "seconds": round(seconds, 2),
        "per_episode": episodes,
    }


def training_seeds(dataset_root: str | Path) -> set[int]:
    """Environment seeds of a demonstration dataset (episode metadata written by astra_sim.demos)."""
    from astra_core.data import format as fmt
    from astra_sim.demos import SEED_KEY

    root = Path(dataset_root)
    info = fmt.load_dataset_info(root)
    seeds: set[int] = set()
    for record in info.episodes:
        metadata = fmt.load_manifest(root, info, record.id).get("metadata", {})
        if SEED_KEY in metadata:
            seeds.add(int(metadata[SEED_KEY]))
    return seeds


def check_held_out(seeds: Sequence[int], train_seeds: set[int]) -> None:
    overlap = sorted(set(int(s) for s in seeds) & train_seeds)
    if overlap:
        raise ValueError(f"{len(overlap)} evaluation seeds were used for training (e.g. {overlap[:5]}); "
                         "choose another --seed")


def main(argv: Sequence[str] | None = None) -> int:
    from astra_core.runtime import AstraPolicy
    from astra_sim.demos import add_env_arguments, env_options_from_args

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=DEFAULT_EVAL_SEED, help="first evaluation seed")
    parser.add_argument("--train-data", default=None, help="dataset the checkpoint was trained on (held-out check)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None, help="also write the full result to this file")
    add_env_arguments(parser)
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error("--episodes must be >= 1")

    seeds = list(range(args.seed, args.seed + args.episodes))
    if args.train_data:
        check_held_out(seeds, training_seeds(args.train_data))
    env = make_env(args.env, **env_options_from_args(args))
    policy = AstraPolicy.from_checkpoint(args.checkpoint, args.device)
    result = evaluate_policy(policy, env, seeds)
    result["checkpoint"] = str(args.checkpoint)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "per_episode"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
