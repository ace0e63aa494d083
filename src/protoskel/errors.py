"""One exception hierarchy for protoskel; the CLI turns these into one-line messages and exit 2."""

from __future__ import annotations

from pathlib import Path


class ProtoskelError(Exception):
    """Base class of every error protoskel raises on purpose (bad input, bad config, ...)."""


class LayoutError(ProtoskelError):
    """A skeleton layout is unknown or invalid (names the layout and the offending joint)."""


class DataFormatError(ProtoskelError):
    """A data file is malformed; the message names the file and the place in it."""

    def __init__(self, path: str | Path | None, where: str | None, what: str) -> None:
        self.path = None if path is None else str(path)
        self.where = where
        self.what = what
        parts = [p for p in (self.path, where) if p]
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {what}" if prefix else what)


class ConfigError(ProtoskelError):
    """A config file or option has an unknown key or a bad value."""


class CheckpointError(ProtoskelError):
    """A checkpoint cannot be read or does not fit what it is used for."""


class DatasetError(ProtoskelError):
    """A dataset source folder or prepared store is missing or inconsistent."""


def brief(e: BaseException, limit: int = 120) -> str:
    """``Type: first sentence`` of a library's exception, cut at a word, for a one-line error."""
    text = " ".join(str(e).split())
    first = text.split(". ")[0].rstrip(".")
    if len(first) > limit:
        first = first[:limit].rsplit(" ", 1)[0] + " ..."
    return f"{type(e).__name__}: {first}" if first else type(e).__name__
