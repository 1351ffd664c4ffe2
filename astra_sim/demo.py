"""The main job on the built-in default: the shipped policy, closed loop, on held-out seeds.

    python -m astra_sim.demo [--checkpoint checkpoints/tabletop_objects] [--per-task 100] [--out runs/demo]

Loads the checkpoint that ships with the repository (trained by ``make train-tabletop``; its
``PROVENANCE.json`` says how), runs ``--per-task`` held-out episodes (seeds from 1,000,000 on;
the demonstrations used 0 .. 7999) of each of the tabletop's four task kinds with the streaming
runtime, and prints a per-task table of success rates with 95% Wilson intervals. The full result
goes to ``OUT/eval.json``.

The policy sees what a robot would: two camera images per step and an instance mask per camera
(object tokens are cut at its boxes: in simulation the masks come from the renderer, VIMA's
oracle setting; a real robot needs a segmenter or detector for them).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

from astra_sim.evaluate import DEFAULT_EVAL_SEED, brief, evaluate_tasks, format_table
from astra_sim.train_tabletop import ENV_OPTIONS, PROVENANCE_FILE, SHIPPED_CHECKPOINT


def main(argv: Sequence[str] | None = None) -> int:
    from astra_core.runtime import AstraPolicy
    from astra_core.threads import configure_threads

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(SHIPPED_CHECKPOINT), help="checkpoint directory")
    parser.add_argument("--per-task", type=int, default=100, help="held-out episodes per task kind")
    parser.add_argument("--seed", type=int, default=DEFAULT_EVAL_SEED, help="first evaluation seed")
    parser.add_argument("--out", default="runs/demo", help="where eval.json goes")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: auto)")
    args = parser.parse_args(argv)
    if args.per_task < 1:
        parser.error("--per-task must be >= 1")
    configure_threads(args.threads, "astra_sim.demo")

    t0 = time.perf_counter()
    checkpoint = Path(args.checkpoint)
    provenance_path = checkpoint / PROVENANCE_FILE
    provenance = json.loads(provenance_path.read_text()) if provenance_path.is_file() else {}
    train_seeds = set(range(*provenance["dataset"]["seeds"])) if provenance.get("dataset") else None
    policy = AstraPolicy.from_checkpoint(checkpoint, "cpu")
    print(f"[demo] {checkpoint}: {args.per_task} held-out episodes per task", file=sys.stderr, flush=True)
    result = evaluate_tasks(policy, ENV_OPTIONS, args.per_task, args.seed, train_seeds)
    result |= {"checkpoint": str(checkpoint), "seeds": [args.seed, args.seed + args.per_task],
               "wall_seconds": round(time.perf_counter() - t0, 1)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(result, indent=1) + "\n")
    print(format_table(result, f"held-out success of {checkpoint}"))
    print(f"results: {out / 'eval.json'}  ({result['wall_seconds']} s; "
          f"policy step {brief(result)['policy_latency_ms']['mean']:.1f} ms mean)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
