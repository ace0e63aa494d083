"""Dataset registry and standard protocols: raw dataset folder -> labelled splits -> store.

Each registered dataset knows its source layout, classes and standard split:

- ``nw-ucla``: cross-view; train = views 1 and 2 (1020 clips), val = view 3 (464), from the
  lists in ``split_ctrgcn.json`` (CTR-GCN's feeder).
- ``msr-action3d``: cross-subject on the 557 files of ``files_used_in_cvpr12_paper.txt``;
  odd subjects train (284), even subjects test (273). The manifest records the action sets
  AS1-AS3 (Li et al. 2010) and, when ``vemulapalli_tr_te_splits.mat`` is present, its 10 random
  half-subject splits.
- ``utkinect``: the 200 segments of ``joints/actionLabel.txt``, 199 usable (``s10_e02`` carry
  has NaN boundaries and is listed as skipped). Split: odd subjects train, even subjects test
  (deterministic half-subject split). Subjects are stored, so leave-one-subject-out folds can
  be derived, and the manifest records the 10 half-subject splits of ``tr_te_splits.mat``.
- ``penn-action``: official ``train`` flag of each file (1258 train, 1068 test).
- ``generic``: ``classes.txt`` plus one subfolder per split holding ``.npz``/``.csv`` clips.
- ``pyskl``: one PYSKL annotation pickle (e.g. ``ntu60_3danno.pkl``); each list of its
  ``split`` dict (``xsub_train``, ``xsub_val``, ...) becomes a split of the store.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from protoskel.data.readers.msr import MSR_CLASSES, parse_msr_name, read_msr, read_text
from protoskel.data.readers.nwucla import NWUCLA_CLASSES, parse_nwucla_name, read_nwucla
from protoskel.data.readers.penn import PENN_CLASSES, PENN_VIEWS, read_penn
from protoskel.data.readers.utkinect import (
    parse_action_labels,
    read_utkinect_recording,
    snake_case,
    utkinect_classes,
)
from protoskel.data.sequence import SkeletonSequence
from protoskel.data.synthetic import CLASSES as SYNTHETIC_CLASSES
from protoskel.errors import DataFormatError, DatasetError
from protoskel.layouts import Layout, get_joint_map, get_layout, list_layouts

__all__ = [
    "DatasetSpec",
    "LoadOptions",
    "LoadedDataset",
    "get_dataset",
    "list_datasets",
    "load_dataset",
    "prepare_dataset",
]

# Action sets of Li et al. (CVPRW 2010), as 1-based MSR action numbers.
MSR_ACTION_SETS = {
    "AS1": (2, 3, 5, 6, 10, 13, 18, 20),
    "AS2": (1, 4, 7, 8, 9, 11, 12, 14),
    "AS3": (6, 14, 15, 16, 17, 18, 19, 20),
}

Progress = Callable[[int, int], None]
T = TypeVar("T")


@dataclass
class LoadOptions:
    """How to read a source folder: skip bad files (recording why), layout, progress."""

    skip_bad: bool = False
    layout: str | None = None
    progress: Progress | None = None


@dataclass
class LoadedDataset:
    """A dataset read into memory: clips per split plus what the manifest should say."""

    layout: str | Layout
    classes: list[str]
    protocol: str
    splits: dict[str, list[SkeletonSequence]]
    skipped: list[dict[str, str]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: its name, source layout, classes and standard protocol."""

    name: str
    layout: str
    classes: tuple[str, ...]
    protocol: str
    description: str
    load: Callable[[Path, LoadOptions], LoadedDataset]
    #: The source is one file (a PYSKL pickle), not a folder.
    src_is_file: bool = False
    #: The clips are generated, so --src is not read (and need not exist).
    generated: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (for ``datasets list``)."""
        return {
            "name": self.name,
            "layout": self.layout,
            "num_classes": len(self.classes) or None,
            "classes": list(self.classes),
            "protocol": self.protocol,
            "description": self.description,
        }


# ---------------------------------------------------------------- helpers
def _need_file(src: Path, rel: str, what: str) -> Path:
    p = src / rel
    if not p.is_file():
        raise DatasetError(f"{src}: expected {what} at {p}, not found")
    return p


def _need_dir(src: Path, rel: str, what: str) -> Path:
    p = src / rel
    if not p.is_dir():
        raise DatasetError(f"{src}: expected {what} in folder {p}, not found")
    return p


def _read_each(
    items: list[Path], read: Callable[[Path], T], src: Path, opts: LoadOptions, skipped: list
) -> list[tuple[Path, T]]:
    """Read every file; a DataFormatError stops, or with ``skip_bad`` is recorded and skipped."""
    out: list[tuple[Path, T]] = []
    for i, path in enumerate(items):
        try:
            out.append((path, read(path)))
        except DataFormatError as e:
            if not opts.skip_bad:
                raise
            skipped.append({"file": _rel(path, src), "reason": str(e)})
        if opts.progress is not None:
            opts.progress(i + 1, len(items))
    return out


def _rel(path: Path, src: Path) -> str:
    try:
        return str(path.relative_to(src))
    except ValueError:
        return str(path)


def _list_file_lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank stripped lines with their numbers (a last line without newline is fine)."""
    try:
        text = read_text(path)
    except DataFormatError as e:
        raise DatasetError(str(e)) from None
    return [(i, ln.strip()) for i, ln in enumerate(text.splitlines(), 1) if ln.strip()]


