"""MSR Action3D reader: ``aAA_sSS_eEE_skeleton3D.txt`` files of ``x y z confidence`` rows.

Each frame is 20 consecutive rows in the MSR joint order (layout ``msr-20``), world coordinates
with y up. The confidence column is kept as the per-joint score.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from protoskel.data.sequence import SkeletonSequence
from protoskel.errors import DataFormatError

__all__ = ["MSR_CLASSES", "parse_msr_name", "parse_number_rows", "read_msr", "read_text"]

# Action names of Li et al. (CVPRW 2010), a01..a20 in order.
MSR_CLASSES = (
    "high_arm_wave",
    "horizontal_arm_wave",
    "hammer",
    "hand_catch",
    "forward_punch",
    "high_throw",
    "draw_x",
    "draw_tick",
    "draw_circle",
    "hand_clap",
    "two_hand_wave",
    "side_boxing",
    "bend",
    "forward_kick",
    "side_kick",
    "jogging",
    "tennis_swing",
    "tennis_serve",
    "golf_swing",
    "pick_up_and_throw",
)
NUM_JOINTS = 20
_NAME = re.compile(r"a(\d+)_s(\d+)_e(\d+)")


def parse_msr_name(name: str) -> tuple[int, int, int] | None:
    """(action, subject, repetition) numbers from a name like ``a01_s02_e03``, else None."""
    m = _NAME.match(name)
    return None if m is None else (int(m[1]), int(m[2]), int(m[3]))


def read_text(path: Path) -> str:
    """A text file's content, with read and decoding failures as DataFormatError."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataFormatError(path, None, f"cannot read file ({e.strerror})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataFormatError(
            path, f"line {line}", "not UTF-8 text (binary or corrupt file?)"
        ) from None


def parse_number_rows(path: Path, text: str, ncols: int) -> tuple[np.ndarray, np.ndarray]:
    """Parse whitespace-separated rows of ``ncols`` finite numbers; blank lines are ignored.

    Returns the float64 array (N, ncols) and the 1-based line number of each row, so that
    callers can point at the line of a later problem.
    """
    rows = [ln.split() for ln in text.splitlines()]
    line_no = np.array([i + 1 for i, r in enumerate(rows) if r], dtype=np.int64)
    rows = [r for r in rows if r]
    for ln, r in zip(line_no, rows, strict=True):
        if len(r) != ncols:
            raise DataFormatError(
                path, f"line {ln}", f"expected {ncols} numbers, found {len(r)} (truncated file?)"
            )
    try:
        arr = np.array(rows, dtype=np.float64).reshape(len(rows), ncols)
    except ValueError:
        # Slow path only on failure: find the exact token to name it.
        for ln, r in zip(line_no, rows, strict=True):
            for j, tok in enumerate(r):
                try:
                    float(tok)
                except ValueError:
                    raise DataFormatError(
                        path, f"line {ln}, column {j + 1}", f"not a number: {tok[:40]!r}"
                    ) from None
        # numpy refused something Python's float accepts: convert the slow way.
        arr = np.array([[float(t) for t in r] for r in rows], dtype=np.float64)
        arr = arr.reshape(len(rows), ncols)
    bad = ~np.isfinite(arr)
    if bad.any():
        i, j = (int(k) for k in np.argwhere(bad)[0])
        raise DataFormatError(
            path, f"line {line_no[i]}, column {j + 1}", f"non-finite number {rows[i][j]!r}"
        )
    return arr, line_no


def read_msr(path: str | Path, label: int | None = None) -> SkeletonSequence:
    """Read one MSR Action3D ``*_skeleton3D.txt`` file as a (1, T, 20, 3) clip with scores.

    Label, subject and repetition come from the file name (``aAA_sSS_eEE``) when it has that
    form; ``label`` overrides the label (0-based).
    """
    p = Path(path)
    arr, line_no = parse_number_rows(p, read_text(p), 4)
    n = arr.shape[0]
    if n == 0:
        raise DataFormatError(p, "line 1", "zero-length clip (no joint rows)")
    if n % NUM_JOINTS:
        t, k = divmod(n, NUM_JOINTS)
        raise DataFormatError(
            p,
            f"line {line_no[-1]}",
            f"file ends inside frame {t} with {k} of {NUM_JOINTS} joint rows "
            f"({n} rows is not a multiple of {NUM_JOINTS}; truncated file?)",
        )
    conf = arr[:, 3]
    out_of_range = (conf < 0) | (conf > 1)
    if out_of_range.any():
        i = int(np.flatnonzero(out_of_range)[0])
        raise DataFormatError(
            p, f"line {line_no[i]}, column 4", f"confidence {conf[i]} is outside [0, 1]"
        )
    arr = arr.reshape(1, n // NUM_JOINTS, NUM_JOINTS, 4)
    stem = p.name.removesuffix(".txt").removesuffix("_skeleton3D")
    parsed = parse_msr_name(stem)
    meta: dict = {"path": str(p)}
    subject = None
    if parsed is not None:
        action, subject, rep = parsed
        meta["repetition"] = rep
        if label is None and 1 <= action <= len(MSR_CLASSES):
            label = action - 1
    seq = SkeletonSequence(
        keypoints=arr[..., :3].astype(np.float32),
        layout="msr-20",
        scores=arr[..., 3].astype(np.float32),
        label=label,
        id=stem,
        subject=subject,
        meta=meta,
    )
    seq.validate(p)
    return seq
