"""Expert demos -> training -> closed-loop evaluation for any registered simulator, in one command.

    python -m astra_sim.train_env --env maniskill --env-option task=PickCube-v1 --env-option 'cameras=["base_camera"]' \\
        [--episodes 200] [--steps 1500] [--eval-episodes 50] [--train-config config/train/pose_objects.yaml] \\
        [--out runs/maniskill_pickcube] [key=value ...]

The same three stages as ``astra_sim.train_tabletop`` (which adds the tabletop's per-task
evaluation and installs the shipped checkpoint): demonstrations with the environment's expert
(seeds 0 ..; reused when ``OUT/data`` holds exactly that recording), ``python -m astra_core.train``,
then ``--eval-episodes`` held-out episodes (seeds from 1,000,000 on) with the streaming runtime.
Prints the success table with its Wilson 95% interval; ``OUT/summary.json`` has the command, git
revision, hardware, the demonstrations' expert success rate, training and evaluation figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

from astra_sim.demos import add_env_arguments, env_options_from_args
from astra_sim.evaluate import DEFAULT_EVAL_SEED, brief, evaluate_tasks, format_table, training_seeds
from astra_sim.train_tabletop import REPO_ROOT, command_line, final_checkpoint, git_revision, hardware, prepare_demos, train


def main(argv: Sequence[str] | None = None) -> int:
    from astra_core.runtime import AstraPolicy
    from astra_core.threads import configure_threads

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="working directory (data/, train/, summary.json)")
    parser.add_argument("--episodes", type=int, default=200, help="expert demonstration episodes")
    parser.add_argument("--steps", type=int, default=1500, help="training optimizer steps")
    parser.add_argument("--eval-episodes", type=int, default=50, help="held-out evaluation episodes")
    parser.add_argument("--eval-seed", type=int, default=DEFAULT_EVAL_SEED)
    parser.add_argument("--train-config", default=str(REPO_ROOT / "config" / "train" / "pose_objects.yaml"))
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: auto)")
    add_env_arguments(parser)
    parser.add_argument("train_overrides", nargs="*", metavar="key=value", help="overrides for astra_core.train")
    args = parser.parse_args(argv)
    threads = configure_threads(args.threads, "astra_sim.train_env")
    options = env_options_from_args(args)

    t0 = time.perf_counter()
    revision = git_revision()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    recording = {"env": args.env, "env_options": options, "episodes": args.episodes, "seed": 0}
    print(f"[train_env] 1/3 {args.episodes} expert demonstrations of {args.env} {options}", file=sys.stderr, flush=True)
    dataset = prepare_demos(out / "data", recording)
    print(f"[train_env] 2/3 training {args.steps} steps", file=sys.stderr, flush=True)
    training = train(Path(args.train_config), out / "data", out / "train", args.steps,
                     [f"threads={threads}", *args.train_overrides])
    checkpoint = final_checkpoint(out / "train")
    print(f"[train_env] 3/3 closed-loop evaluation on {args.eval_episodes} held-out seeds", file=sys.stderr, flush=True)
    task = str(options.get("task", args.env))
    evaluation = evaluate_tasks(AstraPolicy.from_checkpoint(checkpoint, "cpu"), options, args.eval_episodes,
                                args.eval_seed, training_seeds(out / "data"), env_name=args.env, tasks={task: {}})
    summary = {
        "command": command_line("astra_sim.train_env", argv),
        "git": revision, "hardware": hardware(), "env": {"name": args.env, "options": options},
        "dataset": {k: dataset.get(k) for k in ("episodes", "steps", "seeds", "expert_success_rate", "seconds", "reused")},
        "training": training, "checkpoint": str(checkpoint), "evaluation": brief(evaluation),
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "eval.json").write_text(json.dumps(evaluation, indent=1) + "\n")
    print(format_table(evaluation, f"{args.env} {options.get('task', '')}: held-out success of {checkpoint}"))
    print(f"summary: {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
