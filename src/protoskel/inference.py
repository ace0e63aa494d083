"""Inference: any clip, skeleton file or video through a checkpoint's exact evaluation pipeline.

:class:`Predictor` rebuilds a model from a checkpoint and prepares inputs the way the trainer's
validation loader does (the same :class:`~protoskel.data.loader.ClipLoader` code path, run on a
one-clip split): the clip is first re-expressed in the checkpoint's layout through the joint
maps, its persons padded or trimmed, and extra coordinates dropped, then frames are sampled
uniformly (``test_clips`` views), normalised as in training and turned into the model's stream.

``load_input`` reads skeleton files with :func:`protoskel.data.readers.read_clip` and videos
with MediaPipe (:func:`protoskel.pose.extract_pose`, the ``video`` extra). ``iter_frames`` and
:meth:`Predictor.predict_windows` give sliding-window predictions over a video, a camera or a file.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from protoskel.data.readers import SUPPORTED_FORMATS, read_clip
from protoskel.data.sequence import SkeletonSequence
from protoskel.data.transforms import stream_channels
from protoskel.errors import CheckpointError, ConfigError, DataFormatError, LayoutError
from protoskel.layouts import Layout

__all__ = [
    "VIDEO_EXTENSIONS",
    "Frame",
    "Predictor",
    "enroll_checkpoint",
    "forget_checkpoint",
    "is_video",
    "iter_frames",
    "load_input",
    "require_prototypes",
]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
# File-name endings read_clip understands (from the readers' own table, e.g. ".pkl/.pickle").
_SKELETON_ENDINGS = tuple(e.lower() for key in SUPPORTED_FORMATS for e in key.split("/"))


def is_video(path: str | Path) -> bool:
    """True when the file name has a video extension (``VIDEO_EXTENSIONS``)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _check_input_path(path: Path) -> None:
    if not path.exists():
        raise DataFormatError(path, None, "no such file; check the path")
    if path.is_dir():
        raise DataFormatError(path, None, "is a folder; give one skeleton clip file or a video")
    if not (is_video(path) or path.name.lower().endswith(_SKELETON_ENDINGS)):
        kinds = ", ".join(SUPPORTED_FORMATS)
        raise DataFormatError(
            path,
            None,
            f"unsupported input type {path.suffix or path.name!r}; give a skeleton clip "
            f"({kinds}) or a video ({', '.join(VIDEO_EXTENSIONS)})",
        )


def load_input(
    path: str | Path, *, max_frames: int | None = None, progress: bool = False
) -> SkeletonSequence:
    """Read a skeleton clip file, or extract the pose of a video (``max_frames`` caps videos)."""
    p = Path(path)
    _check_input_path(p)
    if is_video(p):
        from protoskel.pose import extract_pose

        return extract_pose(p, max_frames=max_frames, progress=progress)
    seq = read_clip(p)
    seq.meta.setdefault("path", str(p))
    return seq


def has_person(seq: SkeletonSequence) -> bool:
    """True when some frame has a joint that is present (finite and not exactly zero)."""
    k = seq.keypoints
    return bool(np.any(np.isfinite(k) & (k != 0)))


@dataclass
class _OneClip:
    """A packed split holding one clip (the attributes ClipLoader reads)."""

    keypoints: np.ndarray  # (T, M, V, C)

    @property
    def offsets(self) -> np.ndarray:
        """[0, T]."""
        return np.array([0, self.keypoints.shape[0]], dtype=np.int64)

    @property
    def lengths(self) -> np.ndarray:
        """[T]."""
        return np.array([self.keypoints.shape[0]], dtype=np.int64)

    @property
    def labels(self) -> np.ndarray:
        """A dummy label (the loader yields one per clip)."""
        return np.zeros(1, dtype=np.int64)

    def __len__(self) -> int:
        return 1


def _source(seq: SkeletonSequence) -> str | None:
    return seq.meta.get("path") or seq.meta.get("source") or seq.id or None


