"""Astra: a transformer over embodied trajectories (paper sections 3.1-3.3, appendix A.2).

Tokens (see ``layout.py``): prompt tokens from a frozen language encoder; a state segment of M
tokens per step; N learnable action queries per step (decoding only); one token per action
dimension. Attention is masked by ``layout.attention_mask``: causal between segments and
bidirectional inside a segment (``attention="trajectory"``), or plain causal (the ablation). All N
action dimensions of a step are read off the N query tokens in parallel; the Gato-like ablation
(``action_decoding="autoregressive"``) predicts a_{i,t} from the token before it instead.

State tokens (``state_tokens``), M per step:

* ``pooled``  one token per camera image (the paper's ManiSkill setting);
* ``patches`` the vision encoder's feature map as a grid of tokens per camera;
* ``objects`` one token per object instance per camera (VIMA's object tokens): a crop of the image
  at the instance's box, plus the box itself; empty slots (fewer objects than ``max_objects``) are
  hidden from every token;
* plus, with ``proprio_dim > 0``, one proprioception token (normalised by dataset statistics).

Patch and object tokens carry Fourier features of their box. On a camera with a calibration (a
homography from the image to the work surface, recorded with the dataset) every such token also
knows its (x, y) on the table.

Readout (``readout``):

* ``heads``   one linear head per action dimension on its query (the paper's);
* ``pointer`` for each (x, y) position pair of the action space (pick, place), a pointer over the
  current step's state tokens that have table coordinates: the position is the chosen token's
  (x, y) plus a learned offset. The other dimensions (angles, z, gripper) keep their heads, read
  from their query plus the token the first pointer chose (an object's orientation lives in its
  own token). The choice is hard: the argmax, and in training the token nearest to the recorded
  position (teacher forcing), so the heads learn from the right object's token and see one token,
  never a blend, exactly as at run time. For SE(2) pick-and-place the place angle is predicted as the pick angle plus a
  rotation (bins over the circle): the rotation is what a pick-and-place does to the object and
  what an instruction names ("rotate it by 45 degrees"), while the absolute place angle also
  depends on how the object happened to lie. The action space's bins stay the output format.

The same blocks serve training (whole windows), CDL (the encoding mask, no queries, pooled last
segment) and streaming inference (``forward_tokens`` with a ``KVCache``; see ``runtime.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from astra_core.action_space import ActionSpace, ActionSpaceSpec, ActionStats
from astra_core.configuration import ConfigError, from_dict, load_yaml, to_dict
from astra_core.encoders import LanguageConfig, TextEncoder, VisionConfig, VisionEncoder
from astra_core.layout import TokenLayout, attention_mask
from astra_core.objects import (OBJECT_FIELDS, WHOLE_IMAGE, apply_homography, box_centres, check_homography,
                                fourier_features, grid_boxes)

StateTokens = Literal["pooled", "patches", "objects"]


@dataclass
class AstraConfig:
    n_layer: int = 6
    n_head: int = 8
    n_embd: int = 512
    mlp_ratio: int = 4
    dropout: float = 0.0
    max_timesteps: int = 16  # context window in steps (T); also the size of the timestep table
    cameras: list[str] = field(default_factory=lambda: ["front"])  # ordered
    attention: Literal["trajectory", "causal"] = "trajectory"
    action_decoding: Literal["queries", "autoregressive"] = "queries"
    cdl_dim: int = 128  # size of the trajectory embedding f(tau) used by CDL
    state_tokens: StateTokens = "pooled"
    max_objects: int = 8  # objects: token slots per camera (more instances: the largest are kept)
    box_frequencies: int = 6  # Fourier frequencies of a token's box (patches, objects)
    readout: Literal["heads", "pointer"] = "heads"
    # pointer readout, SE(2): the place angle as the pick angle plus a predicted rotation
    # ("relative") or as an absolute angle like every other head ("absolute", an ablation).
    place_rotation: Literal["relative", "absolute"] = "relative"
    proprio_dim: int = 0  # P > 0: one proprioception token per state segment
    # camera -> 3x3 homography from normalised image (u, v) to the action frame's table (x, y);
    # taken from the dataset's calibration at training time.
    calibration: dict[str, list[list[float]]] = field(default_factory=dict)
    vision: VisionConfig = field(default_factory=VisionConfig)
    language: LanguageConfig = field(default_factory=LanguageConfig)
    action_space: ActionSpaceSpec = field(default_factory=ActionSpaceSpec)

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        if min(self.n_layer, self.n_head, self.n_embd, self.max_timesteps, self.cdl_dim) < 1:
            raise ValueError("n_layer, n_head, n_embd, max_timesteps and cdl_dim must be >= 1")
        if not self.cameras or len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"cameras={self.cameras}: need at least one, names unique")
        if self.attention not in ("trajectory", "causal"):
            raise ValueError(f"attention={self.attention!r}: must be 'trajectory' or 'causal'")
        if self.action_decoding not in ("queries", "autoregressive"):
            raise ValueError(f"action_decoding={self.action_decoding!r}: must be 'queries' or 'autoregressive'")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout}: must be in [0, 1)")
        if self.state_tokens not in ("pooled", "patches", "objects"):
            raise ValueError(f"state_tokens={self.state_tokens!r}: must be 'pooled', 'patches' or 'objects'")
        if self.readout not in ("heads", "pointer"):
            raise ValueError(f"readout={self.readout!r}: must be 'heads' or 'pointer'")
        if self.place_rotation not in ("relative", "absolute"):
            raise ValueError(f"place_rotation={self.place_rotation!r}: must be 'relative' or 'absolute'")
        if self.max_objects < 1 or self.box_frequencies < 1 or self.proprio_dim < 0:
            raise ValueError("max_objects and box_frequencies must be >= 1, proprio_dim >= 0")
        for camera, homography in self.calibration.items():
            if camera not in self.cameras:
                raise ValueError(f"calibration for unknown camera {camera!r}; cameras are {self.cameras}")
            check_homography(homography, f"calibration[{camera!r}]")
        if self.vision.pooling == "flatten" and self.state_tokens != "objects":
            raise ValueError("vision.pooling=flatten is sized for object crops: use it with state_tokens=objects")
        if self.readout == "pointer":
            if self.state_tokens == "pooled":
                raise ValueError("readout=pointer points at state tokens with a place on the table: "
                                 "use state_tokens 'patches' or 'objects'")
            if not self.calibration:
                raise ValueError("readout=pointer needs a calibrated camera (calibration: a table homography "
                                 "for at least one camera, recorded with the dataset)")

    @classmethod
    def from_dict(cls, data: dict) -> "AstraConfig":
        return from_dict(cls, data)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "AstraConfig":
        try:
            return from_dict(cls, load_yaml(path))
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from err

    def to_dict(self) -> dict:
        return to_dict(self)


@dataclass
class States:
    """The state tokens of a window, before camera and timestep embeddings (``Astra.encode_states``)."""

    features: torch.Tensor  # (B, T, M, E)
    valid: torch.Tensor  # (B, T, M) bool: the token exists (empty object slots, padded steps: False)
    coords: torch.Tensor  # (B, T, M, 2) table (x, y) of the token (action frame units)
    has_coords: torch.Tensor  # (B, T, M) bool: valid and on a calibrated camera

    def map(self, fn) -> "States":
        """The same states with ``fn`` applied to each tensor (indexing, device moves)."""
        return States(fn(self.features), fn(self.valid), fn(self.coords), fn(self.has_coords))


@dataclass
class AstraOutput:
    """What the readout predicts for every step (``Astra.forward``)."""

    head: torch.Tensor  # (B, T, N, K): per-dimension logits (discrete) or normalised values (K = 1)
    # readout=pointer only: logits over the step's M state tokens per position pair (-inf: not a
    # candidate), the token chosen (the argmax; in training the recorded one), and the offset
    # (action frame units) added to the chosen token's coordinates.
    pointer_logits: Optional[torch.Tensor] = None  # (B, T, G, M)
    pointer_offset: Optional[torch.Tensor] = None  # (B, T, G, 2)
    pointer_choice: Optional[torch.Tensor] = None  # (B, T, G) long


@lru_cache(maxsize=128)
def _cached_mask(L: int, M: int, N: int, T: int, queries: bool, attention: str, causal_actions: bool,
                 device: torch.device) -> torch.Tensor:
    """Masks depend only on sizes: build each once per device (training reuses a handful)."""
    return attention_mask(L, M, N, T, queries, attention, causal_actions).to(device)


class KVCache:
    """Keys/values of every block for the tokens seen so far (preallocated, batch-first).

    Tokens are written at ``[length, length + S)``; only the committed prefix is reused, so
    tokens written past it (the action queries at the tail of a chunk) are simply overwritten.
    """

    def __init__(self, cfg: AstraConfig, batch: int, capacity: int, device, dtype) -> None:
        shape = (batch, cfg.n_head, capacity, cfg.n_embd // cfg.n_head)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        self.capacity = capacity
        self.length = 0


class SelfAttention(nn.Module):
    def __init__(self, cfg: AstraConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor, cache: Optional[KVCache], layer: int) -> torch.Tensor:
        B, S, E = x.shape
        q, k, v = self.qkv(x).view(B, S, 3, self.n_head, E // self.n_head).permute(2, 0, 3, 1, 4)
        if cache is not None:  # attend over the cached prefix plus this chunk
            end = cache.length + S
            cache.k[layer][:, :, cache.length : end] = k
            cache.v[layer][:, :, cache.length : end] = v
            k, v = cache.k[layer][:, :, :end], cache.v[layer][:, :, :end]
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(y.transpose(1, 2).reshape(B, S, E))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, cfg: AstraConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd)
        self.attn = SelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.n_embd, cfg.mlp_ratio * cfg.n_embd),
            nn.GELU(),
            nn.Linear(cfg.mlp_ratio * cfg.n_embd, cfg.n_embd),
            nn.Dropout(cfg.dropout),
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor, cache: Optional[KVCache], layer: int) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), mask, cache, layer)
        return x + self.mlp(self.ln_2(x))


class Astra(nn.Module):
    def __init__(self, cfg: AstraConfig, action_stats: ActionStats, proprio_stats: Optional[ActionStats] = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.action_space = ActionSpace(cfg.action_space, action_stats)
        E, N, C = cfg.n_embd, self.action_space.dim, len(cfg.cameras)
        K = self.action_space.head_size

        self.vision = VisionEncoder(cfg.vision)
        self.language = TextEncoder(cfg.language)
        feature_dim = self.vision.map_dim if cfg.state_tokens == "patches" else self.vision.out_dim
        self.image_proj = nn.Linear(feature_dim, E)
        self.prompt_proj = nn.Linear(self.language.out_dim, E)
        self.tokens_per_camera, self._grid = self._state_layout()
        # Where each state token is: Fourier features of its box (not for the one pooled token).
        self.box_emb = nn.Linear(2 * OBJECT_FIELDS * cfg.box_frequencies, E) if cfg.state_tokens != "pooled" else None

        self.proprio_stats = proprio_stats
        if cfg.proprio_dim:
            if proprio_stats is None or len(proprio_stats.names) != cfg.proprio_dim:
                raise ValueError(f"proprio_dim={cfg.proprio_dim} needs proprioception statistics with that many "
                                 f"dimensions, got {None if proprio_stats is None else proprio_stats.names}")
            self.register_buffer("proprio_mean", torch.tensor(proprio_stats.mean, dtype=torch.float32), persistent=False)
            std = torch.tensor(proprio_stats.std, dtype=torch.float32).clamp(min=1e-6)
            self.register_buffer("proprio_std", std, persistent=False)
            self.proprio_proj = nn.Linear(cfg.proprio_dim, E)
        # Which camera each state token comes from (the proprio token gets index C).
        token_camera = torch.arange(C).repeat_interleave(self.tokens_per_camera)
        if cfg.proprio_dim:
            token_camera = torch.cat([token_camera, torch.tensor([C])])
        self.register_buffer("token_camera", token_camera, persistent=False)
        homographies = torch.eye(3).repeat(C, 1, 1)
        calibrated = torch.zeros(C, dtype=torch.bool)
        for m, camera in enumerate(cfg.cameras):
            if camera in cfg.calibration:
                homographies[m] = torch.tensor(cfg.calibration[camera], dtype=torch.float32)
                calibrated[m] = True
        self.register_buffer("homographies", homographies, persistent=False)
        self.register_buffer("calibrated", calibrated, persistent=False)

        self.camera_emb = nn.Embedding(C + (1 if cfg.proprio_dim else 0), E)  # which camera a state token is from
        self.dim_emb = nn.Embedding(N, E)  # which dimension an action token holds
        self.time_emb = nn.Embedding(cfg.max_timesteps, E)  # step within the context window
        if self.action_space.is_discrete:  # one table of bins per dimension, flattened
            self.action_value_emb = nn.Embedding(N * K, E)
        else:  # a scalar per dimension, scaled onto a learned direction
            self.action_value_emb = nn.Parameter(torch.randn(N, E) * 0.02)
        # DETR-style learnable action queries: one per action dimension, shared over timesteps.
        self.query_emb = nn.Embedding(N, E) if self.uses_queries else None

        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(E)
        # One linear head per action dimension: (N, E, K).
        self.head_weight = nn.Parameter(torch.randn(N, E, K) * 0.02)
        self.head_bias = nn.Parameter(torch.zeros(N, K))
        if cfg.readout == "pointer":
            G = len(self.position_pairs)
            # Per position pair: a query projection, an offset head; one key projection for all.
            self.pointer_query = nn.Parameter(torch.randn(G, E, E) * 0.02)
            self.pointer_key = nn.Linear(E, E)
            self.pointer_offset = nn.Parameter(torch.zeros(G, E, 2))  # starts at the token's own position
            self.pointer_offset_bias = nn.Parameter(torch.zeros(G, 2))
            # The other dimensions combine what the query read (e.g. "by 45 degrees") with the
            # chosen token (the object's orientation): a residual MLP before the linear heads, so
            # the combination need not be linear.
            self.readout_mlp = nn.Sequential(nn.LayerNorm(E), nn.Linear(E, cfg.mlp_ratio * E), nn.GELU(),
                                             nn.Linear(cfg.mlp_ratio * E, E))
            # Offsets are predicted in units of the positions' spread in the data.
            scale = torch.tensor([[action_stats.std[i], action_stats.std[j]] for i, j in self.position_pairs])
            self.register_buffer("offset_scale", scale.float().clamp(min=1e-6), persistent=False)
        # CDL head f(.): attention pooling over the last action segment, then a linear layer.
        self.cdl_pool = nn.Linear(E, 1)
        self.cdl_proj = nn.Linear(E, cfg.cdl_dim)

        self._init_transformer_weights()

    # ----------------------------------------------------------------------------------------
    # construction helpers

    @property
    def uses_queries(self) -> bool:
        return self.cfg.action_decoding == "queries"

    @property
    def camera_names(self) -> list[str]:
        return list(self.cfg.cameras)

    @property
    def state_len(self) -> int:
        """M: tokens per state segment."""
        return len(self.cfg.cameras) * self.tokens_per_camera + (1 if self.cfg.proprio_dim else 0)

    @property
    def position_pairs(self) -> list[tuple[int, int]]:
        """(x, y) dimension pairs the pointer readout predicts (empty with the heads readout)."""
        return self.action_space.spec.position_pairs if self.cfg.readout == "pointer" else []

    def _state_layout(self) -> tuple[int, Optional[tuple[int, int]]]:
        """Tokens per camera, and the feature-map grid (h, w) of patch tokens."""
        if self.cfg.state_tokens == "pooled":
            return 1, None
        if self.cfg.state_tokens == "objects":
            return self.cfg.max_objects, None
        size = self.cfg.vision.image_size
        with torch.no_grad():  # the grid follows from the encoder's strides: measure it once
            was_training = self.vision.training
            fmap = self.vision.eval().patch_features(torch.zeros(1, 3, size, size))
            self.vision.train(was_training)
        return fmap.shape[1] * fmap.shape[2], (fmap.shape[1], fmap.shape[2])

    def transformer_modules(self) -> list[nn.Module]:
        """Everything except the vision and language encoders (for parameter counts)."""
        return [m for name, m in self.named_children() if name not in ("vision", "language")]

    def _init_transformer_weights(self) -> None:
        for name, sub in self.named_modules():
            if name.startswith(("vision", "language")):  # encoders keep their own (pretrained) init
                continue
            if isinstance(sub, nn.Linear):
                nn.init.normal_(sub.weight, std=0.02)
                nn.init.zeros_(sub.bias)
            elif isinstance(sub, nn.Embedding):
                nn.init.normal_(sub.weight, std=0.02)
        for block in self.blocks:  # GPT-2: scale residual projections by depth
            nn.init.normal_(block.attn.proj.weight, std=0.02 / math.sqrt(2 * self.cfg.n_layer))
            nn.init.normal_(block.mlp[2].weight, std=0.02 / math.sqrt(2 * self.cfg.n_layer))

    # ----------------------------------------------------------------------------------------
    # token embeddings

    def encode_prompt(self, instructions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Instructions -> prompt tokens (B, L, E) and validity mask (B, L)."""
        features, mask = self.language(instructions)
        return self.prompt_proj(features.to(self.prompt_proj.weight.dtype)), mask

    def encode_states(
        self,
        images: torch.Tensor | Sequence[torch.Tensor],
        object_boxes: Optional[torch.Tensor] = None,
        object_valid: Optional[torch.Tensor] = None,
        proprio: Optional[torch.Tensor] = None,
        step_mask: Optional[torch.Tensor] = None,
    ) -> States:
        """Observations of a window -> state tokens.

        images uint8 (B, T, C, H, W, 3) RGB, cameras in config order (or a list of C tensors
        (B, T, H_c, W_c, 3) when cameras differ in size); objects (B, T, C, K, 6): box and centroid
        (u0, v0, u1, v1, cu, cv) normalised, and valid (B, T, C, K) from ``objects.boxes_from_mask``; proprio (B, T, P)
        in physical units. Only real steps (``step_mask``, default all) go through the encoders:
        padding never does, and its tokens are invalid.
        """
        cfg = self.cfg
        per_camera = list(images.unbind(2)) if isinstance(images, torch.Tensor) else list(images)
        C = len(per_camera)
        B, T = per_camera[0].shape[:2]
        if C != len(cfg.cameras):
            raise ValueError(f"got {C} cameras per state, model has {cfg.cameras}")
        device = per_camera[0].device
        real = torch.ones(B, T, dtype=torch.bool, device=device) if step_mask is None else step_mask.bool()
        rows = real.flatten().nonzero().squeeze(1)  # (R,) indices of real steps in B*T
        R, Kc, E = rows.numel(), self.tokens_per_camera, cfg.n_embd
        # Each camera is resized to the encoder's input size first, so sizes may differ.
        x = torch.stack([self.vision.preprocess(cam.flatten(0, 1)[rows]) for cam in per_camera], 1).flatten(0, 1)

        if cfg.state_tokens == "pooled":
            features = self.image_proj(self.vision.pool(x)).view(R, C, 1, E)
            boxes = torch.tensor(WHOLE_IMAGE, device=device).expand(R, C, 1, OBJECT_FIELDS)
            valid = torch.ones(R, C, 1, dtype=torch.bool, device=device)
        elif cfg.state_tokens == "patches":
            features = self.image_proj(self.vision.patch_features(x)).view(R, C, Kc, E)
            boxes = grid_boxes(*self._grid).to(device).expand(R, C, Kc, OBJECT_FIELDS)
            valid = torch.ones(R, C, Kc, dtype=torch.bool, device=device)
        else:
            if object_boxes is None or object_valid is None:
                raise ValueError("this model uses object tokens: give object_boxes and object_valid "
                                 "(from an instance mask per camera)")
            if object_boxes.shape[:4] != (B, T, C, Kc) or object_valid.shape != (B, T, C, Kc):
                raise ValueError(f"object boxes {tuple(object_boxes.shape)} / valid {tuple(object_valid.shape)}: "
                                 f"expected ({B}, {T}, {C}, {Kc}, {OBJECT_FIELDS}) / ({B}, {T}, {C}, {Kc}) "
                                 f"(max_objects={Kc})")
            boxes = object_boxes.flatten(0, 1)[rows].to(device, torch.float32)  # (R, C, K, 4)
            valid = object_valid.flatten(0, 1)[rows].to(device).bool()
            crops = self.vision.crop_features(x, boxes.flatten(0, 1), valid.flatten(0, 1))
            features = self.image_proj(crops).view(R, C, Kc, E)
        if self.box_emb is not None:
            features = features + self.box_emb(fourier_features(boxes, cfg.box_frequencies))
        coords = apply_homography(self.homographies, box_centres(boxes))  # (R, C, K, 2)
        has_coords = valid & self.calibrated[:, None]
        parts = [features.flatten(1, 2)], [valid.flatten(1, 2)], [coords.flatten(1, 2)], [has_coords.flatten(1, 2)]
        if cfg.proprio_dim:
            if proprio is None or proprio.shape != (B, T, cfg.proprio_dim):
                raise ValueError(f"this model takes proprioception of {cfg.proprio_dim} values per step, got "
                                 f"{None if proprio is None else tuple(proprio.shape)}")
            p = (proprio.flatten(0, 1)[rows].to(features) - self.proprio_mean) / self.proprio_std
            parts[0].append(self.proprio_proj(p)[:, None])
            parts[1].append(torch.ones(R, 1, dtype=torch.bool, device=p.device))
            parts[2].append(torch.zeros(R, 1, 2, device=p.device))
            parts[3].append(torch.zeros(R, 1, dtype=torch.bool, device=p.device))
        M = self.state_len

        def scatter(chunks: list[torch.Tensor]) -> torch.Tensor:
            x = torch.cat(chunks, dim=1)
            out = x.new_zeros(B * T, *x.shape[1:])
            out[rows] = x
            return out.view(B, T, M, *x.shape[2:])

        return States(*(scatter(p) for p in parts))

    def state_tokens(self, features: torch.Tensor, t0: int = 0) -> torch.Tensor:
        """(B, T, M, E) state features of steps t0.. -> tokens with camera + timestep embeddings."""
        T = features.shape[1]
        time = self.time_emb.weight[t0 : t0 + T][None, :, None]
        return features + self.camera_emb(self.token_camera)[None, None] + time

    def action_tokens(self, actions: torch.Tensor, t0: int = 0) -> torch.Tensor:
        """Actions in model form (B, T, N) -> action tokens (B, T, N, E)."""
        T, N = actions.shape[1], self.action_space.dim
        if self.action_space.is_discrete:
            offsets = torch.arange(N, device=actions.device) * self.action_space.head_size
            values = self.action_value_emb(actions.long() + offsets)
        else:
            values = actions[..., None].to(self.action_value_emb.dtype) * self.action_value_emb
        time = self.time_emb.weight[t0 : t0 + T][None, :, None]
        return values + self.dim_emb.weight[None, None] + time

    def query_tokens(self, batch: int, T: int, t0: int = 0) -> torch.Tensor:
        """(B, T, N, E): the shared queries plus the timestep embedding of the step they decode."""
        time = self.time_emb.weight[t0 : t0 + T][None, :, None]
        return (self.query_emb.weight[None, None] + time).expand(batch, -1, -1, -1)

    # ----------------------------------------------------------------------------------------
    # transformer

    def layout_mask(self, layout: TokenLayout, device: Optional[torch.device] = None) -> torch.Tensor:
        return _cached_mask(
            layout.prompt_len, layout.state_len, layout.action_dim, layout.num_steps,
            layout.action_queries, self.cfg.attention, not self.uses_queries,
            torch.device(device) if device is not None else self.head_weight.device,
        )

    def forward_tokens(self, x: torch.Tensor, mask: torch.Tensor, cache: Optional[KVCache] = None) -> torch.Tensor:
        """Run the blocks over tokens x (B, S, E); with a cache, x is appended to it."""
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, mask, cache, i)
        return self.ln_f(x)

    def predict(self, hidden: torch.Tensor) -> torch.Tensor:
        """Hidden states that decode actions (B, T, N, E) -> head output (B, T, N, K)."""
        return torch.einsum("btne,nek->btnk", hidden, self.head_weight) + self.head_bias

    def readout(self, read: torch.Tensor, state_hidden: torch.Tensor, states: States,
                pointer_target: Optional[torch.Tensor] = None) -> AstraOutput:
        """Hidden states of the tokens that decode each dimension (B, T, N, E) and of the step's state
        tokens (B, T, M, E) -> predictions (see the module docstring for the pointer readout).
        ``pointer_target`` (B, T, G): the tokens to read from instead of the argmax (training)."""
        pairs = self.position_pairs
        if not pairs:
            return AstraOutput(self.predict(read))
        E = read.shape[-1]
        firsts = read[:, :, [x for x, _ in pairs]]  # (B, T, G, E): the pair's x dimension asks
        queries = torch.einsum("btge,gef->btgf", firsts, self.pointer_query)
        keys = self.pointer_key(state_hidden)  # (B, T, M, E)
        logits = torch.einsum("btge,btme->btgm", queries, keys) / math.sqrt(E)
        candidate = states.has_coords[:, :, None, :]
        logits = logits.masked_fill(~candidate, float("-inf"))
        # A step without any candidate (no object seen) chooses token 0; decoding such a step is
        # refused (runtime) and its loss masked (criterion).
        choice = logits.argmax(-1) if pointer_target is None else pointer_target
        index = choice[..., None].expand(*choice.shape, state_hidden.shape[-1])  # (B, T, G, E)
        chosen = state_hidden.gather(2, index)  # the chosen token's hidden state per pair
        offset = torch.einsum("btge,gec->btgc", firsts + chosen, self.pointer_offset) + self.pointer_offset_bias
        context = read + chosen[:, :, :1]  # every dimension also reads the first pointer's token
        context = context + self.readout_mlp(context)
        return AstraOutput(self.predict(context), logits, offset * self.offset_scale, choice)

    def nearest_tokens(self, states: States, actions_physical: torch.Tensor) -> torch.Tensor:
        """(B, T, G): per position pair, the state token with coordinates nearest to the recorded
        position (the pointer's teacher); 0 where no token has coordinates."""
        goals = torch.stack([actions_physical[..., [ix, iy]] for ix, iy in self.position_pairs], dim=2)  # (B, T, G, 2)
        distance = (states.coords[:, :, None].float() - goals[:, :, :, None].float()).norm(dim=-1)  # (B, T, G, M)
        return distance.masked_fill(~states.has_coords[:, :, None], float("inf")).argmin(-1)

    @property
    def relative_rotation(self) -> Optional[tuple[int, int]]:
        """(pick angle, place angle) dimensions when the place angle is read as pick + rotation."""
        if not self.position_pairs or self.cfg.place_rotation != "relative":
            return None
        return self.action_space.spec.rotation_pair

    def rotation_bins(self, rotation: torch.Tensor) -> torch.Tensor:
        """Rotations (radians, any range) -> bins of the head that predicts them: K bins over the circle."""
        K = self.action_space.head_size
        unit = (torch.remainder(rotation.double() + math.pi, 2 * math.pi)) / (2 * math.pi)
        return torch.round(unit * K).long() % K

    def rotation_of_bins(self, bins: torch.Tensor) -> torch.Tensor:
        return bins.double() * (2 * math.pi / self.action_space.head_size) - math.pi

    def decode(self, out: AstraOutput, states: States) -> tuple[torch.Tensor, torch.Tensor]:
        """Predictions -> (physical actions (B, T, N) float64, model form (B, T, N))."""
        space = self.action_space
        model_form = space.decode(out.head)
        physical = space.from_model(model_form)
        if out.pointer_logits is None:
            return physical, model_form
        if self.relative_rotation is not None:
            pick, place = self.relative_rotation
            turned = physical[..., pick] + self.rotation_of_bins(model_form[..., place])
            physical[..., place] = torch.remainder(turned + math.pi, 2 * math.pi) - math.pi
        choice = out.pointer_choice  # (B, T, G)
        coords = states.coords.to(torch.float64)
        lo, hi = space.stats.min, space.stats.max
        for g, (ix, iy) in enumerate(self.position_pairs):
            picked = coords.gather(2, choice[:, :, g, None, None].expand(-1, -1, 1, 2))[:, :, 0]
            position = picked + out.pointer_offset[:, :, g].to(torch.float64)
            # within the trained range, as a bin would be
            physical[..., ix] = position[..., 0].clamp(lo[ix], hi[ix])
            physical[..., iy] = position[..., 1].clamp(lo[iy], hi[iy])
        return physical, space.to_model(physical)

    def _embed_trajectory(
        self,
        layout: TokenLayout,
        prompt: torch.Tensor,
        prompt_mask: torch.Tensor,
        states: States,
        actions: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        B, T = states.features.shape[:2]
        x = prompt.new_zeros(B, layout.num_tokens, prompt.shape[-1])
        x[:, : layout.prompt_len] = prompt
        x[:, layout.state_index.flatten()] = self.state_tokens(states.features).flatten(1, 2)
        x[:, layout.action_index.flatten()] = self.action_tokens(actions).flatten(1, 2)
        if layout.action_queries:
            x[:, layout.query_index.flatten()] = self.query_tokens(B, T).flatten(1, 2)
        # Padded prompt tokens and empty state slots are hidden from every token (keys only).
        key_valid = torch.ones(B, layout.num_tokens, dtype=torch.bool, device=x.device)
        key_valid[:, : layout.prompt_len] = prompt_mask
        key_valid[:, layout.state_index.flatten()] = states.valid.flatten(1, 2)
        mask = self.layout_mask(layout, x.device)[None, None] & key_valid[:, None, None, :]
        return x, mask

    def forward(
        self,
        prompt: torch.Tensor,
        prompt_mask: torch.Tensor,
        states: States,
        actions: torch.Tensor,
        step_mask: Optional[torch.Tensor] = None,
        pointer_target: Optional[torch.Tensor] = None,
    ) -> AstraOutput:
        """Teacher-forced decoding of every step of a window.

        ``step_mask`` (B, T) marks real steps; padding is on the right. Padded steps come after
        every real one, so the causal structure already hides them; their outputs are garbage
        that the criterion masks out. ``pointer_target`` (B, T, G): see ``readout``.
        """
        B, T, M = states.features.shape[:3]
        self._check_window(T, M, actions)
        layout = TokenLayout(prompt.shape[1], M, self.action_space.dim, T, self.uses_queries)
        x, mask = self._embed_trajectory(layout, prompt, prompt_mask, states, actions)
        h = self.forward_tokens(x, mask)
        if self.uses_queries:
            read = layout.query_index
        else:  # Gato-like: a_{i,t} is read off the token before it (the last state token for the first)
            read = layout.action_index - 1
        read_hidden = h[:, read.flatten()].view(B, T, self.action_space.dim, -1)
        state_hidden = h[:, layout.state_index.flatten()].view(B, T, M, -1)
        return self.readout(read_hidden, state_hidden, states, pointer_target)

    def encode_trajectory(
        self,
        prompt: torch.Tensor,
        prompt_mask: torch.Tensor,
        states: States,
        actions: torch.Tensor,
        step_mask: torch.Tensor,
    ) -> torch.Tensor:
        """CDL's f(tau): encoding mask (no queries), attention-pool the last real action segment."""
        B, T, M = states.features.shape[:3]
        self._check_window(T, M, actions)
        layout = TokenLayout(prompt.shape[1], M, self.action_space.dim, T, action_queries=False)
        x, mask = self._embed_trajectory(layout, prompt, prompt_mask, states, actions)
        h = self.forward_tokens(x, mask)
        last = step_mask.long().sum(1).clamp(min=1) - 1  # index of the last real step
        segment = h[torch.arange(B, device=h.device)[:, None], layout.action_index.to(h.device)[last]]
        weights = self.cdl_pool(segment).softmax(dim=1)  # (B, N, 1)
        return self.cdl_proj((weights * segment).sum(1))

    def _check_window(self, T: int, M: int, actions: torch.Tensor) -> None:
        if T > self.cfg.max_timesteps:
            raise ValueError(f"window of {T} steps exceeds max_timesteps={self.cfg.max_timesteps}")
        if M != self.state_len:
            raise ValueError(f"got {M} state tokens per step, the model has {self.state_len}")
        if actions.shape[-1] != self.action_space.dim:
            raise ValueError(f"actions have {actions.shape[-1]} dims, action space has {self.action_space.dim}")


def count_parameters(model: Astra) -> dict[str, int]:
    """Parameter counts: the Astra transformer (embeddings, blocks, heads) and each encoder."""
    transformer = sum(p.numel() for m in model.transformer_modules() for p in m.parameters())
    transformer += sum(p.numel() for name, p in model.named_parameters(recurse=False))
    return {
        "transformer": transformer,
        "transformer_blocks": sum(p.numel() for p in model.blocks.parameters()),
        "vision_encoder": sum(p.numel() for p in model.vision.parameters()),
        "language_encoder": sum(p.numel() for p in model.language.parameters()),
    }
