"""Object boxes from instance masks, and image -> work-surface coordinates.

Object tokens (``AstraConfig.state_tokens = "objects"``, VIMA's setting) are cut from an image at
the bounding boxes of its object instances. The boxes always come from an instance-label mask of
the same image: a simulator renders it, a real robot gets it from a segmenter (a detector's boxes
can be rasterised into such a mask). Training data (``astra_core.data``) stores the masks, and the
runtime turns a live mask into boxes with the same function, :func:`boxes_from_mask`, so the model
sees identical inputs in training and on the robot.

An object is described by six numbers, ``(u0, v0, u1, v1, cu, cv)``: its bounding box and the
centroid of its pixels, in normalised image coordinates (``u = column / width``,
``v = row / height``, each in [0, 1]; box edges are pixel edges, so a box covering pixel columns
3..5 of a 10 px wide image has u0 = 0.3, u1 = 0.6; the centroid is the mean of pixel centres).
The centroid, not the box centre, says where the object is: for a triangle the two differ by
up to a third of its size, more than a grasp tolerates.

A camera may come with a ``table_homography`` (3x3) that maps ``(u, v, 1)`` to the action frame's
``(x, y, 1)`` on the work surface: then every token of that camera knows where on the table it is,
which the pointer readout uses to predict positions (``model.py``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

MIN_MASK_PIXELS = 4  # fragments smaller than this (a sliver of a hidden object) give no token


OBJECT_FIELDS = 6  # u0 v0 u1 v1 cu cv


def boxes_from_mask(mask: np.ndarray, max_objects: int, min_pixels: int = MIN_MASK_PIXELS) -> tuple[np.ndarray, np.ndarray]:
    """Instance-label mask (H, W) -> objects (max_objects, 6) float32 and valid (max_objects,) bool.

    Label 0 is background. Instances are ordered by label value (the model does not depend on the
    order: object tokens carry no slot embedding). When there are more instances than
    ``max_objects``, the largest ones (by pixel count) are kept; :func:`count_instances` tells a
    caller that wants to report it.
    """
    if mask.ndim != 2 or not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"instance mask must be a 2-D integer array, got {mask.dtype} {mask.shape}")
    if max_objects < 1:
        raise ValueError(f"max_objects={max_objects}: must be >= 1")
    H, W = mask.shape
    labels, counts = np.unique(mask, return_counts=True)
    keep = (labels != 0) & (counts >= min_pixels)
    labels, counts = labels[keep], counts[keep]
    if labels.size > max_objects:
        largest = np.sort(np.argsort(-counts, kind="stable")[:max_objects])
        labels = labels[largest]
    boxes = np.zeros((max_objects, OBJECT_FIELDS), dtype=np.float32)
    valid = np.zeros(max_objects, dtype=bool)
    for k, label in enumerate(labels):
        rr, cc = np.nonzero(mask == label)
        boxes[k] = (cc.min() / W, rr.min() / H, (cc.max() + 1) / W, (rr.max() + 1) / H,
                    (cc.mean() + 0.5) / W, (rr.mean() + 0.5) / H)
        valid[k] = True
    return boxes, valid


def count_instances(mask: np.ndarray, min_pixels: int = MIN_MASK_PIXELS) -> int:
    """Number of instances of a mask that would give a token (before the max_objects cap)."""
    labels, counts = np.unique(mask, return_counts=True)
    return int(((labels != 0) & (counts >= min_pixels)).sum())


WHOLE_IMAGE = (0.0, 0.0, 1.0, 1.0, 0.5, 0.5)  # the one token of ``pooled`` state tokens


def grid_boxes(rows: int, cols: int) -> torch.Tensor:
    """(rows * cols, 6) boxes and centres of the cells of a feature map, row-major (``patches``)."""
    v = torch.arange(rows, dtype=torch.float32)
    u = torch.arange(cols, dtype=torch.float32)
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    cells = [uu / cols, vv / rows, (uu + 1) / cols, (vv + 1) / rows, (uu + 0.5) / cols, (vv + 0.5) / rows]
    return torch.stack(cells, dim=-1).reshape(-1, OBJECT_FIELDS)


def box_centres(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 6) objects -> (..., 2) where they are: the centroid (u, v)."""
    return boxes[..., 4:6]


def apply_homography(homography: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Map points (..., M, K, 2) of camera m through homography (M, 3, 3) -> (..., M, K, 2)."""
    ones = torch.ones_like(uv[..., :1])
    p = torch.cat([uv, ones], dim=-1)  # (..., M, K, 3)
    q = torch.einsum("mij,...mkj->...mki", homography.to(uv.dtype), p)
    return q[..., :2] / q[..., 2:3]


def check_homography(value: Sequence[Sequence[float]], where: str) -> np.ndarray:
    """A 3x3 finite, invertible matrix, or ValueError naming ``where``."""
    h = np.asarray(value, dtype=np.float64)
    if h.shape != (3, 3) or not np.isfinite(h).all():
        raise ValueError(f"{where}: table_homography must be a finite 3x3 matrix, got {np.asarray(value).tolist()}")
    if abs(np.linalg.det(h)) < 1e-12:
        raise ValueError(f"{where}: table_homography is singular")
    return h


def fourier_features(x: torch.Tensor, num_frequencies: int) -> torch.Tensor:
    """(..., D) values in [0, 1] -> (..., 2 * D * F) sines and cosines at 2^k * pi, k < F."""
    freqs = (2.0 ** torch.arange(num_frequencies, device=x.device, dtype=x.dtype)) * torch.pi
    angles = x[..., None] * freqs  # (..., D, F)
    return torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)