class Predictor:
    """A checkpoint ready for inference: ``prepare`` a clip like the validation loader, ``predict``.

    Attributes: ``model`` (eval mode), ``layout`` (the checkpoint's :class:`Layout`), ``classes``,
    ``stream``, ``num_frames``, ``test_clips``, ``normalize`` (the recipe's ``data.normalize``
    or None for the default), ``in_channels`` (coordinates), ``num_persons`` (persons the model
    expects, or None when the checkpoint does not say: the clip's persons are kept), ``path``
    and ``checkpoint`` (the loaded dict).
    """

    def __init__(self, checkpoint: dict[str, Any], model: nn.Module) -> None:
        from protoskel.training.checkpoint import checkpoint_layout
        from protoskel.training.config import config_from_dict

        self.checkpoint = checkpoint
        self.path = str(checkpoint.get("path", ""))
        self.model = model.eval()
        self.config = config_from_dict(checkpoint["config"])
        self.layout: Layout = checkpoint_layout(checkpoint)
        self.classes: list[str] = list(checkpoint["classes"])
        self.stream: str = self.config.data.stream
        self.num_frames: int = int(self.config.data.num_frames)
        self.test_clips: int = int(self.config.data.test_clips)
        self.test_flip: bool = bool(self.config.data.test_flip)
        self.test_rotate: list[Any] = list(self.config.data.test_rotate)
        self.normalize: dict[str, Any] | None = self.config.loader_normalize()
        self.in_channels: int = int(checkpoint["in_channels"])
        self.num_persons: int | None = self._persons()

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> Predictor:
        """Load a checkpoint file or shipped model name and rebuild its model."""
        from protoskel.training.checkpoint import build_from_checkpoint, load_checkpoint

        ck = load_checkpoint(path)
        return cls(ck, build_from_checkpoint(ck))

    def _persons(self) -> int | None:
        """Persons per clip at training time: the checkpoint's record, else the model's own."""
        ck = self.checkpoint
        for v in (ck.get("num_persons"), (ck.get("meta") or {}).get("num_persons")):
            if isinstance(v, int) and v >= 1:
                return v
        for mod in self.model.modules():
            m = getattr(mod, "num_persons", None)
            if isinstance(m, int) and m >= 1:
                return m
        return None

    # ------------------------------------------------------------------------- properties
    @property
    def is_prototype(self) -> bool:
        """True when the model has a prototype head (explanations by prototypes, enrollment)."""
        from protoskel.models.prototypes import PrototypeHead

        return any(isinstance(m, PrototypeHead) for m in self.model.modules())

    @property
    def head_name(self) -> str:
        """The recipe's head name (``linear``, ``prototype``, ...)."""
        return self.config.model.head

    # ---------------------------------------------------------------------------- inputs
    def adapt(self, seq: SkeletonSequence) -> SkeletonSequence:
        """Re-express a clip in the model's layout, coordinates and person count (validated)."""
        src = _source(seq)
        # A clip in the checkpoint's own (possibly non-built-in) layout is checked against it.
        seq.validate(src, self.layout if seq.layout == self.layout.name else None)
        want, have = self.in_channels, seq.num_coords
        if have < want:
            raise DataFormatError(
                src,
                "keypoints",
                f"the clip has {have}D coordinates but {Path(self.path).name or 'the model'} "
                f"was trained on {want}D data; use a model trained on {have}D skeletons",
            )
        if have > want:
            seq = replace(seq, keypoints=self._drop_coords(seq, want))
        if seq.layout != self.layout.name:
            try:
                seq = seq.to_layout(self.layout)
            except LayoutError as e:
                raise LayoutError(
                    f"{src or 'input'}: the clip is in layout {seq.layout!r} but the model was "
                    f"trained on {self.layout.name!r} and there is no way to convert: {e}"
                ) from None
        if self.num_persons is not None and seq.num_persons != self.num_persons:
            seq = seq.with_persons(self.num_persons)
        seq.validate(src, self.layout)
        return seq

    @staticmethod
    def _drop_coords(seq: SkeletonSequence, want: int) -> np.ndarray:
        """Keypoints with ``want`` coords: image pixels for 2D models when a video gave them."""
        img, size = seq.meta.get("image_keypoints"), seq.meta.get("image_size")
        kp = seq.keypoints
        if want == 2 and img is not None and size is not None:
            img = np.asarray(img, dtype=np.float32)
            if img.shape[:3] == kp.shape[:3]:
                # 2D datasets are in image pixels with y down, as these landmarks are; the 3D
                # world landmarks would be upside down and in metres.
                out = img[..., :2] * np.asarray(size, dtype=np.float32)[:2]
                missing = ~(kp != 0).any(axis=(2, 3))
                out[missing] = 0.0
                return np.ascontiguousarray(out, dtype=np.float32)
        return np.ascontiguousarray(kp[..., :want], dtype=np.float32)

    def positions(self, length: int, num_clips: int | None = None) -> Tensor:
        """Clip frame positions ``(K, T)`` that evaluation sampling reads from a ``length`` clip."""
        from protoskel.data.transforms import eval_positions

        k = self.test_clips if num_clips is None else int(num_clips)
        return eval_positions(torch.tensor([int(length)]), self.num_frames, k)

    def prepare(
        self,
        seq: SkeletonSequence,
        *,
        stream: str | None = None,
        num_clips: int | None = None,
        adapt: bool = True,
        mirror: bool = False,
        rotate: bool = False,
    ) -> Tensor:
        """Model input ``(K, C, T, V, M)`` for a clip: K = ``test_clips`` views (or ``num_clips``).

        Runs the validation loader's own code (uniform sampling, normalisation, stream) on the
        clip; ``stream="joint"`` gives the normalised joint positions (for drawing). ``rotate``
        adds the recipe's ``test_rotate`` rotations of each view (``K R`` rows), ``mirror``
        appends the left-right mirror of each row (twice the rows).
        """
        from protoskel.data.loader import ClipLoader

        s = self.adapt(seq) if adapt else seq
        packed = np.ascontiguousarray(np.moveaxis(s.keypoints, 0, 1), dtype=np.float32)
        loader = ClipLoader(
            _OneClip(packed),
            self.layout,
            batch_size=1,
            num_frames=self.num_frames,
            train=False,
            stream=stream or self.stream,
            num_clips=self.test_clips if num_clips is None else int(num_clips),
            normalize=self.normalize,
            preload=True,
            mirror=mirror,
            rotations=self.test_rotate if rotate else None,
        )
        x, _ = loader.batch(np.zeros(1, dtype=np.int64))
        return x

    # ---------------------------------------------------------------------------- output
    def require_person(self, seq: SkeletonSequence) -> None:
        """Refuse a clip in which no frame has a person (every joint missing or zero)."""
        if not has_person(seq):
            where = seq.meta.get("path") or seq.meta.get("source") or seq.id or "input"
            raise DataFormatError(
                where,
                None,
                f"no person in any of its {seq.num_frames} frames (every joint is missing or "
                "zero), so there is nothing to recognise; for a video, check that the whole "
                "person is in view",
            )

    @torch.no_grad()
    def probabilities(self, seq: SkeletonSequence) -> np.ndarray:
        """Class probabilities (num_classes,), averaged over the ``test_clips`` views (and their
        rotations and mirrors when the recipe sets ``data.test_rotate`` / ``data.test_flip``)."""
        self.require_person(seq)
        x = self.prepare(seq, mirror=self.test_flip, rotate=True)
        return F.softmax(self.model(x), dim=1).mean(0).double().numpy()

    def ranked(self, probs: np.ndarray, top_k: int = 5) -> list[dict[str, Any]]:
        """``[{"label", "index", "prob"}, ...]``: the ``top_k`` classes by probability."""
        if top_k < 1:
            raise ConfigError(f"top_k must be >= 1, got {top_k}")
        order = np.argsort(-probs, kind="stable")[: min(top_k, len(self.classes))]
        return [{"label": self.classes[i], "index": int(i), "prob": float(probs[i])} for i in order]

    def predict(self, seq: SkeletonSequence, top_k: int = 5) -> dict[str, Any]:
        """``{"predictions": [{"label", "index", "prob"}, ...]}`` sorted by probability."""
        return {"predictions": self.ranked(self.probabilities(seq), top_k)}

    # ------------------------------------------------------------------------- streaming
    def predict_windows(
        self, frames: Iterable[Frame], *, window: int = 52, hop: int = 10, top_k: int = 1
    ) -> Iterator[dict[str, Any]]:
        """Sliding-window predictions over arriving frames: one dict per window.

        A window of the last ``window`` frames is classified when it is first full and then
        every ``hop`` frames; a stream shorter than ``window`` gives one window over all of it.
        Each dict has ``window`` (number), ``frame_start``/``frame_end`` (frame indices, end
        exclusive), ``label``/``index``/``prob`` of the top class, ``latency_ms`` (from the
        window's last frame arriving, before its pose extraction, to the label), ``pose_ms`` of
        that frame, ``model_ms``, and ``predictions`` when ``top_k > 1``.
        """
        if window < 1 or hop < 1:
            raise ConfigError(f"--window and --hop must be >= 1, got {window} and {hop}")
        buf: deque[Frame] = deque(maxlen=window)
        count = emitted = 0
        self._warm_up()
        for fr in frames:
            buf.append(fr)
            count += 1
            if count >= window and (count - window) % hop == 0:
                yield self._window(list(buf), emitted, top_k)
                emitted += 1
        if emitted == 0 and buf:
            yield self._window(list(buf), 0, top_k)

    @torch.no_grad()
    def _warm_up(self) -> None:
        """Run the model once on an empty clip so the first window's latency is not a cold start."""
        m = self.num_persons or 1
        v = self.layout.num_joints
        c = stream_channels(self.stream, self.in_channels, v)
        self.model(torch.zeros(1, c, self.num_frames, v, m))

    def _window(self, frames: list[Frame], number: int, top_k: int) -> dict[str, Any]:
        last = frames[-1]
        meta: dict[str, Any] = {"source": last.source}
        if all(f.image_keypoints is not None for f in frames) and last.image_size is not None:
            meta["image_keypoints"] = np.stack([f.image_keypoints for f in frames], axis=1)
            meta["image_size"] = last.image_size
        seq = SkeletonSequence(
            keypoints=np.stack([f.keypoints for f in frames], axis=1).astype(np.float32),
            layout=last.layout,
            id=f"{last.source}[{frames[0].index}:{last.index + 1}]",
            meta=meta,
        )
        t0 = time.perf_counter()
        # A live stream goes on through empty stretches: such a window says so instead of
        # stopping the stream (a single clip without a person is an error instead).
        seen = has_person(seq)
        preds = self.predict(seq, top_k=max(1, top_k))["predictions"] if seen else []
        done = time.perf_counter()
        out: dict[str, Any] = {
            "window": number,
            "frame_start": frames[0].index,
            "frame_end": last.index + 1,
            "label": preds[0]["label"] if seen else None,
            "index": preds[0]["index"] if seen else None,
            "prob": preds[0]["prob"] if seen else None,
            "latency_ms": round((done - last.arrived) * 1000.0, 2),
            "pose_ms": round(last.pose_ms, 2),
            "model_ms": round((done - t0) * 1000.0, 2),
        }
        if not seen:
            out["note"] = "no person in this window"
        if top_k > 1:
            out["predictions"] = preds
        return out


