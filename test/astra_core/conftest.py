import pytest
import torch

from astra_core.model import Astra
from astra_core.presets import load_preset, unit_stats


def make_tiny_model(seed: int = 0, **overrides) -> Astra:
    """The tiny preset with config fields overridden (``action_space`` takes a kind string)."""
    cfg = load_preset("tiny")
    kind = overrides.pop("action_space", None)
    if kind:
        cfg.action_space.kind = kind
    for key, value in overrides.items():
        setattr(cfg, key, value)
    cfg.__post_init__()
    torch.manual_seed(seed)
    return Astra(cfg, unit_stats(cfg.action_space)).eval()


@pytest.fixture
def tiny_model_factory():
    return make_tiny_model
