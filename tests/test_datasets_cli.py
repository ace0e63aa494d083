"""`protoskel datasets list | prepare | info` on small synthetic source folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from conftest import make_cli
from protoskel.data.readers.generic import write_generic_csv, write_generic_npz
from protoskel.data.sequence import SkeletonSequence
from protoskel.data.store import open_store


def run(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run the CLI entry point; returns (exit code, stdout, stderr)."""
    return make_cli(monkeypatch, capsys)(*args)


def no_leftovers(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".")]


# ---------------------------------------------------------------- fake sources
def fake_nwucla(root: Path) -> Path:
    src = root / "nw-ucla"
    (src / "all_sqe").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lists: dict[str, list] = {"train": [], "val": []}
    for i, name in enumerate(
        [
            "a01_s01_e00_v01",
            "a02_s02_e01_v02",
            "a12_s03_e00_v01",
            "a01_s01_e00_v03",
            "a04_s05_e02_v03",
        ]
    ):
        action = int(name[1:3])
        label = (1, 2, 3, 4, 5, 6, 8, 9, 11, 12).index(action) + 1
        t = 3 + i
        sk = np.round(rng.normal(size=(t, 20, 3)), 5).tolist()
        doc = {"file_name": name, "skeletons": sk, "label": label}
        (src / "all_sqe" / f"{name}.json").write_text(json.dumps(doc))
        lists["val" if name.endswith("v03") else "train"].append(
            {"file_name": name, "length": t, "label": label}
        )
    (src / "split_ctrgcn.json").write_text(json.dumps(lists))
    return src


def fake_msr(root: Path) -> Path:
    src = root / "msr"
    data = src / "MSRAction3DSkeletonReal3D"
    data.mkdir(parents=True)
    rng = np.random.default_rng(1)
    names = ["a01_s01_e01", "a02_s02_e01", "a20_s03_e02", "a05_s10_e03"]
    for k, n in enumerate(names):
        rows = rng.normal(size=(20 * (2 + k), 3))
        text = "".join(f"{x:.6f} {y:.6f} {z:.6f} 1.000000\n" for x, y, z in rows)
        (data / f"{n}_skeleton3D.txt").write_text(text)
    (data / "a13_s09_e02_skeleton3D.txt").write_text("0 0 0 0\n" * 20)  # not in the list
    (src / "files_used_in_cvpr12_paper.txt").write_text("\n".join(names))  # no final newline
    return src


def fake_utkinect(root: Path) -> Path:
    src = root / "ut"
    (src / "joints").mkdir(parents=True)
    rng = np.random.default_rng(2)
    labels = ""
    for rec in ("s01_e01", "s02_e01"):
        ids = [10, 11, 11, 12, 20, 21, 22]
        lines = [f"{i}  " + "  ".join(f"{v:.6f}" for v in rng.normal(size=60)) for i in ids]
        (src / "joints" / f"joints_{rec}.txt").write_text("\n".join(lines) + "\n")
        carry = "NaN NaN" if rec == "s02_e01" else "20 22"
        labels += f"{rec}\nwalk: 10 12\ncarry:  {carry}\n"
    (src / "joints" / "actionLabel.txt").write_text(labels)
    return src


def fake_penn(root: Path) -> Path:
    src = root / "penn"
    (src / "labels").mkdir(parents=True)
    rng = np.random.default_rng(3)
    for k, (action, train) in enumerate([("squat", 1), ("bowl", -1), ("squat", -1)]):
        t = 2 + k
        scipy.io.savemat(
            src / "labels" / f"{k + 1:04d}.mat",
            {
                "x": rng.uniform(0, 300, (t, 13)),
                "y": rng.uniform(0, 300, (t, 13)),
                "visibility": np.ones((t, 13), np.uint8),
                "action": action,
                "pose": "left",
                "train": np.array([[train]], np.int32),
                "nframes": np.array([[t]], np.uint8),
            },
        )
    return src


