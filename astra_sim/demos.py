"""Record scripted-expert demonstrations into an Astra dataset.

    python -m astra_sim.demos --out data/tabletop --episodes 200 --seed 0 [--perturb-prob 0.2]

Episode ``i`` uses the environment seed ``seed + i``; the seed is stored in the episode metadata so
evaluation can prove that its seeds were never trained on (:mod:`astra_sim.evaluate`).

Recovery data (``--perturb-prob``): before an expert step, with that probability, a perturbed
action is executed and recorded instead; the expert then continues from whatever state results,
so the episode shows a failed attempt followed by a recovery (the paper's "regrasp", Fig. 6);
a perturbed step is always followed by an expert step.
For SE(2) pick-and-place the perturbation moves the pick point 3-6 cm away from the expert's (a
miss: the tabletop's pick tolerance is 2 cm); for pose actions it adds Gaussian noise of 5% of
the action range. The indices of perturbed steps are listed in the episode metadata
(``perturbed_steps``) so a trainer can mask their loss. A perturbed action the environment refuses
(out of the robot's reach) is replaced by the expert's. An episode that does not end in success
is discarded, not recorded; the summary gives the expert's success rate over the seeds tried.

``--resume`` continues an interrupted recording: the episodes already in ``--out`` count, and
recording goes on after the last seed they used. A progress bar shows the episodes recorded.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from astra_core.data import DatasetWriter
from astra_sim.env import Env, Observation, make_env

# Episode metadata keys (read back by astra_sim.evaluate).
SEED_KEY = "seed"
PERTURBED_KEY = "perturbed_steps"


def perturb_action(action: np.ndarray, kind: str, low: np.ndarray, high: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
    """A plausible wrong action near the expert's (see the module docstring)."""
    out = np.array(action, dtype=np.float64)
    if kind == "discrete_se2":
        angle = rng.uniform(0, 2 * math.pi)
        distance = rng.uniform(0.03, 0.06)
        out[0] += distance * math.cos(angle)
        out[1] += distance * math.sin(angle)
    else:
        out += rng.normal(0.0, 0.05, size=out.shape) * (high - low)
    return np.clip(out, low, high)


