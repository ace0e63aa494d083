"""Pose extraction (MediaPipe, offline) on the real vtest.avi, its errors, and `protoskel pose`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import media_file
from protoskel.data.sequence import SkeletonSequence
from protoskel.errors import DataFormatError, ProtoskelError
from protoskel.pose import extract_pose, write_pose_npz

# mediapipe and OpenCV are the optional `video` extra; protoskel.pose imports them lazily.
pytest.importorskip("mediapipe")
pytest.importorskip("cv2")

NOSE, L_SHOULDER, R_SHOULDER, L_HIP, R_HIP, L_ANKLE, R_ANKLE = 0, 11, 12, 23, 24, 27, 28
# In vtest.avi MediaPipe first finds a pedestrian at frame 166 and then tracks them; a window
# starting just before that is a fast clip where most frames have a pose.
WINDOW_START, WINDOW_LEN = 160, 40


def _pose_frames(seq: SkeletonSequence) -> np.ndarray:
    """(T,) bool: frames where MediaPipe returned a pose (any joint with a score)."""
    assert seq.scores is not None
    return (seq.scores[0] > 0).any(axis=1)


def _check_clip(seq: SkeletonSequence, frames: int) -> np.ndarray:
    """Shared invariants of an extracted clip; return the frames with a pose."""
    assert seq.layout == "mediapipe-33"
    assert seq.keypoints.shape == (1, frames, 33, 3)
    assert seq.keypoints.dtype == np.float32
    assert seq.scores is not None and seq.scores.shape == (1, frames, 33)
    assert seq.scores.min() >= 0.0 and seq.scores.max() <= 1.0
    assert seq.fps == pytest.approx(10.0)
    image = seq.meta["image_keypoints"]
    assert image.shape == (1, frames, 33, 3) and image.dtype == np.float32
    assert seq.meta["image_size"] == (768, 576)
    found = _pose_frames(seq)
    assert seq.meta["frames_with_pose"] == int(found.sum())
    # Frames without a person are kept as exact zeros (never dropped, never garbage).
    assert not np.any(seq.keypoints[0, ~found])
    assert not np.any(seq.scores[0, ~found])
    assert not np.any(image[0, ~found])
    assert np.all(np.abs(seq.keypoints[0, found]).sum(axis=(1, 2)) > 0)
    seq.validate()
    return found


def test_window_finds_pose_in_most_frames_y_up() -> None:
    """A 40-frame window: T kept, most frames posed, world y up, image y down, hips at origin."""
    video = media_file("vtest.avi")
    seq = extract_pose(video, start_frame=WINDOW_START, max_frames=WINDOW_LEN, progress=False)
    found = _check_clip(seq, WINDOW_LEN)
    assert seq.meta["start_frame"] == WINDOW_START
    assert found.sum() >= 0.6 * WINDOW_LEN, f"only {found.sum()} of {WINDOW_LEN} frames"

    kp = seq.keypoints[0, found]
    ankles_y = kp[:, [L_ANKLE, R_ANKLE], 1].mean(axis=1)
    # y up: the head is well above the ankles (an adult is ~1.2-1.8 m nose to ankle).
    assert np.median(kp[:, NOSE, 1] - ankles_y) > 0.8
    # World landmarks are hip-centred.
    hip_mid = kp[:, [L_HIP, R_HIP]].mean(axis=1)
    assert np.abs(hip_mid).max() < 0.1
    # Shoulders about 0.2-0.5 m apart: metres, not pixels or normalised units.
    width = np.linalg.norm(kp[:, L_SHOULDER] - kp[:, R_SHOULDER], axis=1)
    assert 0.15 < np.median(width) < 0.6
    # Image landmarks stay in image convention: y grows downwards, inside the frame.
    img = seq.meta["image_keypoints"][0, found]
    assert np.median(img[:, [L_ANKLE, R_ANKLE], 1].mean(axis=1) - img[:, NOSE, 1]) > 0
    assert np.all((img[:, NOSE, :2] > 0) & (img[:, NOSE, :2] < 1))


def test_full_video_keeps_every_frame() -> None:
    """All 795 frames of vtest.avi: none dropped, fps 10, a pose in at least 400 (~12 s)."""
    seq = extract_pose(media_file("vtest.avi"), progress=False)
    found = _check_clip(seq, 795)
    assert found.sum() >= 400, f"pose in only {found.sum()} of 795 frames"
    assert seq.id == "vtest"


def test_missing_file_names_it(tmp_path: Path) -> None:
    """A missing video is a DataFormatError naming the path."""
    missing = tmp_path / "nope.mp4"
    with pytest.raises(DataFormatError, match=r"nope\.mp4.*not found"):
        extract_pose(missing, progress=False)


@pytest.mark.parametrize("content", [b"", b"this is not a video\n" * 50])
def test_non_video_file_names_it(tmp_path: Path, content: bytes) -> None:
    """An empty or non-video file is a DataFormatError naming the file, not a crash."""
    bad = tmp_path / "clip.avi"
    bad.write_bytes(content)
    with pytest.raises(DataFormatError, match=r"clip\.avi"):
        extract_pose(bad, progress=False)


def test_start_frame_past_end(tmp_path: Path) -> None:
    """Skipping past the end of the video says so, with the frame where the video ended."""
    with pytest.raises(DataFormatError, match=r"frame 795.*start_frame=900"):
        extract_pose(media_file("vtest.avi"), start_frame=900, progress=False)


@pytest.mark.parametrize("complexity", [0, 2])
def test_uninstalled_model_complexity_is_clean_error(
    complexity: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Complexity 0/2 models are not in the wheel: refuse before mediapipe tries a download."""
    import urllib.request

    import mediapipe as mp

    model_dir = Path(mp.__file__).parent / "modules" / "pose_landmark"
    name = {0: "pose_landmark_lite.tflite", 2: "pose_landmark_heavy.tflite"}[complexity]
    if (model_dir / name).exists():
        pytest.skip(f"{name} is installed here, so complexity {complexity} works offline")

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    with pytest.raises(ProtoskelError, match=r"available offline: 1\b.*model_complexity=1"):
        extract_pose(media_file("vtest.avi"), model_complexity=complexity, progress=False)
    assert not (model_dir / name).exists()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"model_complexity": 3}, "must be 0, 1 or 2"),
        ({"max_frames": 0}, "max_frames"),
        ({"start_frame": -1}, "start_frame"),
        ({"min_detection_confidence": 1.5}, "min_detection_confidence"),
    ],
)
def test_bad_arguments(kwargs: dict[str, int | float], match: str) -> None:
    """Out-of-range arguments are ProtoskelErrors naming the argument."""
    with pytest.raises(ProtoskelError, match=match):
        extract_pose(media_file("vtest.avi"), progress=False, **kwargs)


