"""The BC criterion: masked per-dimension losses, the pointer loss, and metrics that tell the truth
(exact bin, physical error, hit within tolerance)."""

import math

import pytest
import torch

from astra_core.model import AstraOutput, States
from astra_core.training.criterion import BCCriterion, summarize_metrics, wrapped


def _states(B, T, M, coords=None, has=None):
    coords = torch.zeros(B, T, M, 2) if coords is None else coords
    has = torch.zeros(B, T, M, dtype=torch.bool) if has is None else has
    return States(torch.zeros(B, T, M, 4), torch.ones(B, T, M, dtype=torch.bool), coords, has)


def test_discrete_loss_is_masked_cross_entropy_per_dimension(tiny_model_factory):
    model = tiny_model_factory(action_space="discrete_pose6d")
    B, T, N, K = 2, 3, 7, model.action_space.head_size
    torch.manual_seed(0)
    logits = torch.randn(B, T, N, K)
    target = torch.randint(0, K, (B, T, N))
    physical = model.action_space.from_model(target).float()
    mask = torch.tensor([[True, True, False], [True, False, False]])
    states = _states(B, T, model.state_len)
    out = BCCriterion(model)(AstraOutput(logits), states, target, physical, mask)
    real = logits[mask].reshape(-1, K), target[mask].reshape(-1)
    assert torch.allclose(out.loss, torch.nn.functional.cross_entropy(*real))
    assert out.num_steps == 3
    # Garbage in padded steps must not change the loss.
    logits2 = logits.clone()
    logits2[~mask] = 1e4
    assert torch.allclose(BCCriterion(model)(AstraOutput(logits2), states, target, physical, mask).loss, out.loss)


def test_accuracy_error_and_hits_within_tolerance(tiny_model_factory):
    model = tiny_model_factory(action_space="discrete_se2")
    space = model.action_space  # unit stats: [-1, 1], 64 bins of 2/63
    target_physical = torch.tensor([[[0.5, 0.5, 0.0, -0.5, -0.5, 0.0]]])
    target = space.to_model(target_physical)
    off = target.clone()
    off[0, 0, 0] += 2  # pick_x two bins (0.063) off: a miss in bins, a hit within 0.1
    off[0, 0, 3] += 5  # place_x five bins (0.16) off: a miss either way
    logits = torch.nn.functional.one_hot(off, space.head_size).float() * 10
    criterion = BCCriterion(model, tolerances={"pick_x": 0.1, "place_x": 0.1, "pick_theta": 0.2})
    out = criterion(AstraOutput(logits), _states(1, 1, model.state_len), target, target_physical,
                    torch.ones(1, 1, dtype=torch.bool))
    m = summarize_metrics(out.metric_sums, float(out.num_steps))
    assert m["acc/pick_x"] == 0.0 and m["hit/pick_x"] == 1.0
    assert m["acc/place_x"] == 0.0 and m["hit/place_x"] == 0.0
    assert m["acc/pick_y"] == 1.0 and m["abs_err/pick_x"] == pytest.approx(2 * 2 / 63, abs=0.02)
    assert m["abs_err/pick_theta"] < 0.02 and m["hit/pick_theta"] == 1.0
    assert m["pos_hit/pick_x_pick_y"] == 1.0 and m["pos_hit/place_x_place_y"] == 0.0
    assert set(out.metric_sums) == set(criterion.metric_names())


@pytest.mark.parametrize("loss", ["smooth_l1", "mse"])
def test_continuous_regression_and_physical_error(tiny_model_factory, loss):
    model = tiny_model_factory(action_space="continuous_pose6d")  # unit stats: std 1
    target = torch.zeros(1, 2, 7)
    pred = torch.zeros(1, 2, 7, 1)
    pred[0, 0, 0, 0] = 2.0  # 2 normalised units = 2.0 physical
    out = BCCriterion(model, loss)(AstraOutput(pred), _states(1, 2, model.state_len), target, target,
                                   torch.tensor([[True, False]]))
    expected = (1.5 if loss == "smooth_l1" else 4.0) / 7
    assert out.loss.item() == pytest.approx(expected)
    metrics = summarize_metrics(out.metric_sums, float(out.num_steps))
    assert metrics["abs_err/x"] == pytest.approx(2.0)
    assert metrics["abs_err/y"] == 0.0


