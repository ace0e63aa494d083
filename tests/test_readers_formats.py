"""Interchange-format readers: NTU .skeleton text, PYSKL pickles, generic NPZ/CSV, read_clip.

Every fixture is written at test time from the published format description.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from protoskel.data.readers import (
    SUPPORTED_FORMATS,
    read_clip,
    read_generic,
    read_ntu,
    read_pyskl,
    write_generic_csv,
    write_generic_npz,
)
from protoskel.data.sequence import SkeletonSequence
from protoskel.errors import DataFormatError, LayoutError
from protoskel.layouts import get_layout

NTU_V = 25


# ---------------------------------------------------------------- fixture writers
def ntu_text(frames: list[list[tuple[str, np.ndarray, np.ndarray]]]) -> str:
    """NTU .skeleton text: frames of bodies (bodyID, xyz (25, 3), trackingState (25,))."""
    out = [str(len(frames))]
    for bodies in frames:
        out.append(str(len(bodies)))
        for body_id, xyz, states in bodies:
            out.append(f"{body_id} 0 1 1 1 1 0 0.02764709 0.05899656 2")
            out.append(str(len(xyz)))
            for (x, y, z), s in zip(xyz, states, strict=True):
                out.append(
                    f"{x:.7g} {y:.7g} {z:.7g} 277.419 191.8218 1036.233 519.1677 "
                    f"-0.2059419 0.05349901 0.9692109 -0.1239193 {int(s)}"
                )
    return "\r\n".join(out) + "\r\n"  # the published files use Windows line ends


def ntu_body(seed: int, scale: float = 1.0) -> np.ndarray:
    """A plausible (25, 3) body whose motion grows with ``scale``."""
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(NTU_V, 3)) * 0.3 * scale + [0, 0, 3]).astype(np.float32)


def tracked(n: int = NTU_V) -> np.ndarray:
    return np.full(n, 2)


def write_ntu_two_bodies(path: Path, num_frames: int = 4) -> dict[str, np.ndarray]:
    """A clip with an active body A in all frames and a still body B from frame 1 on."""
    rng = np.random.default_rng(0)
    a = [ntu_body(t, scale=1.0) + rng.normal(size=3).astype(np.float32) for t in range(num_frames)]
    b = [ntu_body(99) + np.float32(0.001 * t) for t in range(num_frames)]
    frames = []
    for t in range(num_frames):
        bodies = []
        if t >= 1:
            bodies.append(("72057594037931102", b[t], tracked()))
        bodies.append(("72057594037931101", a[t], tracked()))
        frames.append(bodies)
    path.write_text(ntu_text(frames), encoding="ascii", newline="")
    return {"a": np.stack(a), "b": np.stack(b)}


def coco_annotation(name: str, label: int, m: int = 2, t: int = 6, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "frame_dir": name,
        "label": label,
        "img_shape": (480, 640),
        "original_shape": (480, 640),
        "total_frames": t,
        "keypoint": (rng.random((m, t, 17, 2)) * 640).astype(np.float16),
        "keypoint_score": rng.random((m, t, 17)).astype(np.float16),
    }


def dump(obj: object, path: Path, protocol: int = 4) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


def make_seq(m: int = 2, t: int = 5, layout: str = "ntu-25", c: int = 3, scores: bool = True):
    v = get_layout(layout).num_joints
    rng = np.random.default_rng(1)
    return SkeletonSequence(
        keypoints=rng.normal(size=(m, t, v, c)).astype(np.float32),
        layout=layout,
        scores=rng.random((m, t, v)).astype(np.float32) if scores else None,
        label=4,
        id="clip 7",
        subject=3,
        view=2,
        fps=25.0,
        meta={"label_name": "wave"},
    )


def assert_same(a: SkeletonSequence, b: SkeletonSequence) -> None:
    np.testing.assert_array_equal(a.keypoints, b.keypoints)
    if a.scores is None:
        assert b.scores is None
    else:
        np.testing.assert_array_equal(a.scores, b.scores)
    for key in ("layout", "label", "id", "subject", "view", "fps"):
        assert getattr(a, key) == getattr(b, key), key
    assert a.meta.get("label_name") == b.meta.get("label_name")


def csv_header(layout: str = "ntu-25", score: bool = True) -> str:
    suffixes = ("x", "y", "z", "score") if score else ("x", "y", "z")
    cols = [f"{j}_{s}" for j in get_layout(layout).joints for s in suffixes]
    return ",".join(["frame", "person", *cols])


def csv_row(frame: int, person: int, values: np.ndarray) -> str:
    return f"{frame},{person}," + ",".join(f"{x:.9g}" for x in values)


# ---------------------------------------------------------------- NTU
def test_ntu_reads_bodies_metadata_and_scores(tmp_path: Path) -> None:
    p = tmp_path / "S001C002P003R001A004.skeleton"
    truth = write_ntu_two_bodies(p)
    seq = read_ntu(p)
    assert seq.layout == "ntu-25"
    assert seq.keypoints.shape == (2, 4, 25, 3) and seq.keypoints.dtype == np.float32
    # The moving body comes first; the still one second, absent (zeros, score 0) in frame 0.
    np.testing.assert_allclose(seq.keypoints[0], truth["a"], atol=1e-5)
    np.testing.assert_allclose(seq.keypoints[1, 1:], truth["b"][1:], atol=1e-5)
    assert not seq.keypoints[1, 0].any() and not seq.scores[1, 0].any()
    assert (seq.scores[0] == 1).all() and (seq.scores[1, 1:] == 1).all()
    assert (seq.label, seq.subject, seq.view, seq.fps) == (3, 3, 2, 30.0)
    assert seq.id == "S001C002P003R001A004"
    assert seq.meta["body_ids"] == ["72057594037931101", "72057594037931102"]
    seq.validate()


def test_ntu_keeps_the_two_most_active_of_three_bodies(tmp_path: Path) -> None:
    frames = []
    for t in range(5):
        frames.append(
            [
                ("1", ntu_body(0) + np.float32(0.0001 * t), tracked()),  # nearly still
                ("2", ntu_body(t, scale=2.0), tracked()),  # most active
                ("3", ntu_body(t + 50, scale=0.5), tracked()),
            ]
        )
    p = tmp_path / "three.skeleton"
    p.write_text(ntu_text(frames))
    seq = read_ntu(p)
    assert seq.meta["body_ids"] == ["2", "3"] and seq.meta["num_bodies"] == 3
    np.testing.assert_allclose(seq.keypoints[0, 4], ntu_body(4, scale=2.0), atol=1e-5)
    assert read_ntu(p, max_bodies=1).num_persons == 1
    assert seq.label is None and seq.subject is None  # no NTU-style name


def test_ntu_tracking_state_maps_to_scores_and_empty_frames_are_zeros(tmp_path: Path) -> None:
    states = np.array([2, 1, 0] * 8 + [1])
    frames = [[], [("7", ntu_body(1), states)], []]
    p = tmp_path / "states.skeleton"
    p.write_text(ntu_text(frames))
    seq = read_ntu(p)
    assert seq.keypoints.shape == (1, 3, 25, 3)
    np.testing.assert_array_equal(seq.scores[0, 1], np.array([1.0, 0.5, 0.0] * 8 + [0.5]))
    assert not seq.keypoints[0, 0].any() and not seq.keypoints[0, 2].any()
    assert not seq.scores[0, [0, 2]].any()


def _ntu_lines(tmp_path: Path) -> tuple[Path, list[str]]:
    p = tmp_path / "S001C001P001R001A001.skeleton"
    write_ntu_two_bodies(p, num_frames=2)
    return p, p.read_text().splitlines()


def _expect_ntu_error(p: Path, lines: list[str], *needles: str) -> None:
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError) as err:
        read_ntu(p)
    msg = str(err.value)
    assert str(p) in msg
    for needle in needles:
        assert needle in msg, msg


def test_ntu_errors_name_file_and_line(tmp_path: Path) -> None:
    p, lines = _ntu_lines(tmp_path)
    # Layout of the 2-frame file: 1 count, 2 bodies, 3 info, 4 joints, 5-29 joints of A, ...
    _expect_ntu_error(p, lines[:20], "line 21", "truncated")
    bad = list(lines)
    bad[6] = bad[6].replace("277.419", "27x.4", 1)
    _expect_ntu_error(p, bad, "line 7", "depthX", "'27x.4'")
    bad = list(lines)
    bad[4] = "nan " + bad[4].split(" ", 1)[1]
    _expect_ntu_error(p, bad, "line 5", "x (value 1) is not a finite")
    bad = list(lines)
    bad[4] = " ".join([*bad[4].split()[:2], "1e39", *bad[4].split()[3:]])
    _expect_ntu_error(p, bad, "line 5", "z (value 3) is not a finite float32")
    bad = list(lines)
    bad[4] = bad[4].rsplit(" ", 1)[0]
    _expect_ntu_error(p, bad, "line 5", "12 values", "found 11")
    bad = list(lines)
    bad[3] = "24"
    _expect_ntu_error(p, bad, "line 4", "24 joints", "ntu-25")
    bad = list(lines)
    bad[0] = "1"  # the file holds two frames
    _expect_ntu_error(p, bad, "line 30", "after the last of the 1 frames")
    bad = list(lines)
    bad[0] = "3"
    _expect_ntu_error(p, bad, f"line {len(lines) + 1}", "frame 3 of 3", "truncated")
    bad = list(lines)
    bad[4] = bad[4][:-1] + "5"
    _expect_ntu_error(p, bad, "line 5", "trackingState")
    bad = list(lines)
    bad[2] = "72057594037931101 0 1 1"
    _expect_ntu_error(p, bad, "line 3", "10 values")
    bad = list(lines)
    bad[1] = "one"
    _expect_ntu_error(p, bad, "line 2", "'one'")
    _expect_ntu_error(p, ["0"], "line 1", "zero frames")
    _expect_ntu_error(p, ["2", "0", "0"], "no body is tracked in any of the 2 frames")
    _expect_ntu_error(p, [], "line 1", "frame count")


def test_ntu_rejects_non_ascii_and_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "x.skeleton"
    p.write_bytes(b"1\n1\n\xff\n")
    with pytest.raises(DataFormatError, match="line 3"):
        read_ntu(p)
    with pytest.raises(DataFormatError, match="cannot read"):
        read_ntu(tmp_path / "absent.skeleton")


# ---------------------------------------------------------------- PYSKL
def test_pyskl_dict_with_split_2d_coco(tmp_path: Path) -> None:
    anns = [coco_annotation("vid_a", 3, seed=1), coco_annotation("vid_b", 0, m=1, seed=2)]
    data = {"split": {"train": ["vid_a"], "val": ["vid_b"]}, "annotations": anns}
    seqs, split = read_pyskl(dump(data, tmp_path / "coco.pkl"))
    assert split == {"train": ["vid_a"], "val": ["vid_b"]}
    assert [s.id for s in seqs] == ["vid_a", "vid_b"] and [s.label for s in seqs] == [3, 0]
    assert seqs[0].layout == "coco-17" and seqs[0].keypoints.shape == (2, 6, 17, 2)
    assert seqs[0].keypoints.dtype == np.float32 and seqs[0].scores.dtype == np.float32
    np.testing.assert_array_equal(seqs[0].keypoints, anns[0]["keypoint"].astype(np.float32))
    np.testing.assert_array_equal(seqs[1].scores, anns[1]["keypoint_score"].astype(np.float32))
    assert seqs[0].meta["img_shape"] == (480, 640)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pyskl_bare_list_3d_ntu_any_protocol(tmp_path: Path, protocol: int) -> None:
    kp = np.random.default_rng(0).normal(size=(2, 7, 25, 3)).astype(np.float32)
    anns = [
        {
            "frame_dir": "S002C003P004R002A010",
            "label": np.int64(9),
            "keypoint": kp,
            "total_frames": 7,
        }
    ]
    seqs, split = read_pyskl(dump(anns, tmp_path / "ntu.pkl", protocol))
    assert split == {}
    (seq,) = seqs
    assert seq.layout == "ntu-25" and seq.scores is None and seq.label == 9
    assert (seq.subject, seq.view) == (4, 3)
    np.testing.assert_array_equal(seq.keypoints, kp)


def test_pyskl_layout_inference_and_overrides(tmp_path: Path) -> None:
    ann = {"frame_dir": "k", "label": 1, "keypoint": np.zeros((1, 3, 20, 3), np.float32)}
    p = dump([ann], tmp_path / "k20.pkl")
    with pytest.raises(DataFormatError, match=r"V = 20.*kinect-v1-20, msr-20"):
        read_pyskl(p)
    seqs, _ = read_pyskl(p, layout="msr-20")
    assert seqs[0].layout == "msr-20"
    with pytest.raises(DataFormatError, match=r"annotations\[0\] \(k\).*20 joints.*coco-17"):
        read_pyskl(p, layout="coco-17")
    with pytest.raises(LayoutError, match="unknown layout"):
        read_pyskl(p, layout="no-such-layout")
    op = {"frame_dir": "o", "label": 0, "keypoint": np.ones((1, 2, 18, 2), np.float32)}
    assert read_pyskl(dump([op], tmp_path / "op.pkl"))[0][0].layout == "openpose-18"


def test_pyskl_annotation_problems(tmp_path: Path) -> None:
    good = coco_annotation("v", 1)

    def check(ann: object, *needles: str) -> None:
        p = dump({"annotations": [good, ann]}, tmp_path / "bad.pkl")
        with pytest.raises(DataFormatError) as err:
            read_pyskl(p)
        for needle in needles:
            assert needle in str(err.value), str(err.value)

    nan = dict(good, frame_dir="n", keypoint=good["keypoint"].copy())
    nan["keypoint"][1, 2, 3, 0] = np.nan
    check(nan, "annotations[1] (n)", "person 1, frame 2, joint 3", "non-finite")
    check(dict(good, frame_dir="t", total_frames=9), "total_frames", "9 frames", "has 6")
    check(dict(good, frame_dir="s", keypoint_score=np.ones((2, 6, 16))), "keypoint_score", "shape")
    check(dict(good, keypoint=np.zeros((6, 17, 2))), "expected 4 dimensions")
    # Object arrays are refused while loading, before any annotation is looked at.
    obj = dict(good, keypoint=np.array([[["a"]]] * 1, dtype=object))
    check(obj, "['annotations'][1]['keypoint']", "dtype object", "refused")
    check(dict(good, keypoint=np.array([[["a"]]] * 1)), "numeric numpy array")
    empty = dict(good, frame_dir="z", keypoint=np.zeros((1, 0, 17, 2)), total_frames=0)
    check(dict(empty, keypoint_score=None), "(z)", "zero-length")
    check(dict(good, frame_dir="l", label="walk"), "label", "expected an integer")
    check(dict(good, frame_dir=None), "annotations[1].frame_dir")
    check([1, 2], "annotations[1]", "expected a dict")
    check({"frame_dir": "x"}, "no 'keypoint'")
    with pytest.raises(DataFormatError, match="empty"):
        read_pyskl(dump({"annotations": []}, tmp_path / "empty.pkl"))
    with pytest.raises(DataFormatError, match="missing"):
        read_pyskl(dump({"anns": []}, tmp_path / "nokey.pkl"))
    with pytest.raises(DataFormatError, match="split"):
        read_pyskl(dump({"annotations": [good], "split": {"train": [1]}}, tmp_path / "sp.pkl"))


def test_pyskl_scores_are_clipped_and_empty_clips_are_one_absent_person(tmp_path: Path) -> None:
    ann = coco_annotation("v", 1, m=1)
    ann["keypoint_score"] = np.full((1, 6, 17), 1.02, np.float32)
    empty = dict(coco_annotation("e", 2), keypoint=np.zeros((0, 6, 17, 2)))
    empty["keypoint_score"] = np.zeros((0, 6, 17))
    seqs, _ = read_pyskl(dump([ann, empty], tmp_path / "a.pkl"))
    assert (seqs[0].scores == 1.0).all()
    assert seqs[1].keypoints.shape == (1, 6, 17, 2) and not seqs[1].scores.any()


class _Payload:
    """Pickles to a call of ``func(*args)`` (then ``__setstate__(state)`` if given): what a
    hostile file would do."""

    def __init__(self, func: object, *args: object, state: object = None) -> None:
        self.func, self.args, self.state = func, args, state

    def __reduce__(self) -> tuple:
        if self.state is None:
            return (self.func, self.args)
        return (self.func, self.args, self.state)


class CustomClass:
    """A harmless class: the reader must still refuse to import it."""

    def __init__(self) -> None:
        self.x = 1


@pytest.mark.parametrize(
    ("payload", "forbidden"),
    [
        (_Payload(os.system, "touch PWNED"), "system"),  # module is posix or nt
        (_Payload(print, "PWNED"), "builtins.print"),
        (_Payload(os.getcwd), "getcwd"),
        (_Payload(eval, "1+1"), "builtins.eval"),
        (CustomClass(), "test_readers_formats.CustomClass"),
    ],
)
def test_pyskl_refuses_forbidden_globals_without_running_them(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    payload: object,
    forbidden: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    data = {"annotations": [coco_annotation("v", 0)], "evil": payload}
    for protocol in (2, 4):
        p = dump(data, tmp_path / f"evil{protocol}.pkl", protocol)
        with pytest.raises(DataFormatError) as err:
            read_pyskl(p)
        msg = str(err.value)
        assert "forbidden global" in msg and forbidden in msg and "refused" in msg
        assert str(p) in msg
    assert not (tmp_path / "PWNED").exists()
    assert "PWNED" not in capsys.readouterr().out


class _ObjectFlaggedArray:
    """Pickles as a numeric array whose dtype state claims it holds Python objects."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple:
        fn, args, state = np.zeros(4, dtype=self.code).__reduce__()
        dfn, dargs, dstate = np.dtype(self.code).__reduce__()
        forged = _Payload(dfn, *dargs, state=(*dstate[:-1], 63))  # 63: the flags of dtype('O')
        raw = b"\x41" * (4 * np.dtype(self.code).itemsize)  # pointer-like junk
        return fn, args, (state[0], state[1], forged, state[3], raw)


