import pytest
import torch

from astra_core.model import Astra
from astra_core.presets import load_preset_dict, unit_stats
from astra_core.action_space import ActionStats

# A top-down camera over [0, 1] x [0, 1]: normalised (u, v) -> table (x, y) = (v, u).
SWAP_UV = [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]


def make_tiny_model(seed: int = 0, **overrides) -> Astra:
    """The tiny preset with config fields overridden (``action_space`` takes a kind string).

    ``state_tokens="objects"`` / ``readout="pointer"`` get a calibration of the first camera
    (SWAP_UV) unless one is given; ``proprio_dim`` gets unit statistics."""
    from astra_core.model import AstraConfig

    data = load_preset_dict("tiny")
    kind = overrides.pop("action_space", None)
    if kind:
        data["action_space"]["kind"] = kind
    vision = overrides.pop("vision", {})
    data["vision"].update(vision)
    if overrides.get("readout") == "pointer" and "calibration" not in overrides:
        overrides["calibration"] = {data["cameras"][0]: SWAP_UV}
    data.update(overrides)
    cfg = AstraConfig.from_dict(data)
    proprio = None
    if cfg.proprio_dim:
        names = [f"p{i}" for i in range(cfg.proprio_dim)]
        proprio = ActionStats(names, [-1.0] * cfg.proprio_dim, [1.0] * cfg.proprio_dim, [0.0] * cfg.proprio_dim,
                              [1.0] * cfg.proprio_dim)
    torch.manual_seed(seed)
    return Astra(cfg, unit_stats(cfg.action_space), proprio).eval()


@pytest.fixture
def tiny_model_factory():
    return make_tiny_model
