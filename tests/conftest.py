"""Shared fixtures: where the real datasets live (a skip with a clear message when absent), and
a runner for the command line."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from protoskel.cli import main

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


Cli = Callable[..., tuple[int, str, str]]


def make_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    """A function running the CLI entry point; it returns (exit code, stdout, stderr)."""

    def call(*args: object) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["protoskel", *map(str, args)])
        code = 0
        try:
            main()
        except SystemExit as e:
            code = int(e.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return call


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    """Run the CLI entry point with some arguments; returns (exit code, stdout, stderr)."""
    return make_cli(monkeypatch, capsys)
