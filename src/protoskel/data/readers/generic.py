"""protoskel's generic clip formats, NPZ and CSV, described for users in ``docs/formats.md``.

NPZ holds ``keypoints`` (M, T, V, C) or (T, V, C), optional ``scores``, ``label`` (class index
or class name), ``label_name``, ``layout``, ``fps``, ``id``, ``subject`` and ``view``.
CSV holds one row per frame per person under a ``frame,person,<joint>_x,<joint>_y...`` header,
after an optional ``# key: value`` comment block (``layout``, ``label``, ``fps``, ...).
"""

from __future__ import annotations

import math
import os
import re
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from protoskel.data.sequence import SkeletonSequence
from protoskel.errors import DataFormatError, LayoutError, brief
from protoskel.layouts import Layout, get_layout, list_layouts

__all__ = [
    "MAX_FRAMES",
    "MAX_NPZ_BYTES",
    "MAX_PERSONS",
    "atomic_write",
    "read_generic",
    "read_generic_csv",
    "read_generic_npz",
    "resolve_layout",
    "write_generic_csv",
    "write_generic_npz",
]

# Guards against a typo (or a hostile file) turning one frame index into gigabytes of zeros.
MAX_FRAMES = 100_000
MAX_PERSONS = 64
# What an NPZ may expand to: a compressed archive of a few MB can declare gigabytes of zeros
# (a zip bomb), and a server that reads uploads must refuse it before decompressing.
MAX_NPZ_BYTES = 2 << 30

_NPZ_KEYS = ("keypoints", "scores", "label", "label_name", "layout", "fps", "id", "subject", "view")
_CSV_KEYS = ("layout", "label", "label_name", "fps", "id", "subject", "view")
_SUFFIXES = ("x", "y", "z", "score")
_INT_RE = re.compile(r"[0-9]+")
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def resolve_layout(
    requested: str | Path | Layout | None,
    declared: str | None,
    path: str | Path,
    where: str,
) -> Layout | None:
    """Reconcile the caller's layout with the one a file declares; None when neither says."""
    req = None if requested is None else get_layout(requested)
    if declared is None:
        return req
    if req is not None:
        if req.name != declared:
            raise DataFormatError(
                path,
                where,
                f"the file says layout {declared!r} but {req.name!r} was asked for; "
                "leave the layout out or fix the file",
            )
        return req
    # A file may only name built-ins: a path inside a data file must never be opened.
    if declared not in list_layouts():
        raise DataFormatError(
            path,
            where,
            f"unknown layout {declared!r}; built-in layouts: {', '.join(list_layouts())} "
            "(for a custom layout pass its YAML file as the layout)",
        )
    return get_layout(declared)


def _validated(seq: SkeletonSequence, path: Path, layout: Layout) -> SkeletonSequence:
    seq.validate(path, layout)
    return seq


def _check_scores(scores: np.ndarray, path: Path, where: str) -> None:
    bad = ~np.isfinite(scores) | (scores < 0) | (scores > 1)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataFormatError(
            path,
            f"{where} at index {idx}",
            f"score {scores[idx]} is not a number in [0, 1]",
        )


# ---------------------------------------------------------------- NPZ
def _scalar(arrays: dict[str, np.ndarray], key: str, path: Path) -> Any:
    """The single value a metadata array holds (a 0-d array or a one-element array)."""
    a = arrays[key]
    if a.size != 1:
        raise DataFormatError(path, f"field {key!r}", f"expected one value, found shape {a.shape}")
    return a.reshape(()).item()


def _npz_str(arrays: dict[str, np.ndarray], key: str, path: Path) -> str | None:
    if key not in arrays:
        return None
    if arrays[key].dtype.kind != "U":
        raise DataFormatError(
            path, f"field {key!r}", f"expected a string, found dtype {arrays[key].dtype}"
        )
    return str(_scalar(arrays, key, path))