@pytest.mark.parametrize("code", ["<f2", "<f4", "<f8", "<i8"])
def test_pyskl_refuses_numeric_arrays_whose_dtype_claims_objects(tmp_path: Path, code: str) -> None:
    # Read as object pointers, such bytes would be dereferenced: the file must be refused.
    data = {"annotations": [coco_annotation("v", 0)], "forged": _ObjectFlaggedArray(code)}
    p = dump(data, tmp_path / "forged.pkl", 2)
    with pytest.raises(DataFormatError, match="state numpy never writes") as err:
        read_pyskl(p)
    assert str(p) in str(err.value) and "['forged']" in str(err.value)


_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy's own _reconstruct
_SCALAR = np.float32(1).__reduce__()[0]  # numpy's own scalar


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        # Each would allocate or touch about a terabyte (or crash numpy) if it were obeyed.
        (_Payload(bytes, 2**40), "bytes(n)"),
        (_Payload(np.ndarray, (2**20, 2**20), "f8"), "numpy.ndarray(...)"),
        (_Payload(str, [["x" * 1000] * 1000] * 1000), "str() of a list"),
        (_Payload(_RECONSTRUCT, np.ndarray, (2**40,), b"b"), "without a (shape, dtype"),
        (
            _Payload(_SCALAR, np.dtype("f4"), b"\0" * 4, state={"x": 1}),
            "refused state for a numpy scalar",
        ),
        (
            _Payload(
                _RECONSTRUCT,
                np.ndarray,
                (0,),
                b"b",
                state=(1, (2**40,), np.dtype("f4"), False, b"\0" * 8),
            ),
            "needs 4398046511104 bytes but the data has 8",
        ),
        (
            # An object array whose data is a short list: numpy 2 crashes the process on this.
            _Payload(
                _RECONSTRUCT,
                np.ndarray,
                (0,),
                b"b",
                state=(1, (10**6,), np.dtype("O"), False, [1, 2]),
            ),
            "dtype object",
        ),
    ],
)
def test_pyskl_refuses_what_the_file_cannot_pay_for(
    tmp_path: Path, payload: object, needle: str
) -> None:
    data = {"annotations": [coco_annotation("v", 0)], "bomb": payload}
    for protocol in (2, 4, 5):
        p = dump(data, tmp_path / f"bomb{protocol}.pkl", protocol)
        assert p.stat().st_size < 10_000_000
        with pytest.raises(DataFormatError) as err:
            read_pyskl(p)
        msg = str(err.value)
        assert needle in msg and "refused" in msg and str(p) in msg, msg


