"""Dataset readers and protocols: real-data counts, values and joint orders; bad inputs.

Real-data tests read ``../shared/datasets`` through ``dataset_dir`` and skip when absent. The
bad-input tests write small synthetic files in each dataset's format into ``tmp_path``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from conftest import dataset_dir
from protoskel.data.protocols import MSR_ACTION_SETS, get_dataset, prepare_dataset
from protoskel.data.readers.msr import read_msr
from protoskel.data.readers.nwucla import read_nwucla
from protoskel.data.readers.penn import read_penn
from protoskel.data.readers.utkinect import (
    parse_action_labels,
    read_utkinect_recording,
    utkinect_classes,
)
from protoskel.data.store import PreparedStore, open_store
from protoskel.errors import DataFormatError, DatasetError
from protoskel.layouts import get_layout

FOLDERS = {
    "nw-ucla": "nw-ucla",
    "msr-action3d": "msr-action3d",
    "utkinect": "utkinect-action3d",
    "penn-action": "penn-action-2d",
}


@pytest.fixture(scope="session")
def stores(tmp_path_factory) -> dict[str, PreparedStore]:
    """Real stores prepared on first use (a few seconds each), shared by the whole session."""
    root = tmp_path_factory.mktemp("real-stores")

    class Lazy(dict):
        def __missing__(self, name: str) -> PreparedStore:
            prepare_dataset(name, dataset_dir(FOLDERS[name]), root / name, log=lambda _: None)
            self[name] = open_store(root / name)
            return self[name]

    return Lazy()


# ---------------------------------------------------------------- counts and splits
@pytest.mark.realdata
def test_nwucla_cross_view_counts_and_views(stores) -> None:
    st = stores["nw-ucla"]
    tr, va = st.split("train"), st.split("val")
    assert (len(tr), len(va)) == (1020, 464)
    assert set(tr.views.tolist()) == {1, 2} and set(va.views.tolist()) == {3}
    assert set(tr.labels.tolist()) == set(range(10)) == set(va.labels.tolist())
    assert st.layout.name == "kinect-v1-20" and st.manifest["num_persons"] == 1
    assert tr.scores is None
    # Labels agree with the split list (1..10 -> 0..9), entry by entry.
    lists = json.loads((dataset_dir("nw-ucla") / "split_ctrgcn.json").read_text())
    assert tr.ids == [e["file_name"] for e in lists["train"]]
    assert tr.labels.tolist() == [e["label"] - 1 for e in lists["train"]]
    assert tr.lengths.tolist() == [e["length"] for e in lists["train"]]


@pytest.mark.realdata
def test_msr_cross_subject_counts_and_action_sets(stores) -> None:
    st = stores["msr-action3d"]
    tr, te = st.split("train"), st.split("test")
    assert (len(tr), len(te)) == (284, 273)
    assert set(tr.subjects.tolist()) == {1, 3, 5, 7, 9}
    assert set(te.subjects.tolist()) == {2, 4, 6, 8, 10}
    assert st.manifest["skipped"] == [] and len(st.classes) == 20
    assert "a13_s09_e02" not in tr.ids + te.ids  # the all-zero file is not in the 557 list
    # The .mat action sets are Li et al.'s, as 0-based class indices.
    assert st.manifest["action_sets_source"] == "vemulapalli_tr_te_splits.mat"
    assert st.manifest["action_sets"] == {
        k: sorted(a - 1 for a in v) for k, v in MSR_ACTION_SETS.items()
    }
    assert len(st.manifest["subject_splits"]) == 10
    assert st.split("train").scores is not None


@pytest.mark.realdata
def test_utkinect_segments_counts(stores) -> None:
    st = stores["utkinect"]
    tr, te = st.split("train"), st.split("test")
    assert len(tr) + len(te) == 199 and st.manifest["segments_listed"] == 200
    assert set(tr.subjects.tolist()) == {1, 3, 5, 7, 9}
    assert set(te.subjects.tolist()) == {2, 4, 6, 8, 10}
    (skip,) = st.manifest["skipped"]
    assert "s10_e02_carry" in skip["file"] and "NaN" in skip["reason"]
    assert st.classes[:3] == ["walk", "sit_down", "stand_up"] and len(st.classes) == 10
    # Leave-one-subject-out is derivable: every subject has a full set of 10 (9 for s10).
    subjects = np.concatenate([tr.subjects, te.subjects])
    counts = np.bincount(subjects, minlength=11)[1:]
    assert counts.tolist() == [20] * 9 + [19]
    assert len(st.manifest["subject_splits"]) == 10


@pytest.mark.realdata
def test_utkinect_published_subject_split(stores, tmp_path: Path) -> None:
    row = stores["utkinect"].manifest["subject_splits"][3]
    prepare_dataset(
        "utkinect", dataset_dir(FOLDERS["utkinect"]), tmp_path / "s3", subject_split=3,
        log=lambda _: None,
    )  # fmt: skip
    st = open_store(tmp_path / "s3")
    tr, te = st.split("train"), st.split("test")
    assert sorted(set(tr.subjects.tolist())) == row["train"] == [3, 5, 6, 8, 9]
    assert sorted(set(te.subjects.tolist())) == row["test"]
    assert len(tr) + len(te) == 199


@pytest.mark.realdata
def test_penn_official_split_counts(stores) -> None:
    st = stores["penn-action"]
    tr, te = st.split("train"), st.split("test")
    assert (len(tr), len(te)) == (1258, 1068)
    assert len(st.classes) == 15 and set(tr.labels.tolist()) == set(range(15))
    assert st.manifest["num_coords"] == 2 and tr.scores is not None
    assert set(np.unique(tr.scores[:5000]).tolist()) <= {0.0, 1.0}
    assert set(tr.views.tolist()) == {0, 1, 2, 3}


# ---------------------------------------------------------------- values against raw files
@pytest.mark.realdata
def test_nwucla_values_equal_raw_json(stores) -> None:
    raw = json.loads((dataset_dir("nw-ucla") / "all_sqe" / "a01_s01_e00_v01.json").read_text())
    sk = np.array(raw["skeletons"], dtype=np.float32)
    sp = stores["nw-ucla"].split("train")
    seq = sp.get(sp.ids.index("a01_s01_e00_v01"))
    assert (seq.subject, seq.view, seq.label) == (1, 1, 0)
    np.testing.assert_array_equal(seq.keypoints[0], sk)
    assert seq.keypoints[0, 0, 0, 0] == np.float32(raw["skeletons"][0][0][0])


@pytest.mark.realdata
def test_msr_values_equal_raw_text(stores) -> None:
    f = dataset_dir("msr-action3d") / "MSRAction3DSkeletonReal3D" / "a05_s02_e03_skeleton3D.txt"
    raw = np.loadtxt(f).reshape(-1, 20, 4)
    sp = stores["msr-action3d"].split("test")
    seq = sp.get(sp.ids.index("a05_s02_e03"))
    assert (seq.label, seq.subject) == (4, 2)
    np.testing.assert_array_equal(seq.keypoints[0], raw[..., :3].astype(np.float32))
    np.testing.assert_array_equal(seq.scores[0], raw[..., 3].astype(np.float32))


@pytest.mark.realdata
def test_utkinect_segment_equals_raw_rows(stores) -> None:
    raw = np.loadtxt(dataset_dir("utkinect-action3d") / "joints" / "joints_s01_e01.txt")
    # actionLabel.txt: s01_e01 sitDown 572..686; every line whose frame id lies inside.
    rows = raw[(raw[:, 0] >= 572) & (raw[:, 0] <= 686), 1:].reshape(-1, 20, 3)
    sp = stores["utkinect"].split("train")
    seq = sp.get(sp.ids.index("s01_e01_sit_down"))
    assert seq.label == 1 and seq.subject == 1
    np.testing.assert_array_equal(seq.keypoints[0], rows.astype(np.float32))


@pytest.mark.realdata
def test_penn_values_equal_raw_mat(stores) -> None:
    m = scipy.io.loadmat(dataset_dir("penn-action-2d") / "labels" / "0001.mat")
    sp = stores["penn-action"].split("test")  # 0001 has train = -1
    seq = sp.get(sp.ids.index("0001"))
    assert seq.label == 0  # baseball_pitch
    np.testing.assert_array_equal(seq.keypoints[0, ..., 0], m["x"].astype(np.float32))
    np.testing.assert_array_equal(seq.keypoints[0, ..., 1], m["y"].astype(np.float32))
    np.testing.assert_array_equal(seq.scores[0], m["visibility"].astype(np.float32))


# ---------------------------------------------------------------- joint orders
@pytest.mark.realdata
@pytest.mark.parametrize("name", list(FOLDERS))
def test_head_above_hips_in_mean_pose(stores, name: str) -> None:
    st = stores[name]
    lay = st.layout
    kp = np.asarray(st.split("train").keypoints)[:, 0]  # (F, V, C)
    present = np.abs(kp).sum(axis=(1, 2)) > 0
    mean = kp[present].mean(axis=0)
    head_y = mean[lay.index("head"), 1]
    if name == "penn-action":  # image coordinates: y points down
        hip_y = mean[[lay.index("left_hip"), lay.index("right_hip")], 1].mean()
        shoulder_y = mean[[lay.index("left_shoulder"), lay.index("right_shoulder")], 1].mean()
        assert head_y < shoulder_y < hip_y
    else:
        hip_y = mean[lay.index("hip_center"), 1]
        assert head_y > mean[lay.index("shoulder_center"), 1] > mean[lay.index("spine"), 1]
        assert head_y > hip_y > mean[lay.index("left_foot"), 1]


# ---------------------------------------------------------------- bad inputs (synthetic)
def msr_text(frames: int = 2, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(frames * 20, 3))
    return "".join(f"{x:.6f} {y:.6f} {z:.6f} 1.000000\n" for x, y, z in rows)


def drop_last_line(text: str) -> str:
    return text[: text.rfind("\n", 0, len(text) - 1) + 1]


def test_msr_reads_synthetic_file(tmp_path: Path) -> None:
    f = tmp_path / "a03_s04_e02_skeleton3D.txt"
    f.write_text(msr_text(3).rstrip("\n"))  # no final newline is fine
    seq = read_msr(f)
    assert seq.keypoints.shape == (1, 3, 20, 3) and seq.scores.shape == (1, 3, 20)
    assert (seq.label, seq.subject, seq.id, seq.layout) == (2, 4, "a03_s04_e02", "msr-20")


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (drop_last_line, r"line 39: file ends inside frame 1 with 19 of 20"),
        (lambda t: t.replace("1.000000\n", "\n", 1), r"line 1: expected 4 numbers, found 3"),
        (lambda t: t.replace(" ", " 1x2 ", 1), r"line 1: expected 4 numbers, found 5"),
        (lambda t: t.split("\n", 1)[0].rsplit(" ", 1)[0] + " abc\n", r"line 1, column 4: not a"),
        (lambda t: "\n".join(["0 0 nan 1", *t.split("\n")[1:]]), r"line 1, column 3: non-finite"),
        (lambda t: "\n".join([*t.split("\n")[:5], "0 inf 0 1", *t.split("\n")[6:]]), "line 6"),
        (lambda t: "", r"zero-length clip"),
        (lambda t: t.replace("1.000000", "7", 1), r"line 1, column 4: confidence 7.0"),
        (lambda t: t.encode().decode() + "\xff", None),
    ],
)
def test_msr_bad_files_name_file_and_line(tmp_path: Path, edit, match: str | None) -> None:
    f = tmp_path / "a01_s01_e01_skeleton3D.txt"
    text = edit(msr_text(2))
    if match is None:  # invalid UTF-8 bytes
        f.write_bytes(msr_text(2).encode() + b"\xff\xfe\n")
        match = "not UTF-8"
    else:
        f.write_text(text)
    with pytest.raises(DataFormatError, match=match) as e:
        read_msr(f)
    assert str(f) in str(e.value)


def nwucla_json(frames: int = 2, joints: int = 20, **extra) -> dict:
    sk = np.round(np.random.default_rng(0).normal(size=(frames, joints, 3)), 4).tolist()
    return {"file_name": "a08_s02_e01_v03", "skeletons": sk, **extra}


def one_frame_json(joint: str) -> str:
    return '{"skeletons": [[' + ", ".join([joint] * 20) + "]]}"


def test_nwucla_reads_synthetic_file(tmp_path: Path) -> None:
    f = tmp_path / "a08_s02_e01_v03.json"
    doc = nwucla_json(3, label=7)
    f.write_text(json.dumps(doc))
    seq = read_nwucla(f)
    assert (seq.label, seq.subject, seq.view, seq.num_frames) == (6, 2, 3, 3)
    assert seq.keypoints[0, 2, 19, 1] == np.float32(doc["skeletons"][2][19][1])


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ('{"skeletons": [[[1, 2, 3]', r"line 1, column \d+: invalid JSON"),
        (nwucla_json(0), r"zero-length clip"),
        (nwucla_json(2, joints=19), r"frame 0: expected 20 joints, got 19"),
        ({"skeletons": [nwucla_json(1)["skeletons"][0], [[1, 2]] * 20]}, r"frame 1, joint 0"),
        ({"skeletons": [[[1, "x", 3]] * 20]}, r"frame 0, joint 0, coord 1: not a number"),
        ({"skeletons": [[[1, None, 3]] * 20]}, r"coord 1: not a number: null"),
        (one_frame_json("[1, NaN, 3]"), r"frame 0, joint 0, coord 1: not a number: NaN"),
        (one_frame_json("[1, 2, 1e999]"), r"frame 0, joint 0, coord 2: non-finite"),
        ({"frames": []}, r"skeletons: missing field"),
        (nwucla_json(2, label=3), r"label 3 disagrees with action a08"),
    ],
)
def test_nwucla_bad_files(tmp_path: Path, doc, match: str) -> None:
    f = tmp_path / "a08_s02_e01_v03.json"
    f.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    with pytest.raises(DataFormatError, match=match) as e:
        read_nwucla(f)
    assert str(f) in str(e.value)


UT_LABELS = """s01_e01
walk: 10 12
sitDown: 14 14
s02_e01
walk: 4 6
sitDown:  NaN NaN
"""


def ut_joints(ids: list[int]) -> str:
    rng = np.random.default_rng(1)
    return "".join(
        f"{i}  " + "  ".join(f"{v:.6f}" for v in rng.normal(size=60)) + "\n" for i in ids
    )


def test_utkinect_cuts_segments_by_frame_id(tmp_path: Path) -> None:
    (tmp_path / "actionLabel.txt").write_text(UT_LABELS)
    labels = parse_action_labels(tmp_path / "actionLabel.txt")
    classes = utkinect_classes(labels, tmp_path / "actionLabel.txt")
    assert classes == ["walk", "sitDown"]
    f = tmp_path / "joints_s01_e01.txt"
    f.write_text(ut_joints([8, 10, 10, 12, 13, 14, 20]))
    clips, unusable = read_utkinect_recording(f, labels["s01_e01"], classes)
    assert [c.num_frames for c in clips] == [3, 1] and unusable == []
    assert [c.id for c in clips] == ["s01_e01_walk", "s01_e01_sit_down"]
    raw = np.loadtxt(f)
    expected = raw[1:4, 1:].reshape(3, 20, 3).astype(np.float32)
    np.testing.assert_array_equal(clips[0].keypoints[0], expected)
    g = tmp_path / "joints_s02_e01.txt"
    g.write_text(ut_joints([4, 5]))
    clips, unusable = read_utkinect_recording(g, labels["s02_e01"], classes)
    assert len(clips) == 1 and "NaN" in unusable[0]["reason"]


def nan_in_line_2(text: str) -> str:
    lines = text.split("\n")
    toks = lines[1].split()
    toks[5] = "nan"
    lines[1] = " ".join(toks)
    return "\n".join(lines)


@pytest.mark.parametrize(
    ("ids", "edit", "match"),
    [
        ([10, 11, 12, 14], lambda t: t[: len(t) // 2], r"line 3: expected 61 numbers, found"),
        ([10, 11, 12, 14], nan_in_line_2, r"line 2, column 6: non-finite number 'nan'"),
        ([10, 12, 11, 14], lambda t: t, r"line 3, column 1: frame id 11 goes back"),
        ([10, 11, 12, 15], lambda t: t, r"segment s01_e01_sit_down has no frames"),
        ([10, 11, 12, 14], lambda t: "", r"zero-length recording"),
    ],
)
def test_utkinect_bad_joint_files(tmp_path: Path, ids, edit, match: str) -> None:
    (tmp_path / "actionLabel.txt").write_text(UT_LABELS)
    labels = parse_action_labels(tmp_path / "actionLabel.txt")
    f = tmp_path / "joints_s01_e01.txt"
    f.write_text(edit(ut_joints(ids)))
    with pytest.raises(DataFormatError, match=match) as e:
        read_utkinect_recording(f, labels["s01_e01"], ["walk", "sitDown"])
    assert str(f) in str(e.value)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("walk: 1 2\n", r"line 1: action line before any recording"),
        ("s01_e01\nwalk: 1 x\n", r"line 2: frame id 'x' is not an integer"),
        ("s01_e01\nwalk 1 2\n", r"line 2: expected"),
        ("s01_e01\nwalk: 5 2\n", r"line 2: segment ends \(2\) before it starts"),
        ("s01_e01\nwalk: NaN 2\n", r"line 2: only one of the two frame ids is NaN"),
        ("", r"no recordings"),
    ],
)
def test_utkinect_bad_label_files(tmp_path: Path, text: str, match: str) -> None:
    f = tmp_path / "actionLabel.txt"
    f.write_text(text)
    with pytest.raises(DataFormatError, match=match):
        parse_action_labels(f)


def penn_mat(path: Path, frames: int = 3, **over) -> None:
    rng = np.random.default_rng(0)
    d = {
        "x": rng.uniform(0, 300, (frames, 13)),
        "y": rng.uniform(0, 300, (frames, 13)),
        "visibility": np.ones((frames, 13), np.uint8),
        "action": "squat",
        "pose": "front",
        "train": np.array([[1]], np.int32),
        "nframes": np.array([[frames]], np.uint8),
    }
    d.update(over)
    scipy.io.savemat(path, {k: v for k, v in d.items() if v is not None})


def test_penn_reads_synthetic_file(tmp_path: Path) -> None:
    penn_mat(tmp_path / "0007.mat", 4)
    seq = read_penn(tmp_path / "0007.mat")
    assert seq.keypoints.shape == (1, 4, 13, 2) and seq.scores.shape == (1, 4, 13)
    assert (seq.label, seq.view, seq.meta["train"], seq.id) == (11, 0, True, "0007")


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"action": "dance"}, r"action: unknown action 'dance'"),
        ({"train": np.array([[0]])}, r"train: expected 1 \(train\) or -1"),
        ({"x": np.zeros((3, 12))}, r"x: expected shape \(T, 13\)"),
        ({"y": np.zeros((2, 13))}, r"shapes differ"),
        ({"nframes": np.array([[9]])}, r"nframes: says 9 frames"),
        ({"x": np.full((3, 13), np.nan)}, r"non-finite"),
        ({"visibility": np.full((3, 13), 2)}, r"visibility, frame 0, joint 0: expected 0 or 1"),
        ({"x": None}, r"x: missing field"),
        (
            {
                "x": np.zeros((0, 13)),
                "y": np.zeros((0, 13)),
                "visibility": np.zeros((0, 13)),
                "nframes": None,
            },
            "zero-length",
        ),
    ],
)
def test_penn_bad_files(tmp_path: Path, over: dict, match: str) -> None:
    f = tmp_path / "0001.mat"
    penn_mat(f, **over)
    with pytest.raises(DataFormatError, match=match) as e:
        read_penn(f)
    assert str(f) in str(e.value)


def test_penn_truncated_file(tmp_path: Path) -> None:
    f = tmp_path / "0001.mat"
    penn_mat(f)
    f.write_bytes(f.read_bytes()[:300])
    with pytest.raises(DataFormatError, match=r"0001\.mat"):
        read_penn(f)


def test_registry_knows_layouts_and_rejects_unknown_names() -> None:
    for name in FOLDERS:
        spec = get_dataset(name)
        assert get_layout(spec.layout).name == spec.layout and spec.classes
    with pytest.raises(DatasetError, match=r"unknown dataset 'ntu'.*nw-ucla"):
        get_dataset("ntu")
