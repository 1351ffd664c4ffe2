"""Small real datasets written with the real writer, for the dataset tests (and their subprocesses).

A plain module (not conftest.py), imported by name: test/conftest.py puts this folder on
sys.path, so `from dataset_factory import ...` works under pytest's importlib mode, under
launch_testing's pytest plugin and in a subprocess that adds this folder to its path."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from astra_core.action_space import ActionSpaceSpec
from astra_core.data import DatasetWriter

CAMERAS = ["front", "wrist"]
IMAGE_SIZE = (24, 32)
PROPRIO_NAMES = ["q0", "q1", "q2"]
CHUNK_SIZE = 4
CONTROL_RATE_HZ = 5.0


def make_frame(episode: int, step: int, camera: int) -> np.ndarray:
    """A deterministic frame with structure (gradient + a moving block) and pixel noise."""
    h, w = IMAGE_SIZE
    rng = np.random.default_rng([episode, step, camera])
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 7 + 20 * camera, y * 9, (x + y) * 3 + 11 * episode], axis=-1).astype(np.int32)
    r, c = (step * 3 + episode) % (h - 6), (step * 5 + camera * 7) % (w - 6)
    img[r : r + 6, c : c + 6] = rng.integers(0, 256, 3)
    img += rng.integers(-8, 9, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_action(episode: int, step: int) -> np.ndarray:
    rng = np.random.default_rng([1000 + episode, step])
    return np.array([0.3, -0.1, 0.5, 0.0, 0.1, 1.5, 0.0]) + rng.normal(0.0, [0.05, 0.05, 0.02, 0.3, 0.3, 0.3, 0.5])


def make_proprio(episode: int, step: int) -> np.ndarray:
    return np.array([episode * 0.1, step * 0.01, np.sin(step)], dtype=np.float64)


@dataclass
class WrittenDataset:
    root: Path
    steps: list[int]
    instructions: list[str]
    success: list[bool]
    timestamps: list[np.ndarray] = field(default_factory=list)

    def frames(self, episode: int) -> np.ndarray:
        """(S, M, H, W, 3) frames of one episode, as written."""
        return np.stack([[make_frame(episode, s, m) for m in range(len(CAMERAS))] for s in range(self.steps[episode])])

    def actions(self, episode: int) -> np.ndarray:
        return np.stack([make_action(episode, s) for s in range(self.steps[episode])])

    def proprio(self, episode: int) -> np.ndarray:
        return np.stack([make_proprio(episode, s) for s in range(self.steps[episode])])


def write_dataset(
    root: Path, steps: list[int] = (5, 9, 12, 3), with_proprio: bool = True, explicit_timestamps: bool = True, append: bool = False,
    first_episode: int = 0,
) -> WrittenDataset:  # fmt: skip
    written = WrittenDataset(root, [], [], [])
    # Episode ids continue across appends, so content keys off the id the writer assigns.
    with DatasetWriter(
        root, cameras=CAMERAS, action_space=ActionSpaceSpec("continuous_pose6d"), control_rate_hz=CONTROL_RATE_HZ,
        image_size=IMAGE_SIZE, proprio_names=PROPRIO_NAMES if with_proprio else None, chunk_size=CHUNK_SIZE,
        metadata={"source": "test"}, append=append,
    ) as writer:  # fmt: skip
        for i, num_steps in enumerate(steps):
            episode = first_episode + i
            instruction = f"put block {episode} in the bowl"
            timestamps = 100.0 + np.cumsum(np.full(num_steps, 0.2)) if explicit_timestamps else np.arange(num_steps) / CONTROL_RATE_HZ
            with writer.begin_episode(instruction, metadata={"seed": episode}) as ep:
                assert ep.episode_id == episode
                for s in range(num_steps):
                    ep.add_step(
                        images={cam: make_frame(episode, s, m) for m, cam in enumerate(CAMERAS)},
                        action=make_action(episode, s),
                        proprio=make_proprio(episode, s) if with_proprio else None,
                        timestamp=float(timestamps[s]) if explicit_timestamps else None,
                    )
                ep.end(success=episode % 3 != 2)
            written.steps.append(num_steps)
            written.instructions.append(instruction)
            written.success.append(episode % 3 != 2)
            written.timestamps.append(timestamps)
    return written