def test_pyskl_refusal_names_the_place_without_printing_huge_keys(tmp_path: Path) -> None:
    # A key built from shared parts: its repr would be 2**18 copies of a 1000-character string.
    key: object = "k" * 1000
    for _ in range(18):
        key = (key, key)
    bad = _Payload(bytes, 2**40)
    data = {"annotations": [coco_annotation("v", 0)], "x": {key: [_ObjectFlaggedArray("<f4")]}}
    p = dump(data, tmp_path / "key.pkl")
    with pytest.raises(DataFormatError) as err:
        read_pyskl(p)
    msg = str(err.value)
    assert "['x'][<tuple key>][0]" in msg and "state numpy never writes" in msg
    assert len(msg) < 600
    p = dump({"annotations": [], "x": {key: bad}}, tmp_path / "key2.pkl")
    with pytest.raises(DataFormatError, match=r"bytes\(n\)"):
        read_pyskl(p)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_restricted_pickle_reads_numpy_values_like_pickle(tmp_path: Path, protocol: int) -> None:
    import collections

    from protoskel.data.readers import load_restricted_pickle

    rng = np.random.default_rng(0)
    shared = rng.normal(size=(2, 3)).astype(np.float32)
    data = {
        "f32": shared,
        "again": shared,  # the same object twice stays one object
        "fortran": np.asfortranarray(rng.normal(size=(3, 4))),
        "big_endian": np.arange(5, dtype=">i4"),
        "f16": np.ones((2, 2), np.float16),
        "bools": np.array([True, False]),
        "text": np.array(["walk", "sit down"]),
        "empty": np.zeros((0, 17, 2)),
        "scalars": (np.int64(7), np.float32(0.5), np.bool_(True)),
        "ordered": collections.OrderedDict(a=[1, 2.5, "x", None, b"raw"], b={1, 2}),
        "complex": np.array([1 + 2j]),
    }
    p = dump(data, tmp_path / "rich.pkl", protocol)
    got = load_restricted_pickle(p)
    want = pickle.loads(p.read_bytes())  # our own file: the default unpickler is safe here
    assert got.keys() == want.keys() and got["again"] is got["f32"]
    for k in want:
        if isinstance(want[k], np.ndarray):
            assert got[k].dtype == want[k].dtype and got[k].flags.writeable, k
            np.testing.assert_array_equal(got[k], want[k])
        else:
            assert got[k] == want[k] and type(got[k]) is type(want[k]), k
    assert [type(x) for x in got["scalars"]] == [np.int64, np.float32, np.bool_]


