"""Model presets (``astra_core/presets/*.yaml``, also visible as ``config/model/``).

``python -m astra_core.presets`` prints each preset's parameter count: the Astra transformer
(embeddings, blocks, heads) apart from the vision and language encoders.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from astra_core.action_space import ActionSpaceSpec, ActionStats
from astra_core.configuration import load_yaml
from astra_core.model import Astra, AstraConfig, count_parameters

PRESET_DIR = Path(__file__).resolve().parent / "presets"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset_path(name_or_path: str) -> Path:
    """The YAML file of a preset given by name (``tiny``, ``38m``, ...) or path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESET_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise FileNotFoundError(f"no model preset {name_or_path!r}; presets: {preset_names()}")
    return path


def load_preset_dict(name_or_path: str) -> dict:
    """A preset's raw mapping: training completes it with what the dataset says (cameras, action
    space, calibration) before it is validated as an AstraConfig."""
    return load_yaml(preset_path(name_or_path))


def load_preset(name_or_path: str) -> AstraConfig:
    """A preset by name or path, validated (for presets that need nothing from a dataset)."""
    return AstraConfig.from_yaml(preset_path(name_or_path))


def standalone_config(name_or_path: str) -> AstraConfig:
    """A preset completed with placeholders for what a dataset would give (an identity calibration
    for a pointer readout), for building a model without data: counting parameters, benchmarks."""
    data = load_preset_dict(name_or_path)
    if data.get("readout") == "pointer" and not data.get("calibration"):
        data["calibration"] = {camera: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
                               for camera in data.get("cameras", ["front"])}
    return AstraConfig.from_dict(data)


def unit_stats(spec: ActionSpaceSpec) -> ActionStats:
    """Placeholder statistics ([-1, 1], zero mean, unit std) for building a model without data,
    e.g. to count parameters or benchmark speed. Trained models carry their dataset's statistics."""
    n = spec.dim
    return ActionStats(spec.dim_names, [-1.0] * n, [1.0] * n, [0.0] * n, [1.0] * n)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("presets", nargs="*", help=f"default: all of {preset_names()}")
    args = parser.parse_args(argv)
    for name in args.presets or preset_names():
        cfg = standalone_config(name)
        counts = count_parameters(Astra(cfg, unit_stats(cfg.action_space)))
        row = {"preset": name, "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_embd": cfg.n_embd, **counts}
        row["transformer_millions"] = round(counts["transformer"] / 1e6, 2)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
