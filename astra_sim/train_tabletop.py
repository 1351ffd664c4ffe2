"""Retrain the shipped tabletop policy: expert demos -> train -> closed-loop evaluation.

    python -m astra_sim.train_tabletop [--episodes 8000] [--steps 1500] [--out runs/train_tabletop]
                                       [--install] [key=value ...]     (`make train-tabletop`)

1. Records ``--episodes`` scripted-expert episodes of the built-in tabletop (seeds 0, 1, ...; every
   task kind; both cameras with their instance masks) into ``OUT/data``, reused when it already
   holds exactly that recording.
2. Trains ``--train-config`` (default ``config/train/tabletop_objects.yaml``: object tokens, the
   pointer readout) for ``--steps`` optimizer steps with ``python -m astra_core.train`` into
   ``OUT/train`` (a fresh run each time).
3. Evaluates the final checkpoint closed-loop on ``--eval-per-task`` held-out seeds per task kind
   (from 1,000,000 on; the demonstrations use 0 .. episodes-1) and prints a per-task table with
   95% Wilson intervals; everything is written to ``OUT/summary.json``.
4. With ``--install``, copies the checkpoint to ``checkpoints/tabletop_objects/`` (what ``make run``
   evaluates) with ``PROVENANCE.json``: the exact command, git revision, data seeds, hardware,
   threads, wall times and the evaluation.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from astra_sim.demos import record_demonstrations
from astra_sim.env import make_env
from astra_sim.evaluate import DEFAULT_EVAL_SEED, brief, evaluate_tasks, format_table, training_seeds

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TRAIN_CONFIG = REPO_ROOT / "config" / "train" / "tabletop_objects.yaml"
SHIPPED_CHECKPOINT = REPO_ROOT / "checkpoints" / "tabletop_objects"
PROVENANCE_FILE = "PROVENANCE.json"
RECORDING_FILE = "recording.json"  # OUT/recording.json: what OUT/data was recorded with
# The environment the shipped checkpoint was trained for (and make run evaluates in).
ENV_OPTIONS: dict[str, Any] = {"image_size": 96, "action_bins": 64}


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
            raise FileExistsError(f"{data_dir} exists but was not recorded by astra_sim.train_tabletop; "
                                  "remove it or pick another --out")
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
        f"checkpoint_every={steps}", *overrides,
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
        "val": {k.removeprefix("val/"): round(v, 4) for k, v in last_val.items()
                if k.startswith("val/") and "/" not in k.removeprefix("val/") or k.startswith("val/pos_")},
    }


def final_checkpoint(train_dir: Path) -> Path:
    steps = sorted(p for p in (train_dir / "checkpoints").glob("step_*") if p.is_dir())
    if not steps:
        raise FileNotFoundError(f"no checkpoint under {train_dir / 'checkpoints'}")
    return steps[-1]


# What a trained policy depends on: a change here that is not committed makes a result "dirty".
CODE_PATHS = ("astra_core", "astra_sim", "config", "scripts/setup.sh")


def git_revision() -> dict[str, Any]:
    def git(*args: str) -> str:
        # rstrip only: a porcelain status line starts with a space (" M path") that is part of it
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO_ROOT).stdout.rstrip()

    changed = git("status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS).splitlines()
    return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(changed),
            "uncommitted": sorted(line[3:] for line in changed)}  # which files, to judge if they matter


def command_line(module: str, argv: Sequence[str] | None = None) -> str:
    """The command that reproduces this run, quoted so that it can be pasted into a shell."""
    return shlex.join(["python", "-m", module, *(sys.argv[1:] if argv is None else argv)])


def hardware() -> dict[str, Any]:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "python": platform.python_version(), "torch": torch.__version__}


def install(checkpoint: Path, provenance: dict[str, Any], target: Path = SHIPPED_CHECKPOINT) -> Path:
    """Copy a checkpoint (without training state) to ``target`` with its provenance."""
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(checkpoint, tmp, ignore=shutil.ignore_patterns("training_state"))
    (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=1) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    from astra_core.runtime import AstraPolicy
    from astra_core.threads import configure_threads

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/train_tabletop", help="working directory (data/, train/, summary.json)")
    parser.add_argument("--episodes", type=int, default=8000, help="expert demonstration episodes")
    parser.add_argument("--steps", type=int, default=1500, help="training optimizer steps")
    parser.add_argument("--eval-per-task", type=int, default=100, help="held-out evaluation episodes per task kind")
    parser.add_argument("--seed", type=int, default=0, help="first demonstration seed")
    parser.add_argument("--eval-seed", type=int, default=DEFAULT_EVAL_SEED, help="first evaluation seed")
    parser.add_argument("--train-config", default=str(DEFAULT_TRAIN_CONFIG))
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: auto)")
    parser.add_argument("--install", action="store_true", help=f"copy the result to {SHIPPED_CHECKPOINT}")
    parser.add_argument("train_overrides", nargs="*", metavar="key=value",
                        help="extra overrides for astra_core.train, e.g. batch_size=16")
    args = parser.parse_args(argv)
    for name in ("episodes", "steps", "eval_per_task"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    threads = configure_threads(args.threads, "astra_sim.train_tabletop")

    t0 = time.perf_counter()
    revision = git_revision()  # the code this run starts from (commits made meanwhile do not count)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data_dir, train_dir = out / "data", out / "train"
    recording = {"env": "tabletop", "env_options": ENV_OPTIONS, "episodes": args.episodes, "seed": args.seed}

    print(f"[train_tabletop] 1/3 expert demonstrations -> {data_dir}", file=sys.stderr, flush=True)
    dataset = prepare_demos(data_dir, recording)
    train_seeds = training_seeds(data_dir)

    overrides = [f"threads={threads}", *args.train_overrides]
    print(f"[train_tabletop] 2/3 training {Path(args.train_config).name} for {args.steps} steps -> {train_dir}",
          file=sys.stderr, flush=True)
    training = train(Path(args.train_config), data_dir, train_dir, args.steps, overrides)

    checkpoint = final_checkpoint(train_dir)
    print(f"[train_tabletop] 3/3 closed-loop evaluation, {args.eval_per_task} held-out seeds per task",
          file=sys.stderr, flush=True)
    policy = AstraPolicy.from_checkpoint(checkpoint, "cpu")
    evaluation = evaluate_tasks(policy, ENV_OPTIONS, args.eval_per_task, args.eval_seed, train_seeds)
    summary = {
        "command": command_line("astra_sim.train_tabletop", argv),
        "git": revision,
        "hardware": hardware(),
        "env": {"name": "tabletop", "options": ENV_OPTIONS},
        "dataset": {k: dataset[k] for k in ("episodes", "steps", "seeds", "seconds", "reused")},
        "training": {**training, "config": str(Path(args.train_config).relative_to(REPO_ROOT))
                     if Path(args.train_config).is_relative_to(REPO_ROOT) else args.train_config,
                     "overrides": overrides},
        "evaluation": brief(evaluation),
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "eval.json").write_text(json.dumps(evaluation, indent=1) + "\n")
    if args.install:
        target = install(checkpoint, summary)
        print(f"[train_tabletop] installed {target}", file=sys.stderr, flush=True)
    print(format_table(evaluation, f"held-out success of {checkpoint} (train {training['seconds']:.0f} s)"))
    print(f"summary: {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
