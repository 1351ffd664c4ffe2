"""CDL sample construction: negatives mix real segments of other trajectories; positives keep the anchor."""

import pytest
import torch

from astra_core.action_space import ActionSpace, ActionSpaceSpec, ActionStats
from astra_core.training.augment import augment_images, perturb_actions
from astra_core.training.cdl import assemble_negatives, info_nce, plan_negatives
from astra_core.training.config import AugmentConfig

B, T, M, E, N = 5, 4, 2, 3, 7


def _tagged_batch():
    """Tokens/actions whose values say where they come from: version*1000 + traj*100 + t."""
    tag = torch.zeros(2, B, T)
    for v in range(2):
        for b in range(B):
            for t in range(T):
                tag[v, b, t] = v * 1000 + b * 100 + t
    tokens = tag[..., None, None].expand(2, B, T, M, E).clone()
    actions = (tag + 10_000)[..., None].expand(2, B, T, N).clone()
    return tokens, actions


def _decode(value: float) -> tuple[int, int, int]:
    v = int(value) % 10_000
    return v // 1000, (v % 1000) // 100, v % 100  # version, trajectory, timestep


def test_negatives_mix_anchor_with_other_episodes_at_the_same_timestep():
    step_mask = torch.ones(B, T, dtype=torch.bool)
    step_mask[1, 2:] = False  # a shorter window: padding on the right
    episodes = torch.tensor([0, 0, 1, 2, 3])  # rows 0 and 1 are windows of the same episode
    g = torch.Generator().manual_seed(0)
    plan = plan_negatives(step_mask, num_negatives=6, episode_ids=episodes, generator=g)
    tokens, actions = _tagged_batch()
    (neg_tokens, neg_valid), neg_actions = assemble_negatives(plan, [tokens, tokens[..., 0] > 0], actions)
    assert neg_tokens.shape == (B, 6, T, M, E) and neg_actions.shape == (B, 6, T, N)
    assert neg_valid.shape == (B, 6, T, M)
    # every per-token tensor takes the same segments as the features
    torch.testing.assert_close(neg_valid, neg_tokens[..., 0] > 0)

    versions_seen, sources_seen = set(), set()
    for b in range(B):
        real_t = int(step_mask[b].sum())
        for k in range(6):
            own = foreign = 0
            for t in range(real_t):
                for value in (neg_tokens[b, k, t, 0, 0], neg_actions[b, k, t, 0]):
                    version, traj, step = _decode(value)
                    assert step == t, "segments keep their timestep (no time shuffle)"
                    versions_seen.add(version)
                    if traj == b:
                        own += 1
                    else:
                        foreign += 1
                        sources_seen.add((b, traj))
                        assert episodes[traj] != episodes[b], "a source must be another episode"
                        assert step_mask[traj, t], "foreign segments are real steps, never padding"
            assert own >= 1 and foreign >= 1, f"negative {k} of anchor {b} does not mix sources"
    assert versions_seen == {0, 1}, "both original and augmented segments must be used"
    assert len({src for _, src in sources_seen}) >= 3


def test_mixing_covers_states_and_actions_and_all_values_are_real():
    step_mask = torch.ones(B, T, dtype=torch.bool)
    g = torch.Generator().manual_seed(1)
    plan = plan_negatives(step_mask, num_negatives=50, generator=g)
    assert plan.state_from_source.any() and plan.action_from_source.any()
    # Some negatives swap the state of a step but keep its action, as in (p, s'_1, a_1, ...).
    assert (plan.state_from_source & ~plan.action_from_source).any()
    tokens, actions = _tagged_batch()
    (neg_tokens,), neg_actions = assemble_negatives(plan, [tokens], actions)
    real_values = set(tokens.flatten().tolist())
    assert set(neg_tokens.flatten().tolist()) <= real_values, "no random tensors in negatives"
    assert set(neg_actions.flatten().tolist()) <= set(actions.flatten().tolist())


def test_single_step_window_swaps_exactly_one_segment():
    step_mask = torch.ones(4, 1, dtype=torch.bool)
    plan = plan_negatives(step_mask, num_negatives=200, generator=torch.Generator().manual_seed(2))
    swapped = plan.state_from_source.int() + plan.action_from_source.int()
    assert (swapped == 1).all()


def test_batch_of_one_is_rejected_and_lonely_episodes_are_masked():
    with pytest.raises(ValueError, match="at least 2"):
        plan_negatives(torch.ones(1, 3, dtype=torch.bool), 4)
    plan = plan_negatives(torch.ones(3, 2, dtype=torch.bool), 2, episode_ids=torch.tensor([7, 7, 8]))
    assert plan.valid.tolist() == [True, True, True]
    plan = plan_negatives(torch.ones(2, 2, dtype=torch.bool), 2, episode_ids=torch.tensor([7, 7]))
    assert plan.valid.tolist() == [False, False]