def test_pyskl_corrupt_pickles_are_data_format_errors(tmp_path: Path) -> None:
    blob = pickle.dumps({"annotations": [coco_annotation("v", 0)]}, protocol=4)
    p = tmp_path / "cut.pkl"
    p.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataFormatError, match="not a readable pickle"):
        read_pyskl(p)
    p.write_bytes(b"this is not a pickle")
    with pytest.raises(DataFormatError, match="not a readable pickle"):
        read_pyskl(p)
    with pytest.raises(DataFormatError, match="no such file"):
        read_pyskl(tmp_path / "absent.pkl")


# ---------------------------------------------------------------- generic NPZ
@pytest.mark.parametrize("scores", [True, False])
def test_npz_round_trip(tmp_path: Path, scores: bool) -> None:
    seq = make_seq(scores=scores)
    p = tmp_path / "clip.npz"
    assert write_generic_npz(seq, p) == p
    back = read_generic(p)
    assert_same(seq, back)
    back.validate()
    assert os.listdir(tmp_path) == ["clip.npz"]  # no temp file left behind
    umask = os.umask(0)
    os.umask(umask)
    assert p.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600


def test_npz_single_person_string_label_and_layout_argument(tmp_path: Path) -> None:
    kp = np.random.default_rng(0).random((4, 17, 2))
    p = tmp_path / "one.npz"
    np.savez(p, keypoints=kp, scores=np.ones((4, 17)), label="jump")
    with pytest.raises(DataFormatError, match=r"field 'layout'.*missing"):
        read_generic(p)
    seq = read_generic(p, layout="coco-17")
    assert seq.keypoints.shape == (1, 4, 17, 2) and seq.keypoints.dtype == np.float32
    assert seq.label is None and seq.meta["label_name"] == "jump"
    assert seq.id == "one" and seq.fps is None
    np.testing.assert_allclose(seq.keypoints[0], kp, rtol=1e-6)