# ------------------------------------------------------------------------------ frames
@dataclass
class Frame:
    """One arriving frame: ``keypoints`` (M, V, C) in ``layout``, with when it arrived.

    ``arrived`` is ``time.perf_counter()`` when the frame was read (before pose extraction),
    ``pose_ms`` the time pose extraction took (0 for skeleton files). Video frames also carry
    MediaPipe's image landmarks (M, V, 3) and the image size (width, height).
    """

    index: int
    keypoints: np.ndarray
    layout: str
    arrived: float
    pose_ms: float = 0.0
    source: str = ""
    image_keypoints: np.ndarray | None = None
    image_size: tuple[int, int] | None = None


def _clip_frames(path: Path, max_frames: int | None) -> Iterator[Frame]:
    seq = read_clip(path)
    n = seq.num_frames if max_frames is None else min(seq.num_frames, max_frames)
    for t in range(n):
        yield Frame(t, seq.keypoints[:, t], seq.layout, time.perf_counter(), source=str(path))


def _pose_frames(
    source: Path | int, max_frames: int | None, model_complexity: int
) -> Iterator[Frame]:
    """MediaPipe Pose frame by frame on a video or camera (the conventions of extract_pose)."""
    from protoskel.pose import LAYOUT, pose_frames

    name = f"camera {source}" if isinstance(source, int) else str(source)
    for f in pose_frames(source, model_complexity=model_complexity, max_frames=max_frames):
        yield Frame(
            f.index,
            f.keypoints[None],
            LAYOUT,
            f.arrived,
            pose_ms=f.pose_ms,
            source=name,
            image_keypoints=f.image[None],
            image_size=f.size,
        )


