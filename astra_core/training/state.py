"""Training state on disk without pickle: optimizer, schedule position, data position, RNG.

A training state is a directory holding

* ``tensors.safetensors`` -- every tensor (optimizer moments, RNG byte states, numpy's MT state);
* ``state.json``          -- everything else, with tensors replaced by ``{"__tensor__": key}``.

Arbitrary nested dict/list/tuple structures (such as ``optimizer.state_dict()``, whose state is keyed
by integer parameter ids) are encoded losslessly: dicts with non-string keys become
``{"__items__": [[key, value], ...]}`` and tuples ``{"__tuple__": [...]}``. Loading only parses JSON
and safetensors, so a tampered file cannot execute code.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

TENSORS_FILE = "tensors.safetensors"
STATE_FILE = "state.json"
STATE_FORMAT_VERSION = 1


class TrainingStateError(RuntimeError):
    """A training-state directory is missing, incomplete or inconsistent (names file and problem)."""


def _encode(obj: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    if isinstance(obj, torch.Tensor):
        key = path or "root"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": _encode(torch.from_numpy(np.ascontiguousarray(obj)), tensors, path)}
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, tensors, f"{path}.{k}") for k, v in obj.items()}
        return {"__items__": [[k, _encode(v, tensors, f"{path}.{i}")] for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"training state: cannot store {type(obj).__name__} at '{path}'")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        key = obj["__tensor__"]
        if key not in tensors:
            raise TrainingStateError(f"{TENSORS_FILE}: tensor '{key}' named in {STATE_FILE} is missing")
        return tensors[key]
    if "__ndarray__" in obj:
        return _decode(obj["__ndarray__"], tensors).numpy()
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {_hashable(k): _decode(v, tensors) for k, v in obj["__items__"]}
    return {k: _decode(v, tensors) for k, v in obj.items()}


def _hashable(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key


def save_state(directory: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` (nested dicts/lists/tuples of tensors, arrays and JSON scalars) into a directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    encoded = {"format_version": STATE_FORMAT_VERSION, "state": _encode(state, tensors, "")}
    save_file(tensors, str(directory / TENSORS_FILE))
    (directory / STATE_FILE).write_text(json.dumps(encoded, indent=1))


def load_state(directory: str | Path) -> dict[str, Any]:
    directory = Path(directory)
    for name in (STATE_FILE, TENSORS_FILE):
        if not (directory / name).is_file():
            raise TrainingStateError(f"{directory / name}: missing (not a complete training state)")
    try:
        encoded = json.loads((directory / STATE_FILE).read_text())
    except json.JSONDecodeError as e:
        raise TrainingStateError(f"{directory / STATE_FILE}: not valid JSON ({e})") from None
    if encoded.get("format_version") != STATE_FORMAT_VERSION:
        raise TrainingStateError(
            f"{directory / STATE_FILE}: format_version {encoded.get('format_version')!r}, expected {STATE_FORMAT_VERSION}"
        )
    try:
        tensors = load_file(str(directory / TENSORS_FILE))
    except Exception as e:  # safetensors raises several types for truncated/corrupt files
        raise TrainingStateError(f"{directory / TENSORS_FILE}: cannot be read ({e})") from None
    return _decode(encoded["state"], tensors)


# ------------------------------------------------------------------------------------- RNG
def capture_rng() -> dict[str, Any]:
    """States of Python's, NumPy's and torch's (CPU + CUDA) global generators."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    rng: dict[str, Any] = {
        "python": {"version": version, "state": list(internal), "gauss": gauss},
        "numpy": {
            "kind": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def restore_rng(rng: dict[str, Any]) -> None:
    py = rng["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    np_rng = rng["numpy"]
    np.random.set_state(
        (np_rng["kind"], np_rng["keys"].numpy().astype(np.uint32), np_rng["pos"], np_rng["has_gauss"], np_rng["cached_gaussian"])
    )
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(rng["cuda"]))