@pytest.mark.parametrize(
    ("arrays", "layout", "needles"),
    [
        ({"keypoints": np.zeros((2, 25, 3)), "layout": "coco-17"}, None, ["25 joints", "coco-17"]),
        ({"keypoints": np.zeros((2, 17, 2)), "layout": "coco-17"}, "ntu-25", ["says", "asked"]),
        (
            {"keypoints": np.zeros((2, 17, 2)), "layout": "nope-9"},
            None,
            ["unknown layout 'nope-9'"],
        ),
        ({"keypoints": np.full((1, 2, 17, 2), np.nan), "layout": "coco-17"}, None, ["non-finite"]),
        ({"keypoints": np.zeros((1, 0, 17, 2)), "layout": "coco-17"}, None, ["zero-length"]),
        ({"keypoints": np.zeros((17, 2)), "layout": "coco-17"}, None, ["(M, T, V, C)"]),
        ({"keypoints": np.full((1, 17, 2), 1e39), "layout": "coco-17"}, None, ["non-finite"]),
        ({"kp": np.zeros((1, 17, 2))}, "coco-17", ["'keypoints'", "missing", "['kp']"]),
        (
            {"keypoints": np.zeros((1, 17, 2)), "scores": np.full((1, 17), 2.0)},
            "coco-17",
            ["scores", "[0, 1]"],
        ),
        (
            {"keypoints": np.zeros((1, 17, 2)), "scores": np.zeros((1, 16))},
            "coco-17",
            ["does not match"],
        ),
        ({"keypoints": np.zeros((1, 17, 2)), "label": 1.5}, "coco-17", ["class index"]),
        ({"keypoints": np.zeros((1, 17, 2)), "label": -1}, "coco-17", ["negative"]),
        ({"keypoints": np.zeros((1, 17, 2)), "fps": 0.0}, "coco-17", ["positive"]),
        ({"keypoints": np.zeros((1, 17, 2)), "id": [1, 2]}, "coco-17", ["'id'", "string"]),
        ({"keypoints": np.array([[["a", "b"]]])}, "coco-17", ["numbers"]),
        (
            {"keypoints": np.zeros((1, 17, 2))},
            None,
            ["field 'layout': missing", "as a 'layout' array", "coco-17"],
        ),
    ],
)
def test_npz_bad_content(tmp_path: Path, arrays: dict, layout: str | None, needles: list) -> None:
    p = tmp_path / "bad.npz"
    np.savez(p, **arrays)
    with pytest.raises(DataFormatError) as err:
        read_generic(p, layout=layout)
    msg = str(err.value)
    assert str(p) in msg
    for needle in needles:
        assert needle in msg, msg


