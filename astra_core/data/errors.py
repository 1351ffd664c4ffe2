"""The one error type of the dataset layer.

Every problem found while writing, reading or validating a dataset is reported as a
:class:`DatasetError` that names the episode (or ``None`` for dataset-level files), the key
(a file path relative to the episode directory, or an array name such as ``actions``) and what is
wrong, so a corrupt or truncated dataset can be fixed without a debugger.
"""

from __future__ import annotations


class DatasetError(Exception):
    """A dataset problem: which episode, which key, what is wrong."""

    def __init__(self, episode: int | None, key: str, problem: str) -> None:
        self.episode = episode
        self.key = key
        self.problem = problem
        where = "dataset" if episode is None else f"episode {episode}"
        super().__init__(f"{where}, key '{key}': {problem}")

    def __reduce__(self):  # keeps the three fields when raised inside a DataLoader worker
        return (type(self), (self.episode, self.key, self.problem))
