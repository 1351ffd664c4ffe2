import pytest
import torch

from astra_core.action_space import ActionSpace, ActionSpaceSpec, ActionStats
from astra_core.training.criterion import BCCriterion, summarize_metrics


def _space(kind: str, num_bins: int = 8) -> ActionSpace:
    spec = ActionSpaceSpec(kind=kind, num_bins=num_bins)
    n = spec.dim
    return ActionSpace(spec, ActionStats(spec.dim_names, [-1.0] * n, [1.0] * n, [0.0] * n, [0.5] * n))


def test_discrete_loss_is_masked_cross_entropy_per_dimension():
    space = _space("discrete_pose6d")
    B, T, N, K = 2, 3, 7, 8
    torch.manual_seed(0)
    logits = torch.randn(B, T, N, K)
    target = torch.randint(0, K, (B, T, N))
    mask = torch.tensor([[True, True, False], [True, False, False]])
    out = BCCriterion(space)(logits, target, mask)
    real = logits[mask].reshape(-1, K), target[mask].reshape(-1)
    assert torch.allclose(out.loss, torch.nn.functional.cross_entropy(*real))
    assert out.num_steps == 3
    # Garbage in padded steps must not change the loss.
    logits2 = logits.clone()
    logits2[~mask] = 1e4
    assert torch.allclose(BCCriterion(space)(logits2, target, mask).loss, out.loss)


def test_discrete_accuracy_per_dimension():
    space = _space("discrete_se2", num_bins=4)
    target = torch.tensor([[[0, 1, 2, 3, 0, 1]]])
    logits = torch.nn.functional.one_hot(target, 4).float() * 5
    logits[0, 0, 2] = torch.tensor([9.0, 0, 0, 0])  # pick_theta wrong
    out = BCCriterion(space)(logits, target, torch.ones(1, 1, dtype=torch.bool))
    metrics = summarize_metrics(out.metric_sums, float(out.num_steps))
    assert metrics["acc/pick_theta"] == 0.0
    assert metrics["acc/pick_x"] == 1.0
    assert metrics["acc"] == pytest.approx(5 / 6)


@pytest.mark.parametrize("loss", ["smooth_l1", "mse"])
def test_continuous_regression_and_physical_error(loss):
    space = _space("continuous_pose6d")
    target = torch.zeros(1, 2, 7)
    pred = torch.zeros(1, 2, 7, 1)
    pred[0, 0, 0, 0] = 2.0  # 2 normalised units = 1.0 physical (std 0.5)
    out = BCCriterion(space, loss)(pred, target, torch.tensor([[True, False]]))
    expected = (1.5 if loss == "smooth_l1" else 4.0) / 7
    assert out.loss.item() == pytest.approx(expected)
    metrics = summarize_metrics(out.metric_sums, float(out.num_steps))
    assert metrics["abs_err/x"] == pytest.approx(1.0)
    assert metrics["abs_err/y"] == 0.0


def test_shape_mismatch_is_reported():
    space = _space("discrete_pose6d")
    with pytest.raises(ValueError, match="head output has shape"):
        BCCriterion(space)(torch.zeros(1, 2, 7, 3), torch.zeros(1, 2, 7, dtype=torch.long), torch.ones(1, 2, dtype=torch.bool))