def test_npz_refuses_pickled_objects_and_broken_archives(tmp_path: Path) -> None:
    p = tmp_path / "obj.npz"
    np.savez(p, keypoints=np.array([{"a": 1}], dtype=object), layout="coco-17")
    with pytest.raises(DataFormatError, match="no pickled objects"):
        read_generic(p)
    blob = (tmp_path / "obj.npz").read_bytes()
    p.write_bytes(blob[:40])
    with pytest.raises(DataFormatError, match=r"not an NPZ archive \(not a zip file: truncated"):
        read_generic(p)
    # Random bytes: numpy would call them pickled data and suggest allow_pickle; not here.
    p.write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(DataFormatError, match="not a zip file") as err:
        read_generic(p)
    assert (
        "allow_pickle" not in str(err.value) and "pickled" not in str(err.value).split(": ", 1)[1]
    )
    np.save(tmp_path / "plain.npy", np.zeros(3))
    os.replace(tmp_path / "plain.npy", p)
    with pytest.raises(DataFormatError, match=r"single \.npy array"):
        read_generic(p)
    with pytest.raises(DataFormatError, match="no such file"):
        read_generic(tmp_path / "absent.npz")
    with pytest.raises(DataFormatError, match=r"\.npz or \.csv"):
        read_generic(tmp_path / "clip.txt")


def test_npz_refuses_an_archive_that_expands_past_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import protoskel.data.readers.generic as generic

    p = tmp_path / "zeros.npz"
    kp = np.zeros((1, 50_000, 17, 2), np.float32)  # 6.8 MB of zeros, a few kB compressed
    np.savez_compressed(p, keypoints=kp, layout="coco-17")
    assert p.stat().st_size < 100_000
    assert read_generic(p).keypoints.shape == kp.shape  # within the default bound
    monkeypatch.setattr(generic, "MAX_NPZ_BYTES", 1 << 20)
    with pytest.raises(DataFormatError, match=r"expands to 0\.01 GiB, more than the") as err:
        read_generic(p)
    assert str(p) in str(err.value) and "split the clip" in str(err.value)


