"""Train-and-evaluate benchmarks at an equal budget per row, on the built-in tabletop or any simulator.

    python -m astra_sim.benchmark --suite ablations [--seeds 0 1 2] [--steps 1000] [--episodes 2000]
                                  [--eval-per-task 100] [--out results/ablations_tabletop] [--rows ...]
    python -m astra_sim.benchmark --suite ladder --seeds 0 ...
    python -m astra_sim.benchmark --suite ablations --env metaworld --env-option task=reach \
        --env-option 'cameras=["corner"]' --episodes 200 --steps 1000 --eval-per-task 50

On the tabletop the rows override ``config/train/tabletop_objects.yaml`` and each row is evaluated
on all four task kinds; on another simulator (``--env``, its options as for ``astra_sim.demos``)
they override ``config/train/pose_objects.yaml`` and are evaluated on the task of ``--env-option
task=...``, and the default output is ``results/<suite>_<env>_<task>``. The ``ladder`` suite is
tabletop-only (its rows swap tabletop presets).

Suites (rows are overrides of the training config; see ``SUITES``):

* ``ablations``: the rows of the paper's Table 4 on our best state tokens and readout (object
  tokens, pointer): Astra + CDL, Astra, without trajectory attention (causal), without action
  queries (autoregressive), without both (Gato-like).
* ``ladder``: what each part of the tabletop policy is worth: one pooled token per camera with
  per-dimension heads (the paper's ManiSkill setting), patch tokens with the pointer, object
  tokens with heads, object tokens with the pointer (absolute, then relative place rotation).
  CDL is measured in ``ablations``.

Every row and training seed trains on the same demonstrations (seeds 0 .. episodes-1) for the same
number of optimizer steps and batch size, and is evaluated on the same held-out seeds (from
1,000,000 on) of each task. The benchmark resumes: a (row, seed) with a ``result.json`` is not run
again, so it can be run in parts (``--rows``, ``--seeds``) and stopped at any time.

Outputs in ``--out``: ``results.json`` (every run, per-task counts, Wilson 95% CIs, pooled over
seeds, parameter counts, wall times, git revision, hardware, threads), ``results.md`` (the table
and the significance tests) and ``success.png`` / ``curves.png`` (success by row with CI bars;
training loss curves). Significance: two-sided Fisher exact test on the pooled success counts of
each row against the reference row (the first), per task and overall, and a paired sign-flip
permutation test over evaluation episodes (the same seeds are run by every row).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from astra_sim.demos import add_env_arguments, env_options_from_args
from astra_sim.evaluate import DEFAULT_EVAL_SEED, evaluate_tasks, rate_with_ci, training_seeds
from astra_sim.train_tabletop import (DEFAULT_TRAIN_CONFIG, ENV_OPTIONS, REPO_ROOT, command_line, final_checkpoint,
                                      git_revision, hardware, prepare_demos, train)

# suite -> row -> overrides of the training config (the first row is the reference)
SUITES: dict[str, dict[str, list[str]]] = {
    "ablations": {
        # CDL over 8 anchors of each batch of 32 (cdl.max_anchors): each anchor costs 6 trajectory
        # encodings, so all 32 would make this row ~5x slower than the others
        "astra+cdl": ["cdl.alpha=0.1", "cdl.max_anchors=8"],
        "astra": ["cdl.alpha=0"],
        "causal attention": ["cdl.alpha=0", "model.overrides.attention=causal"],
        "autoregressive (no queries)": ["cdl.alpha=0", "model.overrides.action_decoding=autoregressive"],
        "gato-like (causal + autoregressive)": ["cdl.alpha=0", "model.overrides.attention=causal",
                                                "model.overrides.action_decoding=autoregressive"],
    },
    "ladder": {
        "objects + pointer": ["cdl.alpha=0"],
        "pooled + heads": ["cdl.alpha=0", "model.overrides.state_tokens=pooled", "model.overrides.readout=heads",
                           "model.overrides.vision.pooling=spatial_softmax"],
        # a 6 x 6 grid (4 stride-2 layers): the 12 x 12 grid of the preset costs ~10x the object
        # tokens' compute per step over 3-step windows (see the README for 12 x 12 on `place`)
        "patches (6x6) + pointer": ["cdl.alpha=0", "model.preset=tabletop_patches",
                                    "model.overrides.vision.hidden_sizes=[32,64,128,128]"],
        "objects + heads": ["cdl.alpha=0", "model.overrides.readout=heads"],
        "objects + pointer, absolute rotation": ["cdl.alpha=0", "model.overrides.place_rotation=absolute"],
    },
}
POSE_TRAIN_CONFIG = REPO_ROOT / "config" / "train" / "pose_objects.yaml"
# What every row shares besides the budget (the training config has the rest).
COMMON = ["val_every=0", "progress_bar=false"]


def fisher_exact(a_success: int, a_n: int, b_success: int, b_n: int) -> float:
    """Two-sided Fisher exact p-value of a 2x2 table (successes/failures of two rows)."""
    from scipy.stats import fisher_exact as fisher

    return float(fisher([[a_success, a_n - a_success], [b_success, b_n - b_success]])[1])


def paired_permutation(a: np.ndarray, b: np.ndarray, trials: int = 20000, seed: int = 0) -> float:
    """Two-sided p-value that rows a and b (0/1 outcomes on the same episodes) succeed equally often:
    the sign of each episode's difference is flipped at random (sign-flip permutation test)."""
    diff = a.astype(float) - b.astype(float)
    observed = abs(diff.mean())
    if not diff.any():
        return 1.0
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=(trials, diff.size))
    return float(((np.abs((signs * diff).mean(1)) >= observed - 1e-12).sum() + 1) / (trials + 1))


