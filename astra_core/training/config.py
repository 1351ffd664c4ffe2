"""Training configuration: one validated dataclass tree, loaded from YAML plus ``key=value`` overrides.

Example::

    cfg = TrainConfig.load("config/train/tiny.yaml", ["data.root=/data/pick", "optim.lr=1e-4"])

Every section rejects unknown keys with the list of valid ones, so a typo in a preset or on the
command line fails at load time instead of silently training with a default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import yaml

from astra_core.configuration import apply_overrides, from_dict, load_yaml


@dataclass
class DataConfig:
    root: str = ""  # dataset directory written by astra_core.data.DatasetWriter
    window: int = 8  # T: timesteps per training sample
    cameras: list[str] = field(default_factory=list)  # train on these recorded cameras only ([] = all)
    val_fraction: float = 0.1  # fraction of episodes held out for validation (0 = none)
    num_workers: int = 0  # DataLoader worker processes per rank

    def validate(self) -> None:
        if not self.root:
            raise ValueError("data.root is required (the dataset directory)")
        _check(self.window >= 1, "data.window", self.window, ">= 1")
        _check(0.0 <= self.val_fraction < 1.0, "data.val_fraction", self.val_fraction, "in [0, 1)")
        _check(self.num_workers >= 0, "data.num_workers", self.num_workers, ">= 0")


@dataclass
class ModelSection:
    # A preset name (astra_core/presets/<name>.yaml) or a path to a model YAML file.
    preset: str = "tiny"
    # AstraConfig keys overriding the preset, e.g. {"n_layer": 2, "attention": "causal"}.
    overrides: dict[str, Any] = field(default_factory=dict)
    # Give the model the dataset's proprioception as one token per state (needs proprio_names).
    proprio: bool = False

    def validate(self) -> None:
        if not self.preset:
            raise ValueError("model.preset must name a preset or a model YAML file")


@dataclass
class OptimConfig:
    lr: float = 3e-4  # peak learning rate, reached at the end of warmup
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio at total_steps
    warmup_steps: int = 100
    weight_decay: float = 0.1  # matrices only; norms, biases and embeddings get none
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping

    def validate(self) -> None:
        _check(self.lr > 0, "optim.lr", self.lr, "> 0")
        _check(0.0 <= self.min_lr_ratio <= 1.0, "optim.min_lr_ratio", self.min_lr_ratio, "in [0, 1]")
        _check(self.warmup_steps >= 0, "optim.warmup_steps", self.warmup_steps, ">= 0")
        _check(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, ">= 0")
        _check(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "optim.beta1/beta2", (self.beta1, self.beta2), "in [0, 1)")
        _check(self.eps > 0, "optim.eps", self.eps, "> 0")
        _check(self.grad_clip >= 0, "optim.grad_clip", self.grad_clip, ">= 0")


@dataclass
class CDLConfig:
    alpha: float = 0.1  # weight of L_CDL in L = L_BC + alpha * L_CDL; 0 disables CDL entirely
    num_negatives: int = 4  # negatives per anchor in the InfoNCE denominator
    temperature: float = 0.1  # InfoNCE temperature on cosine similarities (see training/cdl.py)
    normalize: bool = True  # cosine similarity; False + temperature 1 is the paper's raw f(x).f(y)
    replace_prob: float = 0.5  # chance that a segment of a negative comes from another trajectory
    # CDL costs K + 2 trajectory encodings per anchor: at most this many anchors per batch (the
    # first of the shuffled batch; negatives still come from the whole batch); 0 = every one.
    max_anchors: int = 0

    def validate(self) -> None:
        _check(self.alpha >= 0, "cdl.alpha", self.alpha, ">= 0")
        _check(self.num_negatives >= 1, "cdl.num_negatives", self.num_negatives, ">= 1")
        _check(self.temperature > 0, "cdl.temperature", self.temperature, "> 0")
        _check(0.0 < self.replace_prob < 1.0, "cdl.replace_prob", self.replace_prob, "in (0, 1)")
        _check(self.max_anchors >= 0, "cdl.max_anchors", self.max_anchors, ">= 0 (0 = every trajectory of the batch)")


@dataclass
class AugmentConfig:
    """Strengths of the CDL positive-sample augmentation (paper section 3.3)."""

    shift: float = 0.06  # max random shift (pad + crop) as a fraction of image height/width
    brightness: float = 0.2  # multiplicative factor drawn from [1 - b, 1 + b]
    contrast: float = 0.2
    saturation: float = 0.2
    action_noise_std: float = 0.05  # continuous: gaussian noise in normalised (z-score) units
    action_bin_shift: int = 2  # discrete: uniform shift in [-k, k] bins

    def validate(self) -> None:
        _check(0.0 <= self.shift < 0.5, "augment.shift", self.shift, "in [0, 0.5)")
        for name in ("brightness", "contrast", "saturation"):
            value = getattr(self, name)
            _check(0.0 <= value < 1.0, f"augment.{name}", value, "in [0, 1)")
        _check(self.action_noise_std >= 0, "augment.action_noise_std", self.action_noise_std, ">= 0")
        _check(self.action_bin_shift >= 0, "augment.action_bin_shift", self.action_bin_shift, ">= 0")


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelSection = field(default_factory=ModelSection)
    optim: OptimConfig = field(default_factory=OptimConfig)
    cdl: CDLConfig = field(default_factory=CDLConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    batch_size: int = 32  # per process (rank); the global batch is batch_size * world_size
    total_steps: int = 10_000  # optimizer steps
    bc_loss: Literal["smooth_l1", "mse"] = "smooth_l1"  # continuous action spaces only
    # discrete action spaces: the cross-entropy target is a Gaussian of this width (in bins) around
    # the recorded bin instead of the bin alone (bins are ordered: a neighbour is nearly right);
    # 0 = plain cross-entropy (the paper's). Circular for the SE(2) rotation head.
    bin_smoothing: float = 0.0
    log_every: int = 10  # steps between progress-bar / TensorBoard scalar updates
    val_every: int = 500  # steps between validations (0 = only at the end)
    val_batches: int = 0  # cap on validation batches per validation (0 = the whole split)
    checkpoint_every: int = 1000  # steps between checkpoints (the final step is always saved)
    keep_last: int = 3  # step checkpoints kept besides 'best'
    seed: int = 0
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda", "cuda:1", ...
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto = bf16 autocast on CUDA, fp32 on CPU
    output_dir: str = "runs/astra"  # checkpoints/, tensorboard/, metrics.jsonl, config.yaml
    progress_bar: bool = True
    threads: int = 0  # torch intra-op CPU threads per process; 0 = auto (cores - 1, see astra_core/threads.py)

    def validate(self) -> None:
        for section in (self.data, self.model, self.optim, self.cdl, self.augment):
            section.validate()
        _check(self.batch_size >= 1, "batch_size", self.batch_size, ">= 1")
        _check(self.threads >= 0, "threads", self.threads, ">= 0 (0 = auto)")
        if self.cdl.alpha > 0:
            _check(self.batch_size >= 2, "batch_size", self.batch_size, ">= 2 when cdl.alpha > 0 (negatives come from other trajectories in the batch)")
        _check(self.total_steps >= 1, "total_steps", self.total_steps, ">= 1")
        if self.optim.warmup_steps > self.total_steps:
            # a short run (a smoke test, a demo with --steps 4) keeps a proportionate warmup
            self.optim.warmup_steps = self.total_steps // 5
        for name in ("log_every", "checkpoint_every", "keep_last"):
            _check(getattr(self, name) >= 1, name, getattr(self, name), ">= 1")
        for name in ("val_every", "val_batches"):
            _check(getattr(self, name) >= 0, name, getattr(self, name), ">= 0")
        _check(self.bc_loss in ("smooth_l1", "mse"), "bc_loss", self.bc_loss, "'smooth_l1' or 'mse'")
        _check(self.bin_smoothing >= 0, "bin_smoothing", self.bin_smoothing, ">= 0")
        _check(self.precision in ("auto", "fp32", "bf16"), "precision", self.precision, "'auto', 'fp32' or 'bf16'")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"device={self.device!r}: must be 'auto', 'cpu', 'cuda' or 'cuda:<index>'")

    # ----------------------------------------------------------------------------------- I/O
    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        cfg = from_dict(cls, d)
        cfg.validate()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def load(cls, path: str | Path | None, overrides: Sequence[str] = ()) -> "TrainConfig":
        """YAML file (optional) + ``dotted.key=value`` overrides (values parsed as YAML scalars)."""
        raw = load_yaml(path) if path is not None else {}
        apply_overrides(raw, overrides)
        try:
            return cls.from_dict(raw)
        except (ValueError, TypeError) as e:
            where = f"{path}" if path is not None else "config"
            raise ValueError(f"{where}: {e}") from None

    def save(self, path: str | Path) -> None:
        with open(path, "w") as f:
            yaml.safe_dump(self.to_dict(), f, sort_keys=False)


# --------------------------------------------------------------------------------- helpers
def _check(ok: bool, name: str, value: Any, requirement: str) -> None:
    if not ok:
        raise ValueError(f"{name}={value!r}: must be {requirement}")
