"""Shared fixtures: where the real datasets live, and a skip with a clear message when absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
DATASETS = Path(os.environ.get("PROTOSKEL_DATASETS", SHARED / "datasets"))
MEDIA = Path(os.environ.get("PROTOSKEL_MEDIA", SHARED / "media"))


def dataset_dir(name: str) -> Path:
    """Path of a real dataset folder, or skip the test saying where it was looked for."""
    p = DATASETS / name
    if not p.is_dir():
        pytest.skip(f"real dataset {name!r} not found at {p} (set PROTOSKEL_DATASETS)")
    return p


def media_file(name: str) -> Path:
    """Path of a real media file, or skip the test saying where it was looked for."""
    p = MEDIA / name
    if not p.is_file():
        pytest.skip(f"media file {name!r} not found at {p} (set PROTOSKEL_MEDIA)")
    return p