def run_one(row: str, overrides: list[str], seed: int, args: argparse.Namespace, data_dir: Path,
            train_seeds: set[int]) -> dict[str, Any]:
    """Train and evaluate one (row, training seed); reuse its result.json when present."""
    from astra_core.checkpoint import load_checkpoint
    from astra_core.model import count_parameters
    from astra_core.runtime import AstraPolicy

    run_dir = Path(args.out) / "runs" / slug(row) / f"seed{seed}"
    result_file = run_dir / "result.json"
    if result_file.is_file():
        result = json.loads(result_file.read_text())
        check_same_budget(result, result_file, args)
        return result
    run_dir.mkdir(parents=True, exist_ok=True)
    all_overrides = [*COMMON, *overrides, f"seed={seed}", f"batch_size={args.batch_size}", f"threads={args.threads}"]
    print(f"[benchmark] {row} / seed {seed}: training {args.steps} steps", file=sys.stderr, flush=True)
    training = train(Path(args.train_config), data_dir, run_dir / "train", args.steps, all_overrides)
    checkpoint = final_checkpoint(run_dir / "train")
    model = load_checkpoint(checkpoint, "cpu")
    policy = AstraPolicy(model, "cpu")
    evaluation = evaluate_tasks(policy, args.env_options, args.eval_per_task, args.eval_seed, train_seeds,
                                env_name=args.env, tasks=args.tasks)
    curve = [(r["step"], r["bc_loss"]) for r in map(json.loads, (run_dir / "train" / "metrics.jsonl").read_text().splitlines())
             if "bc_loss" in r and "split" not in r]
    result = {
        "row": row, "seed": seed, "git": args.git, "overrides": all_overrides, "training": training,
        "parameters": count_parameters(model),
        "evaluation": {k: v for k, v in evaluation.items() if k not in ("latencies_ms",)},
        "curve": curve,
    }
    result_file.write_text(json.dumps(result, indent=1) + "\n")
    # The checkpoint's weights are not kept (a few MB per run): the result and the curve are.
    return result


def check_same_budget(result: dict[str, Any], where: Path, args: argparse.Namespace) -> None:
    """A resumed run must have had this call's budget: rows trained for different numbers of steps,
    batch sizes or evaluated on other episodes are not comparable, so mixing them is an error."""
    batch = [int(o.split("=", 1)[1]) for o in result.get("overrides", []) if o.startswith("batch_size=")]
    per_task = result["evaluation"].get("episodes_by_task")
    recorded = {"--steps": result["training"]["steps"], "--batch-size": batch[-1] if batch else None,
                "--eval-per-task": max(per_task.values()) if per_task else None}
    wanted = {"--steps": args.steps, "--batch-size": args.batch_size, "--eval-per-task": args.eval_per_task}
    differ = [f"{k} {recorded[k]} (now {wanted[k]})" for k in wanted if recorded[k] is not None and recorded[k] != wanted[k]]
    if differ:
        raise SystemExit(f"{where}: recorded with {', '.join(differ)}; use the same budget, another --out, "
                         f"or delete that run to redo it")


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_").lower()