def generic_clip(t: int, label: int | None = None, name: str | None = None, seed: int = 0):
    rng = np.random.default_rng(seed)
    seq = SkeletonSequence(
        rng.normal(size=(1, t, 17, 2)).astype(np.float32), "coco-17", label=label, id=f"g{seed}"
    )
    if name is not None:
        seq.meta["label_name"] = name
    return seq


def fake_generic(root: Path) -> Path:
    src = root / "mine"
    (src / "train").mkdir(parents=True)
    (src / "val").mkdir()
    (src / "classes.txt").write_text("jump\nsit\n")
    write_generic_npz(generic_clip(4, label=1, seed=1), src / "train" / "a.npz")
    write_generic_npz(generic_clip(3, name="jump", seed=2), src / "train" / "b.npz")
    write_generic_csv(generic_clip(5, label=0, seed=3), src / "val" / "c.csv")
    return src


# ---------------------------------------------------------------- list / info
def test_list_shows_every_dataset(monkeypatch, capsys) -> None:
    code, out, _ = run(monkeypatch, capsys, "datasets", "list")
    assert code == 0
    for name, layout in [
        ("nw-ucla", "kinect-v1-20"),
        ("msr-action3d", "msr-20"),
        ("utkinect", "kinect-v1-20"),
        ("penn-action", "penn-13"),
        ("generic", ""),
        ("pyskl", "(from file)"),
    ]:
        line = next(ln for ln in out.splitlines() if ln.startswith(name + " "))
        assert layout in line
    code, out, _ = run(monkeypatch, capsys, "datasets", "list", "--json")
    rows = {r["name"]: r for r in json.loads(out)["datasets"]}
    assert rows["msr-action3d"]["num_classes"] == 20 and rows["nw-ucla"]["protocol"] == "cross-view"


def test_prepare_then_info(tmp_path: Path, monkeypatch, capsys) -> None:
    src, out = fake_nwucla(tmp_path), tmp_path / "store"
    code, stdout, err = run(
        monkeypatch, capsys, "datasets", "prepare", "nw-ucla", "--src", str(src), "--out", str(out)
    )
    assert code == 0, err
    assert "reading nw-ucla: 5/5 files" in err and "train 3" in stdout
    code, stdout, _ = run(monkeypatch, capsys, "datasets", "info", str(out), "--json")
    info = json.loads(stdout)  # exactly one JSON object
    assert info["layout"] == "kinect-v1-20" and len(info["classes"]) == 10
    assert info["splits"]["train"]["count"] == 3 and info["splits"]["val"]["count"] == 2
    assert info["skipped"] == []
    code, stdout, _ = run(monkeypatch, capsys, "datasets", "info", str(out))
    assert code == 0 and "train" in stdout and "kinect-v1-20" in stdout
    # The same store again needs --force; with it, it is replaced.
    args = ("datasets", "prepare", "nw-ucla", "--src", str(src), "--out", str(out))
    code, _, err = run(monkeypatch, capsys, *args)
    assert code == 2 and "--force" in err
    code, _, err = run(monkeypatch, capsys, *args, "--force")
    assert code == 0, err
    assert no_leftovers(tmp_path)


def test_prepare_each_fake_dataset(tmp_path: Path, monkeypatch, capsys) -> None:
    for name, make, counts in [
        ("msr-action3d", fake_msr, {"train": 2, "test": 2}),
        ("utkinect", fake_utkinect, {"train": 2, "test": 1}),
        ("penn-action", fake_penn, {"train": 1, "test": 2}),
        ("generic", fake_generic, {"train": 2, "val": 1}),
    ]:
        out = tmp_path / f"out-{name}"
        code, _, err = run(
            monkeypatch,
            capsys,
            *("datasets", "prepare", name, "--src", str(make(tmp_path)), "--out", str(out)),
        )
        assert code == 0, err
        st = open_store(out)
        assert {k: v["count"] for k, v in st.manifest["splits"].items()} == counts, name
    # UTKinect: the NaN segment is always listed as skipped, with the reason.
    (skip,) = open_store(tmp_path / "out-utkinect").manifest["skipped"]
    assert "s02_e01_carry" in skip["file"] and "NaN" in skip["reason"]
    # generic: class names and indices both become indices into classes.txt.
    gen = open_store(tmp_path / "out-generic")
    assert gen.classes == ["jump", "sit"] and gen.layout.name == "coco-17"
    assert gen.split("train").labels.tolist() == [1, 0]
    msr = open_store(tmp_path / "out-msr-action3d")
    assert msr.split("test").ids == ["a02_s02_e01", "a05_s10_e03"]
    assert set(msr.manifest["action_sets"]) == {"AS1", "AS2", "AS3"}


