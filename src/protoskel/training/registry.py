"""The shipped checkpoints: an index (``checkpoints/index.json``) of what each file holds."""

from __future__ import annotations

import json
from typing import Any

from protoskel.errors import CheckpointError
from protoskel.training.checkpoint import shipped_dir

__all__ = ["shipped_models"]


def shipped_models() -> list[dict[str, Any]]:
    """One row per shipped checkpoint: name, dataset, stream, reported top1, path, invariance."""
    index = shipped_dir() / "index.json"
    if not index.is_file():
        return []
    try:
        rows = json.loads(index.read_text(encoding="utf-8"))["models"]
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"{index}: unreadable model index ({e})") from None
    out = []
    for r in rows:
        path = shipped_dir() / r["file"]
        out.append({**r, "path": str(path), "present": path.is_file()})
    return out