def test_positive_keeps_the_anchor_content():
    torch.manual_seed(0)
    # Smooth images (gradients + a block) so a small shift keeps them close to the original.
    H = W = 32
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    images = torch.zeros(3, 2, 1, H, W, 3)
    for b in range(3):
        images[b, :, 0, ..., 0] = (xx * 4 + b * 60) % 256
        images[b, :, 0, ..., 1] = (yy * 6 + b * 90) % 256
        images[b, :, 0, 8 + 4 * b : 16 + 4 * b, 8:16, 2] = 255
    images = images.to(torch.uint8)
    cfg = AugmentConfig(shift=0.06, brightness=0.2, contrast=0.2, saturation=0.2, action_bin_shift=2, action_noise_std=0.05)
    g = torch.Generator().manual_seed(0)
    augmented, shift = augment_images(images, cfg, g)
    assert shift.shape == (3, 1, 2) and shift.abs().max() <= round(0.06 * H) / H + 1e-6  # whole pixels
    assert augmented.shape == images.shape and augmented.dtype == torch.uint8
    assert not torch.equal(augmented, images)
    dist = torch.cdist(augmented.flatten(1).float(), images.flatten(1).float())
    assert (dist.argmin(1) == torch.arange(3)).all(), "each positive is closest to its own anchor"
    # Without strength, augmentation is the identity.
    zero = AugmentConfig(shift=0, brightness=0, contrast=0, saturation=0)
    same, no_shift = augment_images(images, zero, g)
    assert torch.equal(same, images) and not no_shift.any()

    # Discrete actions move by at most k bins and stay valid; continuous by small noise, clipped.
    spec = ActionSpaceSpec(kind="discrete_pose6d", num_bins=16)
    stats = ActionStats(spec.dim_names, [-1.0] * 7, [1.0] * 7, [0.0] * 7, [0.5] * 7)
    space = ActionSpace(spec, stats)
    bins = torch.randint(0, 16, (3, 2, 7))
    mask = torch.tensor([[True, True], [True, False], [True, True]])
    moved = perturb_actions(bins, space, cfg, mask, g)
    assert moved.dtype == bins.dtype and (moved - bins).abs().max() <= 2
    assert moved.min() >= 0 and moved.max() <= 15 and not torch.equal(moved, bins)
    assert torch.equal(moved[1, 1], bins[1, 1]), "padded steps stay untouched"
    cspace = ActionSpace(ActionSpaceSpec(kind="continuous_pose6d"), stats)
    values = torch.zeros(3, 2, 7)
    values[0, 0, 0] = 2.0  # at the dataset maximum (1.0 physical -> 2.0 normalised): cannot go above
    noisy = perturb_actions(values, cspace, cfg, None, g)
    assert (noisy - values).abs().max() < 0.5 and noisy[0, 0, 0] <= 2.0 + 1e-6


def test_info_nce_matches_definition_and_accuracy():
    anchor = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    positive = torch.tensor([[1.0, 0.1], [1.0, 0.0]])
    negatives = torch.tensor([[[0.0, 1.0], [-1.0, 0.0]], [[0.0, 2.0], [0.5, 0.5]]])
    loss, acc = info_nce(anchor, positive, negatives, temperature=1.0, normalize=False)
    s = lambda x, y: torch.exp((x * y).sum())  # the paper's s(x, y) = exp(f(x) . f(y))
    expected = []
    for b in range(2):
        pos = s(anchor[b], positive[b])
        expected.append(-torch.log(pos / (pos + sum(s(anchor[b], n) for n in negatives[b]))))
    assert loss.item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-5)
    assert acc.item() == 0.5  # anchor 0's positive wins, anchor 1's loses to a negative


def test_shifted_boxes_follow_the_shifted_image():
    """Object crops of a positive must show the same objects: boxes move with the image shift."""
    from astra_core.objects import boxes_from_mask
    from astra_core.training.augment import shift_boxes

    H = W = 40
    images = torch.zeros(2, 1, 1, H, W, 3, dtype=torch.uint8)
    images[:, :, :, 12:20, 16:26] = 255  # a white block
    cfg = AugmentConfig(shift=0.1, brightness=0, contrast=0, saturation=0)
    augmented, shift = augment_images(images, cfg, torch.Generator().manual_seed(3))
    box, valid = boxes_from_mask((images[0, 0, 0, ..., 0] > 0).numpy().astype("uint8"), 1)
    moved, still = shift_boxes(torch.from_numpy(box)[None, None, None].expand(2, 1, 1, 1, 6),
                               torch.from_numpy(valid)[None, None, None].expand(2, 1, 1, 1), shift)
    for b in range(2):
        expected, _ = boxes_from_mask((augmented[b, 0, 0, ..., 0] > 128).numpy().astype("uint8"), 1)
        torch.testing.assert_close(moved[b, 0, 0, 0], torch.from_numpy(expected[0]), atol=1e-6, rtol=0)
    assert still.all()


def test_a_plan_cut_to_its_first_anchors_still_draws_from_the_whole_batch():
    step_mask = torch.ones(B, T, dtype=torch.bool)
    plan = plan_negatives(step_mask, num_negatives=3, generator=torch.Generator().manual_seed(5)).first(2)
    tokens, actions = _tagged_batch()
    (neg_tokens,), neg_actions = assemble_negatives(plan, [tokens], actions)
    assert neg_tokens.shape == (2, 3, T, M, E) and neg_actions.shape == (2, 3, T, N)
    sources = {_decode(v)[1] for v in neg_tokens[..., 0, 0].flatten().tolist()}
    assert sources - {0, 1}, "foreign segments may come from trajectories beyond the anchors"
