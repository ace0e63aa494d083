"""Checkpoints: atomic writes, ``weights_only`` loads, and rebuilding a model from one file."""

from __future__ import annotations

import copy
import os
import pickle  # only for its exception type: nothing is unpickled here
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from protoskel.errors import CheckpointError, ConfigError, brief
from protoskel.layouts import Layout, get_layout, layout_from_dict

__all__ = ["build_from_checkpoint", "load_checkpoint", "save_checkpoint", "shipped_dir"]

FORMAT = "protoskel-checkpoint"


def shipped_dir() -> Path:
    """Folder of the checkpoints that ship inside the package."""
    return Path(__file__).resolve().parents[1] / "checkpoints"


def plain_permissions(path: str | Path) -> None:
    """Give a file the mode a plain open() would (mkstemp's temp files are 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def save_checkpoint(obj: dict[str, Any], path: str | Path) -> None:
    """Write a checkpoint atomically: a temp file in the same folder, then rename."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, "version": 1, **obj}, f)
        plain_permissions(tmp)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint path, or the name of a shipped model (see ``protoskel models list``)."""
    p = Path(path)
    if p.is_file():
        return p
    for cand in (shipped_dir() / f"{path}.pt", shipped_dir() / str(path)):
        if cand.is_file():
            return cand
    raise CheckpointError(
        f"{path}: no such checkpoint file or shipped model name (see `protoskel models list`)"
    )


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a protoskel checkpoint safely (``weights_only=True``) and check its format."""
    p = resolve_checkpoint(path)
    if not zipfile.is_zipfile(p):
        raise CheckpointError(
            f"{p}: not a protoskel checkpoint (not a zip archive as torch.save writes: "
            "truncated, or another kind of file)"
        )
    try:
        ck = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's own text suggests weights_only=False, which protoskel never does.
        raise CheckpointError(
            f"{p}: not a protoskel checkpoint: it holds Python objects beyond tensors and "
            "plain data, and checkpoints are only ever loaded with weights_only=True"
        ) from None
    except Exception as e:
        raise CheckpointError(f"{p}: not a readable protoskel checkpoint ({brief(e)})") from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise CheckpointError(f"{p}: not a protoskel checkpoint (no format tag {FORMAT!r})")
    for key in ("model", "config", "layout", "classes", "in_channels"):
        if key not in ck:
            raise CheckpointError(f"{p}: checkpoint lacks the {key!r} entry")
    ck["path"] = str(p)
    return ck


def checkpoint_layout(ck: dict[str, Any]) -> Layout:
    """The layout a checkpoint was trained on (built-in by name when it matches, else embedded)."""
    d = ck["layout"]
    try:
        lay = get_layout(d["name"])
        if list(lay.joints) == [next(iter(j)) for j in d["joints"]]:
            return lay
    except Exception:
        pass
    return layout_from_dict(d, source=f"{ck.get('path', 'checkpoint')}: layout")


def build_from_checkpoint(ck: dict[str, Any]) -> torch.nn.Module:
    """Rebuild the exact model a checkpoint holds (eval mode) and load its weights.

    Checkpoints that record their resolved options (``arch``) are rebuilt from those, so a later
    change of a code default does not change the network they describe.
    """
    from protoskel.training.trainer import build_model_from_config

    cfg = copy.deepcopy(ck["config"])
    arch = ck.get("arch")
    if isinstance(arch, dict) and "backbone" in arch and "head" in arch:
        cfg["model"]["kwargs"] = dict(arch["backbone"])
        # The head's dropout travels as model.dropout.
        cfg["model"]["head_kwargs"] = {k: v for k, v in arch["head"].items() if k != "dropout"}
    try:
        model = build_model_from_config(
            cfg, checkpoint_layout(ck), len(ck["classes"]), int(ck["in_channels"])
        )
    except ConfigError as e:
        # Typically an option this version of protoskel does not have (or no longer has).
        raise CheckpointError(
            f"{ck.get('path')}: cannot rebuild the model this checkpoint records ({e}); it was "
            "written by a protoskel version with other model options: load it with that version"
        ) from None
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError as e:
        raise CheckpointError(
            f"{ck.get('path')}: weights do not fit the model the config describes ({str(e)[:300]})"
        ) from None
    model.eval()
    return model
