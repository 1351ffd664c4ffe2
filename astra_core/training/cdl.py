"""Contrastive dynamics learning (paper section 3.3, Eq. 2).

For every anchor trajectory tau = (p, s_1, a_1, ..., s_T, a_T) in a batch:

* the positive tau+ is the anchor with augmented images and perturbed actions (``augment.py``);
* each negative tau- keeps the anchor's prompt and takes every state / action segment either from
  the anchor or, at the same timestep, from ANOTHER trajectory of the batch, e.g.
  tau- = (p, s'_1, a_1, ..., s_T, a'_T). At least one segment is foreign and at least one is the
  anchor's own, so a negative is neither the anchor nor simply another demonstration.

The paper's three principles are enforced by construction: (1) no random states or actions -- every
segment is a real (possibly augmented) one from the batch; (2) both the anchor's kept segments and
the foreign segments come from the original OR the augmented version, chosen at random per negative,
so "is it augmented" does not give the positive away; (3) segments keep their timestep, there is no
shuffling along time. Foreign segments come from trajectories of other *episodes* when episode ids
are known: two windows of one demonstration are consistent with each other's dynamics.

Similarity (our choice, documented): the paper writes s(x, y) = exp(f(x) . f(y)). We L2-normalise
f(.) and divide by a temperature (default 0.1), the usual InfoNCE form (CPC/SimCLR): raw dot products
are unbounded, so the loss can be driven down by inflating embedding norms instead of learning
dynamics, and bf16 logits overflow. ``normalize=False, temperature=1`` gives the paper's exact form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

ORIGINAL, AUGMENTED = 0, 1


@dataclass
class NegativePlan:
    """How each of the K negatives of each anchor is assembled (all tensors on CPU)."""

    source: torch.Tensor  # (B, K) long: index of the other trajectory in the batch
    state_from_source: torch.Tensor  # (B, K, T) bool: s_t comes from the source, else from the anchor
    action_from_source: torch.Tensor  # (B, K, T) bool: a_t comes from the source, else from the anchor
    anchor_version: torch.Tensor  # (B, K) long: ORIGINAL or AUGMENTED for the anchor's kept segments
    source_version: torch.Tensor  # (B, K) long: ORIGINAL or AUGMENTED for the foreign segments
    valid: torch.Tensor  # (B,) bool: the anchor has another trajectory to draw from

    def first(self, count: int) -> "NegativePlan":
        """The plan of the first ``count`` anchors only (their sources still range over the batch)."""
        return NegativePlan(*(x[:count] for x in (self.source, self.state_from_source, self.action_from_source,
                                                   self.anchor_version, self.source_version, self.valid)))


def plan_negatives(
    step_mask: torch.Tensor,
    num_negatives: int,
    replace_prob: float = 0.5,
    episode_ids: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> NegativePlan:
    """Choose sources, segments and versions for ``num_negatives`` negatives per anchor.

    step_mask: bool (B, T), padding on the right. episode_ids: (B,) or None (then every other row of
    the batch counts as another trajectory).
    """
    step_mask = step_mask.cpu().bool()
    B, T = step_mask.shape
    K = num_negatives
    if B < 2:
        raise ValueError(f"contrastive dynamics learning needs a batch of at least 2 trajectories, got {B}")
    if not step_mask[:, 0].all():
        raise ValueError("step_mask: every trajectory needs a real first step (padding goes on the right)")
    ids = torch.arange(B) if episode_ids is None else episode_ids.cpu().long()
    eligible = ids[:, None] != ids[None, :]  # (B, B): j may serve as a source for anchor b
    valid = eligible.any(1)

    # Sources: uniform over the eligible trajectories, with replacement when K exceeds them.
    weights = eligible.float() + (~valid).float()[:, None]  # rows without a source: any (masked out later)
    source = torch.multinomial(weights, K, replacement=True, generator=generator)  # (B, K)

    # Segment t can be swapped only where both anchor and source have a real step t.
    overlap = step_mask[:, None, :] & step_mask[source]  # (B, K, T)
    swappable = torch.cat([overlap, overlap], dim=-1)  # (B, K, 2T): states then actions
    anchor_real = torch.cat([step_mask, step_mask], dim=-1)[:, None, :].expand(B, K, 2 * T)
    swap = (torch.rand((B, K, 2 * T), generator=generator) < replace_prob) & swappable
    # At least one foreign segment: otherwise the "negative" is the anchor itself.
    none = swap.sum(-1) == 0
    pick = _random_true_index(swappable, generator)
    swap[none] = swap[none] | F.one_hot(pick[none], 2 * T).bool()
    # At least one segment of the anchor: otherwise it is another demonstration under prompt p.
    full = swap.sum(-1) == anchor_real.sum(-1)
    pick = _random_true_index(swap, generator)
    swap[full] = swap[full] & ~F.one_hot(pick[full], 2 * T).bool()

    anchor_version = torch.randint(0, 2, (B, K), generator=generator)
    source_version = torch.randint(0, 2, (B, K), generator=generator)
    return NegativePlan(
        source=source,
        state_from_source=swap[..., :T],
        action_from_source=swap[..., T:],
        anchor_version=anchor_version,
        source_version=source_version,
        valid=valid,
    )


def _random_true_index(mask: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """For each row of a (..., S) bool mask, the index of a uniformly chosen True entry."""
    scores = torch.rand(mask.shape, generator=generator)
    return torch.where(mask, scores, torch.full_like(scores, -1.0)).argmax(-1)


def assemble_negatives(
    plan: NegativePlan,
    state_parts: Sequence[torch.Tensor],
    actions: torch.Tensor,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Build the negatives from both versions of the batch.

    state_parts: tensors (2, B, T, M, ...) -- [original, augmented] per-token state tensors
                 (features, validity, ...), all taken from the same segments.
    actions:     (2, B, T, N)    -- [original, perturbed] actions in model form.
    Returns the state tensors (A, K, T, M, ...) and actions (A, K, T, N) for the plan's A anchors
    (the first A trajectories of the batch; A = B unless the plan was cut with ``first``).
    """
    B, K = plan.source.shape
    device = actions.device
    anchor = torch.arange(B, device=device)[:, None].expand(B, K)
    source = plan.source.to(device)
    a_ver, s_ver = plan.anchor_version.to(device), plan.source_version.to(device)
    take_state = plan.state_from_source.to(device)  # (B, K, T)
    states = []
    for part in state_parts:
        own, foreign = part[a_ver, anchor], part[s_ver, source]  # (B, K, T, M, ...)
        states.append(torch.where(take_state.view(*take_state.shape, *[1] * (own.ndim - 3)), foreign, own))
    own_actions, foreign_actions = actions[a_ver, anchor], actions[s_ver, source]  # (B, K, T, N)
    take_action = plan.action_from_source.to(device)[..., None]
    return states, torch.where(take_action, foreign_actions, own_actions)


def info_nce(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor,
    temperature: float = 0.1,
    normalize: bool = True,
    weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 2: -log s(tau, tau+) / (s(tau, tau+) + sum_i s(tau, tau-_i)).

    anchor, positive (B, D); negatives (B, K, D); weight (B,) bool/float selects anchors that count.
    Returns (loss, accuracy) where accuracy is the fraction of anchors whose positive scores highest.
    """
    anchor, positive, negatives = anchor.float(), positive.float(), negatives.float()
    if normalize:
        anchor, positive, negatives = (F.normalize(x, dim=-1) for x in (anchor, positive, negatives))
    pos_logit = (anchor * positive).sum(-1, keepdim=True)  # (B, 1)
    neg_logits = torch.einsum("bd,bkd->bk", anchor, negatives)  # (B, K)
    logits = torch.cat([pos_logit, neg_logits], dim=1) / temperature
    per_anchor = F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device), reduction="none")
    correct = (logits[:, 1:] < logits[:, :1]).all(1).float()
    w = torch.ones_like(per_anchor) if weight is None else weight.to(per_anchor)
    count = w.sum().clamp(min=1.0)
    return (per_anchor * w).sum() / count, ((correct * w).sum() / count).detach()
