"""Fixtures of the ROS node tests: tiny checkpoints (one per action space, built once per session).

The helpers (node subprocess, ROS peer, frame makers) live in node_harness.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from node_harness import make_checkpoint


@pytest.fixture(scope="session")
def pose_checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_pose6d", "discrete_pose6d")


@pytest.fixture(scope="session")
def delta_checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_delta", "continuous_pose6d_delta")


@pytest.fixture(scope="session")
def se2_checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_se2", "discrete_se2")