def iter_frames(
    source: str | Path | int, *, max_frames: int | None = None, model_complexity: int = 1
) -> Iterator[Frame]:
    """Frames of a skeleton file, a video file (pose per frame) or a camera index, as they come.

    A string of digits that is not an existing file is a camera index (``cv2.VideoCapture``).
    """
    if max_frames is not None and max_frames < 1:
        raise ConfigError(f"max_frames must be >= 1, got {max_frames}")
    if isinstance(source, int) or (
        isinstance(source, str) and source.isdigit() and not Path(source).exists()
    ):
        return _pose_frames(int(source), max_frames, model_complexity)
    p = Path(source)
    _check_input_path(p)
    if is_video(p):
        return _pose_frames(p, max_frames, model_complexity)
    return _clip_frames(p, max_frames)


def require_prototypes(pred: Predictor, what: str) -> None:
    """Raise CheckpointError unless the predictor's model has a prototype head."""
    if not pred.is_prototype:
        raise CheckpointError(
            f"{pred.path}: {what} needs a prototype model, but this checkpoint has a "
            f"{pred.head_name!r} head; train one with model.head: prototype"
        )


# --------------------------------------------------------------------- editing checkpoints
def _edited(pred: Predictor, classes: list[str], edit: dict[str, Any]) -> dict[str, Any]:
    """A new checkpoint dict: the model's current weights, the new classes, an edit record.

    Optimizer and RNG state are dropped: they belong to the original training run and no
    longer fit the resized head, so an edited checkpoint is for inference, not for resuming.
    """
    drop = {"path", "format", "version", "optimizer", "rng"}
    ck = {k: v for k, v in pred.checkpoint.items() if k not in drop}
    ck["model"] = pred.model.state_dict()
    ck["classes"] = list(classes)
    meta = dict(ck.get("meta") or {})
    meta["edits"] = [*meta.get("edits", []), edit]
    ck["meta"] = meta
    return ck