def test_writers_refuse_broken_clips_and_keep_the_old_file(tmp_path: Path) -> None:
    p = tmp_path / "clip.npz"
    write_generic_npz(make_seq(), p)
    before = p.read_bytes()
    bad = make_seq()
    bad.keypoints[0, 0, 0, 0] = np.inf
    for writer in (write_generic_npz, write_generic_csv):
        with pytest.raises(DataFormatError, match="non-finite"):
            writer(bad, p)
    assert p.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["clip.npz"]
    with pytest.raises(LayoutError, match="to_layout"):
        write_generic_npz(make_seq(), p, layout="coco-17")


# ---------------------------------------------------------------- generic CSV
@pytest.mark.parametrize(
    ("m", "layout", "c", "scores"),
    [(2, "ntu-25", 3, True), (1, "coco-17", 2, False), (3, "mediapipe-33", 3, True)],
)
def test_csv_round_trip(tmp_path: Path, m: int, layout: str, c: int, scores: bool) -> None:
    seq = make_seq(m=m, layout=layout, c=c, scores=scores)
    p = tmp_path / "clip.csv"
    write_generic_csv(seq, p)
    assert_same(seq, read_clip(p))
    assert os.listdir(tmp_path) == ["clip.csv"]


def test_csv_hand_written_with_comments_gaps_and_shuffled_columns(tmp_path: Path) -> None:
    lay = get_layout("coco-17")
    cols = [(j, s) for j in reversed(lay.joints) for s in ("score", "y", "x")]
    header = ",".join(["frame", "person"] + [f"{j}_{s}" for j, s in cols])
    rng = np.random.default_rng(3)
    rows = {(0, 0): rng.random(51), (2, 0): rng.random(51), (2, 1): rng.random(51)}
    text = [
        "# recorded with a phone, any free text is fine",
        "# layout: coco-17",
        "# label: wave hello",
        "# fps: 12.5",
        "",
        header,
    ] + [csv_row(t, m, v) for (t, m), v in rows.items()]
    p = tmp_path / "hand.csv"
    p.write_text("\n".join(text) + "\n")
    seq = read_generic(p)
    assert seq.keypoints.shape == (2, 3, 17, 2)
    assert seq.meta["label_name"] == "wave hello" and seq.label is None and seq.fps == 12.5
    vals = rows[(2, 1)].reshape(17, 3)[::-1]  # back to layout order, columns score, y, x
    np.testing.assert_allclose(seq.keypoints[1, 2], vals[:, [2, 1]], rtol=1e-6)
    np.testing.assert_allclose(seq.scores[1, 2], vals[:, 0], rtol=1e-6)
    # Missing (frame, person) rows are zeros with score 0.
    for t, m in [(1, 0), (0, 1), (1, 1)]:
        assert not seq.keypoints[m, t].any() and not seq.scores[m, t].any()


def test_csv_without_scores_marks_missing_rows_only(tmp_path: Path) -> None:
    rows = [csv_header(score=False)] + [csv_row(t, 0, np.ones(75)) for t in (0, 2)]
    p = tmp_path / "gap.csv"
    p.write_text("\n".join(rows))
    seq = read_generic(p)  # layout inferred from the joint names
    assert seq.layout == "ntu-25" and seq.label is None and seq.id == "gap"
    np.testing.assert_array_equal(seq.scores[0, :, 0], [1, 0, 1])


def test_csv_layout_inference_between_same_joint_sets(tmp_path: Path) -> None:
    p = tmp_path / "k.csv"
    for name in ("kinect-v1-20", "msr-20"):
        p.write_text(csv_header(name) + "\n" + csv_row(0, 0, np.full(80, 0.5)) + "\n")
        assert read_generic(p).layout == name
    joints = sorted(get_layout("msr-20").joints)  # neither order: ambiguous
    header = ",".join(["frame", "person"] + [f"{j}_{s}" for j in joints for s in "xyz"])
    p.write_text(header + "\n" + csv_row(0, 0, np.zeros(60)) + "\n")
    with pytest.raises(DataFormatError, match="# layout: NAME"):
        read_generic(p)
    assert read_generic(p, layout="msr-20").layout == "msr-20"


def _csv_error(tmp_path: Path, lines: list[str], *needles: str, layout: str | None = None) -> None:
    p = tmp_path / "bad.csv"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError) as err:
        read_generic(p, layout=layout)
    msg = str(err.value)
    assert str(p) in msg
    for needle in needles:
        assert needle in msg, msg


