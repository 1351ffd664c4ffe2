"""Astra: a transformer over embodied trajectories (paper sections 3.1-3.3, appendix A.2).

Tokens (see ``layout.py``): prompt tokens from a frozen language encoder, one token per camera
image, N learnable action queries per step (decoding only) and one token per action dimension.
Attention is masked by ``layout.attention_mask``: causal between segments and bidirectional
inside a segment (``attention="trajectory"``), or plain causal (the ablation). All N action
dimensions of a step are read off the N query tokens in parallel; the Gato-like ablation
(``action_decoding="autoregressive"``) predicts a_{i,t} from the token before it instead.

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


@dataclass
class AstraConfig:
    n_layer: int = 6
    n_head: int = 8
    n_embd: int = 512
    mlp_ratio: int = 4
    dropout: float = 0.0
    max_timesteps: int = 16  # context window in steps (T); also the size of the timestep table
    cameras: list[str] = field(default_factory=lambda: ["front"])  # ordered: one token each
    attention: Literal["trajectory", "causal"] = "trajectory"
    action_decoding: Literal["queries", "autoregressive"] = "queries"
    cdl_dim: int = 128  # size of the trajectory embedding f(tau) used by CDL
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
    def __init__(self, cfg: AstraConfig, action_stats: ActionStats) -> None:
        super().__init__()
        self.cfg = cfg
        self.action_space = ActionSpace(cfg.action_space, action_stats)
        E, N, M = cfg.n_embd, self.action_space.dim, len(cfg.cameras)
        K = self.action_space.head_size

        self.vision = VisionEncoder(cfg.vision)
        self.language = TextEncoder(cfg.language)
        self.image_proj = nn.Linear(self.vision.out_dim, E)
        self.prompt_proj = nn.Linear(self.language.out_dim, E)

        self.camera_emb = nn.Embedding(M, E)  # which camera a state token comes from
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

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 RGB (B, T, M, H, W, 3) -> image tokens (B, T, M, E), before camera/time embeddings."""
        return self.image_proj(self.vision(images))

    def state_tokens(self, image_tokens: torch.Tensor, t0: int = 0) -> torch.Tensor:
        """(B, T, M, E) image tokens of steps t0.. -> state tokens with camera + timestep embeddings."""
        T = image_tokens.shape[1]
        time = self.time_emb.weight[t0 : t0 + T][None, :, None]
        return image_tokens + self.camera_emb.weight[None, None] + time

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
            layout.prompt_len, layout.num_cameras, layout.action_dim, layout.num_steps,
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

    def _embed_trajectory(
        self,
        layout: TokenLayout,
        prompt: torch.Tensor,
        prompt_mask: torch.Tensor,
        image_tokens: torch.Tensor,
        actions: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        B, T = image_tokens.shape[:2]
        x = prompt.new_zeros(B, layout.num_tokens, prompt.shape[-1])
        x[:, : layout.prompt_len] = prompt
        x[:, layout.state_index.flatten()] = self.state_tokens(image_tokens).flatten(1, 2)
        x[:, layout.action_index.flatten()] = self.action_tokens(actions).flatten(1, 2)
        if layout.action_queries:
            x[:, layout.query_index.flatten()] = self.query_tokens(B, T).flatten(1, 2)
        # Padded prompt tokens are hidden from every token (keys only).
        key_valid = torch.ones(B, layout.num_tokens, dtype=torch.bool, device=x.device)
        key_valid[:, : layout.prompt_len] = prompt_mask
        mask = self.layout_mask(layout, x.device)[None, None] & key_valid[:, None, None, :]
        return x, mask

    def forward(
        self,
        prompt: torch.Tensor,
        prompt_mask: torch.Tensor,
        image_tokens: torch.Tensor,
        actions: torch.Tensor,
        step_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Teacher-forced decoding of every step of a window -> head output (B, T, N, K).

        ``step_mask`` (B, T) marks real steps; padding is on the right. Padded steps come after
        every real one, so the causal structure already hides them; their outputs are garbage
        that the criterion masks out.
        """
        B, T, M = image_tokens.shape[:3]
        self._check_window(T, M, actions)
        layout = TokenLayout(prompt.shape[1], M, self.action_space.dim, T, self.uses_queries)
        x, mask = self._embed_trajectory(layout, prompt, prompt_mask, image_tokens, actions)
        h = self.forward_tokens(x, mask)
        if self.uses_queries:
            read = layout.query_index
        else:  # Gato-like: a_{i,t} is read off the token before it (s_{M,t} for the first dimension)
            read = layout.action_index - 1
        return self.predict(h[:, read.flatten()].view(B, T, self.action_space.dim, -1))

    def encode_trajectory(
        self,
        prompt: torch.Tensor,
        prompt_mask: torch.Tensor,
        image_tokens: torch.Tensor,
        actions: torch.Tensor,
        step_mask: torch.Tensor,
    ) -> torch.Tensor:
        """CDL's f(tau): encoding mask (no queries), attention-pool the last real action segment."""
        B, T, M = image_tokens.shape[:3]
        self._check_window(T, M, actions)
        layout = TokenLayout(prompt.shape[1], M, self.action_space.dim, T, action_queries=False)
        x, mask = self._embed_trajectory(layout, prompt, prompt_mask, image_tokens, actions)
        h = self.forward_tokens(x, mask)
        last = step_mask.long().sum(1).clamp(min=1) - 1  # index of the last real step
        segment = h[torch.arange(B, device=h.device)[:, None], layout.action_index.to(h.device)[last]]
        weights = self.cdl_pool(segment).softmax(dim=1)  # (B, N, 1)
        return self.cdl_proj((weights * segment).sum(1))

    def _check_window(self, T: int, M: int, actions: torch.Tensor) -> None:
        if T > self.cfg.max_timesteps:
            raise ValueError(f"window of {T} steps exceeds max_timesteps={self.cfg.max_timesteps}")
        if M != len(self.cfg.cameras):
            raise ValueError(f"got {M} cameras per state, model has {self.cfg.cameras}")
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