def enroll_checkpoint(
    checkpoint: str | Path,
    name: str,
    examples: Iterable[str | Path | SkeletonSequence],
    out: str | Path,
    *,
    prototypes_per_part: int | None = None,
    margin: float = 1.0,
    negatives: str | Path | None = None,
    negatives_split: str = "train",
) -> dict[str, Any]:
    """Add class ``name`` to a prototype checkpoint from example clips/videos; write ``out``.

    Each example goes through the checkpoint's evaluation pipeline (first view), then
    :func:`protoskel.explain.enroll.enroll`. With ``negatives`` (a prepared store, e.g. the
    model's training data) the bias is calibrated against that split's clips of the classes
    the model knows as well. Returns a summary (classes, example ids, counts).
    """
    from protoskel.explain.enroll import enroll
    from protoskel.training.checkpoint import save_checkpoint

    pred = Predictor.from_checkpoint(checkpoint)
    require_prototypes(pred, "enroll")
    xs, ids, positions = [], [], []
    for ex in examples:
        seq = ex if isinstance(ex, SkeletonSequence) else load_input(ex)
        base = seq.id or (Path(ex).stem if not isinstance(ex, SkeletonSequence) else "example")
        cid, n = base, 1
        while cid in ids:  # ids must be unique: forget --example names them
            n += 1
            cid = f"{base}#{n}"
        adapted = pred.adapt(seq)
        xs.append(pred.prepare(adapted, adapt=False)[0])
        positions.append(pred.positions(adapted.num_frames)[0])
        ids.append(cid)
    if not xs:
        raise ConfigError("enroll: give at least one example clip (--examples)")
    neg = None if negatives is None else negative_clips(pred, negatives, negatives_split)
    _, classes = enroll(
        pred.model,
        name,
        xs,
        ids,
        classes=pred.classes,
        prototypes_per_part=prototypes_per_part,
        margin=margin,
        positions=positions,
        negatives=neg,
    )
    save_checkpoint(_edited(pred, classes, {"op": "enroll", "class": name, "examples": ids}), out)
    from protoskel.models.prototypes import find_prototype_head

    head = find_prototype_head(pred.model)
    return {
        "checkpoint": str(out),
        "source": pred.path,
        "class": name,
        "examples": ids,
        "prototypes": int((head.proto_class == classes.index(name)).sum()),
        "bias": float(head.last_bias[classes.index(name)].detach()),
        "negatives": 0 if neg is None else len(neg),
        "classes": classes,
    }


