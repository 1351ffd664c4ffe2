"""Checkpoints: a directory that never needs unpickling.

    config.yaml        the AstraConfig (cameras, action space, encoders, sizes)
    stats.json         dataset statistics: actions (bins / normalisation) and proprioception
    model.safetensors  weights (a frozen language encoder is referenced by config, not copied)
    meta.json          format version, sha256 of the weights, free-form metadata (step, metrics)

Directories are written atomically (temp dir + rename), so a crash never leaves a half-written
checkpoint under the final name. Loading checks every file and names the problem.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from astra_core.action_space import ActionStats
from astra_core.configuration import ConfigError
from astra_core.model import Astra, AstraConfig

FORMAT_VERSION = 1
CONFIG_FILE, STATS_FILE, WEIGHTS_FILE, META_FILE = "config.yaml", "stats.json", "model.safetensors", "meta.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt or does not match the model it describes."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _saved_keys(model: Astra) -> dict[str, torch.Tensor]:
    """Weights worth saving: a frozen language encoder is reloaded from its own files instead."""
    skip_language = model.cfg.language.freeze
    return {
        k: v.detach().to("cpu").contiguous()
        for k, v in model.state_dict().items()
        if not (skip_language and k.startswith("language."))
    }


def atomic_write_dir(final: Path, write: Any) -> Path:
    """Call ``write(tmp_dir)`` then move ``tmp_dir`` to ``final`` (replacing an older one)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        write(tmp)
        old = None
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}-{time.time_ns()}")
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def save_checkpoint(directory: str | Path, model: Astra, meta: Optional[dict] = None) -> Path:
    """Write ``model`` (config, stats, weights, meta) to ``directory`` atomically."""

    def write(tmp: Path) -> None:
        (tmp / CONFIG_FILE).write_text(yaml.safe_dump(model.cfg.to_dict(), sort_keys=False))
        stats = {"action": model.action_space.stats.to_dict(),
                 "proprio": None if model.proprio_stats is None else model.proprio_stats.to_dict()}
        (tmp / STATS_FILE).write_text(json.dumps(stats, indent=2))
        save_file(_saved_keys(model), str(tmp / WEIGHTS_FILE), metadata={"format": "astra"})
        info = {
            "format_version": FORMAT_VERSION,
            "weights_sha256": _sha256(tmp / WEIGHTS_FILE),
            "created_unix": time.time(),
            "torch_version": torch.__version__,
            "meta": meta or {},
        }
        (tmp / META_FILE).write_text(json.dumps(info, indent=2))
        for f in tmp.iterdir():  # data on disk before the rename makes it visible
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())

    return atomic_write_dir(Path(directory), write)


def read_checkpoint_meta(directory: str | Path) -> dict:
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(directory)!r}: missing {META_FILE}")
    try:
        info = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"checkpoint {str(directory)!r}: {META_FILE} is not valid JSON: {err}") from err
    if not isinstance(info, dict) or info.get("format_version") != FORMAT_VERSION:
        found = info.get("format_version") if isinstance(info, dict) else None
        raise CheckpointError(
            f"checkpoint {str(directory)!r}: {META_FILE} has format_version {found!r}, "
            f"this code reads version {FORMAT_VERSION}"
        )
    return info


def read_stats(path: Path) -> tuple[ActionStats, Optional[ActionStats]]:
    """stats.json -> (action statistics, proprioception statistics or None).

    Checkpoints before proprioception stored the action statistics alone at the top level."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict):
        raise ValueError(f"must hold a JSON object, holds {type(data).__name__}")
    if "names" in data:
        return ActionStats.from_dict(data), None
    unknown = set(data) - {"action", "proprio"}
    if unknown or "action" not in data:
        raise ValueError(f"expected keys 'action' and 'proprio', found {sorted(data)}")
    proprio = data.get("proprio")
    return ActionStats.from_dict(data["action"]), None if proprio is None else ActionStats.from_dict(proprio)


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu") -> Astra:
    """Rebuild the model from ``directory``; raises CheckpointError naming file and problem."""
    root = Path(directory)
    if not root.is_dir():
        raise CheckpointError(f"checkpoint directory {str(root)!r} does not exist")
    for name in (CONFIG_FILE, STATS_FILE, WEIGHTS_FILE, META_FILE):
        if not (root / name).is_file():
            raise CheckpointError(f"checkpoint {str(root)!r}: missing {name}")
    info = read_checkpoint_meta(root)

    try:
        config_data = yaml.safe_load((root / CONFIG_FILE).read_text())
        cfg = AstraConfig.from_dict(config_data)
    except (yaml.YAMLError, ConfigError, UnicodeDecodeError) as err:
        raise CheckpointError(f"checkpoint {str(root)!r}: {CONFIG_FILE} is invalid: {err}") from err
    try:
        stats, proprio_stats = read_stats(root / STATS_FILE)
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError, KeyError) as err:
        raise CheckpointError(f"checkpoint {str(root)!r}: {STATS_FILE} is invalid: {err}") from err

    weights_path = root / WEIGHTS_FILE
    expected_sha = info.get("weights_sha256")
    if expected_sha and _sha256(weights_path) != expected_sha:
        raise CheckpointError(
            f"checkpoint {str(root)!r}: {WEIGHTS_FILE} is corrupt (sha256 differs from {META_FILE})"
        )
    try:
        state = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint {str(root)!r}: {WEIGHTS_FILE} is corrupt or truncated: {err}") from err

    try:
        model = Astra(cfg, stats, proprio_stats if cfg.proprio_dim else None)
    except (ValueError, FileNotFoundError, OSError) as err:
        raise CheckpointError(f"checkpoint {str(root)!r}: cannot build the model of {CONFIG_FILE}: {err}") from err
    expected = _saved_keys(model)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(state) & set(expected)
        if state[k].shape != expected[k].shape
    )
    if missing or unexpected or wrong_shape:
        def head(items: list[str]) -> str:
            return ", ".join(items[:5]) + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")

        problems = [
            f"missing tensors: {head(missing)}" if missing else "",
            f"unexpected tensors: {head(unexpected)}" if unexpected else "",
            f"shape mismatches: {head(wrong_shape)}" if wrong_shape else "",
        ]
        raise CheckpointError(
            f"checkpoint {str(root)!r}: {WEIGHTS_FILE} does not match {CONFIG_FILE}: "
            + "; ".join(p for p in problems if p)
        )
    model.load_state_dict(state, strict=False)  # strict check done above (frozen encoder excluded)
    return model.to(device).eval()