def test_prepare_to_layout_reorders_joints_by_name(tmp_path: Path, monkeypatch, capsys) -> None:
    src = fake_msr(tmp_path)
    base = ("datasets", "prepare", "msr-action3d", "--src", str(src), "--out")
    code, _, err = run(monkeypatch, capsys, *base, str(tmp_path / "own"))
    assert code == 0, err
    code, _, err = run(
        monkeypatch, capsys, *base, str(tmp_path / "kv1"), "--to-layout", "kinect-v1-20"
    )
    assert code == 0, err
    assert "retargeted msr-action3d from msr-20 to kinect-v1-20" in err
    own, kv1 = open_store(tmp_path / "own"), open_store(tmp_path / "kv1")
    assert kv1.layout.name == "kinect-v1-20" and kv1.manifest["retargeted_from"] == "msr-20"
    # The msr-20 -> kinect-v1-20 map is a pure reordering: each joint keeps its coordinates.
    a, b = np.asarray(own.split("test").keypoints), np.asarray(kv1.split("test").keypoints)
    for j, name in enumerate(kv1.layout.joints):
        assert np.array_equal(b[..., j, :], a[..., own.layout.index(name), :]), name
    assert kv1.split("test").ids == own.split("test").ids
    # No map to that layout: a one-line error naming the maps there are, and no store.
    code, _, err = run(monkeypatch, capsys, *base, str(tmp_path / "p"), "--to-layout", "penn-13")
    assert code == 2 and "no joint map from 'msr-20' to 'penn-13'" in err
    assert "read msr-action3d" not in err  # refused before the source is read
    assert not (tmp_path / "p").exists() and no_leftovers(tmp_path)


def test_prepare_a_published_subject_split(tmp_path: Path, monkeypatch, capsys) -> None:
    src = fake_utkinect(tmp_path)
    # Three rows as in tr_te_splits.mat; the last leaves subject 2 out of both sides.
    tr, te = np.array([[1], [2], [1]]), np.array([[2], [1], [3]])
    scipy.io.savemat(src / "tr_te_splits.mat", {"tr_subjects": tr, "te_subjects": te})
    base = ("datasets", "prepare", "utkinect", "--src", str(src), "--out")
    code, _, err = run(monkeypatch, capsys, *base, str(tmp_path / "s1"), "--subject-split", "1")
    assert code == 0, err
    st = open_store(tmp_path / "s1")
    assert set(st.split("train").subjects.tolist()) == {2}
    assert set(st.split("test").subjects.tolist()) == {1}
    assert st.manifest["protocol"] == "cross-subject-half-split1"
    assert st.manifest["subject_split"] == 1 and st.manifest["train_subjects"] == [2]
    # The default protocol (odd subjects train) is the other way round.
    code, _, err = run(monkeypatch, capsys, *base, str(tmp_path / "d"))
    assert code == 0 and set(open_store(tmp_path / "d").split("train").subjects.tolist()) == {1}
    for k, message in [("3", "subject split 3 does not exist; choose 0 to 2"),
                       ("2", "has subject 2, in neither side of subject split 2")]:  # fmt: skip
        code, _, err = run(monkeypatch, capsys, *base, str(tmp_path / "bad"), "--subject-split", k)
        assert code == 2 and message in err, err
    code, _, err = run(
        monkeypatch, capsys, "datasets", "prepare", "msr-action3d", "--src",
        str(fake_msr(tmp_path)), "--out", str(tmp_path / "bad"), "--subject-split", "0",
    )  # fmt: skip
    assert code == 2 and "no published subject splits" in err
    assert not (tmp_path / "bad").exists() and no_leftovers(tmp_path)