def _npz_int(arrays: dict[str, np.ndarray], key: str, path: Path) -> int | None:
    if key not in arrays:
        return None
    if arrays[key].dtype.kind not in "iu":
        raise DataFormatError(
            path, f"field {key!r}", f"expected an integer, found dtype {arrays[key].dtype}"
        )
    return int(_scalar(arrays, key, path))


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        raise DataFormatError(path, None, "no such file")
    if path.is_file() and not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            npy = f.read(6) == b"\x93NUMPY"
        # numpy would read any other bytes as a pickle and suggest unpickling: never here.
        what = (
            "a single .npy array, not an NPZ archive; save clips with numpy.savez"
            if npy
            else "not an NPZ archive (not a zip file: truncated, or another kind of file); "
            "write clips with numpy.savez or protoskel pose"
        )
        raise DataFormatError(path, None, what)
    try:
        obj = np.load(path, allow_pickle=False)
    except Exception as e:
        # numpy and zipfile raise many types on corrupt input; all mean "not a valid NPZ".
        raise DataFormatError(path, None, f"not a readable NPZ archive ({brief(e)})") from None
    if not isinstance(obj, np.lib.npyio.NpzFile):
        raise DataFormatError(
            path, None, "a single .npy array, not an NPZ archive; save clips with numpy.savez"
        )
    try:
        with obj:
            # zipfile stops each member at its declared size, so this bounds what is inflated.
            size = sum(info.file_size for info in obj.zip.infolist())
            if size > MAX_NPZ_BYTES:
                raise DataFormatError(
                    path,
                    None,
                    f"the archive expands to {size / 2**30:.2f} GiB, more than the "
                    f"{MAX_NPZ_BYTES / 2**30:g} GiB a clip file may hold; split the clip into "
                    "several files",
                )
            out = {}
            for key in obj.files:
                try:
                    out[key] = obj[key]
                except Exception as e:
                    raise DataFormatError(
                        path,
                        f"array {key!r}",
                        f"cannot be read ({type(e).__name__}: {e}); only plain numeric and "
                        "string arrays are allowed (no pickled objects)",
                    ) from None
            return out
    except DataFormatError:
        raise
    except Exception as e:
        raise DataFormatError(path, None, f"not a readable NPZ archive ({brief(e)})") from None


def read_generic_npz(
    path: str | Path, layout: str | Path | Layout | None = None
) -> SkeletonSequence:
    """Read a generic NPZ clip; ``layout`` is needed when the file does not name one."""
    path = Path(path)
    arrays = _load_npz(path)
    if "keypoints" not in arrays:
        raise DataFormatError(
            path,
            "field 'keypoints'",
            f"missing; the archive holds {sorted(arrays) or 'nothing'} "
            f"(generic NPZ fields: {', '.join(_NPZ_KEYS)})",
        )
    kp = arrays["keypoints"]
    if kp.dtype.kind not in "fiu":
        raise DataFormatError(
            path, "field 'keypoints'", f"expected numbers, found dtype {kp.dtype}"
        )
    if kp.ndim == 3:
        kp = kp[None]
    elif kp.ndim != 4:
        raise DataFormatError(
            path, "field 'keypoints'", f"expected shape (M, T, V, C) or (T, V, C), got {kp.shape}"
        )
    with np.errstate(over="ignore", invalid="ignore"):
        kp = kp.astype(np.float32)

    scores = None
    if "scores" in arrays:
        sc = arrays["scores"]
        if sc.dtype.kind not in "fiu":
            raise DataFormatError(
                path, "field 'scores'", f"expected numbers, found dtype {sc.dtype}"
            )
        if sc.ndim == 2 and arrays["keypoints"].ndim == 3:
            sc = sc[None]
        if sc.shape != kp.shape[:3]:
            raise DataFormatError(
                path,
                "field 'scores'",
                f"shape {sc.shape} does not match keypoints (M, T, V) = {kp.shape[:3]}",
            )
        with np.errstate(over="ignore", invalid="ignore"):
            scores = sc.astype(np.float32)
        _check_scores(scores, path, "field 'scores'")

    lay = resolve_layout(layout, _npz_str(arrays, "layout", path), path, "field 'layout'")
    if lay is None:
        raise DataFormatError(
            path,
            "field 'layout'",
            "missing, and no layout was given; store the layout's name in the file as a "
            "'layout' array (e.g. numpy.savez(..., layout='coco-17')) or, from Python, pass "
            f"layout=... to the reader (built-in layouts: {', '.join(list_layouts())})",
        )

    meta: dict[str, Any] = {}
    label: int | None = None
    if "label" in arrays:
        kind = arrays["label"].dtype.kind
        if kind == "U":
            meta["label_name"] = str(_scalar(arrays, "label", path))
        elif kind in "iu":
            label = int(_scalar(arrays, "label", path))
            if label < 0:
                raise DataFormatError(path, "field 'label'", f"class index {label} is negative")
        else:
            raise DataFormatError(
                path,
                "field 'label'",
                f"expected a class index (integer) or class name (string), found dtype "
                f"{arrays['label'].dtype}",
            )
    label_name = _npz_str(arrays, "label_name", path)
    if label_name is not None:
        meta["label_name"] = label_name

    fps = None
    if "fps" in arrays:
        if arrays["fps"].dtype.kind not in "fiu":
            raise DataFormatError(
                path, "field 'fps'", f"expected a number, found dtype {arrays['fps'].dtype}"
            )
        fps = float(_scalar(arrays, "fps", path))
        if not (math.isfinite(fps) and fps > 0):
            raise DataFormatError(path, "field 'fps'", f"must be a positive number, found {fps}")

    clip_id = _npz_str(arrays, "id", path)
    seq = SkeletonSequence(
        keypoints=kp,
        layout=lay.name,
        scores=scores,
        label=label,
        id=path.stem if clip_id is None else clip_id,
        subject=_npz_int(arrays, "subject", path),
        view=_npz_int(arrays, "view", path),
        fps=fps,
        meta=meta,
    )
    return _validated(seq, path, lay)


