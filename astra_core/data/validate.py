"""Check a dataset, episode by episode: ``python -m astra_core.data.validate ROOT``.

(Console script: ``astra-validate-dataset ROOT``.) Reads every file of every indexed episode and
checks: the manifest (schema, agreement with dataset.json and the index), each file's size and
sha256, every image frame decodes to the dataset's image size, the camera set, step arrays
(shapes, dtypes, NaN/inf in actions and proprio, strictly increasing timestamps), step counts
(index = manifest = arrays = frames per camera), and that stats.json is present, current and
equal to statistics recomputed from the actions.

Prints one line per problem (``episode 3, key 'images/front/000001.npz': ...``), then a summary
JSON object; exits 1 if there is any problem. Leftovers that readers ignore (unfinished episodes
in .staging, episode directories missing from the index) are reported as warnings.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence, TextIO

import numpy as np

from astra_core.data import format as fmt
from astra_core.data.errors import DatasetError
from astra_core.data.format import DatasetInfo
from astra_core.data.stats import load_stats

# Recomputed statistics must match stats.json to this relative tolerance (JSON keeps ~17 digits;
# summation order may differ).
STATS_RTOL = 1e-9


def validate_episode(root: Path, info: DatasetInfo, episode: int, decode_images: bool = True) -> tuple[list[DatasetError], np.ndarray | None, np.ndarray | None]:
    """All problems of one episode, plus its actions and proprio when they could be read."""
    try:
        manifest = fmt.load_manifest(root, info, episode)
    except DatasetError as exc:
        return [exc], None, None
    problems: list[DatasetError] = []
    ep_path = fmt.episode_dir(root, episode)
    actions = proprio = None
    try:
        steps = fmt.parse_steps(fmt.read_verified(ep_path, episode, fmt.STEPS_FILE, manifest["files"][fmt.STEPS_FILE]), info, episode, manifest["num_steps"])
        actions, proprio = steps.actions, steps.proprio
    except DatasetError as exc:
        problems.append(exc)
    kinds = (fmt.IMAGES_DIR, fmt.MASKS_DIR) if info.has_masks else (fmt.IMAGES_DIR,)
    for kind in kinds:
        for camera in info.cameras:
            for c in range(fmt.num_chunks(manifest["num_steps"], info.chunk_size)):
                try:
                    chunk = fmt.load_chunk(root, episode, manifest, camera, c, kind)
                    if decode_images:
                        decode = chunk.decode if kind == fmt.IMAGES_DIR else chunk.decode_mask
                        for i in range(chunk.num_frames):
                            decode(i, info.image_size)
                except DatasetError as exc:
                    problems.append(exc)
    on_disk = {p.relative_to(ep_path).as_posix() for p in ep_path.rglob("*") if p.is_file()}
    extra = sorted(on_disk - set(manifest["files"]) - {fmt.MANIFEST_FILE})
    if extra:
        problems.append(DatasetError(episode, extra[0], f"{len(extra)} file(s) not listed in manifest.json: {extra[:5]}"))
    return problems, actions, proprio


def _check_stats(root: Path, info: DatasetInfo, actions: list[np.ndarray], proprio: list[np.ndarray]) -> list[DatasetError]:
    if not info.episodes:
        return []
    try:
        stats = load_stats(root)
    except DatasetError as exc:
        return [exc]
    if len(actions) != len(info.episodes):
        return []  # some episode's actions were unreadable: already reported, nothing to compare
    problems = []
    parts = [("action", stats.action, np.concatenate(actions))]
    if stats.proprio is not None and proprio:
        parts.append(("proprio", stats.proprio, np.concatenate(proprio)))
    for name, saved, values in parts:
        recomputed = {"min": values.min(0), "max": values.max(0), "mean": values.mean(0), "std": values.std(0)}
        for field, expected in recomputed.items():
            if not np.allclose(getattr(saved, field), expected, rtol=STATS_RTOL, atol=1e-12):
                problems.append(DatasetError(None, fmt.STATS_FILE, f"{name} '{field}' {getattr(saved, field)} differs from the data {expected.tolist()}"))
    return problems


def validate_dataset(root: str | Path, decode_images: bool = True, out: TextIO | None = None) -> dict:
    """Validate everything under ``root``; prints problems to ``out`` (stdout) as found, returns the summary."""
    root = Path(root)
    out = sys.stdout if out is None else out
    summary: dict = {"root": str(root), "episodes": 0, "episodes_with_problems": [], "steps": 0, "problems": 0, "warnings": []}

    def report(exc: DatasetError) -> None:
        summary["problems"] += 1
        print(str(exc), file=out, flush=True)

    try:
        info = fmt.load_dataset_info(root)
    except DatasetError as exc:
        report(exc)
        summary["ok"] = False
        return summary
    if not info.episodes:
        report(DatasetError(None, fmt.DATASET_FILE, "the index lists no episodes"))
    all_actions, all_proprio = [], []
    for record in info.episodes:
        problems, actions, proprio = validate_episode(root, info, record.id, decode_images)
        for exc in problems:
            report(exc)
        if problems:
            summary["episodes_with_problems"].append(record.id)
        if actions is not None:
            all_actions.append(actions)
        if proprio is not None:
            all_proprio.append(proprio)
        summary["episodes"] += 1
        summary["steps"] += record.num_steps
    for exc in _check_stats(root, info, all_actions, all_proprio):
        report(exc)

    indexed = {fmt.episode_dirname(e.id) for e in info.episodes}
    episodes_dir = root / fmt.EPISODES_DIR
    if episodes_dir.is_dir():
        orphans = sorted(p.name for p in episodes_dir.iterdir() if p.name not in indexed)
        if orphans:
            summary["warnings"].append(f"{len(orphans)} episode director(ies) not in the index (ignored by readers): {orphans[:10]}")
    staging = root / fmt.STAGING_DIR
    if staging.is_dir() and any(staging.iterdir()):
        summary["warnings"].append(f"unfinished episodes in {staging} (an interrupted writer; removed when a writer next opens the dataset)")
    summary["ok"] = summary["problems"] == 0
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="astra-validate-dataset", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="dataset directory (holds dataset.json)")
    parser.add_argument("--no-decode", action="store_true", help="check hashes and chunk structure but do not decode frames")
    args = parser.parse_args(argv)
    summary = validate_dataset(args.root, decode_images=not args.no_decode)
    print(json.dumps(summary))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
