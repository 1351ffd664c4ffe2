"""Token layout of an embodied trajectory and the attention mask of Astra (paper Figure 7).

A trajectory ``(p, s_1, a_1, ..., s_T, a_T)`` is laid out as tokens::

    p_1..p_L | s_1,1..s_M,1 | q_1..q_N | a_1,1..a_N,1 | s_1,2 .. | q_1..q_N | a_1,2 .. | ...
      prompt     state s_1    queries     action a_1     state s_2  queries   action a_2

A state segment holds M tokens: one per camera image in the paper's ManiSkill setting, or several
per camera (object tokens, patch tokens), plus an optional proprioception token; the mask only
depends on M. The action queries q_1..q_N are present only when decoding actions (Figure 7a); they
are left out when encoding a trajectory for contrastive dynamics learning (Figure 7b).

Mask convention (as ``torch.nn.functional.scaled_dot_product_attention``): ``mask[i, j]`` is True
when output token ``i`` may attend to input token ``j``. Rows are outputs ("left" in Figure 7),
columns are inputs ("top").
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import torch

Attention = Literal["trajectory", "causal"]

PROMPT, STATE, QUERY, ACTION = 0, 1, 2, 3


@dataclass(frozen=True)
class TokenLayout:
    """Positions of every token of a trajectory with ``num_steps`` timesteps."""

    prompt_len: int  # L
    state_len: int  # M: tokens per state segment (cameras x tokens per camera, + proprio)
    action_dim: int  # N
    num_steps: int  # T
    action_queries: bool  # decoding (True, Figure 7a) or encoding (False, Figure 7b)

    def __post_init__(self) -> None:
        if self.prompt_len < 1 or self.state_len < 1 or self.action_dim < 1 or self.num_steps < 0:
            raise ValueError(f"invalid token layout {self}")

    @property
    def step_len(self) -> int:
        """Tokens per timestep: a state segment, optionally the queries, an action segment."""
        return self.state_len + self.action_dim * (2 if self.action_queries else 1)

    @property
    def num_tokens(self) -> int:
        return self.prompt_len + self.num_steps * self.step_len

    def _step_offsets(self) -> torch.Tensor:
        return self.prompt_len + torch.arange(self.num_steps) * self.step_len  # (T,)

    @cached_property
    def state_index(self) -> torch.Tensor:
        """(T, M) token positions of the state segments."""
        return self._step_offsets()[:, None] + torch.arange(self.state_len)

    @cached_property
    def query_index(self) -> torch.Tensor:
        """(T, N) token positions of the action queries (empty when there are none)."""
        if not self.action_queries:
            return torch.empty(self.num_steps, 0, dtype=torch.long)
        return self._step_offsets()[:, None] + self.state_len + torch.arange(self.action_dim)

    @cached_property
    def action_index(self) -> torch.Tensor:
        """(T, N) token positions of the action segments."""
        start = self.state_len + (self.action_dim if self.action_queries else 0)
        return self._step_offsets()[:, None] + start + torch.arange(self.action_dim)

    @cached_property
    def kind(self) -> torch.Tensor:
        """(S,) token kind: PROMPT, STATE, QUERY or ACTION."""
        kind = torch.full((self.num_tokens,), PROMPT, dtype=torch.long)
        kind[self.state_index.flatten()] = STATE
        kind[self.query_index.flatten()] = QUERY
        kind[self.action_index.flatten()] = ACTION
        return kind

    @cached_property
    def segment(self) -> torch.Tensor:
        """(S,) segment number: prompt 0, s_t -> 2t-1, a_t -> 2t (t from 1).

        Queries of step t carry the number of s_t: they see exactly what s_t sees.
        """
        seg = torch.zeros(self.num_tokens, dtype=torch.long)
        t = torch.arange(1, self.num_steps + 1)[:, None]
        seg[self.state_index.flatten()] = (2 * t - 1).expand(-1, self.state_len).flatten()
        seg[self.query_index.flatten()] = (2 * t - 1).expand(-1, self.query_index.shape[1]).flatten()
        seg[self.action_index.flatten()] = (2 * t).expand(-1, self.action_dim).flatten()
        return seg


def attention_mask(
    prompt_len: int,
    state_len: int,
    action_dim: int,
    num_steps: int,
    action_queries: bool,
    attention: Attention = "trajectory",
    causal_action_segments: bool = False,
) -> torch.Tensor:
    """The (S, S) boolean attention mask of a trajectory; True = may attend.

    * ``attention="trajectory"``: a token sees every token of its own segment and of all earlier
      segments (bidirectional inside a segment, causal between segments).
    * ``attention="causal"``: a token sees itself and every token before it (the ablation).
    * Action queries (``action_queries=True``, Figure 7a) see the prompt, the states up to and
      including their own step and the actions before it. No token sees any query, a query
      included: queries only read.
    * ``action_queries=False`` is the encoding mask of Figure 7b.
    * ``causal_action_segments``: inside an action segment a token sees only the dimensions before
      it. Needed for Gato-like autoregressive decoding, where a_{i,t} is predicted from the token
      before it and must not see itself through a bidirectional segment.
    """
    layout = TokenLayout(prompt_len, state_len, action_dim, num_steps, action_queries)
    seg, pos = layout.segment, torch.arange(layout.num_tokens)
    if attention == "trajectory":
        mask = seg[None, :] <= seg[:, None]
    elif attention == "causal":
        mask = pos[None, :] <= pos[:, None]
    else:
        raise ValueError(f"attention={attention!r}: must be 'trajectory' or 'causal'")
    if causal_action_segments:
        is_action = layout.kind == ACTION
        same_action_segment = (seg[None, :] == seg[:, None]) & is_action[None, :] & is_action[:, None]
        mask &= ~(same_action_segment & (pos[None, :] > pos[:, None]))
    return mask & (layout.kind != QUERY)[None, :]