# ---------------------------------------------------------------- CSV
class _CsvHeader:
    """Column plan of a CSV header: which column holds which joint coordinate or score."""

    def __init__(self, path: Path, line: int, cells: list[str]) -> None:
        self.path, self.line = path, line
        self.ncols = len(cells)
        if cells[:2] != ["frame", "person"]:
            raise DataFormatError(
                path,
                f"line {line}, column 1",
                f"the header must start with 'frame,person', found {','.join(cells[:2])!r}",
            )
        self.names = cells
        self.columns: dict[str, dict[str, int]] = {}
        for c, cell in enumerate(cells[2:], start=2):
            joint, sep, suffix = cell.rpartition("_")
            if not sep or not joint or suffix not in _SUFFIXES:
                raise DataFormatError(
                    path,
                    f"line {line}, column {c + 1} ({cell!r})",
                    "expected <joint>_x, <joint>_y, <joint>_z or <joint>_score",
                )
            cols = self.columns.setdefault(joint, {})
            if suffix in cols:
                raise DataFormatError(
                    path, f"line {line}, column {c + 1} ({cell!r})", "column given twice"
                )
            cols[suffix] = c

    def infer_layout(self) -> Layout | None:
        """The built-in layout whose joints are exactly the header's (order breaks ties)."""
        names = list(self.columns)
        same = [get_layout(n) for n in list_layouts() if set(get_layout(n).joints) == set(names)]
        if len(same) > 1:
            same = [lay for lay in same if list(lay.joints) == names]
        return same[0] if len(same) == 1 else None

    def plan(self, layout: Layout) -> tuple[np.ndarray, np.ndarray | None]:
        """Column indices (V, C) of the coordinates and (V,) of the scores, in layout order."""
        where = f"line {self.line}"
        for joint, cols in self.columns.items():
            if joint not in layout.joints:
                c = min(cols.values())
                raise DataFormatError(
                    self.path,
                    f"{where}, column {c + 1} ({self.names[c]!r})",
                    f"layout {layout.name!r} has no joint {joint!r}; its joints are: "
                    f"{', '.join(layout.joints)}",
                )
        missing = [j for j in layout.joints if j not in self.columns]
        if missing:
            raise DataFormatError(
                self.path,
                where,
                f"{len(missing)} joint(s) of layout {layout.name!r} have no columns: "
                f"{', '.join(missing)}",
            )
        first = self.columns[layout.joints[0]]
        has_z, has_score = "z" in first, "score" in first
        for joint in layout.joints:
            cols = self.columns[joint]
            for suffix, wanted in (("x", True), ("y", True), ("z", has_z), ("score", has_score)):
                if (suffix in cols) != wanted:
                    state = "has no" if wanted else "has a"
                    raise DataFormatError(
                        self.path,
                        where,
                        f"joint {joint!r} {state} {joint}_{suffix} column, unlike "
                        f"{layout.joints[0]!r}; every joint needs the same columns",
                    )
        coords = ("x", "y", "z") if has_z else ("x", "y")
        xyz = np.array([[self.columns[j][s] for s in coords] for j in layout.joints])
        score = np.array([self.columns[j]["score"] for j in layout.joints]) if has_score else None
        return xyz, score


