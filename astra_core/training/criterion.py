"""Behavior-cloning loss (paper Eq. 1) and action metrics, kept apart from the model (DETR style).

With teacher forcing the model predicts every action segment of the window at once, so the loss is
the mean over all real (unpadded) timesteps and all action dimensions of

* cross-entropy over the bins of each dimension, for discrete action spaces (= -log pi(a_t | ...));
* smooth-L1 (default) or MSE on normalised values, for the continuous action space.

Metrics are returned as *sums* plus a count of real steps, so they can be accumulated over
validation batches and all-reduced over ranks before dividing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from astra_core.action_space import ActionSpace


@dataclass
class BCOutput:
    loss: torch.Tensor  # scalar, differentiable
    # Per-dimension sums over real steps: "acc/<dim>" (discrete) or "abs_err/<dim>" (physical units).
    metric_sums: dict[str, torch.Tensor]
    num_steps: torch.Tensor  # number of real (unpadded) timesteps, float scalar


class BCCriterion:
    def __init__(self, action_space: ActionSpace, continuous_loss: Literal["smooth_l1", "mse"] = "smooth_l1") -> None:
        if continuous_loss not in ("smooth_l1", "mse"):
            raise ValueError(f"continuous_loss={continuous_loss!r}: must be 'smooth_l1' or 'mse'")
        self.action_space = action_space
        self.continuous_loss = continuous_loss

    def __call__(self, head_out: torch.Tensor, target: torch.Tensor, step_mask: torch.Tensor) -> BCOutput:
        """head_out (B, T, N, head_size); target (B, T, N) in model form; step_mask bool (B, T)."""
        space = self.action_space
        B, T, N = target.shape
        if head_out.shape != (B, T, N, space.head_size):
            raise ValueError(f"head output has shape {tuple(head_out.shape)}, expected {(B, T, N, space.head_size)}")
        if step_mask.shape != (B, T):
            raise ValueError(f"step_mask has shape {tuple(step_mask.shape)}, expected {(B, T)}")
        weight = step_mask.to(torch.float32)  # (B, T)
        num_steps = weight.sum()
        # Losses in fp32 even under bf16 autocast: log-softmax over hundreds of bins loses precision.
        logits = head_out.float()
        if space.is_discrete:
            per_dim = F.cross_entropy(logits.reshape(-1, space.head_size), target.reshape(-1).long(), reduction="none")
        else:
            fn = F.smooth_l1_loss if self.continuous_loss == "smooth_l1" else F.mse_loss
            per_dim = fn(logits[..., 0].reshape(-1), target.reshape(-1).float(), reduction="none")
        per_step = per_dim.view(B, T, N).mean(-1)  # (B, T)
        loss = (per_step * weight).sum() / num_steps.clamp(min=1.0)

        with torch.no_grad():
            prediction = space.decode(logits)  # (B, T, N) model form
            if space.is_discrete:
                hit = (prediction == target).float()
                sums = (hit * weight[..., None]).sum((0, 1))
                metric_sums = {f"acc/{name}": sums[i] for i, name in enumerate(space.dim_names)}
            else:
                err = (space.from_model(prediction) - space.from_model(target)).abs().float()
                sums = (err * weight[..., None]).sum((0, 1))
                metric_sums = {f"abs_err/{name}": sums[i] for i, name in enumerate(space.dim_names)}
        return BCOutput(loss=loss, metric_sums=metric_sums, num_steps=num_steps.detach())


def summarize_metrics(metric_sums: dict[str, torch.Tensor], num_steps: float) -> dict[str, float]:
    """Turn accumulated sums into means and add the mean over dimensions ("acc" / "abs_err")."""
    out = {key: float(value) / max(num_steps, 1.0) for key, value in metric_sums.items()}
    for prefix in ("acc", "abs_err"):
        values = [v for k, v in out.items() if k.startswith(prefix + "/")]
        if values:
            out[prefix] = sum(values) / len(values)
    return out
