"""The training loop: L = L_BC + alpha * L_CDL with AdamW, warmup + cosine, DDP, exact resume.

Layout of ``output_dir``::

    train_config.yaml         the resolved TrainConfig
    metrics.jsonl             one JSON line per logged step / validation (rank 0)
    tensorboard/              SummaryWriter events (rank 0)
    checkpoints/step_00001000/    a model checkpoint (astra_core.checkpoint) plus
                 training_state/  optimizer, step, data position, RNG (astra_core.training.state)
    checkpoints/best -> step_...  symlink to the checkpoint with the lowest validation loss

Exact resume. The data order is a seeded permutation per epoch, so the data position is just
(epoch, batches consumed). Every random draw of a step -- augmentation, CDL negatives, dropout -- is
seeded from (seed, rank, step), so a resumed step makes the same draws as an uninterrupted one, on
every rank, without shipping per-rank RNG streams around. The global Python/NumPy/torch RNG states
are saved and restored as well, for anything outside this loop that draws from them.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from astra_core.checkpoint import WEIGHTS_FILE, CheckpointError, atomic_write_dir, save_checkpoint
from astra_core.configuration import merge_dotted
from astra_core.data.dataset import TrajectoryWindowDataset, collate_windows, split_episodes
from astra_core.data.format import load_dataset_info
from astra_core.data.stats import load_stats
from astra_core.model import Astra, AstraConfig, States
from astra_core.presets import load_preset_dict
from astra_core.training.augment import augment_images, perturb_actions, shift_boxes
from astra_core.training.cdl import assemble_negatives, info_nce, plan_negatives
from astra_core.training.config import TrainConfig
from astra_core.training.criterion import METRIC_PREFIXES, BCCriterion, summarize_metrics
from astra_core.training.state import capture_rng, load_state, restore_rng, save_state

METRIC_KEYS = tuple(f"{prefix}/" for prefix in METRIC_PREFIXES)
CHECKPOINTS_DIR = "checkpoints"
TRAINING_STATE_DIR = "training_state"
BEST_LINK = "best"
METRICS_FILE = "metrics.jsonl"


# ------------------------------------------------------------------------------ model and optim
def build_model_config(cfg: TrainConfig, dataset_root: str | Path) -> AstraConfig:
    """Preset (or model YAML) + overrides, with cameras, action space, calibration and the size of
    proprioception (``model.proprio``) taken from the dataset."""
    info = load_dataset_info(dataset_root)
    base = load_preset_dict(cfg.model.preset)
    for key in ("cameras", "action_space", "calibration", "proprio_dim"):
        if key in cfg.model.overrides:
            raise ValueError(f"model.overrides.{key}: taken from the dataset ({dataset_root}), cannot be overridden")
    merged = merge_dotted(base, cfg.model.overrides)
    unknown = sorted(set(cfg.data.cameras) - set(info.cameras))
    if unknown:
        raise ValueError(f"data.cameras: {unknown} are not cameras of the dataset {dataset_root} ({info.cameras})")
    merged["cameras"] = [c for c in info.cameras if not cfg.data.cameras or c in cfg.data.cameras]
    merged["action_space"] = info.action_space.to_dict()
    merged["calibration"] = {camera: entry["table_homography"] for camera, entry in info.calibration.items()
                             if camera in merged["cameras"]}
    if cfg.model.proprio and info.proprio_names is None:
        raise ValueError(f"model.proprio=true but the dataset {dataset_root} has no proprioception")
    merged["proprio_dim"] = len(info.proprio_names) if cfg.model.proprio else 0
    if merged.get("state_tokens") == "objects" and not info.has_masks:
        raise ValueError(f"state_tokens=objects needs instance masks, and the dataset {dataset_root} has none")
    model_cfg = AstraConfig.from_dict(merged)
    if cfg.data.window > model_cfg.max_timesteps:
        raise ValueError(f"data.window={cfg.data.window} exceeds the model's max_timesteps={model_cfg.max_timesteps}")
    if cfg.data.window < model_cfg.max_timesteps:
        # The runtime keeps up to max_timesteps steps of history, but training only ever shows
        # windows of data.window steps: longer contexts (and the timestep embeddings past the
        # window) would be untrained at run time. The checkpoint's context is what was trained.
        print(f"[astra_core.train] model max_timesteps {model_cfg.max_timesteps} -> {cfg.data.window} "
              f"(data.window): the runtime's context is the trained window", file=sys.stderr, flush=True)
        model_cfg = AstraConfig.from_dict({**merged, "max_timesteps": cfg.data.window})
    return model_cfg


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; weight decay only on weight matrices/kernels, never on norms, biases or embeddings."""
    embedding_params = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_embedding = id(p) in embedding_params or name.split(".")[-1].endswith("_emb")
        (decay if p.ndim >= 2 and not is_embedding else no_decay).append(p)
    o = cfg.optim
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps,
    )  # fmt: skip


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warmup, then cosine decay."""
    o = cfg.optim
    if step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    progress = min(1.0, (step - o.warmup_steps) / max(1, cfg.total_steps - o.warmup_steps))
    min_lr = o.lr * o.min_lr_ratio
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (o.lr - min_lr)


def step_seed(seed: int, rank: int, step: int, stream: int) -> int:
    """A well-mixed 63-bit seed for one random stream of one step on one rank."""
    return int(np.random.SeedSequence([seed, rank, step, stream]).generate_state(2, np.uint64)[0] >> np.uint64(1))


# ------------------------------------------------------------------------------ objective
class AstraObjective(nn.Module):
    """The whole loss in one forward, so DDP sees a single forward/backward per step."""

    def __init__(self, model: Astra, cfg: TrainConfig, tolerances: dict[str, float] | None = None) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.criterion = BCCriterion(model, cfg.bc_loss, tolerances, cfg.bin_smoothing)

    def forward(self, batch: dict[str, Any], generator: torch.Generator, with_cdl: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model, cfg = self.model, self.cfg
        device = model.head_bias.device
        inputs = {k: v.to(device, non_blocking=True) for k, v in batch.items() if isinstance(v, torch.Tensor)}
        step_mask = inputs["step_mask"]
        physical = inputs["actions"]
        actions = model.action_space.to_model(physical)

        prompt, prompt_mask = model.encode_prompt(batch["instruction"])
        states = model.encode_states(inputs["images"], inputs.get("object_boxes"), inputs.get("object_valid"),
                                     inputs.get("proprio"), step_mask)
        # Training reads the pointer's heads from the recorded token (teacher forcing); validation
        # from the argmax, as at run time.
        teacher = model.nearest_tokens(states, physical) if model.position_pairs and model.training else None
        out = model(prompt, prompt_mask, states, actions, step_mask, teacher)
        bc = self.criterion(out, states, actions, physical, step_mask)
        stats: dict[str, torch.Tensor] = {"bc_loss": bc.loss.detach(), "num_steps": bc.num_steps, **bc.metric_sums}
        loss = bc.loss
        if with_cdl and cfg.cdl.alpha > 0:
            cdl_loss, cdl_acc = self.contrastive(batch["episode"], inputs, states, actions, prompt, prompt_mask, generator)
            loss = loss + cfg.cdl.alpha * cdl_loss
            stats["cdl_loss"], stats["cdl_acc"] = cdl_loss.detach(), cdl_acc
        stats["loss"] = loss.detach()
        return loss, stats

    def contrastive(self, episodes, inputs, states, actions, prompt, prompt_mask, generator):
        """L_CDL over [anchor, positive, K negatives] per anchor (see training/cdl.py)."""
        model, cfg = self.model, self.cfg
        step_mask = inputs["step_mask"]
        B, K = actions.shape[0], cfg.cdl.num_negatives
        aug_images, shift = augment_images(inputs["images"], cfg.augment, generator)
        boxes, valid = inputs.get("object_boxes"), inputs.get("object_valid")
        if boxes is not None:  # object crops follow the shifted image
            boxes, valid = shift_boxes(boxes, valid, shift)
        aug_actions = perturb_actions(actions, model.action_space, cfg.augment, step_mask, generator)
        aug_states = model.encode_states(aug_images, boxes, valid, inputs.get("proprio"), step_mask)
        plan = plan_negatives(step_mask, K, cfg.cdl.replace_prob, episodes, generator)
        if 0 < cfg.cdl.max_anchors < B:
            plan = plan.first(cfg.cdl.max_anchors)
        (neg_features, neg_valid), neg_actions = assemble_negatives(
            plan, [torch.stack([states.features, aug_states.features]), torch.stack([states.valid, aug_states.valid])],
            torch.stack([actions, aug_actions]),
        )
        A = plan.source.shape[0]  # anchors
        features = torch.cat([states.features[:A], aug_states.features[:A], neg_features.flatten(0, 1)])
        token_valid = torch.cat([states.valid[:A], aug_states.valid[:A], neg_valid.flatten(0, 1)])
        # Trajectory encoding reads features and validity only (no readout, no coordinates).
        all_states = States(features, token_valid, features.new_zeros(*token_valid.shape, 2), torch.zeros_like(token_valid))
        # One encoder pass over anchors, positives and negatives (all share the anchor's prompt).
        prompt, prompt_mask, step_mask = prompt[:A], prompt_mask[:A], step_mask[:A]
        embeddings = model.encode_trajectory(
            torch.cat([prompt, prompt, prompt.repeat_interleave(K, 0)]),
            torch.cat([prompt_mask, prompt_mask, prompt_mask.repeat_interleave(K, 0)]),
            all_states,
            torch.cat([actions[:A], aug_actions[:A], neg_actions.flatten(0, 1)]),
            torch.cat([step_mask, step_mask, step_mask.repeat_interleave(K, 0)]),
        )
        assert embeddings.shape[0] == (K + 2) * A
        anchor, positive, negatives = embeddings[:A], embeddings[A : 2 * A], embeddings[2 * A :].view(A, K, -1)
        return info_nce(anchor, positive, negatives, cfg.cdl.temperature, cfg.cdl.normalize, weight=plan.valid.to(anchor.device))


# ------------------------------------------------------------------------------ data order
class EpochBatches:
    """Batches of one rank: a seeded permutation per epoch, split across ranks, full batches only."""

    def __init__(self, num_items: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.per_rank = num_items // world_size
        self.batches_per_epoch = self.per_rank // batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"{num_items} training windows cannot fill one batch of {batch_size} on each of {world_size} "
                f"process(es); lower batch_size or data.window, or add episodes"
            )

    def epoch(self, epoch: int, start: int = 0) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(self.num_items, generator=g)[: self.per_rank * self.world_size]
        mine = order[self.rank :: self.world_size].tolist()
        return [mine[i * self.batch_size : (i + 1) * self.batch_size] for i in range(start, self.batches_per_epoch)]


@dataclass
class DataPosition:
    epoch: int = 0
    batch: int = 0  # batches of this epoch already consumed


# ------------------------------------------------------------------------------ trainer
class Trainer:
    def __init__(self, cfg: TrainConfig, resume: str | Path | None = None) -> None:
        self.cfg = cfg
        self.rank, self.world_size, self.local_rank = _init_distributed(cfg)
        self.is_main = self.rank == 0
        self.device = _pick_device(cfg.device, self.local_rank)
        self.use_bf16 = self.device.type == "cuda" and cfg.precision in ("auto", "bf16")
        if cfg.precision == "bf16" and self.device.type != "cuda":
            raise ValueError("precision=bf16 needs a CUDA device (bf16 autocast is used on GPU only)")
        self.out = Path(cfg.output_dir)
        self.ckpt_dir = self.out / CHECKPOINTS_DIR

        root = cfg.data.root
        model_cfg = build_model_config(cfg, root)
        objects = model_cfg.max_objects if model_cfg.state_tokens == "objects" else None
        train_ids, val_ids = split_episodes(root, cfg.data.val_fraction, seed=cfg.seed)
        self.train_set = TrajectoryWindowDataset(root, cfg.data.window, episodes=train_ids, seed=cfg.seed,
                                                 max_objects=objects, cameras=model_cfg.cameras)
        self.val_set = TrajectoryWindowDataset(root, cfg.data.window, episodes=val_ids, seed=cfg.seed,
                                               max_objects=objects, cameras=model_cfg.cameras) if val_ids else None
        self.batches = EpochBatches(len(self.train_set), cfg.batch_size, cfg.seed, self.rank, self.world_size)

        torch.manual_seed(cfg.seed)  # identical initialisation on every rank (DDP also broadcasts)
        stats = load_stats(root)
        self.model = Astra(model_cfg, stats.action, stats.proprio if model_cfg.proprio_dim else None).to(self.device)
        self.objective = AstraObjective(self.model, cfg, self.train_set.info.tolerances)
        self.optimizer = build_optimizer(self.model, cfg)
        self.train_objective: nn.Module = self.objective
        if self.world_size > 1:
            self.train_objective = nn.parallel.DistributedDataParallel(
                self.objective,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                # Without CDL the CDL head gets no gradient, with the pointer readout the heads of
                # position dimensions get none: DDP must then look for unused parameters.
                find_unused_parameters=cfg.cdl.alpha == 0 or self.model.cfg.readout == "pointer",
                gradient_as_bucket_view=True,  # no gradient copy; also fixes 1x1-conv stride warnings
            )

        self.step = 0
        self.position = DataPosition()
        self.best_val_loss: float | None = None
        self.history: list[dict[str, Any]] = []  # logged records of this process's run
        if resume is not None:
            self._resume(self._resolve_resume(resume))
        self._tb = None

    # -------------------------------------------------------------------------------- loop
    def fit(self) -> dict[str, Any]:
        cfg = self.cfg
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            cfg.save(self.out / "train_config.yaml")
            self._clean_partial_checkpoints()
            self._truncate_metrics(after_step=self.step)
        progress = _progress_bar(cfg.total_steps, self.step, enabled=self.is_main and cfg.progress_bar)
        window_start, window_samples = time.perf_counter(), 0
        last_val: dict[str, Any] | None = None
        try:
            while self.step < cfg.total_steps:
                for batch in self._loader(self.position):
                    record = self.train_step(batch)
                    window_samples += cfg.batch_size * self.world_size
                    if self.step % cfg.log_every == 0 or self.step == cfg.total_steps:
                        elapsed = time.perf_counter() - window_start
                        record = self._reduce_record(record)
                        record["samples_per_s"] = window_samples / max(elapsed, 1e-9)
                        window_start, window_samples = time.perf_counter(), 0
                        self._log(record, progress)
                    progress.update(1)
                    final = self.step == cfg.total_steps
                    if (cfg.val_every and self.step % cfg.val_every == 0) or final:
                        last_val = self.validate()
                    if self.step % cfg.checkpoint_every == 0 or final:
                        # Only a validation of these very weights may make a checkpoint "best".
                        fresh = last_val is not None and last_val["step"] == self.step
                        self.save(val_loss=last_val["val/loss"] if fresh else None)
                    if final:
                        break
        finally:
            progress.close()
            if self._tb is not None:
                self._tb.flush()
        return {"step": self.step, "best_val_loss": self.best_val_loss, "last_val": last_val}

    def train_step(self, batch: dict[str, Any]) -> dict[str, Any]:
        cfg = self.cfg
        self.model.train()
        torch.manual_seed(step_seed(cfg.seed, self.rank, self.step, 0))  # dropout of this step
        generator = torch.Generator().manual_seed(step_seed(cfg.seed, self.rank, self.step, 1))
        lr = lr_at(self.step, cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with self._autocast():
            loss, stats = self.train_objective(batch, generator)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in self.model.parameters() if p.requires_grad]
        if cfg.optim.grad_clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
        else:
            grad_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params if p.grad is not None]))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"step {self.step}: loss is {loss.item()} (batch episodes {batch['episode'].tolist()})")
        self.optimizer.step()
        self.step += 1
        self.position.batch += 1
        if self.position.batch >= self.batches.batches_per_epoch:
            self.position = DataPosition(self.position.epoch + 1, 0)
        return {"step": self.step, "lr": lr, "grad_norm": float(grad_norm), **stats}

    @torch.no_grad()
    def evaluate(self, dataset: TrajectoryWindowDataset, max_batches: int = 0, prefix: str = "val") -> dict[str, float]:
        """BC loss, per-dimension accuracy / error (and CDL loss/accuracy) over a dataset split."""
        cfg = self.cfg
        self.model.eval()
        indices = list(range(self.rank, len(dataset), self.world_size))  # every rank a disjoint share
        batches = [indices[i : i + cfg.batch_size] for i in range(0, len(indices), cfg.batch_size)]
        if max_batches:
            batches = batches[:max_batches]
        sums: dict[str, torch.Tensor] = {}
        for i, batch in enumerate(self._make_loader(dataset, batches)):
            # Validation draws (CDL augmentation and negatives) are fixed: the same every validation.
            generator = torch.Generator().manual_seed(step_seed(cfg.seed, self.rank, i, 2))
            # CDL needs another episode in the batch to draw negatives from.
            with_cdl = cfg.cdl.alpha > 0 and len(set(batch["episode"].tolist())) >= 2
            with self._autocast():
                _, stats = self.objective(batch, generator, with_cdl=with_cdl)
            n = stats["num_steps"]
            parts = {"loss_sum": stats["bc_loss"] * n, "num_steps": n, "num_batches": torch.tensor(1.0)}
            if with_cdl:
                parts |= {"cdl_loss_sum": stats["cdl_loss"], "cdl_acc_sum": stats["cdl_acc"], "cdl_batches": torch.tensor(1.0)}
            parts |= {k: v for k, v in stats.items() if k.startswith(METRIC_KEYS)}
            for key, value in parts.items():
                sums[key] = sums.get(key, torch.tensor(0.0, dtype=torch.float64)) + value.detach().double().cpu()
        keys = sorted(sums) if self.world_size == 1 else None
        if self.world_size > 1:  # ranks may hold different keys (e.g. no CDL batch); agree on a fixed set
            keys = ["num_steps", "num_batches", "loss_sum", "cdl_loss_sum", "cdl_acc_sum", "cdl_batches"]
            keys += sorted(self.objective.criterion.metric_names())
            vector = torch.stack([sums.get(k, torch.tensor(0.0, dtype=torch.float64)) for k in keys])
            dist.all_reduce(vector)
            sums = dict(zip(keys, vector))
        num_steps = float(sums.get("num_steps", 0.0))
        out = {f"{prefix}/loss": float(sums.get("loss_sum", 0.0)) / max(num_steps, 1.0)}
        metric_sums = {k: v for k, v in sums.items() if k.startswith(METRIC_KEYS)}
        out |= {f"{prefix}/{k}": v for k, v in summarize_metrics(metric_sums, num_steps).items()}
        if float(sums.get("cdl_batches", 0.0)) > 0:
            out[f"{prefix}/cdl_loss"] = float(sums["cdl_loss_sum"] / sums["cdl_batches"])
            out[f"{prefix}/cdl_acc"] = float(sums["cdl_acc_sum"] / sums["cdl_batches"])
        return out

    def validate(self) -> dict[str, Any] | None:
        if self.val_set is None:
            return None
        result = {"step": self.step, "split": "val", **self.evaluate(self.val_set, self.cfg.val_batches)}
        if self.is_main:
            self._write_record(result)
            tb = self._writer()
            for key, value in result.items():
                if key not in ("step", "split"):
                    tb.add_scalar(key, value, self.step)
        return result

    # -------------------------------------------------------------------------------- data
    def _loader(self, position: DataPosition) -> Iterator[dict[str, Any]]:
        return iter(self._make_loader(self.train_set, self.batches.epoch(position.epoch, position.batch)))

    def _make_loader(self, dataset: TrajectoryWindowDataset, batches: list[list[int]]) -> DataLoader:
        workers = self.cfg.data.num_workers
        return DataLoader(
            dataset, batch_sampler=batches, collate_fn=collate_windows, num_workers=workers,
            pin_memory=self.device.type == "cuda", persistent_workers=False,
        )  # fmt: skip

    # -------------------------------------------------------------------------------- logging
    def _reduce_record(self, record: dict[str, Any]) -> dict[str, Any]:
        """Scalars averaged over ranks (metric sums summed, then divided by the summed step count)."""
        tensors = {k: v for k, v in record.items() if isinstance(v, torch.Tensor)}
        keys = sorted(tensors)
        vector = torch.stack([tensors[k].detach().double().cpu().reshape(()) for k in keys])
        if self.world_size > 1:
            dist.all_reduce(vector)
        reduced = dict(zip(keys, vector.tolist()))
        out = {k: v for k, v in record.items() if not isinstance(v, torch.Tensor)}
        num_steps = reduced.pop("num_steps")
        metric_sums = {k: reduced.pop(k) for k in list(reduced) if k.startswith(METRIC_KEYS)}
        out |= {k: v / self.world_size for k, v in reduced.items()}  # per-rank means -> global mean
        out |= {f"train/{k}": v for k, v in summarize_metrics(metric_sums, num_steps).items()}
        return out

    def _log(self, record: dict[str, Any], progress) -> None:
        self.history.append(record)
        if not self.is_main:
            return
        self._write_record(record)
        tb = self._writer()
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                tb.add_scalar(key if "/" in key else f"train/{key}", value, record["step"])
        postfix = {"loss": f"{record['loss']:.4f}", "samples/s": f"{record['samples_per_s']:.1f}"}
        if "cdl_acc" in record:
            postfix["cdl_acc"] = f"{record['cdl_acc']:.2f}"
        progress.set_postfix(postfix, refresh=False)

    def _write_record(self, record: dict[str, Any]) -> None:
        with open(self.out / METRICS_FILE, "a") as f:
            f.write(json.dumps(record) + "\n")

    def _truncate_metrics(self, after_step: int) -> None:
        """On resume, drop records of steps that were logged after the checkpoint we resume from."""
        path = self.out / METRICS_FILE
        if not path.is_file():
            return
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        kept = [line for line in lines if json.loads(line)["step"] <= after_step]
        path.write_text("".join(line + "\n" for line in kept))

    def _writer(self):
        if self._tb is None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.out / "tensorboard"), purge_step=self.step or None)
        return self._tb

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.use_bf16 else nullcontext()

    # -------------------------------------------------------------------------------- checkpoints
    def save(self, val_loss: float | None = None) -> Path | None:
        """Write checkpoints/step_<step> (model + training state) atomically; keep last k + best."""
        name = f"step_{self.step:08d}"
        final = self.ckpt_dir / name
        improved = val_loss is not None and (self.best_val_loss is None or val_loss < self.best_val_loss)
        if improved:
            self.best_val_loss = val_loss
        if self.is_main:
            meta = {"step": self.step, "val_loss": val_loss, "train_config": self.cfg.to_dict()}
            state = {
                "step": self.step,
                "epoch": self.position.epoch,
                "batch_in_epoch": self.position.batch,
                "best_val_loss": self.best_val_loss,
                "world_size": self.world_size,
                "optimizer": self.optimizer.state_dict(),
                "rng": capture_rng(),
            }

            def write(tmp: Path) -> None:
                save_checkpoint(tmp, self.model, meta)
                save_state(tmp / TRAINING_STATE_DIR, state)

            atomic_write_dir(final, write)
            if improved:
                _replace_symlink(self.ckpt_dir / BEST_LINK, name)
            self._prune()
        if self.world_size > 1:
            dist.barrier()
        return final if self.is_main else None

    def _prune(self) -> None:
        steps = sorted(p for p in self.ckpt_dir.glob("step_*") if p.is_dir())
        best = self.ckpt_dir / BEST_LINK
        best_target = os.readlink(best) if best.is_symlink() else None
        for path in steps[: -self.cfg.keep_last]:
            if path.name != best_target:
                shutil.rmtree(path)

    def _clean_partial_checkpoints(self) -> None:
        """Temp directories of a checkpoint write interrupted by a crash are never valid."""
        if self.ckpt_dir.is_dir():
            for path in self.ckpt_dir.glob(".*.tmp-*"):
                shutil.rmtree(path, ignore_errors=True)

    def latest_checkpoint(self) -> Path | None:
        steps = sorted(p for p in self.ckpt_dir.glob("step_*") if (p / TRAINING_STATE_DIR).is_dir())
        return steps[-1] if steps else None

    def _resolve_resume(self, resume: str | Path) -> Path:
        if str(resume) == "latest":
            path = self.latest_checkpoint()
            if path is None:
                raise FileNotFoundError(f"--resume: no checkpoint with a training state under {self.ckpt_dir}")
            return path
        return Path(resume)

    def _resume(self, path: Path) -> None:
        state = load_state(path / TRAINING_STATE_DIR)
        if state["world_size"] != self.world_size:
            raise ValueError(
                f"{path}: saved with {state['world_size']} process(es), resuming with {self.world_size}; "
                f"the data order would differ, so exact resume is impossible"
            )
        weights = path / WEIGHTS_FILE
        try:
            tensors = load_file(str(weights), device=str(self.device))
        except Exception as e:
            raise CheckpointError(f"{weights}: cannot be read ({e})") from None
        missing, unexpected = self.model.load_state_dict(tensors, strict=False)
        # A frozen language encoder is not stored in checkpoints; it reloads from its own files.
        missing = [k for k in missing if not k.startswith("language.")]
        if missing or unexpected:
            raise CheckpointError(f"{weights}: does not match the model (missing {missing[:5]}, unexpected {unexpected[:5]})")
        self.optimizer.load_state_dict(state["optimizer"])
        restore_rng(state["rng"])
        self.step = int(state["step"])
        self.position = DataPosition(int(state["epoch"]), int(state["batch_in_epoch"]))
        self.best_val_loss = state["best_val_loss"]

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self.world_size > 1 and dist.is_initialized():
            # Tearing gloo down while a peer is still mid-collective aborts the process
            # ("terminate called without an active exception"): leave together.
            dist.barrier()
            dist.destroy_process_group()


# ------------------------------------------------------------------------------ helpers
def _init_distributed(cfg: TrainConfig) -> tuple[int, int, int]:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; gloo on CPU, nccl on GPU."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return 0, 1, 0
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        use_cuda = cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return dist.get_rank(), dist.get_world_size(), local_rank


def _pick_device(device: str, local_rank: int) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        device = f"cuda:{local_rank}"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} but CUDA is not available")
    return torch.device(device)


def _replace_symlink(link: Path, target: str) -> None:
    tmp = link.with_name(f".{link.name}.tmp-{os.getpid()}")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)  # atomic: readers see the old or the new target, never neither


class _NoBar:
    def update(self, n: int = 1) -> None: ...
    def set_postfix(self, *args, **kwargs) -> None: ...
    def close(self) -> None: ...


def _progress_bar(total: int, initial: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, smoothing=0.1)
