"""Prepared store: every split's clips packed into one memory-mapped array plus offsets.

Layout on disk (written atomically: a temp folder beside ``OUT``, then a rename)::

    OUT/manifest.json             format, dataset, protocol, layout, classes, counts, skipped files
    OUT/<split>/keypoints.npy     float32 (F_total, M, V, C), all clips' frames concatenated
    OUT/<split>/scores.npy        float32 (F_total, M, V), only when the dataset has scores
    OUT/<split>/offsets.npy       int64 (N+1,), clip i = rows offsets[i]:offsets[i+1]
    OUT/<split>/labels.npy        int64 (N,)
    OUT/<split>/subjects.npy      int64 (N,), -1 unknown
    OUT/<split>/views.npy         int64 (N,), -1 unknown
    OUT/<split>/ids.json          [str, ...] clip ids

Frames come first on disk (not persons) so that one clip is one contiguous slice of rows.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterable, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from protoskel.data.sequence import SkeletonSequence
from protoskel.errors import DataFormatError, DatasetError, LayoutError
from protoskel.layouts import Layout, get_layout, layout_from_dict, list_layouts

__all__ = [
    "FORMAT",
    "VERSION",
    "PreparedSplit",
    "PreparedStore",
    "check_output",
    "is_store",
    "open_store",
    "write_store",
]

FORMAT = "protoskel-store"
VERSION = 1
_SPLIT_FILES = ("keypoints.npy", "offsets.npy", "labels.npy", "subjects.npy", "views.npy")


def is_store(path: str | Path) -> bool:
    """True when ``path`` is a folder holding a protoskel store manifest."""
    man = Path(path) / "manifest.json"
    if not man.is_file():
        return False
    try:
        return json.loads(man.read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def check_output(out: str | Path, force: bool = False) -> Path:
    """Refuse an output path that would clobber something; return it resolved.

    Absent or empty folders are fine; an existing store needs ``force``; anything else (a file,
    a folder with other content) is never overwritten.
    """
    p = Path(out).expanduser().resolve()
    if p.exists() and not p.is_dir():
        raise DatasetError(f"{p}: output exists and is a file; choose another --out folder")
    if p.is_dir() and any(p.iterdir()):
        if not is_store(p):
            raise DatasetError(
                f"{p}: output folder exists and is not a protoskel store; refusing to overwrite "
                "it (choose another --out folder or remove it yourself)"
            )
        if not force:
            raise DatasetError(
                f"{p}: a prepared store already exists there; pass --force to replace it"
            )
    if not p.parent.is_dir():
        raise DatasetError(f"{p.parent}: parent folder of the output does not exist")
    return p


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def _check_clip(seq: SkeletonSequence, lay: Layout, classes: Sequence[str], c: int) -> None:
    """Checks a clip must pass before it is packed (names the clip, as its file is gone)."""
    src = seq.meta.get("path") or seq.id or None
    seq.validate(src, lay)
    if seq.keypoints.shape[3] != c:
        raise DataFormatError(
            src, "keypoints", f"{seq.keypoints.shape[3]} coords per joint, other clips have {c}"
        )
    if seq.label is None:
        raise DataFormatError(src, "label", "clip has no label; every stored clip needs one")
    if not 0 <= int(seq.label) < len(classes):
        raise DataFormatError(
            src,
            "label",
            f"label {seq.label} is outside the class list (0..{len(classes) - 1}: "
            f"{', '.join(classes)})",
        )


def _write_split(
    folder: Path,
    clips: Sequence[SkeletonSequence],
    shape: tuple[int, int, int],
    with_scores: bool,
) -> dict[str, int]:
    """Pack one split's clips into ``folder``; returns the manifest counts."""
    folder.mkdir()
    lengths = np.array([s.num_frames for s in clips], dtype=np.int64)
    offsets = np.zeros(len(clips) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    num_persons, v, c = shape
    # Fill preallocated memmaps clip by clip so peak memory is one copy of the data.
    kp = np.lib.format.open_memmap(
        folder / "keypoints.npy", mode="w+", dtype=np.float32, shape=(total, num_persons, v, c)
    )
    sc = (
        np.lib.format.open_memmap(
            folder / "scores.npy", mode="w+", dtype=np.float32, shape=(total, num_persons, v)
        )
        if with_scores
        else None
    )
    for i, seq in enumerate(clips):
        a, b = offsets[i], offsets[i + 1]
        m = seq.num_persons
        kp[a:b, :m] = np.moveaxis(seq.keypoints, 0, 1)
        kp[a:b, m:] = 0.0
        if sc is not None:
            if seq.scores is None:
                # A clip without scores in a scored dataset: its real joints count as sure.
                sc[a:b, :m] = 1.0
            else:
                sc[a:b, :m] = np.moveaxis(seq.scores, 0, 1)
            sc[a:b, m:] = 0.0
    kp.flush()
    del kp
    if sc is not None:
        sc.flush()
        del sc
    np.save(folder / "offsets.npy", offsets)
    np.save(folder / "labels.npy", np.array([int(s.label) for s in clips], dtype=np.int64))
    np.save(folder / "subjects.npy", np.array([_int_or(s.subject) for s in clips], np.int64))
    np.save(folder / "views.npy", np.array([_int_or(s.view) for s in clips], np.int64))
    _write_json(folder / "ids.json", [s.id for s in clips])
    return {"count": len(clips), "frames": total}


def _int_or(x: int | None, default: int = -1) -> int:
    return default if x is None else int(x)


def write_store(
    out: str | Path,
    splits: Mapping[str, Iterable[SkeletonSequence]],
    *,
    dataset: str,
    protocol: str,
    layout: str | Layout,
    classes: Sequence[str],
    skipped: Sequence[Mapping[str, str]] = (),
    source: str = "",
    num_persons: int | None = None,
    extra: Mapping[str, Any] | None = None,
    force: bool = False,
) -> Path:
    """Validate and pack ``splits`` (name -> clips) into a prepared store at ``out``.

    Every clip must be in ``layout``, have a label in ``classes`` and the same coord count.
    ``num_persons`` defaults to the most persons in any clip; clips with fewer are zero-padded.
    Scores are stored when any clip has them. ``extra`` adds facts to the manifest. Nothing is
    left at ``out`` unless the whole store was written.
    """
    dst = check_output(out, force)
    lay = get_layout(layout)
    if not splits:
        raise DatasetError(f"{dst}: no splits to write")
    bad = [s for s in splits if not s or "/" in s or s.startswith(".") or s == "manifest.json"]
    if bad:
        raise DatasetError(f"invalid split name {bad[0]!r}: use a plain folder name")
    packed = {name: list(clips) for name, clips in splits.items()}
    all_clips = [s for clips in packed.values() for s in clips]
    if not all_clips:
        raise DatasetError(f"{dst}: every split is empty; nothing to store")
    c = all_clips[0].num_coords
    for seq in all_clips:
        if seq.layout != lay.name:
            raise DataFormatError(
                seq.meta.get("path") or seq.id or None,
                "layout",
                f"clip is in layout {seq.layout!r}, the store's layout is {lay.name!r}",
            )
        _check_clip(seq, lay, classes, c)
    m = max(s.num_persons for s in all_clips) if num_persons is None else int(num_persons)
    if m < 1:
        raise DatasetError(f"num_persons must be at least 1, got {m}")
    with_scores = any(s.scores is not None for s in all_clips)

    tmp = _fresh_dir(dst, "tmp")
    try:
        counts = {
            name: _write_split(tmp / name, clips, (m, lay.num_joints, c), with_scores)
            for name, clips in packed.items()
        }
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "dataset": dataset,
            "protocol": protocol,
            "layout": lay.name,
            "layout_def": lay.to_dict(),
            "classes": list(classes),
            "num_persons": m,
            "num_coords": c,
            "has_scores": with_scores,
            "splits": counts,
            "skipped": [dict(s) for s in skipped],
            "source": source,
        }
        for k, val in (extra or {}).items():
            manifest.setdefault(k, val)
        _write_json(tmp / "manifest.json", manifest)
        _commit(tmp, dst, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst


def _fresh_dir(dst: Path, tag: str) -> Path:
    """A new hidden folder beside ``dst`` (plain mkdir, so the umask sets its permissions)."""
    while True:
        p = dst.parent / f".{dst.name}.{tag}-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            p.mkdir()
            return p
        except FileExistsError:
            continue


def _commit(tmp: Path, dst: Path, force: bool) -> None:
    """Move the finished temp folder to ``dst``, replacing an old store only with ``force``."""
    check_output(dst, force)  # things may have changed while we were writing
    if dst.is_dir() and any(dst.iterdir()):
        old = _fresh_dir(dst, "old")
        os.replace(dst, old / "store")
        try:
            os.replace(tmp, dst)
        except BaseException:
            os.replace(old / "store", dst)
            raise
        finally:
            shutil.rmtree(old, ignore_errors=True)
    else:
        if dst.is_dir():
            dst.rmdir()
        os.replace(tmp, dst)


class PreparedSplit:
    """One split of a prepared store; arrays load lazily, keypoints and scores as memmaps."""

    def __init__(self, store: PreparedStore, name: str) -> None:
        self.store = store
        self.name = name
        self.path = store.path / name
        missing = [f for f in (*_SPLIT_FILES, "ids.json") if not (self.path / f).is_file()]
        if missing:
            raise DatasetError(
                f"{self.path}: split {name!r} is incomplete, missing {', '.join(missing)}; "
                "prepare the store again"
            )

    def _load(self, fname: str, mmap: bool = False) -> np.ndarray:
        try:
            return np.load(self.path / fname, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise DatasetError(f"{self.path / fname}: cannot read array ({e})") from None

    @cached_property
    def keypoints(self) -> np.ndarray:
        """float32 memmap (F_total, M, V, C)."""
        return self._load("keypoints.npy", mmap=True)

    @cached_property
    def scores(self) -> np.ndarray | None:
        """float32 memmap (F_total, M, V), or None when the dataset has no scores."""
        return self._load("scores.npy", mmap=True) if (self.path / "scores.npy").is_file() else None

    @cached_property
    def offsets(self) -> np.ndarray:
        """int64 (N+1,): clip i is rows ``offsets[i]:offsets[i+1]``."""
        off = self._load("offsets.npy")
        if off.ndim != 1 or off.size < 1 or off[0] != 0 or np.any(np.diff(off) < 0):
            raise DatasetError(f"{self.path / 'offsets.npy'}: offsets are not 0, ..., F ascending")
        if int(off[-1]) != self.keypoints.shape[0]:
            raise DatasetError(
                f"{self.path}: offsets end at {int(off[-1])} but keypoints.npy has "
                f"{self.keypoints.shape[0]} rows; prepare the store again"
            )
        return off

    def _per_clip(self, fname: str) -> np.ndarray:
        arr = self._load(fname)
        if arr.shape != (len(self),):
            raise DatasetError(
                f"{self.path / fname}: expected {len(self)} entries, found shape {arr.shape}"
            )
        return arr

    @cached_property
    def labels(self) -> np.ndarray:
        """int64 (N,) class indices."""
        return self._per_clip("labels.npy")

    @cached_property
    def subjects(self) -> np.ndarray:
        """int64 (N,) subject ids, -1 when unknown."""
        return self._per_clip("subjects.npy")

    @cached_property
    def views(self) -> np.ndarray:
        """int64 (N,) view ids, -1 when unknown."""
        return self._per_clip("views.npy")

    @cached_property
    def ids(self) -> list[str]:
        """Clip ids (N)."""
        try:
            ids = json.loads((self.path / "ids.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise DatasetError(f"{self.path / 'ids.json'}: cannot read ({e})") from None
        if not isinstance(ids, list) or len(ids) != len(self):
            raise DatasetError(f"{self.path / 'ids.json'}: expected a list of {len(self)} ids")
        return [str(i) for i in ids]

    @cached_property
    def lengths(self) -> np.ndarray:
        """int64 (N,) frames per clip."""
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return int(self.offsets.shape[0]) - 1

    def __repr__(self) -> str:
        return f"PreparedSplit({self.name!r}, {len(self)} clips, {self.keypoints.shape[0]} frames)"

    def get(self, i: int) -> SkeletonSequence:
        """Clip ``i`` as a SkeletonSequence (arrays copied out of the memmap)."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"clip index {i} out of range for split {self.name!r} ({n} clips)")
        i %= n
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        kp = np.ascontiguousarray(np.moveaxis(np.asarray(self.keypoints[a:b]), 1, 0))
        sc = None
        if self.scores is not None:
            sc = np.ascontiguousarray(np.moveaxis(np.asarray(self.scores[a:b]), 1, 0))
        subj, view = int(self.subjects[i]), int(self.views[i])
        return SkeletonSequence(
            keypoints=kp,
            layout=self.store.layout.name,
            scores=sc,
            label=int(self.labels[i]),
            id=self.ids[i],
            subject=None if subj < 0 else subj,
            view=None if view < 0 else view,
            meta={"split": self.name, "index": i},
        )

    def __getitem__(self, i: int) -> SkeletonSequence:
        return self.get(i)


class PreparedStore:
    """An opened prepared store: manifest, layout, classes and its splits."""

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest
        self._splits: dict[str, PreparedSplit] = {}

    @cached_property
    def layout(self) -> Layout:
        """The store's layout (built-in by name, else rebuilt from the stored definition)."""
        name = self.manifest.get("layout")
        if name in list_layouts():
            return get_layout(name)
        try:
            return layout_from_dict(self.manifest.get("layout_def"), f"{self.path}/manifest.json")
        except LayoutError as e:
            raise DatasetError(f"{self.path}/manifest.json: layout_def: {e}") from None

    @property
    def classes(self) -> list[str]:
        """Class names; label i is ``classes[i]``."""
        return list(self.manifest["classes"])

    @property
    def split_names(self) -> list[str]:
        """Split names in manifest order."""
        return list(self.manifest["splits"])

    def split(self, name: str) -> PreparedSplit:
        """One split by name; unknown names raise DatasetError listing the splits."""
        if name not in self.manifest["splits"]:
            raise DatasetError(
                f"{self.path}: no split {name!r}; splits are: {', '.join(self.split_names)}"
            )
        if name not in self._splits:
            self._splits[name] = PreparedSplit(self, name)
        return self._splits[name]

    def __repr__(self) -> str:
        counts = ", ".join(f"{k} {v['count']}" for k, v in self.manifest["splits"].items())
        return f"PreparedStore({str(self.path)!r}, {self.manifest.get('dataset')}: {counts})"


def open_store(path: str | Path) -> PreparedStore:
    """Open a prepared store folder (written by ``write_store``)."""
    p = Path(path).expanduser()
    man = p / "manifest.json"
    if not p.is_dir():
        raise DatasetError(f"{p}: no such folder; prepare it with `protoskel datasets prepare`")
    if not man.is_file():
        raise DatasetError(f"{p}: not a prepared store (no manifest.json)")
    try:
        manifest = json.loads(man.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DatasetError(f"{man}: cannot read manifest ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DatasetError(f"{man}: not a protoskel store manifest (format != {FORMAT!r})")
    if manifest.get("version") != VERSION:
        raise DatasetError(
            f"{man}: store version {manifest.get('version')!r}, this protoskel reads version "
            f"{VERSION}; prepare the store again"
        )
    for key in ("layout", "classes", "splits"):
        if key not in manifest:
            raise DatasetError(f"{man}: manifest has no {key!r}")
    return PreparedStore(p, manifest)