def test_write_pose_npz_roundtrip(tmp_path: Path) -> None:
    """The NPZ has the generic keys and dtypes, loads without pickle, and leaves no temp file."""
    rng = np.random.default_rng(0)
    seq = SkeletonSequence(
        keypoints=rng.normal(size=(1, 5, 33, 3)).astype(np.float32),
        layout="mediapipe-33",
        scores=rng.uniform(size=(1, 5, 33)).astype(np.float32),
        id="walk",
        fps=25.0,
        meta={
            "image_keypoints": rng.uniform(size=(1, 5, 33, 3)).astype(np.float32),
            "image_size": (640, 480),
        },
    )
    out = tmp_path / "sub" / "walk.npz"
    assert write_pose_npz(seq, out) == out
    with np.load(out, allow_pickle=False) as d:
        assert set(d.files) == {
            "keypoints",
            "scores",
            "layout",
            "fps",
            "id",
            "image_keypoints",
            "image_size",
        }
        np.testing.assert_array_equal(d["keypoints"], seq.keypoints)
        np.testing.assert_array_equal(d["scores"], seq.scores)
        np.testing.assert_array_equal(d["image_keypoints"], seq.meta["image_keypoints"])
        assert d["keypoints"].dtype == np.float32 and d["scores"].dtype == np.float32
        assert str(d["layout"]) == "mediapipe-33" and str(d["id"]) == "walk"
        assert float(d["fps"]) == 25.0
        assert d["image_size"].tolist() == [640, 480]
    assert sorted(p.name for p in out.parent.iterdir()) == ["walk.npz"]