def _subject_splits(path: Path) -> list[dict[str, list[int]]]:
    """The ``tr_subjects``/``te_subjects`` rows of a Vemulapalli-style ``.mat`` split file."""
    import scipy.io

    try:
        m = scipy.io.loadmat(path)
        tr, te = np.asarray(m["tr_subjects"]), np.asarray(m["te_subjects"])
    except Exception as e:  # corrupt or unexpected .mat: say which file
        raise DatasetError(f"{path}: cannot read tr_subjects/te_subjects ({e})") from None
    if tr.ndim != 2 or tr.shape[0] != te.shape[0]:
        raise DatasetError(f"{path}: tr_subjects {tr.shape} and te_subjects {te.shape} differ")
    return [
        {"train": sorted(int(s) for s in a), "test": sorted(int(s) for s in b)}
        for a, b in zip(tr, te, strict=True)
    ]


def split_by_subjects(
    splits: dict[str, list[SkeletonSequence]], extra: dict[str, Any], index: int, where: str
) -> tuple[dict[str, list[SkeletonSequence]], dict[str, Any]]:
    """Pool every clip and re-split train/test by row ``index`` of ``extra["subject_splits"]``."""
    table = extra.get("subject_splits")
    if not table:
        raise DatasetError(
            f"{where}: no published subject splits to choose from (only datasets with a "
            "tr_te_splits.mat, UTKinect and MSR Action3D, have them); drop --subject-split"
        )
    if not 0 <= index < len(table):
        raise DatasetError(
            f"{where}: subject split {index} does not exist; choose 0 to {len(table) - 1}"
        )
    train, test = set(table[index]["train"]), set(table[index]["test"])
    out: dict[str, list[SkeletonSequence]] = {"train": [], "test": []}
    for seq in (s for clips in splits.values() for s in clips):
        if seq.subject in train:
            out["train"].append(seq)
        elif seq.subject in test:
            out["test"].append(seq)
        else:
            raise DatasetError(
                f"{where}: clip {seq.id} has subject {seq.subject}, in neither side of subject "
                f"split {index} (train {sorted(train)}, test {sorted(test)})"
            )
    info = {"subject_split": index, "train_subjects": sorted(train), "test_subjects": sorted(test)}
    return out, {**extra, **info}


