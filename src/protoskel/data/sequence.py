"""SkeletonSequence: one clip of joint coordinates with its scores and metadata."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from protoskel.errors import DataFormatError
from protoskel.layouts import Layout, get_joint_map, get_layout

__all__ = ["SkeletonSequence"]


@dataclass
class SkeletonSequence:
    """A clip: ``keypoints`` float32 (M persons, T frames, V joints, C coords).

    Missing joints or frames (e.g. no person detected) are zeros with score 0, the convention of
    the field's interchange formats, so a clip always keeps its frame timing. ``scores`` is an
    optional float32 (M, T, V) confidence in [0, 1]. ``label`` is a class index when known.
    """

    keypoints: np.ndarray
    layout: str
    scores: np.ndarray | None = None
    label: int | None = None
    id: str = ""
    subject: int | None = None
    view: int | None = None
    fps: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_persons(self) -> int:
        """M."""
        return int(self.keypoints.shape[0])

    @property
    def num_frames(self) -> int:
        """T."""
        return int(self.keypoints.shape[1])

    @property
    def num_joints(self) -> int:
        """V."""
        return int(self.keypoints.shape[2])

    @property
    def num_coords(self) -> int:
        """C."""
        return int(self.keypoints.shape[3])

    def validate(self, path: str | Path | None = None, layout: Layout | None = None) -> None:
        """Check shapes, finiteness and layout fit; raise DataFormatError naming ``path``."""
        kp = self.keypoints
        src = path if path is not None else (self.id or None)
        if not isinstance(kp, np.ndarray) or kp.ndim != 4:
            shape = getattr(kp, "shape", None)
            raise DataFormatError(src, "keypoints", f"expected shape (M, T, V, C), got {shape}")
        if kp.shape[0] < 1:
            raise DataFormatError(src, "keypoints", "no person in the clip (M = 0)")
        if kp.shape[1] < 1:
            raise DataFormatError(src, "keypoints", "zero-length clip (T = 0 frames)")
        if kp.dtype != np.float32:
            raise DataFormatError(src, "keypoints", f"expected float32, got {kp.dtype}")
        bad = ~np.isfinite(kp)
        if bad.any():
            m, t, v, c = (int(i) for i in np.argwhere(bad)[0])
            raise DataFormatError(
                src,
                f"person {m}, frame {t}, joint {v}, coord {c}",
                f"non-finite coordinate ({kp[m, t, v, c]}); {int(bad.sum())} such values in all",
            )
        lay = layout or get_layout(self.layout)
        if kp.shape[2] != lay.num_joints:
            raise DataFormatError(
                src,
                "keypoints",
                f"{kp.shape[2]} joints per frame, but layout {lay.name!r} has {lay.num_joints}",
            )
        if kp.shape[3] not in (2, 3):
            raise DataFormatError(src, "keypoints", f"expected 2 or 3 coords, got {kp.shape[3]}")
        if self.scores is not None:
            if self.scores.shape != kp.shape[:3]:
                raise DataFormatError(
                    src, "scores", f"shape {self.scores.shape} does not match {kp.shape[:3]}"
                )
            if not np.isfinite(self.scores).all():
                raise DataFormatError(src, "scores", "non-finite score")

    def to_layout(self, layout: str | Layout) -> SkeletonSequence:
        """Re-express the clip in another layout through the joint maps."""
        dst = get_layout(layout)
        if dst.name == self.layout:
            return self
        jm = get_joint_map(self.layout, dst)
        kp = jm.apply(self.keypoints).astype(np.float32)
        sc = None if self.scores is None else jm.apply_scores(self.scores).astype(np.float32)
        return replace(self, keypoints=kp, scores=sc, layout=dst.name)

    def with_persons(self, m: int) -> SkeletonSequence:
        """Pad with zero persons or keep the first ``m`` so that M == m."""
        kp, sc = self.keypoints, self.scores
        if kp.shape[0] >= m:
            kp = kp[:m]
            sc = None if sc is None else sc[:m]
        else:
            pad = m - kp.shape[0]
            kp = np.concatenate([kp, np.zeros((pad, *kp.shape[1:]), kp.dtype)])
            if sc is not None:
                sc = np.concatenate([sc, np.zeros((pad, *sc.shape[1:]), sc.dtype)])
        return replace(self, keypoints=kp, scores=sc)