# ---------------------------------------------------------------- failures
def test_bad_file_stops_with_file_and_line_and_writes_nothing(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    src, out = fake_msr(tmp_path), tmp_path / "store"
    bad = src / "MSRAction3DSkeletonReal3D" / "a02_s02_e01_skeleton3D.txt"
    lines = bad.read_text().splitlines()
    bad.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:12] + "\n")  # cut the last row
    args = ("datasets", "prepare", "msr-action3d", "--src", str(src), "--out", str(out))
    code, stdout, err = run(monkeypatch, capsys, *args)
    assert code == 2 and stdout == ""
    (msg,) = err.strip().splitlines()[-1:]
    assert msg.startswith("error: ") and str(bad) in msg and "line 60" in msg
    assert not out.exists() and no_leftovers(tmp_path)

    code, _, err = run(monkeypatch, capsys, *args, "--skip-bad")
    assert code == 0, err
    st = open_store(out)
    assert st.manifest["splits"]["test"]["count"] == 1
    (skip,) = st.manifest["skipped"]
    assert skip["file"] == "MSRAction3DSkeletonReal3D/a02_s02_e01_skeleton3D.txt"
    assert "line 60: expected 4 numbers" in skip["reason"]
    code, stdout, _ = run(monkeypatch, capsys, "datasets", "info", str(out), "--json")
    assert json.loads(stdout)["skipped"] == [skip]


@pytest.mark.parametrize(
    ("name", "make", "remove", "expected"),
    [
        ("nw-ucla", fake_nwucla, "split_ctrgcn.json", "split_ctrgcn.json"),
        ("nw-ucla", fake_nwucla, "all_sqe/a12_s03_e00_v01.json", "a12_s03_e00_v01.json"),
        ("msr-action3d", fake_msr, "files_used_in_cvpr12_paper.txt", "557-file list"),
        ("utkinect", fake_utkinect, "joints/actionLabel.txt", "actionLabel.txt"),
        ("utkinect", fake_utkinect, "joints/joints_s02_e01.txt", "joints_s02_e01.txt"),
        ("penn-action", fake_penn, "labels", "NNNN.mat"),
        ("generic", fake_generic, "classes.txt", "classes.txt"),
    ],
)
def test_missing_expected_files_say_what_and_where(
    tmp_path: Path, monkeypatch, capsys, name, make, remove, expected
) -> None:
    src = make(tmp_path)
    target = src / remove
    if target.is_dir():
        shutil.rmtree(target)
    else:
        target.unlink()
    out = tmp_path / "store"
    code, _, err = run(
        monkeypatch, capsys, "datasets", "prepare", name, "--src", str(src), "--out", str(out)
    )
    assert code == 2 and expected in err and str(src) in err
    assert not out.exists()


