"""Fixtures of the dataset tests; the dataset makers live in dataset_factory.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from dataset_factory import WrittenDataset, write_dataset


@pytest.fixture
def small_dataset(tmp_path: Path) -> WrittenDataset:
    return write_dataset(tmp_path / "ds")