# ---------------------------------------------------------------- NW-UCLA
def _load_nwucla(src: Path, opts: LoadOptions) -> LoadedDataset:
    split_file = _need_file(src, "split_ctrgcn.json", "the split lists split_ctrgcn.json")
    clip_dir = _need_dir(src, "all_sqe", "the clip files <clip>.json")
    try:
        lists = json.loads(split_file.read_bytes())
    except (OSError, ValueError) as e:
        raise DatasetError(f"{split_file}: cannot read split lists ({e})") from None
    split_names = [k for k in ("train", "val") if k in lists]
    if len(split_names) != 2:
        raise DatasetError(f"{split_file}: expected lists 'train' and 'val', found {list(lists)}")
    entries: list[tuple[str, str, int]] = []
    for split in split_names:
        for k, e in enumerate(lists[split]):
            try:
                name, label = str(e["file_name"]), int(e["label"])
            except (KeyError, TypeError, ValueError):
                raise DatasetError(
                    f"{split_file}: {split}[{k}]: expected {{'file_name': ..., 'label': 1..10}}"
                ) from None
            if not 1 <= label <= len(NWUCLA_CLASSES) or parse_nwucla_name(name) is None:
                raise DatasetError(f"{split_file}: {split}[{k}]: bad entry {name!r} / {label}")
            entries.append((split, name, label - 1))
    missing = [n for _, n, _ in entries if not (clip_dir / f"{n}.json").is_file()]
    if missing:
        raise DatasetError(
            f"{clip_dir}: {len(missing)} clips of the split lists are missing, e.g. "
            f"{missing[0]}.json (expected every clip of split_ctrgcn.json)"
        )
    label_of = {n: lab for _, n, lab in entries}
    skipped: list[dict[str, str]] = []
    paths = [clip_dir / f"{n}.json" for _, n, _ in entries]
    got = dict(_read_each(paths, lambda p: read_nwucla(p, label_of[p.stem]), src, opts, skipped))
    splits: dict[str, list[SkeletonSequence]] = {s: [] for s in split_names}
    for (split, _, _), path in zip(entries, paths, strict=True):
        if path in got:
            splits[split].append(got[path])
    return LoadedDataset(
        layout="kinect-v1-20",
        classes=list(NWUCLA_CLASSES),
        protocol="cross-view",
        splits=splits,
        skipped=skipped,
        extra={"split_source": "split_ctrgcn.json", "train_views": [1, 2], "val_views": [3]},
    )


# ---------------------------------------------------------------- MSR Action3D
def _load_msr(src: Path, opts: LoadOptions) -> LoadedDataset:
    list_file = _need_file(
        src, "files_used_in_cvpr12_paper.txt", "the 557-file list files_used_in_cvpr12_paper.txt"
    )
    data_dir = _need_dir(src, "MSRAction3DSkeletonReal3D", "the *_skeleton3D.txt files")
    names = []
    for i, ln in _list_file_lines(list_file):
        name = ln.split()[0].removesuffix(".txt").removesuffix("_skeleton3D")
        parsed = parse_msr_name(name)
        if parsed is None or not 1 <= parsed[0] <= len(MSR_CLASSES):
            raise DatasetError(f"{list_file}: line {i}: expected a name like a01_s01_e01: {ln!r}")
        names.append(name)
    paths = [data_dir / f"{n}_skeleton3D.txt" for n in names]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DatasetError(
            f"{data_dir}: {len(missing)} files of {list_file.name} are missing, e.g. "
            f"{missing[0].name}"
        )
    skipped: list[dict[str, str]] = []
    splits: dict[str, list[SkeletonSequence]] = {"train": [], "test": []}
    for _, seq in _read_each(paths, read_msr, src, opts, skipped):
        splits["train" if (seq.subject or 0) % 2 == 1 else "test"].append(seq)
    extra: dict[str, Any] = {
        "list_file": list_file.name,
        "train_subjects": [1, 3, 5, 7, 9],
        "test_subjects": [2, 4, 6, 8, 10],
        # Class indices (into "classes") of Li et al.'s action sets, for per-set benchmarks.
        "action_sets": {k: [a - 1 for a in v] for k, v in MSR_ACTION_SETS.items()},
        "action_sets_source": "Li et al. 2010",
    }
    mat = src / "vemulapalli_tr_te_splits.mat"
    if mat.is_file():
        extra["action_sets"] = _msr_action_sets(mat)
        extra["action_sets_source"] = mat.name
        extra["subject_splits"] = _subject_splits(mat)
        extra["subject_splits_source"] = mat.name
    return LoadedDataset(
        layout="msr-20",
        classes=list(MSR_CLASSES),
        protocol="cross-subject",
        splits=splits,
        skipped=skipped,
        extra=extra,
    )