def test_pose_npz_reads_back_as_generic_clip(tmp_path: Path) -> None:
    """The generic NPZ reader accepts the file (extra image arrays are ignored there)."""
    generic = pytest.importorskip("protoskel.data.readers.generic")
    rng = np.random.default_rng(1)
    seq = SkeletonSequence(
        keypoints=rng.normal(size=(1, 4, 33, 3)).astype(np.float32),
        layout="mediapipe-33",
        scores=rng.uniform(size=(1, 4, 33)).astype(np.float32),
        id="clip7",
        fps=10.0,
        meta={"image_keypoints": np.zeros((1, 4, 33, 3), np.float32), "image_size": (8, 6)},
    )
    out = write_pose_npz(seq, tmp_path / "clip7.npz")
    back = generic.read_generic_npz(out)
    assert back.layout == "mediapipe-33" and back.id == "clip7" and back.fps == 10.0
    np.testing.assert_array_equal(back.keypoints, seq.keypoints)
    assert back.scores is not None
    np.testing.assert_array_equal(back.scores, seq.scores)


def test_write_pose_npz_invalid_leaves_nothing(tmp_path: Path) -> None:
    """An invalid clip raises before anything is written."""
    kp = np.zeros((1, 3, 33, 3), np.float32)
    kp[0, 1, 4, 2] = np.nan
    out = tmp_path / "bad.npz"
    with pytest.raises(DataFormatError, match="frame 1, joint 4"):
        write_pose_npz(SkeletonSequence(keypoints=kp, layout="mediapipe-33"), out)
    assert list(tmp_path.iterdir()) == []


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the protoskel CLI in a fresh interpreter (exercises main()'s error handling)."""
    return subprocess.run(
        [sys.executable, "-m", "protoskel.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_cli_pose_json(tmp_path: Path) -> None:
    """`protoskel pose --json` prints one JSON object and writes the clip atomically."""
    out = tmp_path / "clip.npz"
    res = _cli(
        "pose",
        str(media_file("vtest.avi")),
        "--out",
        str(out),
        "--start-frame",
        str(WINDOW_START),
        "--max-frames",
        "20",
        "--json",
    )
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["frames"] == 20
    assert summary["fps"] == 10.0
    assert summary["layout"] == "mediapipe-33"
    assert 10 <= summary["frames_with_pose"] <= 20
    assert summary["extraction_fps"] > 0
    assert "with a pose" in res.stderr
    with np.load(out, allow_pickle=False) as d:
        assert d["keypoints"].shape == (1, 20, 33, 3)
        assert d["image_keypoints"].shape == (1, 20, 33, 3)
        assert int((d["scores"][0] > 0).any(axis=1).sum()) == summary["frames_with_pose"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.npz"]


def test_cli_pose_missing_video_exit_2(tmp_path: Path) -> None:
    """A missing video: one error line naming it on stderr, exit code 2, no output file."""
    out = tmp_path / "clip.npz"
    res = _cli("pose", str(tmp_path / "missing.avi"), "--out", str(out))
    assert res.returncode == 2
    assert res.stdout == ""
    assert res.stderr.startswith("error: ") and "missing.avi" in res.stderr
    assert not out.exists()
    # A clip name that is not .npz is refused before the video is read.
    res = _cli("pose", str(tmp_path / "missing.avi"), "--out", str(tmp_path / "clip.csv"))
    assert res.returncode == 2 and "clip.csv: pose writes a generic NPZ clip" in res.stderr
    assert not list(tmp_path.iterdir())
