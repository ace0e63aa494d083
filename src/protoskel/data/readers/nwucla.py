"""NW-UCLA reader: ``all_sqe/<clip>.json`` files holding ``skeletons`` [T][20][3].

Clip names are ``aAA_sSS_eEE_vVV`` (action, subject, repetition, view). Joints are in the Kinect
SDK v1 order (layout ``kinect-v1-20``), camera coordinates in metres with y up; one person.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from protoskel.data.sequence import SkeletonSequence
from protoskel.errors import DataFormatError

__all__ = ["NWUCLA_ACTIONS", "NWUCLA_CLASSES", "parse_nwucla_name", "read_nwucla"]

# The 10 action codes of the dataset in class order (the split lists number them 1..10).
NWUCLA_ACTIONS = (1, 2, 3, 4, 5, 6, 8, 9, 11, 12)
NWUCLA_CLASSES = (
    "pick_up_with_one_hand",
    "pick_up_with_two_hands",
    "drop_trash",
    "walk_around",
    "sit_down",
    "stand_up",
    "donning",
    "doffing",
    "throw",
    "carry",
)
NUM_JOINTS = 20
_NAME = re.compile(r"a(\d+)_s(\d+)_e(\d+)_v(\d+)$")


def parse_nwucla_name(name: str) -> tuple[int, int, int, int] | None:
    """(action, subject, repetition, view) numbers from ``aAA_sSS_eEE_vVV``, else None."""
    m = _NAME.match(name)
    return None if m is None else (int(m[1]), int(m[2]), int(m[3]), int(m[4]))


def _locate_bad_value(path: Path, sk: Any) -> DataFormatError:
    """Find the first frame/joint/coord that keeps ``skeletons`` from being a (T, 20, 3) array."""
    if not isinstance(sk, list):
        return DataFormatError(path, "skeletons", f"expected a list of frames, got {_kind(sk)}")
    for t, frame in enumerate(sk):
        if not isinstance(frame, list) or len(frame) != NUM_JOINTS:
            got = f"{len(frame)} joints" if isinstance(frame, list) else _kind(frame)
            return DataFormatError(
                path, f"skeletons, frame {t}", f"expected {NUM_JOINTS} joints, got {got}"
            )
        for v, joint in enumerate(frame):
            if not isinstance(joint, list) or len(joint) != 3:
                got = f"{len(joint)} values" if isinstance(joint, list) else _kind(joint)
                return DataFormatError(
                    path, f"skeletons, frame {t}, joint {v}", f"expected [x, y, z], got {got}"
                )
            for c, val in enumerate(joint):
                if isinstance(val, bool) or not isinstance(val, (int, float)):
                    return DataFormatError(
                        path,
                        f"skeletons, frame {t}, joint {v}, coord {c}",
                        f"not a number: {_kind(val)}",
                    )
    return DataFormatError(path, "skeletons", "cannot be read as numbers")


def _kind(x: Any) -> str:
    return "null" if x is None else f"{type(x).__name__} {str(x)[:30]!r}"


def read_nwucla(path: str | Path, label: int | None = None) -> SkeletonSequence:
    """Read one NW-UCLA clip as a (1, T, 20, 3) sequence.

    Subject, view and the label (0-based class index) come from the clip name; ``label``
    overrides the label. A ``label`` field inside the file (1-based) must agree with the name.
    """
    p = Path(path)
    try:
        doc = json.loads(p.read_bytes())
    except OSError as e:
        raise DataFormatError(p, None, f"cannot read file ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise DataFormatError(
            p, f"line {e.lineno}, column {e.colno}", f"invalid JSON: {e.msg}"
        ) from None
    except (ValueError, RecursionError) as e:  # undecodable bytes, absurd nesting
        raise DataFormatError(p, None, f"not a JSON text ({type(e).__name__})") from None
    if not isinstance(doc, dict) or "skeletons" not in doc:
        raise DataFormatError(p, "skeletons", "missing field (expected an object with skeletons)")
    sk = doc["skeletons"]
    try:
        arr = np.asarray(sk, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        raise _locate_bad_value(p, sk) from None
    if arr.ndim == 1 and arr.size == 0:
        raise DataFormatError(p, "skeletons", "zero-length clip (no frames)")
    if arr.ndim != 3 or arr.shape[1:] != (NUM_JOINTS, 3):
        raise _locate_bad_value(p, sk)
    nulls = np.isnan(arr)
    if nulls.any():  # numpy turns JSON null into NaN; name it as what the file says
        t, v, c = (int(i) for i in np.argwhere(nulls)[0])
        what = "null" if sk[t][v][c] is None else "NaN"
        raise DataFormatError(
            p, f"skeletons, frame {t}, joint {v}, coord {c}", f"not a number: {what}"
        )

    stem = p.stem
    parsed = parse_nwucla_name(stem)
    if parsed is None and isinstance(doc.get("file_name"), str):
        parsed = parse_nwucla_name(doc["file_name"])
    subject = view = None
    meta: dict[str, Any] = {"path": str(p)}
    if parsed is not None:
        action, subject, rep, view = parsed
        meta["action_code"], meta["repetition"] = action, rep
        from_name = NWUCLA_ACTIONS.index(action) if action in NWUCLA_ACTIONS else None
        in_file = doc.get("label")
        if from_name is not None and in_file is not None and in_file != from_name + 1:
            raise DataFormatError(
                p,
                "label",
                f"label {in_file!r} disagrees with action a{action:02d} in the clip name "
                f"(expected {from_name + 1})",
            )
        if label is None:
            label = from_name
    seq = SkeletonSequence(
        keypoints=arr[None].astype(np.float32),
        layout="kinect-v1-20",
        label=label,
        id=stem,
        subject=subject,
        view=view,
        meta=meta,
    )
    seq.validate(p)
    return seq