def _msr_action_sets(path: Path) -> dict[str, list[int]]:
    """AS1-AS3 from ``vemulapalli_tr_te_splits.mat`` as 0-based class indices."""
    import scipy.io

    try:
        sets = np.asarray(scipy.io.loadmat(path)["action_sets"]).reshape(-1)
        out = {f"AS{i + 1}": sorted(int(a) - 1 for a in np.ravel(s)) for i, s in enumerate(sets)}
    except Exception as e:  # corrupt or unexpected .mat: say which file
        raise DatasetError(f"{path}: cannot read action_sets ({e})") from None
    if len(out) != 3 or any(not 0 <= a < len(MSR_CLASSES) for v in out.values() for a in v):
        raise DatasetError(f"{path}: action_sets should be 3 lists of actions 1..20")
    return out


# ---------------------------------------------------------------- UTKinect
def _load_utkinect(src: Path, opts: LoadOptions) -> LoadedDataset:
    joints_dir = _need_dir(src, "joints", "joints_sSS_eEE.txt files and actionLabel.txt")
    label_file = _need_file(src, "joints/actionLabel.txt", "the segment list actionLabel.txt")
    segments = parse_action_labels(label_file)
    raw_classes = utkinect_classes(segments, label_file)
    paths = [joints_dir / f"joints_{rec}.txt" for rec in segments]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise DatasetError(
            f"{joints_dir}: {len(missing)} recordings of actionLabel.txt are missing, "
            f"e.g. {missing[0]}"
        )
    skipped: list[dict[str, str]] = []
    recs = _read_each(
        paths,
        lambda p: read_utkinect_recording(p, segments[p.stem.removeprefix("joints_")], raw_classes),
        src,
        opts,
        skipped,
    )
    splits: dict[str, list[SkeletonSequence]] = {"train": [], "test": []}
    for path, (clips, unusable) in recs:
        for u in unusable:
            skipped.append({"file": _rel(path.parent / u["file"], src), "reason": u["reason"]})
        for seq in clips:
            splits["train" if (seq.subject or 0) % 2 == 1 else "test"].append(seq)
    extra: dict[str, Any] = {
        "segments_listed": sum(len(v) for v in segments.values()),
        "segment_labels": "joints/actionLabel.txt",
        "train_subjects": [1, 3, 5, 7, 9],
        "test_subjects": [2, 4, 6, 8, 10],
        "folds_note": "subjects are stored: leave-one-subject-out folds group clips by subject",
    }
    mat = src / "tr_te_splits.mat"
    if mat.is_file():
        extra["subject_splits"] = _subject_splits(mat)
        extra["subject_splits_source"] = mat.name
    return LoadedDataset(
        layout="kinect-v1-20",
        classes=[snake_case(c) for c in raw_classes],
        protocol="cross-subject-half",
        splits=splits,
        skipped=skipped,
        extra=extra,
    )


# ---------------------------------------------------------------- Penn Action
def _read_penn_with_split(path: Path) -> SkeletonSequence:
    seq = read_penn(path)
    if "train" not in seq.meta:
        raise DataFormatError(path, "train", "missing; the official split needs the train flag")
    if seq.label is None:
        raise DataFormatError(path, "action", "missing; the clip has no class")
    return seq


def _load_penn(src: Path, opts: LoadOptions) -> LoadedDataset:
    label_dir = _need_dir(src, "labels", "the NNNN.mat annotation files")
    paths = sorted(label_dir.glob("*.mat"))
    if not paths:
        raise DatasetError(f"{label_dir}: expected NNNN.mat annotation files, found none")
    skipped: list[dict[str, str]] = []
    splits: dict[str, list[SkeletonSequence]] = {"train": [], "test": []}
    for _, seq in _read_each(paths, _read_penn_with_split, src, opts, skipped):
        splits["train" if seq.meta["train"] else "test"].append(seq)
    return LoadedDataset(
        layout="penn-13",
        classes=list(PENN_CLASSES),
        protocol="official",
        splits=splits,
        skipped=skipped,
        extra={"view_names": list(PENN_VIEWS), "coords": "image pixels, y down"},
    )


# ---------------------------------------------------------------- generic
def _read_classes(path: Path) -> list[str]:
    classes: list[str] = []
    for i, name in _list_file_lines(path):
        if name in classes:
            raise DatasetError(f"{path}: line {i}: class {name!r} is listed twice")
        classes.append(name)
    if not classes:
        raise DatasetError(f"{path}: no class names (expected one per line)")
    return classes


