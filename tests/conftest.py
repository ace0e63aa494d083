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


def vtest_excerpt(out: Path, start: int, frames: int) -> Path:
    """Frames [start, start + frames) of vtest.avi as an MJPG video (skips without OpenCV).

    MediaPipe finds nobody in vtest.avi's first 166 frames; from frame 160 on it tracks a
    pedestrian, so excerpts starting there have a person and those at 0 have none.
    """
    cv2 = pytest.importorskip("cv2")
    cap = cv2.VideoCapture(str(media_file("vtest.avi")))
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    cap.set(cv2.CAP_PROP_POS_FRAMES, start)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, size)
    for _ in range(frames):
        ok, frame = cap.read()
        assert ok, f"vtest.avi has fewer than {start + frames} frames"
        writer.write(frame)
    writer.release()
    cap.release()
    return out


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
