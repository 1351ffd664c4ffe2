import pytest

from astra_core.configuration import ConfigError, apply_overrides, merge_dotted


def test_merge_dotted_updates_leaves_and_leaves_the_base_alone():
    base = {"n_layer": 6, "vision": {"kind": "resnet", "image_size": 128}}
    merged = merge_dotted(base, {"vision.image_size": 32, "vision": {"pooling": "spatial_softmax"}, "n_layer": 2})
    assert merged == {"n_layer": 2, "vision": {"kind": "resnet", "image_size": 32, "pooling": "spatial_softmax"}}
    assert base == {"n_layer": 6, "vision": {"kind": "resnet", "image_size": 128}}


def test_apply_overrides_parses_yaml_and_rejects_bad_paths():
    data = apply_overrides({"optim": {"lr": 1.0}}, ["optim.lr=3e-4", "cameras=[top, front]", "name="])
    assert data == {"optim": {"lr": "3e-4"}, "cameras": ["top", "front"], "name": ""}
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["optim.lr"])
    with pytest.raises(ConfigError, match="'lr' is a value, not a section"):
        apply_overrides({"lr": 1}, ["lr.x=2"])
    with pytest.raises(ConfigError, match="empty key"):
        apply_overrides({}, ["a..b=1"])