def _generic_label(seq: SkeletonSequence, path: Path, classes: list[str]) -> int:
    """The clip's class index from ``meta['label_name']`` or ``label``, checked against classes."""
    name = seq.meta.get("label_name")
    if name is not None:
        if name not in classes:
            raise DataFormatError(
                path, "label", f"class {name!r} is not in classes.txt ({', '.join(classes)})"
            )
        idx = classes.index(name)
        if seq.label is not None and seq.label != idx:
            raise DataFormatError(
                path, "label", f"label {seq.label} disagrees with class name {name!r} ({idx})"
            )
        return idx
    if seq.label is None:
        raise DataFormatError(path, "label", "clip has no label (class index or class name)")
    if not 0 <= seq.label < len(classes):
        raise DataFormatError(
            path,
            "label",
            f"label {seq.label} is outside the {len(classes)} classes of classes.txt "
            f"(0..{len(classes) - 1})",
        )
    return int(seq.label)


def _load_generic(src: Path, opts: LoadOptions) -> LoadedDataset:
    from protoskel.data.readers.generic import read_generic

    classes = _read_classes(_need_file(src, "classes.txt", "classes.txt (one class per line)"))
    split_dirs = sorted(
        d
        for d in src.iterdir()
        if d.is_dir() and not d.name.startswith(".") and any(_clip_files(d))
    )
    if not split_dirs:
        raise DatasetError(
            f"{src}: expected split subfolders (e.g. train/, val/) holding .npz or .csv clips"
        )
    layout = opts.layout

    def read(path: Path) -> SkeletonSequence:
        nonlocal layout
        seq = read_generic(path, layout)
        if layout is None:
            layout = seq.layout  # the first clip fixes the layout for the rest
        elif seq.layout != get_layout(layout).name:
            raise DataFormatError(
                path, "layout", f"clip is in layout {seq.layout!r}, other clips in {layout!r}"
            )
        seq.label = _generic_label(seq, path, classes)
        seq.meta.setdefault("path", str(path))
        return seq

    skipped: list[dict[str, str]] = []
    all_paths = [(d.name, p) for d in split_dirs for p in _clip_files(d)]
    got = dict(_read_each([p for _, p in all_paths], read, src, opts, skipped))
    splits = {
        d.name: [got[p] for s, p in all_paths if s == d.name and p in got] for d in split_dirs
    }
    if layout is None:
        raise DatasetError(f"{src}: no readable clip, so the layout is unknown")
    return LoadedDataset(
        layout=layout, classes=classes, protocol="folders", splits=splits, skipped=skipped
    )


# ---------------------------------------------------------------- pyskl
def _pyskl_classes(src: Path, labels: list[int], ids: list[str]) -> list[str]:
    """Class names: ``classes.txt`` beside the pickle, NTU's action names, else class_0.."""
    from protoskel.data.readers.ntu import NTU_ACTIONS, parse_ntu_name

    listed = src.parent / "classes.txt"
    if listed.is_file():
        classes = _read_classes(listed)
        if len(classes) <= max(labels):
            raise DatasetError(
                f"{listed}: {len(classes)} classes, but {src.name} has label {max(labels)}"
            )
        return classes
    count = max(labels) + 1
    codes = [parse_ntu_name(i) for i in ids]
    # Only when every label is its clip's action number - 1, as in PYSKL's NTU files: a file
    # relabelled to a subset of the actions keeps neutral names rather than wrong ones.
    if count <= len(NTU_ACTIONS) and all(
        c is not None and c["action"] == label + 1 for c, label in zip(codes, labels, strict=True)
    ):
        return list(NTU_ACTIONS[:count])
    return [f"class_{k}" for k in range(count)]


