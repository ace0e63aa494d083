"""Prepared store on synthetic clips: round trip, offsets, memmaps, atomic writes, bad stores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from protoskel.data import store as store_mod
from protoskel.data.sequence import SkeletonSequence
from protoskel.data.store import open_store, write_store
from protoskel.errors import DataFormatError, DatasetError

CLASSES = ["wave", "kick", "bow"]


def clip(t: int, label: int, m: int = 1, seed: int = 0, scores: bool = False, **kw):
    """A random kinect-v1-20 clip with T = t frames."""
    rng = np.random.default_rng(seed)
    kp = rng.normal(size=(m, t, 20, 3)).astype(np.float32)
    sc = rng.uniform(size=(m, t, 20)).astype(np.float32) if scores else None
    return SkeletonSequence(kp, "kinect-v1-20", scores=sc, label=label, id=f"c{seed}", **kw)


def write(out: Path, splits, **kw) -> Path:
    args = {"dataset": "toy", "protocol": "p", "layout": "kinect-v1-20", "classes": CLASSES}
    args.update(kw)
    return write_store(out, splits, **args)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_round_trip_offsets_and_memmap(tmp_path: Path) -> None:
    train = [clip(5, 0, seed=1, subject=3, view=2), clip(1, 2, seed=2), clip(7, 1, seed=3)]
    val = [clip(4, 1, seed=4, subject=8)]
    out = write(tmp_path / "s", {"train": train, "val": val}, extra={"note": "hi"})
    st = open_store(out)
    assert st.split_names == ["train", "val"]
    assert st.classes == CLASSES
    assert st.layout.name == "kinect-v1-20"
    assert st.manifest["splits"] == {
        "train": {"count": 3, "frames": 13},
        "val": {"count": 1, "frames": 4},
    }
    assert st.manifest["note"] == "hi" and st.manifest["skipped"] == []
    tr = st.split("train")
    assert isinstance(tr.keypoints, np.memmap) and tr.keypoints.shape == (13, 1, 20, 3)
    assert tr.keypoints.dtype == np.float32
    np.testing.assert_array_equal(tr.offsets, [0, 5, 6, 13])
    assert tr.offsets.dtype == np.int64
    np.testing.assert_array_equal(tr.lengths, [5, 1, 7])
    np.testing.assert_array_equal(tr.labels, [0, 2, 1])
    np.testing.assert_array_equal(tr.subjects, [3, -1, -1])
    np.testing.assert_array_equal(tr.views, [2, -1, -1])
    assert tr.ids == ["c1", "c2", "c3"] and len(tr) == 3
    assert tr.scores is None
    for i, src in enumerate(train):
        got = tr.get(i)
        np.testing.assert_array_equal(got.keypoints, src.keypoints)
        assert (got.label, got.id, got.subject, got.view) == (
            src.label,
            src.id,
            src.subject,
            src.view,
        )
        got.validate()
    # Row i of the packed array is frame-major: rows offsets[2]: are clip 2's frames.
    np.testing.assert_array_equal(tr.keypoints[6:13, 0], train[2].keypoints[0])
    assert tr.get(-1).id == "c3"
    with pytest.raises(IndexError):
        tr.get(3)
    assert leftovers(tmp_path) == []


def test_persons_are_padded_and_scores_kept(tmp_path: Path) -> None:
    a = clip(3, 0, m=2, seed=1, scores=True)
    b = clip(2, 1, m=1, seed=2, scores=True)
    st = open_store(write(tmp_path / "s", {"train": [a, b]}))
    sp = st.split("train")
    assert st.manifest["num_persons"] == 2
    assert sp.keypoints.shape == (5, 2, 20, 3) and sp.scores.shape == (5, 2, 20)
    got = sp.get(1)
    np.testing.assert_array_equal(got.keypoints[0], b.keypoints[0])
    assert not got.keypoints[1].any() and not got.scores[1].any()
    np.testing.assert_array_equal(sp.get(0).scores, a.scores)


def test_missing_scores_in_a_scored_dataset_count_as_sure(tmp_path: Path) -> None:
    st = open_store(write(tmp_path / "s", {"train": [clip(2, 0, scores=True), clip(3, 1)]}))
    assert (st.split("train").get(1).scores == 1.0).all()


def test_unknown_split_lists_the_splits(tmp_path: Path) -> None:
    st = open_store(write(tmp_path / "s", {"train": [clip(2, 0)], "test": [clip(2, 1)]}))
    with pytest.raises(DatasetError, match=r"no split 'val'.*train, test"):
        st.split("val")


def test_bad_clip_leaves_nothing(tmp_path: Path) -> None:
    bad = clip(3, 0, seed=2)
    bad.keypoints[0, 1, 4, 2] = np.nan
    with pytest.raises(DataFormatError, match=r"frame 1, joint 4"):
        write(tmp_path / "s", {"train": [clip(2, 0), bad]})
    assert not (tmp_path / "s").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("seq", "match"),
    [
        (clip(2, 3), r"label 3 is outside the class list"),
        (clip(2, None), r"no label"),
        (SkeletonSequence(np.zeros((1, 0, 20, 3), np.float32), "kinect-v1-20", label=0), "zero"),
        (SkeletonSequence(np.zeros((1, 2, 19, 3), np.float32), "kinect-v1-20", label=0), "19"),
        (SkeletonSequence(np.zeros((1, 2, 20, 3), np.float32), "msr-20", label=0), "layout"),
    ],
)
def test_invalid_clips_are_refused(tmp_path: Path, seq: SkeletonSequence, match: str) -> None:
    with pytest.raises(DataFormatError, match=match):
        write(tmp_path / "s", {"train": [clip(2, 0), seq]})
    assert not (tmp_path / "s").exists() and leftovers(tmp_path) == []


def test_failure_while_writing_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    calls = []

    def boom(folder, clips, shape, with_scores):
        calls.append(folder)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(folder, clips, shape, with_scores)

    real = store_mod._write_split
    monkeypatch.setattr(store_mod, "_write_split", boom)
    with pytest.raises(OSError, match="disk full"):
        write(tmp_path / "s", {"train": [clip(2, 0)], "val": [clip(2, 1)]})
    assert not (tmp_path / "s").exists() and leftovers(tmp_path) == []


def test_overwrite_rules(tmp_path: Path, monkeypatch) -> None:
    out = write(tmp_path / "s", {"train": [clip(2, 0)]})
    with pytest.raises(DatasetError, match="--force"):
        write(out, {"train": [clip(3, 1)]})
    # A failed forced rewrite keeps the old store intact.
    monkeypatch.setattr(store_mod, "_write_split", lambda *a: (_ for _ in ()).throw(OSError("x")))
    with pytest.raises(OSError):
        write(out, {"train": [clip(3, 1)]}, force=True)
    monkeypatch.undo()
    assert open_store(out).manifest["splits"]["train"]["frames"] == 2
    write(out, {"train": [clip(3, 1)]}, force=True)
    assert open_store(out).manifest["splits"]["train"]["frames"] == 3
    assert leftovers(tmp_path) == []

    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="not a protoskel store"):
        write(other, {"train": [clip(2, 0)]}, force=True)
    assert (other / "notes.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError, match="is a file"):
        write(tmp_path / "file", {"train": [clip(2, 0)]}, force=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert open_store(write(empty, {"train": [clip(2, 0)]})).split("train").get(0).num_frames == 2


def test_open_store_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such folder"):
        open_store(tmp_path / "nope")
    with pytest.raises(DatasetError, match=r"no manifest\.json"):
        open_store(tmp_path)
    out = write(tmp_path / "s", {"train": [clip(2, 0), clip(3, 1)]})
    man = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**man, "version": 99}))
    with pytest.raises(DatasetError, match="version 99"):
        open_store(out)
    (out / "manifest.json").write_text(json.dumps(man))
    np.save(out / "train" / "offsets.npy", np.array([0, 2, 4], dtype=np.int64))
    with pytest.raises(DatasetError, match=r"offsets end at 4 but keypoints\.npy has 5 rows"):
        len(open_store(out).split("train"))
    (out / "train" / "labels.npy").unlink()
    with pytest.raises(DatasetError, match=r"missing labels\.npy"):
        open_store(out).split("train")


def test_custom_layout_round_trips_through_layout_def(tmp_path: Path) -> None:
    yaml_text = """
name: stick-3
dims: 2
up: [a, c]
across: [b, c]
joints:
  - a: null
  - b: a
  - c: b
parts:
  body: [a, b, c]
"""
    lay_file = tmp_path / "stick.yaml"
    lay_file.write_text(yaml_text)
    seq = SkeletonSequence(np.ones((1, 4, 3, 2), np.float32), "stick-3", label=0, id="s")
    out = write_store(
        tmp_path / "s", {"all": [seq]}, dataset="d", protocol="p", layout=lay_file, classes=["x"]
    )
    st = open_store(out)
    assert st.layout.name == "stick-3" and st.layout.parents == (-1, 0, 1)
    np.testing.assert_array_equal(st.split("all").get(0).keypoints, seq.keypoints)


def test_empty_split_is_stored_and_readable(tmp_path: Path) -> None:
    st = open_store(write(tmp_path / "s", {"train": [clip(2, 0)], "val": []}))
    val = st.split("val")
    assert len(val) == 0 and val.keypoints.shape == (0, 1, 20, 3)
    assert val.ids == [] and val.lengths.shape == (0,)
    assert st.manifest["splits"]["val"] == {"count": 0, "frames": 0}
