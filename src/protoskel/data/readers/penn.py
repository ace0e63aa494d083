"""Penn Action reader: ``labels/NNNN.mat`` MATLAB files of 2D joint annotations.

Fields used: ``x``, ``y``, ``visibility`` (T x 13 each), ``action`` (class name), ``train``
(1 train, -1 test), ``pose`` (camera view of the person), ``nframes``. Coordinates are image
pixels with y pointing down (layout ``penn-13``); visibility becomes the per-joint score. Joints
marked invisible keep their annotated position, as in the dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from protoskel.data.sequence import SkeletonSequence
from protoskel.errors import DataFormatError

__all__ = ["PENN_CLASSES", "PENN_VIEWS", "read_penn"]

PENN_CLASSES = (
    "baseball_pitch",
    "baseball_swing",
    "bench_press",
    "bowl",
    "clean_and_jerk",
    "golf_swing",
    "jump_rope",
    "jumping_jacks",
    "pullup",
    "pushup",
    "situp",
    "squat",
    "strum_guitar",
    "tennis_forehand",
    "tennis_serve",
)
# Values of the ``pose`` field; a clip's view is the index into this tuple.
PENN_VIEWS = ("front", "back", "left", "right")
NUM_JOINTS = 13


def _string(m: dict[str, Any], key: str) -> str | None:
    """A MATLAB char field as str (None when absent or not text)."""
    v = m.get(key)
    if v is None:
        return None
    a = np.asarray(v)
    if a.dtype.kind != "U" or a.size != 1:
        return None
    return str(a.reshape(-1)[0])


def _scalar(m: dict[str, Any], key: str) -> float | None:
    """A numeric 1x1 MATLAB field as float (None when absent or not one number)."""
    v = m.get(key)
    if v is None:
        return None
    a = np.asarray(v)
    if a.dtype.kind not in "iuf" or a.size != 1:
        return None
    return float(a.reshape(-1)[0])


def _table(p: Path, m: dict[str, Any], key: str) -> np.ndarray:
    """A numeric (T, 13) MATLAB field as float64."""
    if key not in m:
        raise DataFormatError(p, key, "missing field")
    a = np.asarray(m[key])
    if a.dtype.kind not in "iufb":
        raise DataFormatError(p, key, f"expected numbers, got MATLAB type {a.dtype}")
    if a.ndim == 1 and a.size == NUM_JOINTS:
        a = a[None]  # one-frame clips come out as a flat row
    if a.ndim != 2 or (a.shape[1] != NUM_JOINTS and a.size > 0):
        raise DataFormatError(p, key, f"expected shape (T, {NUM_JOINTS}), got {a.shape}")
    return a.astype(np.float64)


def read_penn(path: str | Path, label: int | None = None) -> SkeletonSequence:
    """Read one Penn Action ``.mat`` annotation file as a (1, T, 13, 2) clip with scores.

    The label is the index of ``action`` in :data:`PENN_CLASSES` (``label`` overrides it);
    ``meta["train"]`` holds the official split flag (True train, False test) when present.
    """
    p = Path(path)
    try:
        m = scipy.io.loadmat(p, squeeze_me=False)
    except FileNotFoundError:
        raise DataFormatError(p, None, "file not found") from None
    except Exception as e:  # scipy raises many types on corrupt files (ValueError, zlib, ...)
        raise DataFormatError(
            p, None, f"cannot read MATLAB file ({type(e).__name__}: {str(e)[:100]})"
        ) from None
    x, y, vis = _table(p, m, "x"), _table(p, m, "y"), _table(p, m, "visibility")
    if not x.shape == y.shape == vis.shape:
        raise DataFormatError(
            p, "x/y/visibility", f"shapes differ: {x.shape}, {y.shape}, {vis.shape}"
        )
    t = x.shape[0]
    if t == 0:
        raise DataFormatError(p, "x", "zero-length clip (no frames)")
    nframes = _scalar(m, "nframes")
    if nframes is not None and nframes != t:
        raise DataFormatError(p, "nframes", f"says {nframes:g} frames, x/y have {t}")
    bad_vis = ~np.isin(vis, (0, 1))
    if bad_vis.any():
        f, j = (int(k) for k in np.argwhere(bad_vis)[0])
        raise DataFormatError(
            p, f"visibility, frame {f}, joint {j}", f"expected 0 or 1, got {vis[f, j]}"
        )

    meta: dict[str, Any] = {"path": str(p)}
    action = _string(m, "action")
    if action is not None:
        meta["action"] = action
        if label is None:
            if action not in PENN_CLASSES:
                raise DataFormatError(
                    p, "action", f"unknown action {action!r}; classes: {', '.join(PENN_CLASSES)}"
                )
            label = PENN_CLASSES.index(action)
    train = _scalar(m, "train")
    if train is not None:
        if train not in (1.0, -1.0):
            raise DataFormatError(p, "train", f"expected 1 (train) or -1 (test), got {train:g}")
        meta["train"] = train == 1.0
    pose = _string(m, "pose")
    view = None
    if pose is not None:
        meta["pose"] = pose
        view = PENN_VIEWS.index(pose) if pose in PENN_VIEWS else None
    dims = m.get("dimensions")
    if dims is not None and np.asarray(dims).dtype.kind in "iu" and np.asarray(dims).size == 3:
        meta["dimensions"] = [int(d) for d in np.asarray(dims).reshape(-1)]  # height, width, T

    seq = SkeletonSequence(
        keypoints=np.stack([x, y], axis=-1)[None].astype(np.float32),
        layout="penn-13",
        scores=vis[None].astype(np.float32),
        label=label,
        id=p.stem,
        view=view,
        meta=meta,
    )
    seq.validate(p)
    return seq
