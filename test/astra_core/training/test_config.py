from pathlib import Path

import pytest

from astra_core.training.config import TrainConfig

REPO = Path(__file__).resolve().parents[3]
PRESETS = sorted((REPO / "config" / "train").glob("*.yaml"))


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_shipped_presets_load(path):
    cfg = TrainConfig.load(path, ["data.root=/data/x"])
    assert cfg.data.root == "/data/x" and cfg.total_steps > 0


def test_presets_exist():
    assert {p.stem for p in PRESETS} >= {"tiny", "19m", "38m", "43m", "198m"}


def test_overrides_are_typed_and_nested(tmp_path):
    cfg = TrainConfig.load(REPO / "config/train/tiny.yaml", [
        "data.root=/d", "optim.lr=3e-4", "batch_size=4", "cdl.alpha=0", "model.overrides.n_layer=3",
        "model.overrides.vision.image_size=32", "model.preset=38m",
    ])  # fmt: skip
    assert cfg.optim.lr == 3e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.batch_size == 4 and cfg.cdl.alpha == 0.0
    assert cfg.model.overrides == {"n_layer": 3, "vision": {"image_size": 32}}
    assert cfg.model.preset == "38m"
    cfg.save(tmp_path / "c.yaml")
    assert TrainConfig.load(tmp_path / "c.yaml") == cfg


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lrr=1", r"unknown key\(s\) \['optim.lrr'\]; valid keys: optim.lr, optim.min_lr_ratio"),
        ("bogus=1", r"unknown key\(s\) \['bogus'\]; valid keys: data, model, optim"),
        ("batch_size=two", "batch_size='two': expected an integer"),
        ("optim.lr=-1", r"optim.lr=-1.0: must be > 0"),
        ("precision=fp16", "precision='fp16': must be one of"),
        ("batch_size=1", "batch_size=1: must be >= 2 when cdl.alpha > 0"),
        ("data.root=", "data.root is required"),
    ],
)
def test_bad_config_is_rejected_with_a_clear_message(override, message):
    base = ["data.root=/d"] if not override.startswith("data.root") else []
    with pytest.raises(ValueError, match=message):
        TrainConfig.load(REPO / "config/train/tiny.yaml", base + [override])


def test_cli_lists_valid_keys(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "astra_core.train", "--config", str(REPO / "config/train/tiny.yaml"), "data.root=/d", "optim.typo=1"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "optim.typo" in proc.stderr and "valid keys: optim.lr" in proc.stderr
