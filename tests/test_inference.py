"""Predictor, `protoskel predict` (one clip and --stream), enroll/forget through the CLI."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import Cli, vtest_excerpt
from protoskel.data.loader import ClipLoader
from protoskel.data.readers.generic import write_generic_npz
from protoskel.data.sequence import SkeletonSequence
from protoskel.data.store import open_store
from protoskel.data.synthetic import write_synthetic_store
from protoskel.errors import CheckpointError, DataFormatError, LayoutError
from protoskel.inference import Predictor, iter_frames, load_input
from protoskel.training.checkpoint import build_from_checkpoint, load_checkpoint
from protoskel.training.config import config_from_dict
from protoskel.training.trainer import train

#: A model small enough to train in about a second on one core.
TINY_CFG = {
    "model": {
        "backbone": "atgcn",
        "head": "prototype",
        "kwargs": {"width": 8, "depth": 3, "groups": 4},
        "head_kwargs": {"prototypes_per_class": 1, "window": 2, "proto_dim": 16},
    },
    "data": {"num_frames": 16, "stream": "joint"},
    "train": {
        "epochs": 2,
        "batch_size": 12,
        "optimizer": "adamw",
        "lr": 0.003,
        "warmup_epochs": 0,
        "push_epochs": 2,
        "threads": 1,
    },
}


def train_tiny(root: Path, head: str = "prototype", epochs: int = 2) -> dict[str, Path]:
    """A synthetic store under ``root`` and a tiny model trained on it: {"store", "ck"}."""
    store = root / "store"
    if not store.exists():
        write_synthetic_store(store, n_train_per_class=6, n_val_per_class=2, seed=0)
    cfg = copy.deepcopy(TINY_CFG)
    cfg["model"]["head"] = head
    cfg["train"]["epochs"] = epochs
    if head != "prototype":
        cfg["model"].pop("head_kwargs")
    train(config_from_dict(cfg), store, root / head, progress=False)
    return {"store": store, "ck": root / head / "last.pt"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Prototype and linear checkpoints on one synthetic store, plus a sample clip file."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("inference")
    out = train_tiny(root)
    out["linear"] = train_tiny(root, "linear", epochs=1)["ck"]
    out["clip"] = write_generic_npz(open_store(out["store"]).split("val").get(0), root / "c.npz")
    return out


# ------------------------------------------------------------------------------ Predictor
def test_prepare_is_the_validation_loader(tiny: dict[str, Path]) -> None:
    pred = Predictor.from_checkpoint(tiny["ck"])
    assert pred.layout.name == "kinect-v1-20" and pred.stream == "joint"
    assert (pred.num_frames, pred.in_channels, pred.is_prototype) == (16, 3, True)
    val = open_store(tiny["store"]).split("val")
    loader = ClipLoader(val, pred.layout, batch_size=4, num_frames=16, train=False)
    want, _ = loader.batch(np.arange(4))
    got = torch.cat([pred.prepare(val.get(i)) for i in range(4)])
    assert got.shape == (4, 3, 16, 20, 1)
    assert torch.equal(got, want)

    # Several test views: K rows per clip, as the loader's num_clips gives.
    ck = load_checkpoint(tiny["ck"])
    ck["config"]["data"]["test_clips"] = 3
    ck["config"]["data"]["stream"] = "bone"
    p3 = Predictor(ck, build_from_checkpoint(ck))
    loader = ClipLoader(
        val, p3.layout, batch_size=1, num_frames=16, train=False, num_clips=3, stream="bone"
    )
    want, _ = loader.batch(np.array([1]))
    assert torch.equal(p3.prepare(val.get(1)), want)
    assert p3.positions(val.get(1).num_frames).shape == (3, 16)


def test_predict_generic_npz_and_a_mapped_layout(tiny: dict[str, Path], tmp_path: Path) -> None:
    pred = Predictor.from_checkpoint(tiny["ck"])
    seq = load_input(tiny["clip"])
    res = pred.predict(seq, top_k=4)
    probs = [p["prob"] for p in res["predictions"]]
    assert list(res) == ["predictions"] and len(probs) == 4
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    assert all(p["label"] == pred.classes[p["index"]] for p in res["predictions"])
    full = pred.probabilities(seq)
    assert full.shape == (6,) and full.sum() == pytest.approx(1.0)

    # The same clip written as ntu-25 comes back through the ntu-25 -> kinect-v1-20 map.
    ntu = write_generic_npz(seq.to_layout("ntu-25"), tmp_path / "ntu.npz")
    other = load_input(ntu)
    assert other.layout == "ntu-25" and other.num_joints == 25
    np.testing.assert_allclose(pred.probabilities(other), full, atol=1e-6)


def test_layout_coords_and_persons_are_checked(tiny: dict[str, Path]) -> None:
    pred = Predictor.from_checkpoint(tiny["ck"])
    rng = np.random.default_rng(0)
    coco = SkeletonSequence(rng.normal(size=(1, 9, 17, 3)).astype(np.float32), "coco-17")
    with pytest.raises(LayoutError, match=r"coco-17.*kinect-v1-20"):
        pred.prepare(coco)
    flat = SkeletonSequence(rng.normal(size=(1, 9, 20, 2)).astype(np.float32), "kinect-v1-20")
    with pytest.raises(DataFormatError, match="2D coordinates"):
        pred.prepare(flat)
    two = SkeletonSequence(rng.normal(size=(2, 9, 20, 3)).astype(np.float32), "kinect-v1-20")
    assert pred.num_persons == 1  # the training store's person count, kept in the checkpoint
    assert pred.adapt(two).num_persons == 1
    pred.num_persons = None  # unknown: the clip keeps its own persons
    assert pred.prepare(two).shape[-1] == 2
    pred.num_persons = 3
    padded = pred.adapt(two)
    assert padded.num_persons == 3 and not padded.keypoints[2].any()
    # A 3D clip for a 2D model keeps x and y (image landmarks in pixels when a video gave them).
    pred.in_channels, pred.num_persons = 2, None
    assert pred.adapt(two).num_coords == 2
    img = rng.uniform(size=(2, 9, 20, 3)).astype(np.float32)
    vid = replace(two, meta={"image_keypoints": img, "image_size": (640, 480)})
    np.testing.assert_allclose(pred.adapt(vid).keypoints[0, 0, 0], img[0, 0, 0, :2] * [640, 480])


def test_bad_inputs_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="no such file"):
        load_input(tmp_path / "missing.npz")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataFormatError, match=r"unsupported input type.*\.mp4"):
        load_input(tmp_path / "notes.txt")
    with pytest.raises(DataFormatError, match="folder"):
        load_input(tmp_path)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        Predictor.from_checkpoint(tmp_path / "none.pt")


# ------------------------------------------------------------------------------- CLI
def test_cli_predict_json_and_text(tiny: dict[str, Path], cli: Cli) -> None:
    code, out, _ = cli("predict", tiny["ck"], tiny["clip"], "--json", "--top-k", "3")
    assert code == 0
    res = json.loads(out)  # exactly one JSON object on stdout
    assert set(res) <= {"predictions", "checkpoint", "input"} and "predictions" in res
    assert [set(p) for p in res["predictions"]] == [{"label", "index", "prob"}] * 3
    probs = [p["prob"] for p in res["predictions"]]
    assert probs == sorted(probs, reverse=True)
    pred = Predictor.from_checkpoint(tiny["ck"])
    assert res["predictions"] == pred.predict(load_input(tiny["clip"]), 3)["predictions"]

    code, out, _ = cli("predict", tiny["ck"], tiny["clip"], "--top-k", "2")
    assert code == 0 and len(out.strip().splitlines()) == 2
    assert res["predictions"][0]["label"] in out.splitlines()[0]


def test_cli_stream_over_a_skeleton_file(tiny: dict[str, Path], cli: Cli) -> None:
    length = load_input(tiny["clip"]).num_frames
    code, out, err = cli(
        "predict", tiny["ck"], tiny["clip"], "--stream", "--window", "16", "--hop", "5"
    )
    assert code == 0, err
    rows = [json.loads(line) for line in out.strip().splitlines()]
    assert len(rows) == 1 + (length - 16) // 5
    classes = load_checkpoint(tiny["ck"])["classes"]
    for i, r in enumerate(rows):
        assert r["window"] == i
        assert (r["frame_start"], r["frame_end"]) == (5 * i, 5 * i + 16)
        assert r["label"] == classes[r["index"]] and 0 < r["prob"] <= 1
        assert r["latency_ms"] >= r["model_ms"] >= 0
    # The window's own clip gives the same label as predicting it directly.
    pred = Predictor.from_checkpoint(tiny["ck"])
    seq = load_input(tiny["clip"])
    last = rows[-1]
    sub = replace(seq, keypoints=seq.keypoints[:, last["frame_start"] : last["frame_end"]])
    assert pred.predict(sub, 1)["predictions"][0]["prob"] == pytest.approx(last["prob"])

    # A stream shorter than the window still gives one window over all of it.
    rows = list(pred.predict_windows(iter_frames(tiny["clip"], max_frames=7), window=52))
    assert [(r["frame_start"], r["frame_end"]) for r in rows] == [(0, 7)]


def test_a_clip_without_a_person_is_refused_and_a_stream_says_so(
    tiny: dict[str, Path], tmp_path: Path, cli: Cli
) -> None:
    seq = load_input(tiny["clip"])
    empty = replace(seq, keypoints=np.zeros_like(seq.keypoints))
    path = write_generic_npz(empty, tmp_path / "empty.npz")
    pred = Predictor.from_checkpoint(tiny["ck"])
    with pytest.raises(DataFormatError, match=f"no person in any of its {seq.num_frames} frames"):
        pred.predict(load_input(path))
    code, out, err = cli("predict", tiny["ck"], path)
    assert code == 2 and out == "" and "empty.npz: no person in any of its" in err
    code, out, err = cli("explain", tiny["ck"], path, "--out", tmp_path / "rep")
    assert code == 2 and "no person" in err and not (tmp_path / "rep").exists()
    # One joint present in one frame is a person (an occluded one), not an empty clip.
    one = empty.keypoints.copy()
    one[0, 3, 5] = [0.1, 0.2, 0.3]
    assert pred.predict(replace(seq, keypoints=one))["predictions"]
    # A stream goes on: the empty windows say so, the others are classified as before.
    half = seq.keypoints.copy()
    half[:, :20] = 0.0
    mixed = write_generic_npz(replace(seq, keypoints=half), tmp_path / "half.npz")
    rows = list(pred.predict_windows(iter_frames(mixed), window=10, hop=10))
    assert rows[0]["label"] is None and rows[0]["note"] == "no person in this window"
    assert rows[0]["prob"] is None and rows[1]["label"] is None
    assert all(r["label"] is not None and "note" not in r for r in rows[2:]) and rows[2:]


def test_cli_stream_over_video_frames(tiny: dict[str, Path], tmp_path: Path, cli: Cli) -> None:
    pytest.importorskip("mediapipe")
    video = vtest_excerpt(tmp_path / "walk.avi", 160, 9)
    code, out, err = cli(
        "predict",
        tiny["ck"],
        video,
        "--stream",
        "--window",
        "6",
        "--hop",
        "3",
        "--max-frames",
        "9",
        "--top-k",
        "2",
    )
    assert code == 0, err
    rows = [json.loads(line) for line in out.strip().splitlines()]
    assert [(r["frame_start"], r["frame_end"]) for r in rows] == [(0, 6), (3, 9)]
    assert all(r["pose_ms"] > 0 and r["latency_ms"] >= r["pose_ms"] for r in rows)
    assert all(len(r["predictions"]) == 2 and r["label"] for r in rows)
    # Where the video shows nobody, each window says so and the stream goes on.
    empty = vtest_excerpt(tmp_path / "empty.avi", 0, 9)
    code, out, err = cli("predict", tiny["ck"], empty, "--stream", "--window", "6", "--hop", "3")
    assert code == 0, err
    rows = [json.loads(line) for line in out.strip().splitlines()]
    assert [(r["label"], r.get("note")) for r in rows] == [(None, "no person in this window")] * 2


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["predict", "{ck}", "missing.npz"], "no such file"),
        (["predict", "{ck}", "{txt}"], "unsupported input type"),
        (["predict", "{ck}", "{txt}", "--stream"], "unsupported input type"),
        (["explain", "{ck}", "missing.npz", "--out", "{tmp}/r"], "no such file"),
        (
            ["enroll", "{linear}", "--name", "x", "--examples", "{clip}", "--out", "{tmp}/e.pt"],
            "needs a prototype model",
        ),
        (
            ["forget", "{linear}", "--name", "squat", "--out", "{tmp}/f.pt"],
            "needs a prototype model",
        ),
        (["forget", "{ck}", "--name", "nope", "--out", "{tmp}/f.pt"], "unknown class"),
        (["prototypes", "{linear}", "--out", "{tmp}/g"], "needs a prototype model"),
        (
            [
                "enroll",
                "{ck}",
                "--name",
                "x",
                "--examples",
                "{clip}",
                "--out",
                "{tmp}/e.pt",
                "--negatives",
                "{store}",
                "--negatives-split",
                "nope",
            ],
            "no split 'nope'",
        ),
    ],
)
def test_cli_bad_inputs_exit_2_with_one_line(
    tiny: dict[str, Path], tmp_path: Path, cli: Cli, args: list[str], match: str
) -> None:
    (tmp_path / "notes.txt").write_text("not a clip")
    fill = {
        "ck": tiny["ck"],
        "linear": tiny["linear"],
        "clip": tiny["clip"],
        "tmp": tmp_path,
        "txt": tmp_path / "notes.txt",
        "store": tiny["store"],
    }
    code, out, err = cli(*[a.format(**fill) for a in args])
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and match in err
    assert not list(tmp_path.glob("[efgr]*"))  # nothing half-written


def test_cli_enroll_then_forget_round_trip(tiny: dict[str, Path], tmp_path: Path, cli: Cli) -> None:
    val = open_store(tiny["store"]).split("val")
    ex = [write_generic_npz(val.get(i), tmp_path / f"ex{i}.npz") for i in (2, 3)]
    code, out, err = cli(
        "enroll",
        tiny["ck"],
        "--name",
        "new_move",
        "--examples",
        *ex,
        "--out",
        tmp_path / "en.pt",
        "--json",
    )
    assert code == 0, err
    res = json.loads(out)
    orig = load_checkpoint(tiny["ck"])
    assert res["classes"] == [*orig["classes"], "new_move"]
    assert res["examples"] == [val.get(2).id, val.get(3).id] and res["prototypes"] == 2 * 5
    enrolled = Predictor.from_checkpoint(tmp_path / "en.pt")
    assert enrolled.classes == res["classes"]
    assert load_checkpoint(tmp_path / "en.pt")["meta"]["edits"][-1]["op"] == "enroll"
    # Its own examples are recognised as the new class (they match its prototypes exactly).
    assert enrolled.predict(load_input(ex[0]), 1)["predictions"][0]["label"] == "new_move"

    # Calibrated against the training clips too: every training clip is a negative.
    code, out, err = cli(
        "enroll", tiny["ck"], "--name", "new_move", "--examples", *ex, "--out",
        tmp_path / "en_neg.pt", "--negatives", tiny["store"], "--json",
    )  # fmt: skip
    assert code == 0, err
    res_neg = json.loads(out)
    assert res_neg["negatives"] == len(open_store(tiny["store"]).split("train"))
    assert res_neg["bias"] != res["bias"]

    code, _, err = cli(
        "forget",
        tmp_path / "en.pt",
        "--name",
        "new_move",
        "--example",
        val.get(2).id,
        "--out",
        tmp_path / "one.pt",
    )
    assert code == 0, err
    one = Predictor.from_checkpoint(tmp_path / "one.pt")
    assert one.classes == res["classes"]

    code, _, err = cli(
        "forget", tmp_path / "en.pt", "--name", "new_move", "--out", tmp_path / "back.pt"
    )
    assert code == 0, err
    back = Predictor.from_checkpoint(tmp_path / "back.pt")
    first = Predictor.from_checkpoint(tiny["ck"])
    assert back.classes == first.classes
    for i in range(len(val)):
        np.testing.assert_array_equal(
            back.probabilities(val.get(i)), first.probabilities(val.get(i))
        )
