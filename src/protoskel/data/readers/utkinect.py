"""UTKinect-Action3D reader: per-recording joint files cut into action segments.

``joints/joints_sSS_eEE.txt`` has one line per skeleton frame: the depth frame id, then 20
joints x (x y z) in the Kinect SDK v1 order (layout ``kinect-v1-20``, y up). Frame ids may
repeat (two skeleton frames for one depth frame); both are kept. ``joints/actionLabel.txt``
lists, per recording, each action with its first and last frame id; a segment holds the lines
whose frame id lies in that range. A boundary given as ``NaN`` marks an unusable segment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from protoskel.data.readers.msr import parse_number_rows, read_text
from protoskel.data.sequence import SkeletonSequence
from protoskel.errors import DataFormatError

__all__ = [
    "UTSegment",
    "parse_action_labels",
    "read_utkinect_joints",
    "read_utkinect_recording",
    "snake_case",
    "utkinect_classes",
]

NUM_JOINTS = 20
_RECORDING = re.compile(r"s(\d+)_e(\d+)$")
_ENTRY = re.compile(r"([A-Za-z_][A-Za-z0-9_ ]*)\s*:\s*(\S+)\s+(\S+)$")


@dataclass(frozen=True)
class UTSegment:
    """One labelled action segment of a recording (``start``/``end`` None when unusable)."""

    recording: str
    action: str
    start: int | None
    end: int | None
    line: int


def snake_case(name: str) -> str:
    """``sitDown`` -> ``sit_down`` (the dataset's camelCase action names as class names)."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name.strip()).lower().replace(" ", "_")


def _bound(path: Path, line: int, tok: str) -> int | None:
    if tok.lower() == "nan":
        return None
    try:
        val = int(tok)
    except ValueError:
        raise DataFormatError(path, f"line {line}", f"frame id {tok!r} is not an integer") from None
    if val < 0:
        raise DataFormatError(path, f"line {line}", f"negative frame id {val}")
    return val


def parse_action_labels(path: str | Path) -> dict[str, list[UTSegment]]:
    """Parse ``actionLabel.txt``: recording name lines, each followed by ``action: start end``."""
    p = Path(path)
    out: dict[str, list[UTSegment]] = {}
    current: str | None = None
    for i, raw in enumerate(read_text(p).splitlines(), start=1):
        ln = raw.strip()
        if not ln:
            continue
        if _RECORDING.match(ln):
            if ln in out:
                raise DataFormatError(p, f"line {i}", f"recording {ln} is listed twice")
            current = ln
            out[current] = []
            continue
        m = _ENTRY.match(ln)
        if m is None:
            raise DataFormatError(
                p, f"line {i}", f"expected 'sSS_eEE' or 'action: start end', got {ln[:60]!r}"
            )
        if current is None:
            raise DataFormatError(p, f"line {i}", "action line before any recording name")
        action = m[1].strip()
        start, end = _bound(p, i, m[2]), _bound(p, i, m[3])
        if (start is None) != (end is None):
            raise DataFormatError(p, f"line {i}", "only one of the two frame ids is NaN")
        if start is not None and end is not None and end < start:
            raise DataFormatError(p, f"line {i}", f"segment ends ({end}) before it starts")
        if any(s.action == action for s in out[current]):
            raise DataFormatError(p, f"line {i}", f"action {action!r} twice in {current}")
        out[current].append(UTSegment(current, action, start, end, i))
    if not out:
        raise DataFormatError(p, None, "no recordings listed")
    return out


def utkinect_classes(labels: dict[str, list[UTSegment]], path: str | Path) -> list[str]:
    """The action names in the order of the first recording; every recording must list them."""
    recs = list(labels)
    first = [s.action for s in labels[recs[0]]]
    for rec in recs[1:]:
        acts = [s.action for s in labels[rec]]
        if sorted(acts) != sorted(first):
            where = f"line {labels[rec][0].line}" if labels[rec] else None
            raise DataFormatError(
                path, where, f"recording {rec} lists actions {acts}, expected {first}"
            )
    return first


def read_utkinect_joints(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a ``joints_sSS_eEE.txt`` file.

    Returns frame ids int64 (T,), joints float32 (T, 20, 3) and the line number of each row.
    """
    p = Path(path)
    arr, line_no = parse_number_rows(p, read_text(p), 1 + 3 * NUM_JOINTS)
    if arr.shape[0] == 0:
        raise DataFormatError(p, "line 1", "zero-length recording (no frames)")
    ids = arr[:, 0]
    not_int = ids != np.round(ids)
    if not_int.any():
        i = int(np.flatnonzero(not_int)[0])
        raise DataFormatError(p, f"line {line_no[i]}, column 1", f"frame id {ids[i]} not integer")
    back = np.flatnonzero(np.diff(ids) < 0)
    if back.size:
        i = int(back[0]) + 1
        raise DataFormatError(
            p, f"line {line_no[i]}, column 1", f"frame id {int(ids[i])} goes back in time"
        )
    joints = arr[:, 1:].reshape(-1, NUM_JOINTS, 3).astype(np.float32)
    return ids.astype(np.int64), joints, line_no


def read_utkinect_recording(
    path: str | Path, segments: list[UTSegment], classes: list[str]
) -> tuple[list[SkeletonSequence], list[dict[str, str]]]:
    """Cut one recording's joint file into labelled (1, T, 20, 3) clips.

    ``classes`` are the action names as in the label file; labels index into it. Returns the
    clips and the unusable segments (NaN boundaries) as ``{"file", "reason"}`` records.
    """
    p = Path(path)
    ids, joints, _ = read_utkinect_joints(p)
    clips: list[SkeletonSequence] = []
    unusable: list[dict[str, str]] = []
    for seg in segments:
        sid = f"{seg.recording}_{snake_case(seg.action)}"
        if seg.start is None or seg.end is None:
            unusable.append(
                {
                    "file": f"{p.name} [{sid}]",
                    "reason": f"segment boundaries are NaN in the label file (line {seg.line})",
                }
            )
            continue
        sel = (ids >= seg.start) & (ids <= seg.end)
        if not sel.any():
            raise DataFormatError(
                p,
                f"frames {seg.start}..{seg.end}",
                f"segment {sid} has no frames (label file line {seg.line}); zero-length clip",
            )
        m = _RECORDING.match(seg.recording)
        seq = SkeletonSequence(
            keypoints=joints[sel][None],
            layout="kinect-v1-20",
            label=classes.index(seg.action),
            id=sid,
            subject=int(m[1]) if m else None,
            meta={
                "path": f"{p} [{sid}]",
                "recording": seg.recording,
                "repetition": int(m[2]) if m else None,
                "start_frame": seg.start,
                "end_frame": seg.end,
            },
        )
        seq.validate(f"{p} [{sid}]")
        clips.append(seq)
    return clips, unusable
