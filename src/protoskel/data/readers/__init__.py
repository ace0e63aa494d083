"""Readers: one per source format, each returning SkeletonSequence; ``read_clip`` picks one.

``read_clip`` dispatches on the file name (and, for JSON, the content):

- ``*.skeleton``       NTU RGB+D text (ntu-25)                 -> :func:`read_ntu`
- ``*.npz``, ``*.csv`` protoskel generic clip                  -> :func:`read_generic`
- ``*.json``           NW-UCLA style (has ``"skeletons"``)     -> ``readers.nwucla.read_nwucla``
- ``*_skeleton3D.txt`` MSR Action3D text                       -> ``readers.msr.read_msr``
- ``*.pkl``, ``*.pickle`` PYSKL annotations holding one clip   -> :func:`read_pyskl`
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from protoskel.data.readers.generic import (
    read_generic,
    read_generic_csv,
    read_generic_npz,
    write_generic_csv,
    write_generic_npz,
)
from protoskel.data.readers.ntu import read_ntu
from protoskel.data.readers.pyskl import load_restricted_pickle, read_pyskl
from protoskel.data.sequence import SkeletonSequence
from protoskel.errors import DataFormatError
from protoskel.layouts import Layout, get_layout

__all__ = [
    "SUPPORTED_FORMATS",
    "load_restricted_pickle",
    "read_clip",
    "read_generic",
    "read_generic_csv",
    "read_generic_npz",
    "read_ntu",
    "read_pyskl",
    "write_generic_csv",
    "write_generic_npz",
]

SUPPORTED_FORMATS = {
    ".skeleton": "NTU RGB+D skeleton text",
    ".npz": "protoskel generic NPZ",
    ".csv": "protoskel generic CSV",
    ".json": "NW-UCLA JSON (with a 'skeletons' list)",
    "_skeleton3D.txt": "MSR Action3D skeleton text",
    ".pkl/.pickle": "PYSKL annotation pickle holding one clip",
}


def _supported() -> str:
    return "; ".join(f"{k} ({v})" for k, v in SUPPORTED_FORMATS.items())


def _optional_reader(module: str, func: str, path: Path, what: str) -> Callable[..., Any]:
    """A reader from a module that may not be part of this installation."""
    full = f"protoskel.data.readers.{module}"
    if importlib.util.find_spec(full) is None:
        raise DataFormatError(
            path, None, f"{what} files need the reader module {full}, which is not installed"
        )
    return getattr(importlib.import_module(full), func)


def _json_has_skeletons(path: Path) -> bool:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataFormatError(path, None, "no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataFormatError(path, None, f"cannot read the file as UTF-8 text ({e})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataFormatError(
            path, f"line {e.lineno}, column {e.colno}", f"invalid JSON ({e.msg})"
        ) from None
    except RecursionError:
        raise DataFormatError(path, None, "the JSON is nested too deeply") from None
    return isinstance(data, dict) and "skeletons" in data


def _same_layout(seq: SkeletonSequence, layout: str | Path | Layout | None, path: Path) -> None:
    """A fixed-layout format cannot be read as another layout; point at the conversion."""
    if layout is None:
        return
    lay = get_layout(layout)
    if lay.name != seq.layout:
        raise DataFormatError(
            path,
            None,
            f"this file is in layout {seq.layout!r}, not {lay.name!r}; read it without a "
            f"layout and convert with .to_layout({lay.name!r})",
        )


def read_clip(path: str | Path, layout: str | Path | Layout | None = None) -> SkeletonSequence:
    """Read one clip from any supported file; ``layout`` is the layout the file is in.

    Formats that name their own layout must agree with ``layout`` when it is given; the
    generic NPZ/CSV formats use it when the file does not say. To change layout, read the
    clip and call ``.to_layout()``.
    """
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".skeleton"):
        seq = read_ntu(path)
    elif name.endswith((".npz", ".csv")):
        return read_generic(path, layout)
    elif name.endswith("_skeleton3d.txt"):
        seq = _optional_reader("msr", "read_msr", path, "MSR Action3D")(path)
    elif name.endswith(".json"):
        if not _json_has_skeletons(path):
            raise DataFormatError(
                path,
                None,
                "a JSON clip must be NW-UCLA style, a dict with a 'skeletons' list "
                f"(supported formats: {_supported()})",
            )
        seq = _optional_reader("nwucla", "read_nwucla", path, "NW-UCLA JSON")(path)
    elif name.endswith((".pkl", ".pickle")):
        seqs, _ = read_pyskl(path, layout)
        if len(seqs) != 1:
            raise DataFormatError(
                path,
                "annotations",
                f"holds {len(seqs)} clips, read_clip reads one; use read_pyskl for collections",
            )
        return seqs[0]
    else:
        kind = path.suffix or path.name
        raise DataFormatError(
            path, None, f"unknown clip format {kind!r}; supported: {_supported()}"
        )
    _same_layout(seq, layout, path)
    return seq
