"""Small real datasets for the training tests, written with the project's DatasetWriter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from astra_core.action_space import ActionSpaceSpec
from astra_core.data.writer import DatasetWriter

INSTRUCTIONS = ["push the red block left", "lift the blue cube", "open the drawer", "press the green button"]


def write_dataset(
    root: Path,
    num_episodes: int = 6,
    num_steps: int = 12,
    kind: str = "discrete_pose6d",
    num_bins: int = 32,
    image_size: int = 32,
    cameras: tuple[str, ...] = ("front", "wrist"),
    seed: int = 0,
) -> Path:
    """Episodes of a coloured square moving in a straight line; the action is its next pose.

    Each episode has its own start, goal and colour, and a progress bar shows the step, so the
    images and the instruction determine every action: a model can fit the set exactly.
    """
    rng = np.random.default_rng(seed)
    spec = ActionSpaceSpec(kind=kind, num_bins=num_bins)
    with DatasetWriter(root, cameras=list(cameras), action_space=spec, control_rate_hz=10.0,
                       image_size=(image_size, image_size)) as writer:
        for e in range(num_episodes):
            start, goal = rng.uniform(-1, 1, size=(2, 7))
            colour = rng.integers(64, 256, size=3)
            ep = writer.begin_episode(INSTRUCTIONS[e % len(INSTRUCTIONS)], metadata={"episode": e})
            for t in range(num_steps):
                pose = start + (goal - start) * t / (num_steps - 1)
                nxt = start + (goal - start) * min(t + 1, num_steps - 1) / (num_steps - 1)
                images = {}
                for m, cam in enumerate(cameras):
                    img = np.zeros((image_size, image_size, 3), dtype=np.uint8)
                    img[..., m] = 40  # cameras differ in their background
                    cy = int((pose[0 + m] + 1) / 2 * (image_size - 8))
                    cx = int((pose[2 + m] + 1) / 2 * (image_size - 8))
                    img[cy : cy + 8, cx : cx + 8] = colour
                    # A progress bar along the bottom edge: the state shows how far the motion got.
                    img[-2:, : max(1, (t + 1) * image_size // num_steps)] = 255
                    images[cam] = img
                ep.add_step(images=images, action=nxt.astype(np.float64))
            ep.end(success=True)
    return root


@pytest.fixture(scope="session")
def dataset_writer():
    """The ``write_dataset`` helper, as a fixture (test directories are not packages)."""
    return write_dataset


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data") / "tiny")
