"""The main job over ROS (`make run`): the shipped policy drives the built-in tabletop through ROS 2.

    python -m astra_ros.demo_ros [--checkpoint checkpoints/tabletop_objects] [--per-task 100] [--out runs/demo_ros]

Starts the tabletop simulator bridge (astra_ros.sim_bridge) and the policy node
(astra_ros.policy_node, commands enabled) as two ROS processes talking over loopback DDS, then,
for held-out seeds of each of the tabletop's four task kinds, resets the scene through the
bridge's service, publishes the instruction on the node's `instruction` topic and waits for the
bridge's episode event. It prints every episode's outcome, the per-task success table with 95%
Wilson intervals, and writes OUT/eval_ros.json and a video of a few rollouts (OUT/rollouts.mp4).

The same evaluation without ROS, in one process (the figures the README and CI cite):
`python -m astra_sim.demo`. Both use the same seeds, so their tables can be compared directly.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

from astra_ros.evaluate_ros import RosEvalSetup, evaluate_through_ros
from astra_sim.evaluate import DEFAULT_EVAL_SEED, check_held_out, format_table
from astra_sim.tabletop import TASK_KINDS
from astra_sim.train_tabletop import ENV_OPTIONS, PROVENANCE_FILE, SHIPPED_CHECKPOINT


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(SHIPPED_CHECKPOINT), help="checkpoint directory")
    parser.add_argument("--per-task", type=int, default=100,
                        help="held-out episodes per task kind (100, as astra_sim.demo: the tables compare)")
    parser.add_argument("--seed", type=int, default=DEFAULT_EVAL_SEED, help="first evaluation seed")
    parser.add_argument("--out", default="runs/demo_ros", help="where eval_ros.json, the logs and the video go")
    parser.add_argument("--video-episodes", type=int, default=1, help="episodes per task in the video")
    parser.add_argument("--domain-id", type=int, default=0, help="ROS_DOMAIN_ID (0: $ROS_DOMAIN_ID or one from the pid)")
    args = parser.parse_args(argv)
    if args.per_task < 1:
        parser.error("--per-task must be >= 1")
    checkpoint = Path(args.checkpoint)
    if not (checkpoint / "config.yaml").is_file():
        print(f"[demo_ros] no checkpoint at {checkpoint} (`make train-tabletop` trains and installs one)",
              file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    seeds = list(range(args.seed, args.seed + args.per_task))
    provenance_path = checkpoint / PROVENANCE_FILE
    provenance = json.loads(provenance_path.read_text()) if provenance_path.is_file() else {}
    if provenance.get("dataset"):
        check_held_out(seeds, set(range(*provenance["dataset"]["seeds"])))
    print(f"[demo_ros] {checkpoint} through ROS 2: tabletop bridge + policy node, {args.per_task} held-out "
          f"episodes per task", file=sys.stderr, flush=True)
    setup = RosEvalSetup(checkpoint, "tabletop", dict(ENV_OPTIONS), Path(args.out), args.domain_id)
    result = evaluate_through_ros(setup, list(TASK_KINDS), seeds, args.video_episodes,
                                  progress=lambda line: print(line, flush=True))
    result["wall_seconds"] = round(time.perf_counter() - t0, 1)
    (Path(args.out) / "eval_ros.json").write_text(json.dumps(result, indent=1) + "\n")
    print(format_table(result, f"held-out success through ROS of {checkpoint}"))
    print(f"video: {result.get('video', '(none)')}")
    latency = result["policy_latency_ms"] or {"mean": float("nan")}
    print(f"results: {Path(args.out) / 'eval_ros.json'}  ({result['wall_seconds']} s: start-up {result['startup_s']} s, "
          f"episodes {result['episodes_s']} s; policy step {latency['mean']:.1f} ms mean)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