def test_missing_src_unknown_name_and_non_store(tmp_path: Path, monkeypatch, capsys) -> None:
    out = str(tmp_path / "o")
    code, _, err = run(
        monkeypatch,
        capsys,
        "datasets",
        "prepare",
        "nw-ucla",
        "--src",
        str(tmp_path / "x"),
        "--out",
        out,
    )
    assert code == 2 and "source folder" in err and str(tmp_path / "x") in err
    # The synthetic dataset is generated: its --src is not read, so it need not exist.
    syn = ("datasets", "prepare", "synthetic", "--src", str(tmp_path / "x"), "--out", out + "s")
    code, _, err = run(monkeypatch, capsys, *syn)
    assert code == 0, err
    assert json.loads((Path(out + "s") / "manifest.json").read_text())["dataset"] == "synthetic"
    code, _, err = run(
        monkeypatch, capsys, "datasets", "prepare", "kinetics", "--src", str(tmp_path), "--out", out
    )
    assert code == 2 and "unknown dataset 'kinetics'" in err and "nw-ucla" in err
    code, _, err = run(monkeypatch, capsys, "datasets", "info", str(tmp_path))
    assert code == 2 and "not a prepared store" in err
    # An existing folder that is not a store is never overwritten, even with --force.
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    src = fake_nwucla(tmp_path)
    code, _, err = run(
        monkeypatch,
        capsys,
        *("datasets", "prepare", "nw-ucla", "--src", str(src), "--out", str(mine), "--force"),
    )
    assert code == 2 and "not a protoskel store" in err
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]


def test_generic_label_outside_classes(tmp_path: Path, monkeypatch, capsys) -> None:
    src, out = fake_generic(tmp_path), tmp_path / "store"
    write_generic_npz(generic_clip(3, label=2, seed=5), src / "val" / "d.npz")
    write_generic_npz(generic_clip(3, name="fly", seed=6), src / "val" / "e.npz")
    args = ("datasets", "prepare", "generic", "--src", str(src), "--out", str(out))
    code, _, err = run(monkeypatch, capsys, *args)
    assert code == 2 and "d.npz" in err and "label 2 is outside the 2 classes" in err
    assert not out.exists()
    code, _, err = run(monkeypatch, capsys, *args, "--skip-bad")
    assert code == 0, err
    skipped = open_store(out).manifest["skipped"]
    assert [s["file"] for s in skipped] == ["val/d.npz", "val/e.npz"]
    assert "'fly' is not in classes.txt" in skipped[1]["reason"]


