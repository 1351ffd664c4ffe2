"""What the importers share: loading and checking a mapping YAML (cameras, the action-space
section), turning a source vector (joint positions, a LeRobot ``action`` row) into the action
space's dimensions, preparing frames for the dataset (native size or one shared reduction), and
the command-line options every importer has.

Used by :mod:`astra_core.data.import_rosbag` and :mod:`astra_core.data.import_lerobot`; the
mapping format is documented in docs/DATASET.md ("Importing recordings").
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence, TypeVar

import numpy as np

from astra_core.action_space import ActionKind, ActionSpaceSpec
from astra_core.configuration import ConfigError, apply_overrides, from_dict, load_yaml
from astra_core.data.format import check_camera_names
from astra_core.geometry import normalize_quaternion, quaternion_to_rpy
from astra_core.imaging import resize_rgb

T = TypeVar("T")


class MappingError(ValueError):
    """The mapping does not fit the source (a feature, joint or dimension that is not there, ...)."""


def load_mapping(cls: type[T], path: str | Path, overrides: Sequence[str] = ()) -> T:
    """A mapping dataclass from YAML plus dotted ``key=value`` overrides (unknown keys -> error)."""
    return from_dict(cls, apply_overrides(load_yaml(path), overrides))


@dataclass
class ActionMapping:
    """Target action space, and how a source vector fills it (only for vector sources).

    ``dims`` maps action dimensions (``x`` ... ``gripper`` or ``pick_x`` ...) to a source element,
    by name or index; without it the source must have exactly the action's dimensions, in order.
    ``constants`` fills dimensions the source lacks with a fixed value (e.g. zero rotation for a
    position-only robot): explicit, never implied. ``quaternion`` names four source elements
    (x, y, z, w) that become roll, pitch and yaw (ZYX, :mod:`astra_core.geometry`).
    """

    space: ActionKind = "continuous_pose6d"
    num_bins: int = 256  # discrete spaces
    frame: Literal["absolute", "delta"] = "absolute"
    dims: dict[str, Any] | None = None
    constants: dict[str, float] = field(default_factory=dict)
    quaternion: list[Any] | None = None

    def __post_init__(self) -> None:
        try:
            spec = self.spec()
        except ValueError as err:
            raise ConfigError(f"action: {err}") from None
        names = spec.dim_names
        for key in [*(self.dims or {}), *self.constants]:
            if key not in names:
                raise ConfigError(f"action: unknown dimension {key!r}; {self.space} has {names}")
        for key, value in self.constants.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"action.constants.{key}={value!r}: must be a finite number")
        if self.quaternion is not None:
            if self.space == "discrete_se2" or len(self.quaternion) != 4:
                raise ConfigError("action.quaternion: four source elements (x, y, z, w), pose6d spaces only")
            clash = {"roll", "pitch", "yaw"} & (set(self.dims or {}) | set(self.constants))
            if clash:
                raise ConfigError(f"action.quaternion fills roll/pitch/yaw; do not also map {sorted(clash)}")

    def spec(self) -> ActionSpaceSpec:
        return ActionSpaceSpec(kind=self.space, num_bins=self.num_bins, frame=self.frame)

    @property
    def uses_vector_mapping(self) -> bool:
        return bool(self.dims) or bool(self.constants) or self.quaternion is not None


def _element_index(ref: Any, source_names: list[str], where: str) -> int:
    if isinstance(ref, bool):
        raise MappingError(f"{where}: {ref!r} is neither an element name nor an index")
    if isinstance(ref, int):
        if not 0 <= ref < len(source_names):
            raise MappingError(f"{where}: index {ref} is out of range; the source has {len(source_names)} elements")
        return ref
    if isinstance(ref, str) and ref in source_names:
        return source_names.index(ref)
    raise MappingError(f"{where}: {ref!r} is not an element of the source; it has {source_names}")


class VectorComposer:
    """Source vector (named elements) -> action vector, compiled once from an :class:`ActionMapping`.

    ``external`` names dimensions filled by the caller from another stream (a gripper topic); they
    are left as NaN here and must be set before the action is written.
    """

    def __init__(self, mapping: ActionMapping, source_names: Sequence[str], where: str,
                 external: Sequence[str] = ()) -> None:
        self.names = mapping.spec().dim_names
        source = [str(n) for n in source_names]
        self._tolerance = 0.0
        self._quat: list[int] | None = None
        self._constants = {self.names.index(k): float(v) for k, v in mapping.constants.items()}
        if mapping.dims is None and mapping.quaternion is None:
            free = [n for n in self.names if n not in mapping.constants and n not in external]
            if len(source) != len(free):
                raise MappingError(
                    f"{where}: the source has {len(source)} elements {source}, the action needs {len(free)} "
                    f"({free}); map them with action.dims (and action.constants for the ones the source lacks)"
                )
            self._take = {self.names.index(n): i for i, n in enumerate(free)}
        else:
            self._take = {self.names.index(k): _element_index(v, source, f"{where}: action.dims.{k}")
                          for k, v in (mapping.dims or {}).items()}
            if mapping.quaternion is not None:
                self._quat = [_element_index(v, source, f"{where}: action.quaternion") for v in mapping.quaternion]
        covered = set(self._take) | set(self._constants) | {self.names.index(n) for n in external}
        if self._quat is not None:
            covered |= {self.names.index(n) for n in ("roll", "pitch", "yaw")}
        missing = [n for i, n in enumerate(self.names) if i not in covered]
        if missing:
            raise MappingError(f"{where}: action dimensions {missing} are not mapped (action.dims / action.constants)")

    def compose(self, source: np.ndarray, quaternion_tolerance: float) -> np.ndarray:
        """(K,) source values -> (N,) float64 action; QuaternionError for a bad orientation."""
        out = np.full(len(self.names), np.nan)
        for target, index in self._take.items():
            out[target] = source[index]
        for target, value in self._constants.items():
            out[target] = value
        if self._quat is not None:
            q = normalize_quaternion(*(float(source[i]) for i in self._quat), tolerance=quaternion_tolerance)
            out[3:6] = quaternion_to_rpy(*q)
        return out


def select_elements(names: Sequence[str], wanted: Sequence[Any] | None, where: str) -> list[int]:
    """Indices of ``wanted`` (names or indices) in ``names``; all of them when ``wanted`` is None."""
    if wanted is None:
        return list(range(len(names)))
    indices = [_element_index(ref, list(names), where) for ref in wanted]
    if len(set(indices)) != len(indices):
        raise MappingError(f"{where}: {list(wanted)} names an element twice")
    return indices


def check_cameras(cameras: dict[str, str], source: str) -> None:
    """``cameras``: dataset camera name (a directory name) -> a non-empty ``source`` name."""
    if not cameras:
        raise ConfigError(f"cameras: map at least one camera name to {source}")
    try:
        check_camera_names(list(cameras))
    except ValueError as err:
        raise ConfigError(f"cameras: {err}") from None
    for name, value in cameras.items():
        if not isinstance(value, str) or not value:
            raise ConfigError(f"cameras.{name}: must be {source}")


def add_common_arguments(parser: argparse.ArgumentParser, example: str) -> None:
    """The options every importer takes (``example``: the mapping file to name in the help)."""
    parser.add_argument("--mapping", required=True, help=f"mapping YAML, e.g. {example}")
    parser.add_argument("--out", required=True, type=Path, help="dataset directory to create (or extend with --append)")
    parser.add_argument("--append", action="store_true", help="add episodes to an existing dataset (same schema)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a mapping key, e.g. --set image_size=[224,224]; repeatable")
    parser.add_argument("--report", type=Path, default=None, help="report JSON (default: OUT/import_report.json)")
    parser.add_argument("--threads", type=int, default=1, help="image / video decoder threads (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def check_image_size(value: Any, where: str = "image_size") -> tuple[int, int] | None:
    """``null`` (native size) or ``[H, W]`` of positive ints."""
    if value is None:
        return None
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        raise ConfigError(f"{where}={value!r}: must be null (native size) or [H, W] of positive ints")
    return int(value[0]), int(value[1])


def prepare_frame(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Decoded RGB frame -> what the dataset stores: native size by default (what the node feeds the
    model), else :func:`astra_core.imaging.resize_rgb` -- the one reduction the node can repeat."""
    return frame if size is None else resize_rgb(frame, size)


def common_image_size(native: dict[str, tuple[int, int]], size: tuple[int, int] | None) -> tuple[int, int]:
    """The dataset's image size: ``size`` if set, else the cameras' one native size."""
    if size is not None:
        return size
    sizes = set(native.values())
    if len(sizes) != 1:
        described = ", ".join(f"{c}: {h}x{w}" for c, (h, w) in native.items())
        raise MappingError(
            f"cameras have different native sizes ({described}); the dataset holds one image size: "
            f"set image_size: [H, W] in the mapping to resize every camera with resize_rgb (INTER_AREA)"
        )
    return sizes.pop()


__all__ = [
    "ActionMapping", "MappingError", "VectorComposer", "add_common_arguments", "check_cameras",
    "check_image_size", "common_image_size", "load_mapping", "prepare_frame", "select_elements",
]  # fmt: skip