def test_pointer_loss_rewards_any_token_within_tolerance(tiny_model_factory):
    model = tiny_model_factory(action_space="discrete_se2", state_tokens="objects", readout="pointer")
    M = model.state_len
    coords = torch.zeros(1, 1, M, 2)
    coords[0, 0, :3] = torch.tensor([[0.5, 0.5], [0.51, 0.5], [-0.5, -0.5]])
    has = torch.zeros(1, 1, M, dtype=torch.bool)
    has[0, 0, :3] = True
    states = _states(1, 1, M, coords, has)
    target_physical = torch.tensor([[[0.5, 0.5, 0.0, -0.5, -0.5, 0.0]]])
    target = model.action_space.to_model(target_physical)
    logits = torch.full((1, 1, 2, M), float("-inf"))
    logits[..., :3] = torch.tensor([0.0, 0.0, 0.0])
    head = torch.zeros(1, 1, 6, model.action_space.head_size)
    out = AstraOutput(head, logits, torch.zeros(1, 1, 2, 2), torch.tensor([[[0, 2]]]))
    criterion = BCCriterion(model, tolerances={"pick_x": 0.02, "place_x": 0.02})
    result = criterion(out, states, target, target_physical, torch.ones(1, 1, dtype=torch.bool))
    per_dim_ce = math.log(model.action_space.head_size)  # uniform heads on the 2 angle dims
    pick = -math.log(2 / 3)  # tokens 0 and 1 are both within 2 cm of the pick
    place = -math.log(1 / 3)  # only token 2 is the place
    offsets = criterion._pointer_losses(out, states, target_physical, 0, 0, 1)[1]
    expected = (2 * per_dim_ce + pick + place + float(offsets) +
                float(criterion._pointer_losses(out, states, target_physical, 1, 3, 4)[1])) / 6
    assert result.loss.item() == pytest.approx(expected, rel=1e-5)
    # A step where no token has coordinates contributes nothing (and no NaN).
    empty = _states(1, 1, M)
    logits_none = torch.full((1, 1, 2, M), float("-inf"))
    res = criterion(AstraOutput(head.requires_grad_(), logits_none.requires_grad_(), torch.zeros(1, 1, 2, 2),
                                torch.zeros(1, 1, 2, dtype=torch.long)),
                    empty, target, target_physical, torch.ones(1, 1, dtype=torch.bool))
    res.loss.backward()
    assert torch.isfinite(res.loss)


def test_shape_mismatch_is_reported(tiny_model_factory):
    model = tiny_model_factory(action_space="discrete_pose6d")
    with pytest.raises(ValueError, match="head output has shape"):
        BCCriterion(model)(AstraOutput(torch.zeros(1, 2, 7, 3)), _states(1, 2, model.state_len),
                           torch.zeros(1, 2, 7, dtype=torch.long), torch.zeros(1, 2, 7), torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="unknown action dimensions"):
        BCCriterion(model, tolerances={"elbow": 0.1})


def test_angle_errors_wrap_around_the_circle():
    torch.testing.assert_close(wrapped(torch.tensor([2 * math.pi - 0.1, -2 * math.pi + 0.1, 0.3])),
                               torch.tensor([-0.1, 0.1, 0.3]))


def test_bin_smoothing_prefers_near_misses_and_wraps_the_rotation_head(tiny_model_factory):
    model = tiny_model_factory(action_space="discrete_se2", state_tokens="objects", readout="pointer")
    K = model.action_space.head_size
    criterion = BCCriterion(model, bin_smoothing=2.0)
    target = torch.zeros(1, 1, 6, dtype=torch.long)
    target[..., 2] = 10
    target[..., 5] = 0  # the rotation head's first bin: its neighbours are bins 1 and K - 1
    soft = criterion._smoothed_targets(target, K)
    torch.testing.assert_close(soft.sum(-1), torch.ones(1, 1, 6))
    assert soft[0, 0, 2].argmax() == 10 and soft[0, 0, 2, 9] == soft[0, 0, 2, 11] > soft[0, 0, 2, 5]
    assert torch.isclose(soft[0, 0, 5, 1], soft[0, 0, 5, K - 1]) and soft[0, 0, 5, K - 1] > soft[0, 0, 5, K // 2]
    assert torch.isclose(soft[0, 0, 0, 1], soft[0, 0, 0, 1]) and soft[0, 0, 0, K - 1] < 1e-6  # not circular
    with pytest.raises(ValueError, match="bin_smoothing"):
        BCCriterion(model, bin_smoothing=-1)