# ---------------------------------------------------------------- pyskl
def _ntu_annotation(name: str, label: int, frames: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    kp = rng.normal(size=(2, frames, 25, 3)).astype(np.float32)
    return {"frame_dir": name, "label": label, "total_frames": frames, "keypoint": kp}


def fake_pyskl(tmp_path: Path, split: dict | None = None) -> Path:
    """A PYSKL 3D pickle in NTU's naming: 4 clips, cross-subject and cross-view lists."""
    anns = [
        _ntu_annotation(f"S001C00{c}P00{p}R001A00{a}", a - 1, 5 + c, seed=10 * c + p)
        for c, p, a in [(1, 1, 1), (2, 1, 2), (1, 2, 2), (3, 2, 3)]
    ]
    ids = [a["frame_dir"] for a in anns]
    if split is None:
        split = {"xsub_train": ids[:2], "xsub_val": ids[2:], "xview_train": ids[1:3]}
    path = tmp_path / "ntu_tiny.pkl"
    import pickle

    path.write_bytes(pickle.dumps({"split": split, "annotations": anns}, protocol=4))
    return path


def _prepare_pyskl(monkeypatch, capsys, src: Path, out: Path) -> tuple[int, str, str]:
    return run(
        monkeypatch, capsys, "datasets", "prepare", "pyskl", "--src", str(src), "--out", str(out)
    )


def test_prepare_pyskl_pickle_keeps_its_split_lists(tmp_path: Path, monkeypatch, capsys) -> None:
    src, out = fake_pyskl(tmp_path), tmp_path / "store"
    args = ("datasets", "prepare", "pyskl", "--src", str(src), "--out", str(out))
    code, stdout, err = run(monkeypatch, capsys, *args)
    assert code == 0, err
    assert "xsub_train 2, xsub_val 2, xview_train 2" in stdout
    st = open_store(out)
    assert st.layout.name == "ntu-25" and st.manifest["protocol"] == "pyskl-split"
    assert st.classes == ["drink_water", "eat_meal", "brush_teeth"]  # NTU's A001-A003
    counts = {k: v["count"] for k, v in st.manifest["splits"].items()}
    assert counts == {"xsub_train": 2, "xsub_val": 2, "xview_train": 2}
    assert st.manifest["unused_annotations"] == 0 and st.manifest["pyskl_file"] == src.name
    clip = st.split("xsub_val").get(1)
    assert clip.id == "S001C003P002R001A003"
    assert clip.label == 2 and clip.keypoints.shape == (2, 8, 25, 3)
    # --splits keeps only the named lists; a name the file lacks is an error naming the others.
    code, stdout, err = run(
        monkeypatch, capsys, *args, "--force", "--splits", "xsub_train,xsub_val"
    )
    assert code == 0, err
    assert list(open_store(out).manifest["splits"]) == ["xsub_train", "xsub_val"]
    code, _, err = run(monkeypatch, capsys, *args, "--force", "--splits", "xsub_train,xset_val")
    assert code == 2 and "no split 'xset_val'" in err and "xsub_val, xview_train" in err, err
    assert list(open_store(out).manifest["splits"]) == ["xsub_train", "xsub_val"]  # kept
    code, _, err = run(monkeypatch, capsys, *args, "--force", "--splits", ",")
    assert code == 2 and "names no split" in err
    # Names from classes.txt beside the pickle win over NTU's.
    (tmp_path / "classes.txt").write_text("sip\nmunch\nscrub\n")
    code, _, err = run(monkeypatch, capsys, *args, "--force")
    assert code == 0, err
    assert open_store(out).classes == ["sip", "munch", "scrub"]


def test_prepare_pyskl_relabelled_ntu_clips_get_neutral_names(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    import pickle

    # Actions A007 and A043 relabelled 0 and 1 (a subset file): NTU's names would be wrong.
    anns = [
        _ntu_annotation("S001C001P001R001A007", 0, 5, seed=0),
        _ntu_annotation("S001C001P002R001A043", 1, 5, seed=1),
    ]
    src = tmp_path / "subset.pkl"
    ids = [a["frame_dir"] for a in anns]
    src.write_bytes(pickle.dumps({"split": {"train": ids, "val": ids}, "annotations": anns}))
    code, _, err = _prepare_pyskl(monkeypatch, capsys, src, tmp_path / "store")
    assert code == 0, err
    assert open_store(tmp_path / "store").classes == ["class_0", "class_1"]


@pytest.mark.parametrize(
    ("split", "needle"),
    [
        ({"train": ["S001C001P001R001A001", "nope"]}, "split['train']: 1 frame_dir(s) without"),
        ({}, "no 'split' dict"),
    ],
)
def test_prepare_pyskl_refuses_broken_splits_and_writes_nothing(
    tmp_path: Path, monkeypatch, capsys, split: dict, needle: str
) -> None:
    src, out = fake_pyskl(tmp_path, split), tmp_path / "store"
    code, stdout, err = _prepare_pyskl(monkeypatch, capsys, src, out)
    assert code == 2 and stdout == "" and needle in err and str(src) in err
    assert not out.exists() and no_leftovers(tmp_path)
    code, _, err = _prepare_pyskl(monkeypatch, capsys, tmp_path, out)
    assert code == 2 and "source file of dataset 'pyskl' not found" in err


def test_prepare_pyskl_refuses_repeated_ids_and_missing_labels(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    import pickle

    a = _ntu_annotation("S001C001P001R001A001", 0, 5, seed=0)
    b = dict(_ntu_annotation("S001C001P002R001A002", 1, 5, seed=1), label=None)
    for anns, needle in [
        ([a, a], "annotations[1]: frame_dir 'S001C001P001R001A001' repeats"),
        ([a, b], "annotations[1] (S001C001P002R001A002): has no label"),
    ]:
        src, out = tmp_path / "bad.pkl", tmp_path / "store"
        src.write_bytes(pickle.dumps({"split": {"train": [a["frame_dir"]]}, "annotations": anns}))
        code, _, err = _prepare_pyskl(monkeypatch, capsys, src, out)
        assert code == 2 and needle in err and not out.exists(), err