def _parse_int(path: Path, where: str, cell: str, name: str, limit: int) -> int:
    if not _INT_RE.fullmatch(cell):
        raise DataFormatError(path, where, f"{name} must be a non-negative integer, found {cell!r}")
    value = int(cell)
    if value >= limit:
        raise DataFormatError(
            path,
            where,
            f"{name} {value} is beyond the limit of {limit}; split long recordings into clips",
        )
    return value


def _parse_row(path: Path, line: int, cells: list[str], names: list[str]) -> np.ndarray:
    """Numbers of one data row from column 3 on; errors point at the offending cell."""
    try:
        values = np.array(cells[2:], dtype=np.float64)
    except ValueError:
        values = None
    with np.errstate(over="ignore"):
        if values is not None and np.isfinite(values.astype(np.float32)).all():
            return values
    out = []
    for c, cell in enumerate(cells[2:], start=2):
        try:
            v = float(cell)
        except ValueError:
            v = None
        if v is None or not math.isfinite(v) or abs(v) > _FLOAT32_MAX:
            problem = "is not a number" if v is None else "is not a finite float32"
            raise DataFormatError(
                path, f"line {line}, column {c + 1} ({names[c]})", f"value {cell!r} {problem}"
            )
        out.append(v)
    return np.array(out, dtype=np.float64)


def _csv_meta(path: Path, line: int, key: str, value: str, meta: dict[str, Any]) -> None:
    where = f"line {line} ('# {key}:')"
    if key in meta:
        raise DataFormatError(path, where, f"{key!r} is given twice in the comment block")
    if key in ("fps",):
        try:
            fps = float(value)
        except ValueError:
            fps = math.nan
        if not (math.isfinite(fps) and fps > 0):
            raise DataFormatError(path, where, f"fps must be a positive number, found {value!r}")
        meta[key] = fps
    elif key in ("subject", "view"):
        if not _INT_RE.fullmatch(value):
            raise DataFormatError(path, where, f"{key} must be an integer, found {value!r}")
        meta[key] = int(value)
    else:
        if not value:
            raise DataFormatError(path, where, f"{key} is empty")
        meta[key] = value


