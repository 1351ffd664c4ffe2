"""Augmentations that build CDL positive samples (paper section 3.3, Figure 4b).

* :func:`augment_images`: random shift (replicate-pad + crop, as in DrQ) and colour jitter
  (brightness, contrast, saturation). Parameters are drawn once per (trajectory, camera) and applied
  to every timestep of the window: a camera that moved or a light that changed stays so for the
  whole trajectory, which keeps the dynamics between consecutive states intact.
* :func:`perturb_actions`: "a slightly deviated path still reaches the goal" -- gaussian noise in
  normalised units for continuous actions, a uniform shift of up to ``k`` bins for discrete ones,
  clipped to the valid range.

All randomness comes from an explicit ``torch.Generator`` so a training step is reproducible from
(seed, step) alone, which makes resumed runs bit-identical.
"""

from __future__ import annotations

import torch

from astra_core.action_space import ActionSpace
from astra_core.training.config import AugmentConfig

_GRAY = (0.299, 0.587, 0.114)  # ITU-R 601 luma weights


def _uniform(shape: tuple[int, ...], low: float, high: float, generator: torch.Generator | None) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator)


def augment_images(images: torch.Tensor, cfg: AugmentConfig,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """images (B, T, M, H, W, 3) uint8 RGB -> (augmented copy, same shape and dtype; shift (B, M, 2)).

    ``shift`` is how far the content moved, as (du, dv) in normalised image units: object boxes of
    the augmented images are the original boxes plus it (:func:`shift_boxes`).
    """
    if images.dtype != torch.uint8 or images.ndim != 6 or images.shape[-1] != 3:
        raise ValueError(f"augment_images expects (B, T, M, H, W, 3) uint8, got {tuple(images.shape)} {images.dtype}")
    B, T, M, H, W, C = images.shape
    device = images.device
    n = B * M
    # (n, H, W, T*C) float: one picture per (trajectory, camera) holding all its timesteps as channels.
    x = images.permute(0, 2, 3, 4, 1, 5).reshape(n, H, W, T * C).float()

    pad_h, pad_w = int(round(cfg.shift * H)), int(round(cfg.shift * W))
    shift = torch.zeros(n, 2)
    if pad_h or pad_w:
        padded = torch.nn.functional.pad(x.permute(0, 3, 1, 2), (pad_w, pad_w, pad_h, pad_h), mode="replicate")
        padded = padded.permute(0, 2, 3, 1)  # (n, H + 2ph, W + 2pw, T*C)
        oy = torch.randint(0, 2 * pad_h + 1, (n,), generator=generator).to(device)
        ox = torch.randint(0, 2 * pad_w + 1, (n,), generator=generator).to(device)
        rows = oy[:, None] + torch.arange(H, device=device)  # (n, H)
        cols = ox[:, None] + torch.arange(W, device=device)  # (n, W)
        x = padded[torch.arange(n, device=device)[:, None, None], rows[:, :, None], cols[:, None, :]]
        # Output pixel c shows input pixel c + offset - pad: the content moves by pad - offset.
        shift = torch.stack([(pad_w - ox.cpu()) / W, (pad_h - oy.cpu()) / H], dim=-1).float()

    x = x.view(n, H, W, T, C)
    gray_w = torch.tensor(_GRAY, device=device)
    brightness = _uniform((n,), 1 - cfg.brightness, 1 + cfg.brightness, generator).to(device)
    contrast = _uniform((n,), 1 - cfg.contrast, 1 + cfg.contrast, generator).to(device)
    saturation = _uniform((n,), 1 - cfg.saturation, 1 + cfg.saturation, generator).to(device)
    view = (n, 1, 1, 1, 1)
    x = x * brightness.view(view)
    gray = (x * gray_w).sum(-1, keepdim=True)  # (n, H, W, T, 1)
    mean_gray = gray.mean(dim=(1, 2), keepdim=True)  # per picture and timestep
    x = (x - mean_gray) * contrast.view(view) + mean_gray
    gray = (x * gray_w).sum(-1, keepdim=True)
    x = (x - gray) * saturation.view(view) + gray
    x = x.clamp(0, 255).round().to(torch.uint8)
    return x.view(B, M, H, W, T, C).permute(0, 4, 1, 2, 3, 5).contiguous(), shift.view(B, M, 2).to(device)


def shift_boxes(boxes: torch.Tensor, valid: torch.Tensor, shift: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Objects (B, T, M, K, 6) of the original images (box, centroid) -> those of the shifted images
    (clipped to the image); an object shifted entirely out of the image becomes invalid."""
    moved = boxes + shift[:, None, :, None].repeat(1, 1, 1, 1, boxes.shape[-1] // 2).to(boxes)
    clipped = moved.clamp(0.0, 1.0)
    inside = (clipped[..., 2] > clipped[..., 0]) & (clipped[..., 3] > clipped[..., 1])
    return clipped, valid & inside


def perturb_actions(
    actions: torch.Tensor,
    action_space: ActionSpace,
    cfg: AugmentConfig,
    step_mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """actions (B, T, N) in model form -> perturbed copy (padded steps are left untouched)."""
    if action_space.is_discrete:
        k = cfg.action_bin_shift
        shift = torch.randint(-k, k + 1, actions.shape, generator=generator).to(actions.device)
        out = (actions.long() + shift).clamp(0, action_space.spec.num_bins - 1)
    else:
        noise = torch.randn(actions.shape, generator=generator).to(actions.device) * cfg.action_noise_std
        # The valid range in normalised units is the dataset's [min, max] mapped through the z-score.
        stats = action_space.stats
        lo = action_space.to_model(torch.tensor(stats.min, dtype=torch.float64, device=actions.device))
        hi = action_space.to_model(torch.tensor(stats.max, dtype=torch.float64, device=actions.device))
        out = torch.maximum(torch.minimum(actions.float() + noise, hi), lo)
    out = out.to(actions.dtype)
    if step_mask is not None:
        out = torch.where(step_mask[..., None], out, actions)
    return out