def test_csv_errors_name_line_and_column(tmp_path: Path) -> None:
    h = csv_header()
    good = csv_row(0, 0, np.full(100, 0.5))
    cells = good.split(",")
    garbage = ",".join([*cells[:5], "1.2.3", *cells[6:]])
    _csv_error(tmp_path, ["# layout: ntu-25", h, garbage], "line 3, column 6 (spine_base_score)")
    nan = ",".join([*cells[:7], "nan", *cells[8:]])
    _csv_error(tmp_path, [h, nan], "line 2, column 8 (spine_mid_y)", "'nan' is not a finite")
    _csv_error(tmp_path, [h, ",".join(cells[:-1])], "line 2", "expected 102", "found 101")
    _csv_error(tmp_path, [h, good, good], "line 3", "already given on line 2")
    _csv_error(tmp_path, [h, "x" + good], "line 2, column 1 (frame)", "'x0'")
    _csv_error(tmp_path, [h, "-1" + good[1:]], "column 1 (frame)", "non-negative")
    _csv_error(tmp_path, [h, "9999999" + good[1:]], "beyond the limit")
    _csv_error(tmp_path, [h, good[:2] + "100" + good[3:]], "column 2 (person)", "limit of 64")
    low = ",".join([*cells[:5], "-0.5", *cells[6:]])
    _csv_error(tmp_path, [h, low], "line 2, column 6 (spine_base_score)", "outside [0, 1]")
    high = ",".join([*cells[:-1], "1.5"])
    _csv_error(tmp_path, [h, high], "column 102 (right_thumb_score)", "outside [0, 1]")
    _csv_error(tmp_path, [h], "no data rows")
    _csv_error(tmp_path, ["# only comments"], "no header line")
    _csv_error(tmp_path, ["person,frame" + h[12:], good], "line 1, column 1", "frame,person")
    _csv_error(tmp_path, [h.replace("neck_y", "neck_w"), good], "line 1, column 12 ('neck_w')")
    nose = h.replace("neck_y", "nose_y")
    _csv_error(tmp_path, ["# layout: ntu-25", nose, good], "line 2, column 12", "no joint 'nose'")
    _csv_error(tmp_path, [h.replace("neck_y", "neck_x"), good], "column given twice")
    _csv_error(tmp_path, [h, good], "no joint 'spine_base'", layout="coco-17")
    _csv_error(tmp_path, ["# layout: ntu-25", h, good], "says", "'coco-17'", layout="coco-17")
    _csv_error(tmp_path, ["# layout: elbow-3", h, good], "unknown layout 'elbow-3'")
    _csv_error(tmp_path, ["# layout: ntu-25", "# layout: ntu-25", h, good], "given twice")
    _csv_error(tmp_path, ["# fps: fast", h, good], "line 1", "fps")
    _csv_error(tmp_path, ["# label: 1", "# label_name: a", "# label: 2", h, good], "line 3")
    drop = ",".join(c for c in h.split(",") if not c.startswith("head_"))
    _csv_error(tmp_path, ["# layout: ntu-25", drop, good], "no columns: head")
    half = h.replace(",neck_score", "")
    _csv_error(tmp_path, [half, good], "'neck' has no neck_score column")
    _csv_error(tmp_path, [h.replace("left_", "l_"), good], "exactly one built-in layout")


def test_csv_rejects_bad_encoding(tmp_path: Path) -> None:
    p = tmp_path / "b.csv"
    p.write_bytes(csv_header().encode() + b"\n0,0,\xff\n")
    with pytest.raises(DataFormatError, match=r"line 2.*UTF-8"):
        read_generic(p)


# ---------------------------------------------------------------- read_clip
def test_read_clip_dispatches_and_checks_layouts(tmp_path: Path) -> None:
    ntu = tmp_path / "S001C001P001R001A001.skeleton"
    write_ntu_two_bodies(ntu)
    assert read_clip(ntu).layout == "ntu-25"
    assert read_clip(ntu, layout="ntu-25").num_persons == 2
    with pytest.raises(DataFormatError, match=r"to_layout\('coco-17'\)"):
        read_clip(ntu, layout="coco-17")
    npz = tmp_path / "c.npz"
    write_generic_npz(make_seq(), npz)
    assert read_clip(npz).label == 4
    one = dump([coco_annotation("solo", 2)], tmp_path / "one.pkl")
    assert read_clip(one).id == "solo"
    two = dump([coco_annotation("a", 2), coco_annotation("b", 1)], tmp_path / "two.pkl")
    with pytest.raises(DataFormatError, match="holds 2 clips"):
        read_clip(two)


def test_read_clip_unknown_and_bad_json(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError) as err:
        read_clip(tmp_path / "clip.mp4")
    for key in SUPPORTED_FORMATS:
        assert key in str(err.value)
    p = tmp_path / "x.json"
    p.write_text('{"frames": [1, 2]}')
    with pytest.raises(DataFormatError, match="'skeletons'"):
        read_clip(p)
    p.write_text('{"skeletons": [1,\n  }')
    with pytest.raises(DataFormatError, match="line 2, column 3"):
        read_clip(p)
    p.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataFormatError, match="nested too deeply"):
        read_clip(p)


def test_read_clip_nwucla_json_when_reader_present(tmp_path: Path) -> None:
    pytest.importorskip("protoskel.data.readers.nwucla")
    p = tmp_path / "a01_s01_e00_v01.json"
    sk = np.random.default_rng(0).normal(size=(5, 20, 3)).round(4).tolist()
    p.write_text(json.dumps({"file_name": p.stem, "skeletons": sk, "label": 1}))
    seq = read_clip(p)
    assert seq.num_frames == 5 and seq.num_joints == 20
    with pytest.raises(DataFormatError, match="to_layout"):
        read_clip(p, layout="ntu-25")