def read_generic_csv(
    path: str | Path, layout: str | Path | Layout | None = None
) -> SkeletonSequence:
    """Read a generic CSV clip (one row per frame per person, joint columns by name)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataFormatError(path, None, "no such file") from None
    except OSError as e:
        raise DataFormatError(path, None, f"cannot read the file ({e.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataFormatError(path, f"line {line}", "not valid UTF-8 text") from None
    lines = [ln.rstrip("\r") for ln in text.split("\n")]

    meta: dict[str, Any] = {}
    header: _CsvHeader | None = None
    i = 0
    while i < len(lines):
        s = lines[i].strip()
        i += 1
        if not s:
            continue
        if s.startswith("#"):
            key, sep, value = s[1:].partition(":")
            key = key.strip().lower()
            # Free-text comments are allowed; only known keys carry metadata.
            if sep and key in _CSV_KEYS:
                _csv_meta(path, i, key, value.strip(), meta)
            continue
        header = _CsvHeader(path, i, [c.strip() for c in s.split(",")])
        break
    if header is None:
        raise DataFormatError(
            path, None, "no header line 'frame,person,<joint>_x,<joint>_y,...' found"
        )

    lay = resolve_layout(layout, meta.get("layout"), path, "'# layout:' comment")
    if lay is None:
        lay = header.infer_layout()
    if lay is None:
        raise DataFormatError(
            path,
            f"line {header.line}",
            "the header's joints do not name exactly one built-in layout; add a "
            "'# layout: NAME' line above the header or pass the layout",
        )
    xyz_cols, score_cols = header.plan(lay)

    rows: dict[tuple[int, int], tuple[int, np.ndarray]] = {}
    for n in range(i, len(lines)):
        s = lines[n].strip()
        if not s or s.startswith("#"):
            continue
        line = n + 1
        cells = [c.strip() for c in s.split(",")]
        if len(cells) != header.ncols:
            raise DataFormatError(
                path,
                f"line {line}",
                f"expected {header.ncols} comma-separated values as in the header, "
                f"found {len(cells)}",
            )
        t = _parse_int(path, f"line {line}, column 1 (frame)", cells[0], "frame", MAX_FRAMES)
        m = _parse_int(path, f"line {line}, column 2 (person)", cells[1], "person", MAX_PERSONS)
        if (t, m) in rows:
            raise DataFormatError(
                path,
                f"line {line}",
                f"frame {t}, person {m} was already given on line {rows[(t, m)][0]}",
            )
        values = np.empty(header.ncols, dtype=np.float64)
        values[2:] = _parse_row(path, line, cells, header.names)
        if score_cols is not None:
            bad = (values[score_cols] < 0) | (values[score_cols] > 1)
            if bad.any():
                c = int(score_cols[np.flatnonzero(bad)[0]])
                raise DataFormatError(
                    path,
                    f"line {line}, column {c + 1} ({header.names[c]})",
                    f"score {cells[c]!r} is outside [0, 1]",
                )
        rows[(t, m)] = (line, values)
    if not rows:
        raise DataFormatError(
            path, f"line {header.line}", "no data rows after the header (a clip needs frames)"
        )

    num_frames = 1 + max(t for t, _ in rows)
    num_persons = 1 + max(m for _, m in rows)
    kp = np.zeros((num_persons, num_frames, lay.num_joints, xyz_cols.shape[1]), np.float32)
    present = np.zeros((num_persons, num_frames, lay.num_joints), np.float32)
    scores = np.zeros_like(present)
    with np.errstate(over="ignore"):
        for (t, m), (_, values) in rows.items():
            kp[m, t] = values[xyz_cols]
            present[m, t] = 1.0
            if score_cols is not None:
                scores[m, t] = values[score_cols]
    # Without score columns every given row is fully trusted; only absent rows score 0.
    if score_cols is None:
        scores = None if present.all() else present

    label, label_name = None, meta.get("label_name")
    if "label" in meta:
        if _INT_RE.fullmatch(meta["label"]):
            label = int(meta["label"])
        elif label_name is None:
            label_name = meta["label"]
        else:
            raise DataFormatError(
                path, "'# label:' comment", "a class name is given in both label and label_name"
            )
    seq = SkeletonSequence(
        keypoints=kp,
        layout=lay.name,
        scores=scores,
        label=label,
        id=meta.get("id", path.stem),
        subject=meta.get("subject"),
        view=meta.get("view"),
        fps=meta.get("fps"),
        meta={} if label_name is None else {"label_name": label_name},
    )
    return _validated(seq, path, lay)


def read_generic(path: str | Path, layout: str | Path | Layout | None = None) -> SkeletonSequence:
    """Read a generic clip, NPZ or CSV by extension; ``layout`` if the file does not name one."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return read_generic_npz(path, layout)
    if suffix == ".csv":
        return read_generic_csv(path, layout)
    raise DataFormatError(path, None, f"generic clips are .npz or .csv files, not {suffix!r}")


