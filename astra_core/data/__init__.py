"""Astra datasets: multi-camera, language-conditioned episodes on disk (see docs/DATASET.md).

* :class:`DatasetWriter` / :class:`EpisodeWriter` record episodes (atomic per episode).
* :class:`TrajectoryWindowDataset` + :func:`collate_windows` stream training windows.
* :func:`split_episodes` makes a train/val split by episode.
* :func:`load_action_stats` / :func:`load_stats` read the statistics saved with the dataset.
* ``python -m astra_core.data.validate ROOT`` checks a dataset episode by episode;
  ``python -m astra_core.data.stats ROOT`` recomputes stats.json;
  ``python -m astra_core.data.bench`` measures writing and reading.
"""

from importlib import import_module
from typing import Any

# Resolved on first access (PEP 562) so that `python -m astra_core.data.validate` / `.stats` do not
# find their own module already imported by this package (runpy warns about that).
_EXPORTS = {
    "DatasetError": "errors",
    "DatasetInfo": "format",
    "EpisodeRecord": "format",
    "load_dataset_info": "format",
    "DatasetStats": "stats",
    "compute_stats": "stats",
    "load_action_stats": "stats",
    "load_stats": "stats",
    "write_stats": "stats",
    "TrajectoryWindowDataset": "dataset",
    "collate_windows": "dataset",
    "split_episodes": "dataset",
    "validate_dataset": "validate",
    "DatasetWriter": "writer",
    "EpisodeWriter": "writer",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'astra_core.data' has no attribute {name!r}")
    value = getattr(import_module(f"astra_core.data.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
