"""Behavior-cloning loss (paper Eq. 1) and action metrics, kept apart from the model (DETR style).

With teacher forcing the model predicts every action segment of the window at once, so the loss is
the mean over all real (unpadded) timesteps and all action dimensions of

* cross-entropy over the bins of each dimension, for discrete action spaces (= -log pi(a_t | ...));
* smooth-L1 (default) or MSE on normalised values, for the continuous action space;
* for a position pair (x, y) under the pointer readout, instead of two head losses: the negative
  log of the pointer's probability of choosing a token no farther from the recorded position than
  the nearest token plus the dimension's tolerance, plus smooth-L1 of the offset from the chosen
  token to the recorded position (in units of the positions' spread; only where the choice is one
  of those tokens).

Metrics: exact-bin accuracy is a poor guide (a 64-bin grid over a table is 6.5 mm per bin, while a
grasp succeeds within 2 cm), so per dimension there are also the absolute error in physical units
(angles wrap around the circle) and, where the dataset gives tolerances, the rate of hits within
tolerance; for a position pair, the Euclidean error and hit rate.

Metrics are returned as *sums* plus a count of real steps, so they can be accumulated over
validation batches and all-reduced over ranks before dividing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Mapping, Optional

import torch
import torch.nn.functional as F

from astra_core.model import Astra, AstraOutput, States


@dataclass
class BCOutput:
    loss: torch.Tensor  # scalar, differentiable
    # Per-dimension sums over real steps: "acc/<dim>" (discrete), "abs_err/<dim>" (physical units),
    # "hit/<dim>" (within tolerance); "pos_err/<x>_<y>", "pos_hit/<x>_<y>" for position pairs.
    metric_sums: dict[str, torch.Tensor]
    num_steps: torch.Tensor  # number of real (unpadded) timesteps, float scalar


def wrapped(diff: torch.Tensor) -> torch.Tensor:
    """Angle differences in (-pi, pi]."""
    return torch.remainder(diff + math.pi, 2 * math.pi) - math.pi


class BCCriterion:
    def __init__(self, model: Astra, continuous_loss: Literal["smooth_l1", "mse"] = "smooth_l1",
                 tolerances: Optional[Mapping[str, float]] = None, bin_smoothing: float = 0.0) -> None:
        if continuous_loss not in ("smooth_l1", "mse"):
            raise ValueError(f"continuous_loss={continuous_loss!r}: must be 'smooth_l1' or 'mse'")
        self.model = model
        self.action_space = model.action_space
        self.continuous_loss = continuous_loss
        names = self.action_space.dim_names
        unknown = sorted(set(tolerances or {}) - set(names))
        if unknown:
            raise ValueError(f"tolerances for unknown action dimensions {unknown}; dimensions are {names}")
        self.tolerances = dict(tolerances or {})
        if bin_smoothing < 0:
            raise ValueError(f"bin_smoothing={bin_smoothing}: must be >= 0")
        self.bin_smoothing = float(bin_smoothing)

    def __call__(self, out: AstraOutput, states: States, target: torch.Tensor, target_physical: torch.Tensor,
                 step_mask: torch.Tensor) -> BCOutput:
        """target (B, T, N) in model form and in physical units; step_mask bool (B, T)."""
        space = self.action_space
        B, T, N = target.shape
        if out.head.shape != (B, T, N, space.head_size):
            raise ValueError(f"head output has shape {tuple(out.head.shape)}, expected {(B, T, N, space.head_size)}")
        if step_mask.shape != (B, T):
            raise ValueError(f"step_mask has shape {tuple(step_mask.shape)}, expected {(B, T)}")
        weight = step_mask.to(torch.float32)  # (B, T)
        num_steps = weight.sum()
        # Losses in fp32 even under bf16 autocast: log-softmax over hundreds of bins loses precision.
        logits = out.head.float()
        head_target = target
        if self.model.relative_rotation is not None:  # the place angle's head predicts the rotation
            pick, place = self.model.relative_rotation
            head_target = target.clone()
            head_target[..., place] = self.model.rotation_bins(target_physical[..., place] - target_physical[..., pick])
        if space.is_discrete and self.bin_smoothing > 0:
            soft = self._smoothed_targets(head_target.long(), space.head_size)
            per_dim = -(soft * logits.log_softmax(-1)).sum(-1).reshape(-1)
        elif space.is_discrete:
            per_dim = F.cross_entropy(logits.reshape(-1, space.head_size), head_target.reshape(-1).long(),
                                      reduction="none")
        else:
            fn = F.smooth_l1_loss if self.continuous_loss == "smooth_l1" else F.mse_loss
            per_dim = fn(logits[..., 0].reshape(-1), target.reshape(-1).float(), reduction="none")
        per_dim = per_dim.view(B, T, N)
        pairs = self.model.position_pairs
        if pairs:  # the pointer replaces the head loss of both dimensions of each pair
            per_dim = per_dim.clone()
            for g, (ix, iy) in enumerate(pairs):
                pointer_nll, offset_loss = self._pointer_losses(out, states, target_physical, g, ix, iy)
                per_dim[..., ix], per_dim[..., iy] = pointer_nll, offset_loss
        loss = (per_dim.mean(-1) * weight).sum() / num_steps.clamp(min=1.0)

        with torch.no_grad():
            # Positions at the pointer's own choice (in training the heads read the recorded token,
            # which would make every pick look right).
            choice = None if out.pointer_logits is None else out.pointer_logits.argmax(-1)
            physical, prediction = self.model.decode(
                AstraOutput(logits, out.pointer_logits, out.pointer_offset, choice), states)
            metric_sums = self._metrics(physical, prediction, target, target_physical.to(physical), weight)
        return BCOutput(loss=loss, metric_sums=metric_sums, num_steps=num_steps.detach())

    def _smoothed_targets(self, target: torch.Tensor, K: int) -> torch.Tensor:
        """(B, T, N) bins -> (B, T, N, K) Gaussian targets of width ``bin_smoothing`` bins (circular
        for the rotation head, whose bins go round the circle; truncated at the ends otherwise)."""
        bins = torch.arange(K, device=target.device, dtype=torch.float32)
        distance = (bins - target[..., None].float()).abs()
        if self.model.relative_rotation is not None:
            place = self.model.relative_rotation[1]
            distance[..., place, :] = torch.minimum(distance[..., place, :], K - distance[..., place, :])
        weights = torch.exp(-0.5 * (distance / self.bin_smoothing) ** 2)
        return weights / weights.sum(-1, keepdim=True)

    def _pointer_losses(self, out: AstraOutput, states: States, target_physical: torch.Tensor,
                        g: int, ix: int, iy: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) pointer NLL and offset loss of position pair g; zero where no token has coordinates."""
        goal = target_physical[..., [ix, iy]].float()  # (B, T, 2)
        distance = (states.coords.float() - goal[:, :, None]).norm(dim=-1)  # (B, T, M)
        distance = distance.masked_fill(~states.has_coords, float("inf"))
        radius = self.tolerances.get(self.action_space.dim_names[ix], 0.0)
        # Hits: the tokens as close to the goal as the nearest one, up to the tolerance (the same
        # object seen by two cameras is two tokens a centimetre apart; any other object is farther).
        nearest = distance.min(-1, keepdim=True).values
        seen = states.has_coords.any(-1, keepdim=True)  # (B, T, 1); padded steps see nothing
        # Steps without candidates count as hitting anything (finite, then zeroed): no NaN gradients.
        hit = ((distance <= nearest + radius) & states.has_coords) | ~seen
        logits = torch.where(seen, out.pointer_logits[:, :, g].float(), torch.zeros_like(distance))
        log_p = logits.log_softmax(-1)
        nll = -torch.logsumexp(log_p.masked_fill(~hit, float("-inf")), dim=-1)
        # The offset is learnt from the token the readout read (in training the recorded one),
        # where that one is a hit.
        choice = out.pointer_choice[:, :, g, None]  # (B, T, 1)
        anchor = states.coords.float().gather(2, choice[..., None].expand(-1, -1, 1, 2))[:, :, 0]
        useful = hit.gather(2, choice)[..., 0] & seen[..., 0]
        scale = self.model.offset_scale[g].float()
        offset_loss = F.smooth_l1_loss(out.pointer_offset[:, :, g].float() / scale, (goal - anchor) / scale,
                                       reduction="none").sum(-1)
        zero = torch.zeros_like(nll)
        return torch.where(seen[..., 0], nll, zero), torch.where(useful, offset_loss, zero)

    def metric_names(self) -> list[str]:
        """Every key of ``BCOutput.metric_sums`` (the same for every batch)."""
        space, names = self.action_space, self.action_space.dim_names
        keys = [f"acc/{n}" for n in names] if space.is_discrete else []
        keys += [f"abs_err/{n}" for n in names] + [f"hit/{n}" for n in names if n in self.tolerances]
        for ix, iy in space.spec.position_pairs:
            keys.append(f"pos_err/{names[ix]}_{names[iy]}")
            if names[ix] in self.tolerances:
                keys.append(f"pos_hit/{names[ix]}_{names[iy]}")
        return keys

    def _metrics(self, physical: torch.Tensor, prediction: torch.Tensor, target: torch.Tensor,
                 target_physical: torch.Tensor, weight: torch.Tensor) -> dict[str, torch.Tensor]:
        space = self.action_space
        names = space.dim_names
        w = weight.to(physical.dtype)[..., None]
        err = physical - target_physical
        for i in space.spec.angle_dims:
            err[..., i] = wrapped(err[..., i])
        err = err.abs()
        sums: dict[str, torch.Tensor] = {}
        abs_sums = (err * w).sum((0, 1))
        if space.is_discrete:
            acc_sums = ((prediction == target).to(w.dtype) * w).sum((0, 1))
        for i, name in enumerate(names):
            if space.is_discrete:
                sums[f"acc/{name}"] = acc_sums[i]
            sums[f"abs_err/{name}"] = abs_sums[i]
            if name in self.tolerances:
                sums[f"hit/{name}"] = ((err[..., i] <= self.tolerances[name]).to(w.dtype) * w[..., 0]).sum()
        for ix, iy in space.spec.position_pairs:
            key = f"{names[ix]}_{names[iy]}"
            distance = (physical[..., [ix, iy]] - target_physical[..., [ix, iy]]).norm(dim=-1)
            sums[f"pos_err/{key}"] = (distance * w[..., 0]).sum()
            if names[ix] in self.tolerances:
                sums[f"pos_hit/{key}"] = ((distance <= self.tolerances[names[ix]]).to(w.dtype) * w[..., 0]).sum()
        return sums


METRIC_PREFIXES = ("acc", "abs_err", "hit", "pos_err", "pos_hit")


def summarize_metrics(metric_sums: dict[str, torch.Tensor], num_steps: float) -> dict[str, float]:
    """Turn accumulated sums into means; add the mean over dimensions of the per-dimension metrics."""
    out = {key: float(value) / max(num_steps, 1.0) for key, value in metric_sums.items()}
    for prefix in ("acc", "hit", "pos_hit"):
        values = [v for k, v in out.items() if k.startswith(prefix + "/")]
        if values:
            out[prefix] = sum(values) / len(values)
    return out