# ---------------------------------------------------------------- writers
def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write through a temp file in the target folder, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same folder, so os.replace is an atomic rename; plain open() (not mkstemp) so the file
    # gets the usual umask permissions instead of 0600.
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _layout_for_writing(seq: SkeletonSequence, layout: str | Path | Layout | None) -> Layout:
    lay = get_layout(layout if layout is not None else seq.layout)
    if lay.name != seq.layout:
        raise LayoutError(
            f"the clip is in layout {seq.layout!r} but layout {lay.name!r} was given; "
            "convert it with seq.to_layout() first"
        )
    seq.validate(seq.id or None, lay)
    return lay


def _one_line(s: str) -> str:
    return " ".join(s.split())


def write_generic_npz(
    seq: SkeletonSequence, path: str | Path, layout: str | Path | Layout | None = None
) -> Path:
    """Save a clip as generic NPZ, atomically; ``layout`` only for custom (YAML) layouts."""
    _layout_for_writing(seq, layout)
    arrays: dict[str, np.ndarray] = {
        "keypoints": np.ascontiguousarray(seq.keypoints, dtype=np.float32),
        "layout": np.array(seq.layout),
        "id": np.array(seq.id),
    }
    if seq.scores is not None:
        arrays["scores"] = np.ascontiguousarray(seq.scores, dtype=np.float32)
    label_name = seq.meta.get("label_name")
    if seq.label is not None:
        arrays["label"] = np.array(int(seq.label), dtype=np.int64)
        if label_name is not None:
            arrays["label_name"] = np.array(str(label_name))
    elif label_name is not None:
        arrays["label"] = np.array(str(label_name))
    if seq.fps is not None:
        arrays["fps"] = np.array(float(seq.fps))
    for key in ("subject", "view"):
        if getattr(seq, key) is not None:
            arrays[key] = np.array(int(getattr(seq, key)), dtype=np.int64)
    return atomic_write(Path(path), lambda f: np.savez(f, **arrays))


def write_generic_csv(
    seq: SkeletonSequence, path: str | Path, layout: str | Path | Layout | None = None
) -> Path:
    """Save a clip as generic CSV (every frame of every person), atomically."""
    lay = _layout_for_writing(seq, layout)
    lines = [f"# layout: {lay.name}"]
    if seq.id:
        lines.append(f"# id: {_one_line(seq.id)}")
    label_name = seq.meta.get("label_name")
    if seq.label is not None:
        lines.append(f"# label: {int(seq.label)}")
    if label_name is not None:
        lines.append(f"# label_name: {_one_line(str(label_name))}")
    if seq.fps is not None:
        lines.append(f"# fps: {float(seq.fps)!r}")
    for key in ("subject", "view"):
        if getattr(seq, key) is not None:
            lines.append(f"# {key}: {int(getattr(seq, key))}")
    coords = ("x", "y", "z")[: seq.num_coords]
    suffixes = (*coords, "score") if seq.scores is not None else coords
    lines.append(",".join(["frame", "person"] + [f"{j}_{s}" for j in lay.joints for s in suffixes]))

    m_, t_ = seq.keypoints.shape[:2]
    parts = [seq.keypoints.astype(np.float64)]
    if seq.scores is not None:
        parts.append(seq.scores.astype(np.float64)[..., None])
    # (M, T, V, C[+1]) -> rows ordered frame-major, then person.
    values = np.concatenate(parts, axis=-1).transpose(1, 0, 2, 3).reshape(t_ * m_, -1)
    frames = np.repeat(np.arange(t_), m_)
    persons = np.tile(np.arange(m_), t_)
    for t, m, row in zip(frames, persons, values, strict=True):
        # %.9g keeps every float32 exactly, so a CSV round trip is lossless.
        lines.append(f"{t},{m}," + ",".join(f"{x:.9g}" for x in row))
    data = ("\n".join(lines) + "\n").encode("utf-8")
    return atomic_write(Path(path), lambda f: f.write(data))
