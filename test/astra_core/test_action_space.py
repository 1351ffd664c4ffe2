import numpy as np
import pytest
import torch

from astra_core.action_space import ActionSpace, ActionSpaceSpec, ActionStats


def make(kind, bins=64):
    spec = ActionSpaceSpec(kind=kind, num_bins=bins)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-2, 3, size=(500, spec.dim))
    return ActionSpace(spec, ActionStats.from_actions(actions, spec.dim_names)), actions


@pytest.mark.parametrize("kind", ["discrete_se2", "discrete_pose6d"])
def test_discrete_round_trip_is_within_half_a_bin(kind):
    space, actions = make(kind)
    x = torch.from_numpy(actions)
    bins = space.to_model(x)
    assert bins.dtype == torch.long and bins.min() >= 0 and bins.max() < 64
    back = space.from_model(bins).numpy()
    assert (np.abs(back - actions) <= space.bin_width() / 2 + 1e-9).all()
    # values outside the data range land in the edge bins
    assert space.to_model(torch.full((space.dim,), 1e6)).eq(63).all()


def test_continuous_round_trip_is_exact():
    space, actions = make("continuous_pose6d")
    z = space.to_model(torch.from_numpy(actions))
    assert abs(float(z.mean())) < 0.1 and abs(float(z.std()) - 1) < 0.1
    np.testing.assert_allclose(space.from_model(z).numpy(), actions, atol=1e-5)


def test_decode():
    space, _ = make("discrete_pose6d", bins=8)
    logits = torch.zeros(7, 8)
    logits[torch.arange(7), torch.arange(7)] = 1
    assert space.decode(logits).tolist() == list(range(7))


def test_stats_merge_equals_stats_of_concatenation():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(40, 7)), rng.normal(2, 3, size=(70, 7))
    names = ActionSpaceSpec("continuous_pose6d").dim_names
    merged = ActionStats.merge([ActionStats.from_actions(a, names), ActionStats.from_actions(b, names)])
    whole = ActionStats.from_actions(np.concatenate([a, b]), names)
    for key in ("min", "max", "mean", "std"):
        np.testing.assert_allclose(getattr(merged, key), getattr(whole, key), atol=1e-9)
    assert merged.count == 110


def test_invalid_specs_and_stats():
    with pytest.raises(ValueError, match="kind"):
        ActionSpaceSpec(kind="joint")
    with pytest.raises(ValueError, match="num_bins"):
        ActionSpaceSpec(kind="discrete_se2", num_bins=1)
    names = ActionSpaceSpec("discrete_se2").dim_names
    with pytest.raises(ValueError, match="NaN"):
        ActionStats.from_actions(np.full((3, 6), np.nan), names)
    with pytest.raises(ValueError, match="dimensions"):
        ActionSpace(ActionSpaceSpec("discrete_pose6d"), ActionStats.from_actions(np.zeros((2, 6)), names))
    with pytest.raises(ValueError, match="unknown keys"):
        ActionStats.from_dict({"names": [], "min": [], "max": [], "mean": [], "std": [], "median": []})