def aggregate(results: list[dict[str, Any]], rows: list[str]) -> dict[str, Any]:
    """Per row: pooled counts over training seeds, per task and overall, with Wilson CIs; the
    per-seed rates; significance against the reference row (the first)."""
    table: dict[str, Any] = {}
    outcomes: dict[str, np.ndarray] = {}
    for row in rows:
        runs = sorted((r for r in results if r["row"] == row), key=lambda r: r["seed"])
        if not runs:
            continue
        episodes = [e for r in runs for e in r["evaluation"]["per_episode"]]
        by_task: dict[str, list[bool]] = {}
        for e in episodes:
            by_task.setdefault(e["task"], []).append(e["success"])
        # one 0/1 vector per row, ordered by (seed, task, eval seed): rows are paired episode by episode
        order = sorted(((r["seed"], e["task"], e["seed"], e["success"]) for r in runs
                        for e in r["evaluation"]["per_episode"]))
        outcomes[row] = np.array([o[3] for o in order], dtype=bool)
        table[row] = {
            "seeds": [r["seed"] for r in runs],
            "overall": rate_with_ci([e["success"] for e in episodes]),
            "by_task": {task: rate_with_ci(v) for task, v in sorted(by_task.items())},
            "per_seed_rate": [round(r["evaluation"]["success_rate"], 4) for r in runs],
            "transformer_parameters": runs[0]["parameters"]["transformer"],
            "train_seconds": [r["training"]["seconds"] for r in runs],
        }
    reference = rows[0] if rows and rows[0] in table else None
    if reference is not None:
        ref = table[reference]
        for row, entry in table.items():
            if row == reference:
                continue
            o = entry["overall"]
            entry["vs_reference"] = {
                "difference": round(o["rate"] - ref["overall"]["rate"], 4),
                "fisher_p": round(fisher_exact(o["successes"], o["episodes"], ref["overall"]["successes"],
                                               ref["overall"]["episodes"]), 5),
                "by_task_fisher_p": {task: round(fisher_exact(t["successes"], t["episodes"],
                                                              ref["by_task"][task]["successes"],
                                                              ref["by_task"][task]["episodes"]), 5)
                                     for task, t in entry["by_task"].items() if task in ref["by_task"]},
            }
            if outcomes[row].shape == outcomes[reference].shape:
                entry["vs_reference"]["paired_permutation_p"] = round(paired_permutation(outcomes[row], outcomes[reference]), 5)
    return {"reference": reference, "rows": table}


