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
import math
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from astra_sim.env import Env, Observation, make_env

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
            out = policy.step(*policy_inputs(policy, obs))
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


def evaluate_tasks(policy: Any, env_options: dict[str, Any], per_task: int, first_seed: int = DEFAULT_EVAL_SEED,
                   train_seeds: set[int] | None = None, env_name: str = "tabletop",
                   tasks: Optional[dict[str, dict[str, Any]]] = None) -> dict[str, Any]:
    """``per_task`` seeded episodes of each task (``tasks``: name -> extra env options; default the
    tabletop's four task kinds), merged into one result with a per-task breakdown."""
    if tasks is None:
        from astra_sim.tabletop import TASK_KINDS

        tasks = {kind: {"tasks": [kind]} for kind in TASK_KINDS}
    seeds = list(range(first_seed, first_seed + per_task))
    if train_seeds:
        check_held_out(seeds, train_seeds)
    episodes: list[dict[str, Any]] = []
    latencies: list[float] = []
    t0 = time.perf_counter()
    for task, options in tasks.items():
        part = evaluate_policy(policy, make_env(env_name, **env_options, **options), seeds)
        for e in part["per_episode"]:
            e["task"] = task
        episodes += part["per_episode"]
        latencies += part["latencies_ms"]
    return summarize(episodes, latencies, time.perf_counter() - t0)


def policy_inputs(policy: Any, obs: Observation) -> tuple[dict, Optional[dict], Optional[np.ndarray]]:
    """(images, masks, proprio) of ``obs`` as the policy takes them: what it was trained on, no more."""
    images = {camera: obs.images[camera] for camera in policy.camera_names}
    masks = None
    if policy.needs_masks:
        missing = [c for c in policy.camera_names if c not in obs.masks]
        if missing:
            raise ValueError(f"the policy uses object tokens, but the environment gives no instance masks for {missing}")
        masks = {camera: obs.masks[camera] for camera in policy.camera_names}
    return images, masks, obs.proprio if policy.proprio_dim else None


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a success rate (sound at 0 and n successes, unlike +-1.96 SE)."""
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def rate_with_ci(outcomes: Sequence[bool]) -> dict[str, Any]:
    n, k = len(outcomes), int(sum(outcomes))
    lo, hi = wilson_interval(k, n)
    return {"successes": k, "episodes": n, "rate": k / n if n else 0.0, "ci95": [round(lo, 4), round(hi, 4)]}


def summarize(episodes: list[dict[str, Any]], latencies_ms: list[float], seconds: float) -> dict[str, Any]:
    successes = [e for e in episodes if e["success"]]
    by_task: dict[str, list[bool]] = defaultdict(list)
    for e in episodes:
        by_task[str(e["task"])].append(e["success"])
    overall = rate_with_ci([e["success"] for e in episodes])
    return {
        "episodes": len(episodes),
        "success_rate": overall["rate"],
        "success_ci95": overall["ci95"],
        "by_task": {k: rate_with_ci(v) for k, v in sorted(by_task.items())},
        "mean_steps": float(np.mean([e["steps"] for e in episodes])) if episodes else 0.0,
        "mean_steps_success": float(np.mean([e["steps"] for e in successes])) if successes else None,
        "success_rate_by_task": {k: sum(v) / len(v) for k, v in sorted(by_task.items())},
        "episodes_by_task": {k: len(v) for k, v in sorted(by_task.items())},
        "policy_latency_ms": {"mean": round(float(np.mean(latencies_ms)), 3),
                              "p95": round(float(np.percentile(latencies_ms, 95)), 3)} if latencies_ms else None,
        "seconds": round(seconds, 2),
        "per_episode": episodes,
        "latencies_ms": [round(v, 3) for v in latencies_ms],
    }


def brief(result: dict[str, Any]) -> dict[str, Any]:
    """A result without its per-episode lists (for printing)."""
    return {k: v for k, v in result.items() if k not in ("per_episode", "latencies_ms")}


def format_table(result: dict[str, Any], title: str = "closed-loop success") -> str:
    """A per-task table a person reads at a glance (success, 95% CI, episodes)."""
    rows = [(task, r) for task, r in result["by_task"].items()]
    rows.append(("all", {"successes": sum(r["successes"] for _, r in rows), "episodes": result["episodes"],
                         "rate": result["success_rate"], "ci95": result["success_ci95"]}))
    lines = [title, f"  {'task':<12} {'success':>8}   {'95% CI':<15} episodes"]
    for task, r in rows:
        lo, hi = r["ci95"]
        lines.append(f"  {task:<12} {100 * r['rate']:7.1f}%   [{100 * lo:5.1f}, {100 * hi:5.1f}]  "
                     f"{r['successes']:>4}/{r['episodes']}")
    return "\n".join(lines)


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
    from astra_core.threads import configure_threads
    from astra_sim.demos import add_env_arguments, env_options_from_args

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=DEFAULT_EVAL_SEED, help="first evaluation seed")
    parser.add_argument("--train-data", default=None, help="dataset the checkpoint was trained on (held-out check)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None, help="also write the full result to this file")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: auto)")
    add_env_arguments(parser)
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error("--episodes must be >= 1")
    configure_threads(args.threads, "astra_sim.evaluate")

    seeds = list(range(args.seed, args.seed + args.episodes))
    if args.train_data:
        check_held_out(seeds, training_seeds(args.train_data))
    env = make_env(args.env, **env_options_from_args(args))
    policy = AstraPolicy.from_checkpoint(args.checkpoint, args.device)
    result = evaluate_policy(policy, env, seeds)
    result["checkpoint"] = str(args.checkpoint)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(format_table(result, f"closed-loop success of {args.checkpoint}"), file=sys.stderr)
    print(json.dumps(brief(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
