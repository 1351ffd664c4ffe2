"""Action spaces: what one action segment means and how it maps to and from the model.

Three kinds, as in the paper:

* ``discrete_se2``      VIMA-style pick-and-place: (pick_x, pick_y, pick_theta, place_x, place_y,
                        place_theta), each dimension binned independently.
* ``discrete_pose6d``   end-effector pose (x, y, z, roll, pitch, yaw) + gripper, binned per dimension.
* ``continuous_pose6d`` the same seven dimensions, regressed in normalised units.

Bins and normalisation come from dataset statistics (:class:`ActionStats`), which are saved with
the dataset and with every checkpoint, so a checkpoint decodes actions exactly as it was trained.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal, Sequence

import numpy as np
import torch

ActionKind = Literal["discrete_se2", "discrete_pose6d", "continuous_pose6d"]
ACTION_KINDS: tuple[str, ...] = ("discrete_se2", "discrete_pose6d", "continuous_pose6d")

SE2_DIMS = ("pick_x", "pick_y", "pick_theta", "place_x", "place_y", "place_theta")
POSE6D_DIMS = ("x", "y", "z", "roll", "pitch", "yaw", "gripper")
SE2_POSITION_PAIRS = ((0, 1), (3, 4))
POSE6D_POSITION_PAIRS = ((0, 1),)
ANGLE_DIMS = ("pick_theta", "place_theta", "roll", "pitch", "yaw")


@dataclass
class ActionSpaceSpec:
    """The serialisable description of an action space (lives in the model config)."""

    kind: ActionKind = "continuous_pose6d"
    num_bins: int = 256  # discrete kinds only
    # "absolute": actions are targets in the robot/table frame; "delta": offsets from the current
    # end-effector pose (the ROS node then needs the robot's pose to turn them into targets).
    frame: Literal["absolute", "delta"] = "absolute"

    def __post_init__(self) -> None:
        if self.kind not in ACTION_KINDS:
            raise ValueError(f"action_space.kind={self.kind!r}: must be one of {list(ACTION_KINDS)}")
        if self.frame not in ("absolute", "delta"):
            raise ValueError(f"action_space.frame={self.frame!r}: must be 'absolute' or 'delta'")
        if self.is_discrete and not 2 <= int(self.num_bins) <= 65536:
            raise ValueError(f"action_space.num_bins={self.num_bins}: must be in [2, 65536]")

    @property
    def is_discrete(self) -> bool:
        return self.kind.startswith("discrete")

    @property
    def dim_names(self) -> list[str]:
        return list(SE2_DIMS if self.kind == "discrete_se2" else POSE6D_DIMS)

    @property
    def dim(self) -> int:
        return len(self.dim_names)

    @property
    def position_pairs(self) -> list[tuple[int, int]]:
        """(x, y) dimension pairs that are positions on the work surface (the pointer readout
        predicts these from token coordinates): pick and place for SE(2), x/y for a pose."""
        return list(SE2_POSITION_PAIRS if self.kind == "discrete_se2" else POSE6D_POSITION_PAIRS)

    @property
    def rotation_pair(self) -> tuple[int, int] | None:
        """(pick angle, place angle) of SE(2) pick-and-place: the object turns by their difference."""
        return (2, 5) if self.kind == "discrete_se2" else None

    @property
    def angle_dims(self) -> list[int]:
        """Dimensions that are angles in radians (errors wrap around the circle)."""
        return [i for i, name in enumerate(self.dim_names) if name in ANGLE_DIMS]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ActionStats:
    """Per-dimension statistics of a dataset's actions (physical units)."""

    names: list[str]
    min: list[float]
    max: list[float]
    mean: list[float]
    std: list[float]
    count: int = 0

    def __post_init__(self) -> None:
        n = len(self.names)
        for key in ("min", "max", "mean", "std"):
            values = getattr(self, key)
            if len(values) != n:
                raise ValueError(f"action stats: '{key}' has {len(values)} values for {n} dimensions")
            if not all(math.isfinite(float(v)) for v in values):
                raise ValueError(f"action stats: '{key}' contains a non-finite value: {values}")
        for name, lo, hi in zip(self.names, self.min, self.max):
            if lo > hi:
                raise ValueError(f"action stats: dimension '{name}' has min {lo} > max {hi}")

    @classmethod
    def from_actions(cls, actions: np.ndarray, names: Sequence[str]) -> "ActionStats":
        actions = np.asarray(actions, dtype=np.float64)
        if actions.ndim != 2 or actions.shape[1] != len(names) or actions.shape[0] == 0:
            raise ValueError(f"action stats need a non-empty (steps, {len(names)}) array, got {actions.shape}")
        if not np.isfinite(actions).all():
            raise ValueError("action stats: actions contain NaN or inf")
        return cls(
            names=list(names),
            min=actions.min(0).tolist(),
            max=actions.max(0).tolist(),
            mean=actions.mean(0).tolist(),
            std=actions.std(0).tolist(),
            count=int(actions.shape[0]),
        )

    @classmethod
    def merge(cls, parts: Sequence["ActionStats"]) -> "ActionStats":
        """Combine statistics of disjoint parts (e.g. episodes) without re-reading actions."""
        if not parts:
            raise ValueError("action stats: nothing to merge")
        names = parts[0].names
        counts = np.array([p.count for p in parts], dtype=np.float64)
        if any(p.names != names for p in parts) or (counts <= 0).any():
            raise ValueError("action stats: parts disagree on dimension names or have no count")
        means = np.array([p.mean for p in parts])
        second = np.array([np.square(p.std) + np.square(p.mean) for p in parts])
        total = counts.sum()
        mean = (counts[:, None] * means).sum(0) / total
        var = np.maximum((counts[:, None] * second).sum(0) / total - mean**2, 0.0)
        return cls(
            names=list(names),
            min=np.min([p.min for p in parts], axis=0).tolist(),
            max=np.max([p.max for p in parts], axis=0).tolist(),
            mean=mean.tolist(),
            std=np.sqrt(var).tolist(),
            count=int(total),
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ActionStats":
        valid = {"names", "min", "max", "mean", "std", "count"}
        unknown = set(d) - valid
        if unknown:
            raise ValueError(f"action stats: unknown keys {sorted(unknown)}; valid keys: {sorted(valid)}")
        return cls(**d)


class ActionSpace:
    """Conversions between physical actions and the model's per-dimension form.

    Model form is long bin indices in ``[0, num_bins)`` for discrete spaces and ``(x - mean) / std``
    for the continuous space. ``head_size`` is what the model predicts per dimension.
    """

    def __init__(self, spec: ActionSpaceSpec, stats: ActionStats) -> None:
        if list(stats.names) != spec.dim_names:
            raise ValueError(
                f"action stats are for dimensions {stats.names} but action space '{spec.kind}' "
                f"has dimensions {spec.dim_names}"
            )
        self.spec = spec
        self.stats = stats
        lo = torch.tensor(stats.min, dtype=torch.float64)
        hi = torch.tensor(stats.max, dtype=torch.float64)
        # A constant dimension still needs a non-zero bin width to stay invertible.
        self._lo, self._width = lo, torch.clamp(hi - lo, min=1e-6)
        self._mean = torch.tensor(stats.mean, dtype=torch.float64)
        self._std = torch.clamp(torch.tensor(stats.std, dtype=torch.float64), min=1e-6)

    @property
    def dim(self) -> int:
        return self.spec.dim

    @property
    def is_discrete(self) -> bool:
        return self.spec.is_discrete

    @property
    def head_size(self) -> int:
        return self.spec.num_bins if self.is_discrete else 1

    @property
    def dim_names(self) -> list[str]:
        return self.spec.dim_names

    def to_model(self, actions: torch.Tensor) -> torch.Tensor:
        """Physical actions (..., N) -> bin indices (long) or normalised values (float32)."""
        x = actions.to(torch.float64)
        if self.is_discrete:
            k = self.spec.num_bins - 1
            unit = (x - self._lo.to(x.device)) / self._width.to(x.device)
            return torch.round(unit * k).clamp(0, k).long()
        return ((x - self._mean.to(x.device)) / self._std.to(x.device)).float()

    def from_model(self, x: torch.Tensor) -> torch.Tensor:
        """Bin indices or normalised values (..., N) -> physical actions (float64)."""
        if self.is_discrete:
            unit = x.to(torch.float64) / (self.spec.num_bins - 1)
            return self._lo.to(x.device) + unit * self._width.to(x.device)
        return x.to(torch.float64) * self._std.to(x.device) + self._mean.to(x.device)

    def decode(self, head_out: torch.Tensor) -> torch.Tensor:
        """Model head output (..., N, head_size) -> model form (..., N)."""
        if self.is_discrete:
            return head_out.argmax(-1)
        return head_out[..., 0].float()

    def bin_width(self) -> np.ndarray:
        """Physical size of one bin per dimension (discrete spaces): the quantisation error bound."""
        return (self._width / (self.spec.num_bins - 1)).numpy()