def negative_clips(pred: Predictor, data_dir: str | Path, split: str = "train") -> Tensor:
    """The clips of ``split`` whose class the model knows, as model inputs (N, C, T, V, M)."""
    from protoskel.data.store import open_store
    from protoskel.training.trainer import eval_loader, subset_split

    store = open_store(data_dir)
    if store.layout.joints != pred.layout.joints:
        raise ConfigError(
            f"{data_dir}: negatives use layout {store.layout.name!r} but the model expects "
            f"{pred.layout.name!r}; give the prepared store the model was trained on"
        )
    sp = store.split(split)
    names = np.asarray(store.classes)[np.asarray(sp.labels)]
    keep = np.flatnonzero(np.isin(names, pred.classes))
    if not len(keep):
        raise ConfigError(
            f"{data_dir}: split {split!r} has no clip of the model's classes to calibrate against"
        )
    loader = eval_loader(subset_split(sp, keep), pred.layout, pred.config, num_clips=1)
    x, _ = loader.batch(np.arange(len(keep)))
    return x


def forget_checkpoint(
    checkpoint: str | Path, name: str, out: str | Path, *, example: str | None = None
) -> dict[str, Any]:
    """Remove class ``name`` (or one enrolled ``example`` of it) from a prototype checkpoint."""
    from protoskel.explain.enroll import forget, forget_example
    from protoskel.training.checkpoint import save_checkpoint

    pred = Predictor.from_checkpoint(checkpoint)
    require_prototypes(pred, "forget")
    if example is None:
        _, classes = forget(pred.model, name, classes=pred.classes)
        edit: dict[str, Any] = {"op": "forget", "class": name}
    else:
        _, classes = forget_example(pred.model, name, example, classes=pred.classes)
        edit = {"op": "forget_example", "class": name, "example": example}
    save_checkpoint(_edited(pred, classes, edit), out)
    return {"checkpoint": str(out), "source": pred.path, **edit, "classes": classes}