def record_demonstrations(env: Env, out: str | Path, episodes: int, seed: int, perturb_prob: float = 0.0,
                          env_name: str = "custom", env_options: dict[str, Any] | None = None,
                          append: bool = False, resume: bool = False, progress: bool = False) -> dict[str, Any]:
    """Record ``episodes`` successful expert episodes (seeds ``seed``, ``seed + 1``, ...) into ``out``.

    ``resume``: ``out`` may hold an earlier, interrupted recording of the same environment; its
    episodes count towards ``episodes`` and recording goes on after the last seed it used.
    Returns a JSON-friendly summary (episodes, steps, discarded seeds, the expert's success rate,
    timings).
    """
    if episodes < 1:
        raise ValueError(f"episodes={episodes}: must be >= 1")
    if not 0.0 <= perturb_prob < 1.0:
        raise ValueError(f"perturb_prob={perturb_prob}: must be in [0, 1)")
    low, high = env.action_bounds
    kind = env.action_space.kind
    metadata = {"env": env_name, "env_options": env_options or {}, "generator": "astra_sim.demos",
                "perturb_prob": perturb_prob}
    sensors = env.sensor_info()
    proprio_names = list(sensors.get("proprio_names") or []) or None
    has_masks = bool(sensors.get("masks", False))
    recorded = steps = 0
    discarded: list[int] = []
    env_seed = seed
    if resume and (Path(out) / "dataset.json").is_file():
        done_seeds = _recorded_seeds(Path(out))
        recorded, append = len(done_seeds), True
        env_seed = max(done_seeds, default=seed - 1) + 1
    first_seed = env_seed  # of this call (after a resume, the first seed not yet tried)
    t0 = time.perf_counter()
    bar = _progress(episodes, recorded, progress)
    with DatasetWriter(out, cameras=env.camera_names, action_space=env.action_space,
                       control_rate_hz=env.control_rate_hz, image_size=env.image_size,
                       proprio_names=proprio_names, metadata=metadata, append=append, has_masks=has_masks,
                       calibration=sensors.get("calibration"), tolerances=sensors.get("tolerances")) as writer:
        while recorded < episodes:
            # The perturbation stream depends only on the episode seed: reruns are identical.
            rng = np.random.default_rng([env_seed, 7919])
            obs, instruction = env.reset(env_seed)
            task = getattr(getattr(env, "task", None), "kind", None)
            perturbed: list[int] = []
            with writer.begin_episode(instruction, metadata={SEED_KEY: env_seed, "task": task}) as episode:
                done = success = False
                t = 0
                while not done:
                    action = env.expert_action()
                    # Never two perturbations in a row: each failed attempt is followed by a recovery.
                    recovering = bool(perturbed) and perturbed[-1] == t - 1
                    expert = action
                    if perturb_prob > 0 and not recovering and rng.random() < perturb_prob:
                        action = perturb_action(action, kind, low, high, rng)
                        perturbed.append(t)
                    # What the policy sees before the step (a simulator may reuse its buffers).
                    seen = Observation({k: v.copy() for k, v in obs.images.items()},
                                       {k: v.copy() for k, v in obs.masks.items()},
                                       None if obs.proprio is None else obs.proprio.copy())
                    try:
                        result = env.step(action)
                    except ValueError:  # a perturbation the robot cannot reach: the expert acts instead
                        if not perturbed or perturbed[-1] != t:
                            raise
                        perturbed.pop()
                        action = expert
                        result = env.step(action)
                    episode.add_step(images=seen.images, action=action, masks=seen.masks if has_masks else None,
                                     proprio=seen.proprio if proprio_names else None)
                    obs, success, done, _ = result
                    t += 1
                if success:
                    episode.metadata[PERTURBED_KEY] = perturbed
                    episode.end(success=True)
                    recorded += 1
                    steps += t
                    bar.update(1)
                else:
                    episode.abort()
                    discarded.append(env_seed)
                    if len(discarded) > max(10, episodes):
                        raise RuntimeError(f"{len(discarded)} episodes failed (seeds {discarded[:10]}...): "
                                           "the expert does not solve this environment")
            env_seed += 1
        stats = writer.close()
    bar.close()
    seconds = time.perf_counter() - t0
    attempted = env_seed - first_seed
    return {
        "out": str(out),
        "episodes": recorded,
        "expert_success_rate": round(1 - len(discarded) / attempted, 4) if attempted else None,
        "steps": steps,
        "seeds": [first_seed, env_seed],  # half-open range of environment seeds tried by this call
        "discarded_seeds": discarded,
        "seconds": round(seconds, 2),
        "ms_per_step": round(1000 * seconds / max(steps, 1), 2),
        "stats_written": stats is not None,
    }


def _recorded_seeds(root: Path) -> list[int]:
    from astra_sim.evaluate import training_seeds

    return sorted(training_seeds(root))


class _NoBar:
    def update(self, n: int = 1) -> None: ...
    def close(self) -> None: ...


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="episode", dynamic_ncols=True)


def parse_env_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``key=value`` strings -> options; values are parsed as JSON when they can be (numbers, lists)."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--env-option {pair!r}: expected key=value")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def add_env_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", default="tabletop", help="registered environment name or module:factory")
    parser.add_argument("--image-size", type=int, default=None, help="camera image side in pixels (env default if unset)")
    parser.add_argument("--cameras", nargs="+", default=None, help="camera names (env default if unset)")
    parser.add_argument("--env-option", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment option (repeatable), e.g. max_steps=8")


def env_options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    options = parse_env_options(args.env_option)
    if args.image_size is not None:
        options["image_size"] = args.image_size
    if args.cameras is not None:
        options["cameras"] = list(args.cameras)
    return options


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="dataset directory to create (or extend with --append)")
    parser.add_argument("--episodes", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0, help="first environment seed")
    parser.add_argument("--perturb-prob", type=float, default=0.0, help="probability of a perturbed (recovery) step")
    parser.add_argument("--append", action="store_true", help="add episodes to an existing dataset")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted recording in --out (its episodes count towards --episodes)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_env_arguments(parser)
    args = parser.parse_args(argv)
    options = env_options_from_args(args)
    env = make_env(args.env, **options)
    summary = record_demonstrations(env, args.out, args.episodes, args.seed, args.perturb_prob,
                                    env_name=args.env, env_options=options, append=args.append,
                                    resume=args.resume, progress=not args.no_progress)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