def _load_pyskl(src: Path, opts: LoadOptions) -> LoadedDataset:
    """A PYSKL pickle: its ``split`` lists become store splits, labels are its class indices."""
    from protoskel.data.readers.pyskl import read_pyskl

    if opts.skip_bad:
        raise DatasetError(
            f"{src}: --skip-bad does not apply to a PYSKL pickle, which is read as a whole; "
            "drop the option (a bad annotation stops with its index and frame_dir)"
        )
    seqs, split = read_pyskl(src, opts.layout)
    if not split:
        raise DatasetError(
            f"{src}: the pickle has no 'split' dict, so there is no train/test protocol to "
            "follow; save it as {'split': {'train': [...], 'val': [...]}, 'annotations': [...]}"
        )
    by_id: dict[str, SkeletonSequence] = {}
    for i, seq in enumerate(seqs):
        if seq.label is None:
            raise DataFormatError(src, f"annotations[{i}] ({seq.id})", "has no label")
        if seq.id in by_id:
            raise DataFormatError(src, f"annotations[{i}]", f"frame_dir {seq.id!r} repeats")
        by_id[seq.id] = seq
    splits: dict[str, list[SkeletonSequence]] = {}
    for name, ids in split.items():
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise DataFormatError(
                src,
                f"split[{name!r}]",
                f"{len(missing)} frame_dir(s) without an annotation, e.g. {missing[0]!r}",
            )
        splits[name] = [by_id[i] for i in ids]
    labels = [int(s.label) for s in seqs]
    return LoadedDataset(
        layout=opts.layout or seqs[0].layout,  # a layout file stays a path, as for generic
        classes=_pyskl_classes(src, labels, list(by_id)),
        protocol="pyskl-split",
        splits=splits,
        extra={
            "pyskl_file": src.name,
            "unused_annotations": len(by_id) - len({i for ids in split.values() for i in ids}),
        },
    )


def _clip_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".npz", ".csv"))


# ---------------------------------------------------------------- synthetic
def _load_synthetic(src: Path, opts: LoadOptions) -> LoadedDataset:
    """Procedural demo clips (``protoskel.data.synthetic``); ``src`` is not read."""
    from protoskel.data.synthetic import LAYOUT, synthetic_splits

    splits = synthetic_splits()
    return LoadedDataset(
        layout=LAYOUT,
        classes=list(SYNTHETIC_CLASSES),
        protocol="cross-subject",
        splits=splits,
        extra={
            "generator": "protoskel.data.synthetic, seed 0",
            "train_subjects": sorted({s.subject for s in splits["train"]}),
            "val_subjects": sorted({s.subject for s in splits["val"]}),
        },
    )


# ---------------------------------------------------------------- registry
_REGISTRY: dict[str, DatasetSpec] = {
    s.name: s
    for s in (
        DatasetSpec(
            "nw-ucla",
            "kinect-v1-20",
            NWUCLA_CLASSES,
            "cross-view",
            "NW-UCLA Multiview Action3D: train views 1+2 (1020), val view 3 (464)",
            _load_nwucla,
        ),
        DatasetSpec(
            "msr-action3d",
            "msr-20",
            MSR_CLASSES,
            "cross-subject",
            "MSR Action3D, 557-file list: odd subjects train (284), even test (273)",
            _load_msr,
        ),
        DatasetSpec(
            "utkinect",
            "kinect-v1-20",
            tuple(
                snake_case(c)
                for c in (
                    "walk sitDown standUp pickUp carry throw push pull waveHands clapHands"
                ).split()
            ),
            "cross-subject-half",
            "UTKinect-Action3D, 199 usable segments: odd subjects train, even test",
            _load_utkinect,
        ),
        DatasetSpec(
            "penn-action",
            "penn-13",
            PENN_CLASSES,
            "official",
            "Penn Action 2D joints: official train flag (1258 train, 1068 test)",
            _load_penn,
        ),
        DatasetSpec(
            "generic",
            "(from clips)",
            (),
            "folders",
            "Your clips: classes.txt + split subfolders (train/, val/, ...) of .npz/.csv",
            _load_generic,
        ),
        DatasetSpec(
            "pyskl",
            "(from file)",
            (),
            "pyskl-split",
            "A PYSKL annotation pickle (--src FILE.pkl): its split lists become the splits",
            _load_pyskl,
            src_is_file=True,
        ),
        DatasetSpec(
            "synthetic",
            "kinect-v1-20",
            SYNTHETIC_CLASSES,
            "cross-subject",
            "Procedural demo actions: train 240 (7 subjects), val 90 (3); --src is not read",
            _load_synthetic,
            generated=True,
        ),
    )
}


