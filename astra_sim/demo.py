"""The main job on the built-in default: expert demos -> train the tiny preset -> closed-loop eval.

    python -m astra_sim.demo [--out runs/demo] [--episodes 300] [--steps 300] [--eval-episodes 50]

1. Records ``--episodes`` scripted-expert episodes of the built-in tabletop (seeds 0, 1, ...) into
   ``OUT/data`` (reused when ``OUT/data`` already holds exactly that recording).
2. Trains ``--train-config`` (default ``config/train/tiny.yaml``) on it for ``--steps`` optimizer
   steps as a subprocess ``python -m astra_core.train`` into ``OUT/train`` (a fresh run each time).
3. Evaluates the final checkpoint closed-loop on ``--eval-episodes`` held-out seeds (1,000,000 on)
   with the streaming runtime.
4. Prints one JSON summary (also written to ``OUT/summary.json``): dataset size, training loss at
   the first and last logged step, action-bin accuracy, evaluation success rate, wall time.

Defaults keep the job short (a pipeline check, not a trained policy). Measured on the idle
2-core development machine with `make run`: 73 s wall in all (demos 4 s, training 52 s, 50
evaluation episodes 2.5 s); loss 4.22 -> 3.72, validation accuracy 0.10, success 0/50. The tiny
model does not learn where objects are in this budget (position bins stay near chance even after
1,200 steps of batch 32 on 3,000 episodes; only the angle dimensions learn); the success rate is
reported as measured, and the environment is not eased for it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from astra_sim.demos import record_demonstrations
from astra_sim.env import make_env
from astra_sim.evaluate import DEFAULT_EVAL_SEED, check_held_out, evaluate_policy, training_seeds

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TRAIN_CONFIG = REPO_ROOT / "config" / "train" / "tiny.yaml"
RECORDING_FILE = "recording.json"  # OUT/data/../recording.json: what OUT/data was recorded with


def prepare_demos(data_dir: Path, recording: dict[str, Any]) -> dict[str, Any]:
    """Record the demonstrations unless ``data_dir`` already holds exactly ``recording``."""
    marker = data_dir.parent / RECORDING_FILE
    if marker.is_file() and (data_dir / "dataset.json").is_file():
        previous = json.loads(marker.read_text())
        if previous.get("recording") == recording:
            return {**previous["summary"], "reused": True}
    if data_dir.exists():
        # Only ever delete a directory this job recorded (named in its own marker file).
        if not marker.is_file():
            raise FileExistsError(f"{data_dir} exists but was not recorded by astra_sim.demo; remove it or pick another --out")
        shutil.rmtree(data_dir)
    marker.unlink(missing_ok=True)
    env = make_env(recording["env"], **recording["env_options"])
    summary = record_demonstrations(env, data_dir, recording["episodes"], recording["seed"],
                                    env_name=recording["env"], env_options=recording["env_options"])
    marker.write_text(json.dumps({"recording": recording, "summary": summary}, indent=1) + "\n")
    return {**summary, "reused": False}


def train(train_config: Path, data_dir: Path, train_dir: Path, steps: int, overrides: Sequence[str]) -> dict[str, Any]:
    """Run ``python -m astra_core.train`` (progress on stderr); return its result and loss curve ends."""
    if train_dir.exists():
        shutil.rmtree(train_dir)  # a fresh run: never silently resume a different configuration
    args = [
        sys.executable, "-m", "astra_core.train", "--config", str(train_config),
        f"data.root={data_dir}", f"output_dir={train_dir}", f"total_steps={steps}",
        f"checkpoint_every={steps}", "val_every=0", *overrides,
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    t0 = time.perf_counter()
    proc = subprocess.run(args, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"training failed (exit {proc.returncode}): {' '.join(args)}\n{proc.stdout[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    records = [json.loads(line) for line in (train_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train_records = [r for r in records if "loss" in r and "split" not in r]
    if not train_records:
        raise RuntimeError(f"{train_dir / 'metrics.jsonl'} has no training records")
    last_val = result.get("last_val") or {}
    return {
        "steps": result["step"],
        "seconds": round(seconds, 1),
        "loss_start": train_records[0]["loss"],
        "loss_end": train_records[-1]["loss"],
        "bc_loss_start": train_records[0].get("bc_loss"),
        "bc_loss_end": train_records[-1].get("bc_loss"),
        "train_accuracy_end": train_records[-1].get("train/acc"),
        "val_loss": last_val.get("val/loss"),
        "val_accuracy": last_val.get("val/acc"),
        "val_accuracy_by_dim": {k.split("/")[-1]: v for k, v in last_val.items() if k.startswith("val/acc/")},
    }


def final_checkpoint(train_dir: Path) -> Path:
    steps = sorted(p for p in (train_dir / "checkpoints").glob("step_*") if p.is_dir())
    if not steps:
        raise FileNotFoundError(f"no checkpoint under {train_dir / 'checkpoints'}")
    return steps[-1]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/demo", help="working directory (data/, train/, summary.json)")
    parser.add_argument("--episodes", type=int, default=300, help="expert demonstration episodes")
    parser.add_argument("--steps", type=int, default=300, help="training optimizer steps")
    parser.add_argument("--eval-episodes", type=int, default=50, help="closed-loop evaluation episodes")
    parser.add_argument("--seed", type=int, default=0, help="first demonstration seed")
    parser.add_argument("--eval-seed", type=int, default=DEFAULT_EVAL_SEED, help="first evaluation seed")
    parser.add_argument("--image-size", type=int, default=64, help="camera image side (the tiny preset encodes 64 px)")
    parser.add_argument("--action-bins", type=int, default=64, help="bins per action dimension (the tiny preset uses 64)")
    parser.add_argument("--train-config", default=str(DEFAULT_TRAIN_CONFIG))
    parser.add_argument("train_overrides", nargs="*", metavar="key=value",
                        help="extra overrides for astra_core.train, e.g. batch_size=16")
    args = parser.parse_args(argv)
    for name in ("episodes", "steps", "eval_episodes"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")

    t0 = time.perf_counter()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data_dir, train_dir = out / "data", out / "train"
    env_options = {"image_size": args.image_size, "action_bins": args.action_bins}
    recording = {"env": "tabletop", "env_options": env_options, "episodes": args.episodes, "seed": args.seed}
    eval_seeds = list(range(args.eval_seed, args.eval_seed + args.eval_episodes))

    print(f"[demo] 1/3 expert demonstrations -> {data_dir}", file=sys.stderr, flush=True)
    dataset = prepare_demos(data_dir, recording)
    check_held_out(eval_seeds, training_seeds(data_dir))

    # The longest expert episode has 3 steps: a window of 3 covers every episode whole.
    overrides = ["data.window=3", *args.train_overrides]
    print(f"[demo] 2/3 training {Path(args.train_config).name} for {args.steps} steps -> {train_dir}",
          file=sys.stderr, flush=True)
    training = train(Path(args.train_config), data_dir, train_dir, args.steps, overrides)

    print(f"[demo] 3/3 closed-loop evaluation on {len(eval_seeds)} held-out seeds", file=sys.stderr, flush=True)
    from astra_core.runtime import AstraPolicy

    checkpoint = final_checkpoint(train_dir)
    policy = AstraPolicy.from_checkpoint(checkpoint, "cpu")
    evaluation = evaluate_policy(policy, make_env("tabletop", **env_options), eval_seeds)
    (out / "eval.json").write_text(json.dumps(evaluation, indent=1) + "\n")

    summary = {
        "env": "tabletop",
        "dataset": {k: dataset[k] for k in ("episodes", "steps", "seeds", "seconds", "reused")},
        "training": {**training, "config": str(args.train_config), "overrides": overrides, "checkpoint": str(checkpoint)},
        "evaluation": {k: v for k, v in evaluation.items() if k != "per_episode"} | {"seeds": [eval_seeds[0], eval_seeds[-1] + 1]},
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