def markdown(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    rows = summary["rows"]
    tasks = sorted({t for r in rows.values() for t in r["by_task"]})
    where = "the built-in tabletop" if meta.get("env", "tabletop") == "tabletop" else \
        f"{meta['env']} {meta.get('env_options', {}).get('task', '')}".rstrip()
    lines = [f"# {meta['suite']} on {where}", "",
             f"`{meta['command']}`", "",
             f"Git {meta['git']['commit']}{' (dirty)' if meta['git']['dirty'] else ''}; {meta['hardware']['cpu']}, "
             f"{meta['hardware']['cores']} cores, {meta['threads']} torch thread(s); budget per run: {meta['steps']} steps "
             f"of batch {meta['batch_size']} on {meta['episodes']} demonstrations; {meta['eval_per_task']} held-out "
             f"episodes per task per training seed.", "",
             "Success in % (pooled over training seeds) with Wilson 95% CI; p: two-sided Fisher exact test of the "
             f"pooled counts against `{summary['reference']}`, and a paired sign-flip permutation test over the same "
             "evaluation episodes.", "",
             "| row | seeds | " + " | ".join(tasks) + " | all | vs reference | p (Fisher / paired) | params |",
             "|---|---|" + "---|" * len(tasks) + "---|---|---|---|"]
    for row, r in rows.items():
        cells = [f"{100 * r['by_task'][t]['rate']:.0f} [{100 * r['by_task'][t]['ci95'][0]:.0f}, "
                 f"{100 * r['by_task'][t]['ci95'][1]:.0f}]" if t in r["by_task"] else "" for t in tasks]
        o = r["overall"]
        vs = r.get("vs_reference")
        diff = f"{100 * vs['difference']:+.1f}" if vs else "reference"
        p = f"{vs['fisher_p']:.3g} / {vs.get('paired_permutation_p', float('nan')):.3g}" if vs else ""
        lines.append(f"| {row} | {len(r['seeds'])} | " + " | ".join(cells) +
                     f" | **{100 * o['rate']:.1f}** [{100 * o['ci95'][0]:.1f}, {100 * o['ci95'][1]:.1f}] | {diff} | {p} | "
                     f"{r['transformer_parameters'] / 1e6:.2f}M |")
    return "\n".join(lines) + "\n"


def plots(summary: dict[str, Any], results: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(summary["rows"])
    rates = [summary["rows"][r]["overall"]["rate"] * 100 for r in rows]
    lo = [rate - summary["rows"][r]["overall"]["ci95"][0] * 100 for r, rate in zip(rows, rates)]
    hi = [summary["rows"][r]["overall"]["ci95"][1] * 100 - rate for r, rate in zip(rows, rates)]
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(rows) + 1.5))
    ax.barh(range(len(rows)), rates, xerr=[lo, hi], color="#4c72b0", capsize=4)
    ax.set_yticks(range(len(rows)), rows)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("held-out success, % (Wilson 95% CI)")
    fig.tight_layout()
    fig.savefig(out / "success.png", dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, row in enumerate(rows):
        for r in (r for r in results if r["row"] == row):
            steps, loss = zip(*r["curve"]) if r["curve"] else ([], [])
            ax.plot(steps, loss, color=f"C{i}", alpha=0.7, label=row if r["seed"] == summary["rows"][row]["seeds"][0] else None)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("BC loss (train)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=120)
    plt.close(fig)


def configure_env(args: argparse.Namespace) -> None:
    """Fill in ``args.env_options``, ``args.tasks`` (evaluation: task -> env options) and the
    default training config for the environment the benchmark runs on."""
    options = env_options_from_args(args)
    if args.env == "tabletop":
        args.env_options, args.tasks = {**ENV_OPTIONS, **options}, None  # None: the four task kinds
        args.train_config = args.train_config or str(DEFAULT_TRAIN_CONFIG)
        return
    if args.suite == "ladder":
        raise ValueError("--suite ladder swaps tabletop presets: it runs on --env tabletop only")
    if "task" not in options:
        raise ValueError(f"--env {args.env}: name the task with --env-option task=...")
    args.env_options, args.tasks = options, {str(options["task"]): {}}
    args.train_config = args.train_config or str(POSE_TRAIN_CONFIG)


def default_out_name(args: argparse.Namespace) -> str:
    if args.env == "tabletop":
        return f"{args.suite}_tabletop"
    return f"{args.suite}_{slug(args.env)}_{slug(str(args.env_options['task']))}"


def main(argv: Sequence[str] | None = None) -> int:
    from astra_core.threads import configure_threads

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=sorted(SUITES), required=True)
    parser.add_argument("--rows", nargs="*", default=None, help="a subset of the suite's rows (default: all)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds")
    parser.add_argument("--steps", type=int, default=1000, help="optimizer steps per run")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--episodes", type=int, default=2000, help="expert demonstrations (seeds 0..episodes-1)")
    parser.add_argument("--eval-per-task", type=int, default=100)
    parser.add_argument("--eval-seed", type=int, default=DEFAULT_EVAL_SEED)
    parser.add_argument("--train-config", default=None,
                        help="default: config/train/tabletop_objects.yaml (other simulators: pose_objects.yaml)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: auto)")
    parser.add_argument("--out", default=None, help="default: results/<suite>_tabletop (results/<suite>_<env>_<task>)")
    parser.add_argument("--data", default=None, help="demonstrations directory (default: OUT/data)")
    add_env_arguments(parser)
    args = parser.parse_args(argv)
    args.threads = configure_threads(args.threads, "astra_sim.benchmark")
    try:
        configure_env(args)
    except ValueError as exc:
        parser.error(str(exc))
    suite = SUITES[args.suite]
    rows = args.rows or list(suite)
    unknown = [r for r in rows if r not in suite]
    if unknown:
        parser.error(f"unknown rows {unknown}; the suite has {list(suite)}")
    out = Path(args.out or REPO_ROOT / "results" / default_out_name(args))
    out.mkdir(parents=True, exist_ok=True)
    args.out = str(out)
    revision = args.git = git_revision()  # taken before any run starts: the code each run trains with

    data_dir = Path(args.data) if args.data else out / "data"
    recording = {"env": args.env, "env_options": args.env_options, "episodes": args.episodes, "seed": 0}
    prepare_demos(data_dir, recording)
    train_seeds = training_seeds(data_dir)
    t0 = time.perf_counter()
    for row in rows:
        for seed in args.seeds:
            run_one(row, suite[row], seed, args, data_dir, train_seeds)
    results = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*/seed*/result.json"))]
    order = [r for r in suite if any(res["row"] == r for res in results)]
    summary = aggregate(results, order)
    meta = {
        "suite": args.suite, "env": args.env, "env_options": args.env_options,
        "command": command_line("astra_sim.benchmark", argv),
        "git": revision, "hardware": hardware(), "threads": args.threads, "steps": args.steps,
        "batch_size": args.batch_size, "episodes": args.episodes, "eval_per_task": args.eval_per_task,
        "eval_seeds": [args.eval_seed, args.eval_seed + args.eval_per_task], "wall_seconds_this_call": round(time.perf_counter() - t0, 1),
    }
    (out / "results.json").write_text(json.dumps({"meta": meta, **summary}, indent=1) + "\n")
    (out / "results.md").write_text(markdown(summary, meta))
    plots(summary, results, out)
    print(markdown(summary, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