def list_datasets() -> list[DatasetSpec]:
    """The registered datasets."""
    return list(_REGISTRY.values())


def get_dataset(name: str) -> DatasetSpec:
    """A registered dataset by name; unknown names raise DatasetError listing the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise DatasetError(
            f"unknown dataset {name!r}; known datasets: {', '.join(_REGISTRY)}"
        ) from None


def load_dataset(name: str, src: str | Path, opts: LoadOptions | None = None) -> LoadedDataset:
    """Read a dataset's source folder into labelled splits by its standard protocol."""
    spec = get_dataset(name)
    p = Path(src).expanduser()
    if spec.generated:
        pass
    elif spec.src_is_file:
        if not p.is_file():
            raise DatasetError(f"{p}: source file of dataset {name!r} not found (give the file)")
    elif not p.is_dir():
        raise DatasetError(f"{p}: source folder of dataset {name!r} not found")
    return spec.load(p, opts or LoadOptions())


def prepare_dataset(
    name: str,
    src: str | Path,
    out: str | Path,
    *,
    skip_bad: bool = False,
    force: bool = False,
    layout: str | None = None,
    to_layout: str | None = None,
    subject_split: int | None = None,
    keep_splits: list[str] | None = None,
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Read ``src`` by dataset ``name``'s protocol and write a prepared store to ``out``.

    Returns the manifest. Without ``skip_bad`` the first bad file stops everything and nothing
    is written; with it, bad files are left out and listed in the manifest's ``skipped``.
    ``to_layout`` re-expresses every clip in that layout through the joint maps, e.g. so that a
    model pretrained on another dataset's joint order can be fine-tuned on this one.
    ``subject_split`` (0-based) splits train/test by that row of the dataset's published
    subject splits (UTKinect's and MSR Action3D's ``tr_te_splits.mat``) instead of the default.
    ``keep_splits`` writes only those splits (e.g. a PYSKL file's ``xsub_train``, ``xsub_val``).
    """
    from protoskel.data.store import check_output, open_store, write_store

    say = log or (lambda msg: print(msg, file=sys.stderr))
    spec = get_dataset(name)
    check_output(out, force)  # fail before the slow part
    dst = get_layout(to_layout) if to_layout else None
    if dst is not None and spec.layout in list_layouts():
        # The dataset's own layout is known before reading: a missing map fails at once.
        get_joint_map(spec.layout, dst)
    t0 = time.perf_counter()
    data = load_dataset(spec.name, src, LoadOptions(skip_bad, layout, progress))
    counts = ", ".join(f"{k} {len(v)}" for k, v in data.splits.items())
    say(f"read {name}: {counts}; skipped {len(data.skipped)} ({time.perf_counter() - t0:.1f} s)")
    splits, extra, lay = data.splits, data.extra, data.layout
    protocol = data.protocol
    if subject_split is not None:
        splits, extra = split_by_subjects(splits, extra, subject_split, f"{name} in {src}")
        protocol = f"{protocol}-split{subject_split}"
        sizes = f"train {len(splits['train'])}, test {len(splits['test'])}"
        say(f"subject split {subject_split}: {sizes}")
    if keep_splits is not None:
        unknown = [k for k in keep_splits if k not in splits]
        if unknown:
            raise DatasetError(
                f"{name} in {src}: no split {unknown[0]!r} to keep; its splits are: "
                f"{', '.join(splits)}"
            )
        splits = {k: splits[k] for k in keep_splits}
    src_name = get_layout(lay).name
    if dst is not None and src_name != dst.name:
        get_joint_map(lay, dst)  # no map: fail with its message before converting anything
        splits = {k: [s.to_layout(dst) for s in v] for k, v in splits.items()}
        extra = {**extra, "retargeted_from": src_name}
        lay = dst.name
        say(f"retargeted {name} from {src_name} to {lay}")
    write_store(
        out,
        splits,
        dataset=spec.name,
        protocol=protocol,
        layout=lay,
        classes=data.classes,
        skipped=data.skipped,
        source=str(Path(src).expanduser().resolve()),
        extra=extra,
        force=force,
    )
    say(f"wrote {out} ({time.perf_counter() - t0:.1f} s)")
    return open_store(out).manifest
