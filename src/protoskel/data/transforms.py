"""Seeded, batch-vectorised transforms on skeleton tensors ``(N, C, T, V, M)``.

Everything layout-specific (centre joint, up and across axes, bones, left/right pairs) comes from
a :class:`~protoskel.layouts.Layout`. A *mask* is a bool tensor ``(N, T, M)`` telling which
(clip, frame, person) slots hold a real skeleton; absent persons and frames past a clip's end are
all-zero slots, and every transform keeps them at zero.

The pipeline the loader runs per batch::

    positions (train_positions | eval_positions) -> gather_frames -> normalize -> augment
    -> make_stream

Random choices take a ``torch.Generator``; the same generator state gives the same output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from functools import cache
from typing import Any

import numpy as np
import torch
from torch import Tensor

from protoskel.errors import ConfigError
from protoskel.layouts import Layout

__all__ = [
    "DEFAULT_AUGMENT",
    "DEFAULT_NORMALIZE",
    "ROTATION_INVARIANT_STREAMS",
    "STREAMS",
    "AugmentConfig",
    "align_view",
    "augment",
    "box_normalize",
    "center",
    "check_normalize",
    "eval_positions",
    "frame_mask",
    "gather_frames",
    "make_stream",
    "normalize",
    "normalize_scale",
    "occlude_parts",
    "random_rotation",
    "rotation_angles",
    "rotation_matrices",
    "scale_travel",
    "smooth_frames",
    "steady_bones",
    "stream_channels",
    "stream_parts",
    "train_positions",
    "view_rotation",
]

STREAMS = (
    "joint",
    "bone",
    "joint_motion",
    "bone_motion",
    "bone2",
    "bone2_motion",
    "angle",
    "angle_motion",
    "distance",
    "distance_motion",
)
#: Streams whose channel count does not follow the clip's coordinates (3 cosines per joint).
_FIXED_CHANNELS = {"angle": 3, "angle_motion": 3}
#: Streams with one channel per joint of the layout (each joint's distance to every joint).
_JOINT_CHANNELS = ("distance", "distance_motion")
#: Streams that are functions of the body alone, unchanged by any rotation of the camera.
ROTATION_INVARIANT_STREAMS = ("angle", "angle_motion", *_JOINT_CHANNELS)


def stream_parts(stream: str) -> tuple[str, ...]:
    """The streams of a name: ``"bone"`` -> one, ``"joint+bone"`` -> two stacked on channels."""
    parts = tuple(stream.split("+"))
    bad = [p for p in parts if p not in STREAMS]
    if bad or len(set(parts)) != len(parts):
        why = f"unknown stream {bad[0]!r}" if bad else f"a stream repeats in {stream!r}"
        raise ConfigError(
            f"{why}; streams: {', '.join(STREAMS)}, or several joined by '+' (e.g. joint+bone)"
        )
    return parts


def stream_channels(stream: str, coords: int, joints: int | None = None) -> int:
    """Channels a model sees for ``stream`` on clips of ``coords`` coordinates and ``joints``."""
    total = 0
    for p in stream_parts(stream):
        if p not in _JOINT_CHANNELS:
            total += _FIXED_CHANNELS.get(p, coords)
        elif joints is None:
            raise ValueError(f"stream {stream!r} has one channel per joint: pass the joint count")
        else:
            total += joints
    return total


#: The field's NW-UCLA recipe (CTR-GCN): random crop of 50-100% of the clip resized to the
#: target length, random rotation of up to 0.3 rad about each axis, mild random scaling.
DEFAULT_AUGMENT: dict[str, Any] = {
    "crop": [0.5, 1.0],
    "rotate": {"p": 1.0, "angle": [0.3, 0.3, 0.3]},
    "scale": {"p": 1.0, "range": [0.9, 1.1]},
}

#: Centre on the layout's centre joint at the first valid frame (CTR-GCN's UCLA feeder).
DEFAULT_NORMALIZE: dict[str, Any] = {
    "smooth": 0.0,
    "bones": None,
    "center": "first",
    "scale": False,
    "align": None,
    "box": False,
}

_EPS = 1e-6


# ------------------------------------------------------------------------------------ masks
def frame_mask(x: Tensor) -> Tensor:
    """Bool ``(N, T, M)``: True where a (clip, frame, person) slot is not all zeros."""
    return (x != 0).any(dim=3).any(dim=1)


def _expand_mask(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """``(N, T, M)`` mask -> ``(N, 1, T, 1, M)`` multiplier."""
    return mask[:, None, :, None, :].to(dtype)


def _weighted(x: Tensor, w: np.ndarray) -> Tensor:
    """Weighted sum over joints: ``(N, C, T, V, M)`` x ``(V,)`` -> ``(N, C, T, M)``."""
    return torch.einsum("nctvm,v->nctm", x, torch.as_tensor(w, dtype=x.dtype, device=x.device))


def _axis(x: Tensor, pair: tuple[np.ndarray, np.ndarray]) -> Tensor:
    """Vector from ``pair[0]`` to ``pair[1]`` per frame and person: ``(N, C, T, M)``."""
    return _weighted(x, pair[1] - pair[0])


def _reference_slot(mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per clip: reference person (first present), its first valid frame, and whether any exists.

    Person 0 is the reference in the usual case; a clip where person 0 is absent falls back to
    the first present person, so a detection gap in slot 0 does not disable normalisation.
    """
    present = mask.any(dim=1)  # (N, M)
    person = present.to(torch.uint8).argmax(dim=1)  # first True (0 when none)
    n = torch.arange(mask.shape[0], device=mask.device)
    pmask = mask[n, :, person]  # (N, T)
    frame = pmask.to(torch.uint8).argmax(dim=1)
    return person, frame, present.any(dim=1)


# ------------------------------------------------------------------------------- normalise
def center(
    x: Tensor, layout: Layout, mask: Tensor | None = None, *, per_frame: bool = False
) -> Tensor:
    """Translate so the layout's centre joint is at the origin; empty slots stay zero.

    The centre is taken from the reference person (person 0 unless absent) at its first valid
    frame, and subtracted from every person and frame, which keeps motion and the relative
    placement of persons. ``per_frame=True`` subtracts the reference person's centre of each
    frame instead (frames where it is absent use the first-frame centre).
    """
    mask = frame_mask(x) if mask is None else mask
    n = torch.arange(x.shape[0], device=x.device)
    c = _weighted(x, layout.center)  # (N, C, T, M)
    person, frame, has = _reference_slot(mask)
    ref = c[n, :, frame, person] * has[:, None].to(x.dtype)  # (N, C)
    if per_frame:
        pc = c[n, :, :, person]  # (N, C, T)
        pvalid = mask[n, :, person][:, None, :]
        shift = torch.where(pvalid, pc, ref[:, :, None])[:, :, :, None, None]
    else:
        shift = ref[:, :, None, None, None]
    return (x - shift) * _expand_mask(mask, x.dtype)


_center = center  # normalize() takes a parameter named ``center``


def normalize_scale(x: Tensor, layout: Layout, mask: Tensor | None = None) -> Tensor:
    """Divide each clip by its mean up-axis length (e.g. hip->shoulder) over valid frames.

    Clips whose up axis has zero length everywhere (missing joints) are left unscaled.
    """
    mask = frame_mask(x) if mask is None else mask
    length = _axis(x, layout.up).norm(dim=1)  # (N, T, M)
    m = mask.to(x.dtype)
    mean = (length * m).sum(dim=(1, 2)) / m.sum(dim=(1, 2)).clamp_min(1.0)
    scale = torch.where(mean > _EPS, mean, torch.ones_like(mean))
    return x / scale[:, None, None, None, None]


def view_rotation(
    x: Tensor, layout: Layout, mask: Tensor | None = None, *, mode: str = "first"
) -> Tensor:
    """Rotations ``(N, C, C)`` taking the layout's up axis to +y and across axis to +x.

    The axes are measured on the reference person at its first valid frame (``mode="first"``) or
    averaged over its valid frames (``mode="mean"``). 3D: across is orthogonalised against up and
    z completes a right-handed frame. 2D: a rotation can only fix one axis, so up goes to +y and
    across lands on +x or -x depending on the skeleton's handedness (which way it faces).
    Degenerate axes (zero length, or across parallel to up) give the identity.
    """
    if mode not in ("first", "mean"):
        raise ConfigError(f"view alignment mode must be 'first' or 'mean', got {mode!r}")
    mask = frame_mask(x) if mask is None else mask
    num, dims = x.shape[0], x.shape[1]
    if dims not in (2, 3):
        raise ConfigError(f"view alignment needs 2 or 3 coordinates, got C={dims}")
    n = torch.arange(num, device=x.device)
    person, frame, _ = _reference_slot(mask)
    up, across = _axis(x, layout.up), _axis(x, layout.across)  # (N, C, T, M)
    if mode == "first":
        u, a = up[n, :, frame, person], across[n, :, frame, person]
    else:
        pm = mask[n, :, person].to(x.dtype)[:, None, :]  # (N, 1, T)
        u = (up[n, :, :, person] * pm).sum(-1)
        a = (across[n, :, :, person] * pm).sum(-1)
    eye = torch.eye(dims, dtype=x.dtype, device=x.device).expand(num, dims, dims)
    un = u.norm(dim=1, keepdim=True)
    ey = u / un.clamp_min(_EPS)
    if dims == 2:
        ex = torch.stack([ey[:, 1], -ey[:, 0]], dim=1)
        rot = torch.stack([ex, ey], dim=1)
        ok = un[:, 0] > _EPS
    else:
        a = a - (a * ey).sum(dim=1, keepdim=True) * ey
        an = a.norm(dim=1, keepdim=True)
        ex = a / an.clamp_min(_EPS)
        ez = torch.linalg.cross(ex, ey, dim=1)
        rot = torch.stack([ex, ey, ez], dim=1)
        ok = (un[:, 0] > _EPS) & (an[:, 0] > _EPS * torch.clamp(un[:, 0], min=1.0))
    return torch.where(ok[:, None, None], rot, eye)


def _apply_linear(x: Tensor, mat: Tensor) -> Tensor:
    """Apply per-clip matrices ``(N, C, C)`` to the coordinates of ``(N, C, T, V, M)``."""
    return torch.einsum("nij,njtvm->nitvm", mat, x)


def align_view(
    x: Tensor, layout: Layout, mask: Tensor | None = None, *, mode: str = "first"
) -> Tensor:
    """Rotate each clip so up -> +y and across -> +x (see :func:`view_rotation`)."""
    return _apply_linear(x, view_rotation(x, layout, mask, mode=mode))


def box_normalize(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """Map each clip's coordinates, axis by axis, onto ``[-1, 1]`` over its valid slots.

    This is the per-axis min-max rescaling of the CTR-GCN NW-UCLA feeder: it removes the subject's
    size and distance to the camera (and the aspect of the motion's bounding box). An axis whose
    extent is zero is only centred. Empty slots stay zero.
    """
    mask = frame_mask(x) if mask is None else mask
    valid = _expand_mask(mask, x.dtype).bool().expand_as(x)
    big = torch.finfo(x.dtype).max
    lo = torch.where(valid, x, torch.full_like(x, big)).amin(dim=(2, 3, 4), keepdim=True)
    hi = torch.where(valid, x, torch.full_like(x, -big)).amax(dim=(2, 3, 4), keepdim=True)
    has = valid.flatten(2).any(dim=2)[:, :, None, None, None]
    lo, hi = torch.where(has, lo, 0.0), torch.where(has, hi, 0.0)
    half = (hi - lo) / 2
    half = torch.where(half > _EPS, half, torch.ones_like(half))
    return (x - (hi + lo) / 2) / half * valid.to(x.dtype)


def smooth_frames(x: Tensor, sigma: float, mask: Tensor | None = None) -> Tensor:
    """Gaussian low-pass over frames (``sigma`` in frames), averaging only valid slots.

    Each (clip, person) trajectory is smoothed with a kernel truncated at 3 sigma and renormalised
    over the frames where that person is present, so padding and gaps never pull joints towards
    the origin. The same weights apply to every coordinate, so the filter commutes with
    rotations and translations (frame averaging stays exact). ``sigma <= 0`` is the identity.
    """
    if sigma <= 0:
        return x
    mask = frame_mask(x) if mask is None else mask
    r = max(1, int(np.ceil(3.0 * sigma)))
    taps = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2).view(1, 1, -1)
    w = _expand_mask(mask, x.dtype)  # (N, 1, T, 1, M)

    def low_pass(z: Tensor) -> Tensor:
        n, c, t, v, m = z.shape
        rows = z.permute(0, 1, 3, 4, 2).reshape(-1, 1, t)
        out = torch.nn.functional.conv1d(rows, kernel, padding=r)
        return out.reshape(n, c, v, m, t).permute(0, 1, 4, 2, 3)

    num, den = low_pass(x * w), low_pass(w)
    return torch.where(den > _EPS, num / den.clamp_min(_EPS), torch.zeros_like(num)) * w


@cache
def _root_paths(parents: tuple[int, ...]) -> Tensor:
    """``(V, V)`` 0/1 matrix: row j marks the bones (by child joint) from the root to joint j."""
    # Layouts are validated to be one tree, so every walk up ends at the root.
    path = torch.zeros(len(parents), len(parents))
    for j in range(len(parents)):
        k = j
        while parents[k] >= 0:
            path[j, k] = 1.0
            k = parents[k]
    return path


def steady_bones(x: Tensor, layout: Layout, mask: Tensor | None = None) -> Tensor:
    """Give every bone its mean length over the clip's valid frames, keeping its direction.

    Joints are rebuilt from the layout's root outwards, so the root joint stays where it is and
    only the frame-to-frame jitter of bone lengths (a sensor artefact; bodies do not stretch) is
    removed. Per person, so each keeps their own proportions. Zero-length bones stay zero.
    Lengths and directions are rotation-equivariant, so frame averaging stays exact.
    """
    mask = frame_mask(x) if mask is None else mask
    path = _root_paths(tuple(layout.parents))
    w = _expand_mask(mask, x.dtype)
    bone = _bones(x, layout) * w
    length = bone.norm(dim=1, keepdim=True)  # (N, 1, T, V, M)
    mean = (length * w).sum(2, keepdim=True) / w.sum(2, keepdim=True).clamp_min(1.0)
    steady = bone * (mean / length.clamp_min(_EPS))
    steady = torch.where(length > _EPS, steady, torch.zeros_like(steady))
    root = x[:, :, :, layout.root : layout.root + 1]
    rebuilt = root + torch.einsum("jk,nctkm->nctjm", path.to(x.device, x.dtype), steady)
    return rebuilt * w


def check_normalize(options: Mapping[Any, Any]) -> None:
    """Raise ConfigError naming the ``normalize.<key>`` whose value :func:`normalize` can't use."""
    unknown = sorted(str(k) for k in options if k not in DEFAULT_NORMALIZE)
    if unknown:
        raise ConfigError(
            f"normalize.{unknown[0]}: unknown key; known: {', '.join(DEFAULT_NORMALIZE)}"
        )
    opts = {**DEFAULT_NORMALIZE, **options}
    smooth = opts["smooth"]
    if isinstance(smooth, bool) or not isinstance(smooth, int | float) or not smooth >= 0:
        raise ConfigError(f"normalize.smooth must be a number >= 0 (frames), got {smooth!r}")
    allowed = {"bones": ("clip", None), "center": ("first", "frame", None)}
    allowed["align"] = ("first", "mean", None)
    for key, values in allowed.items():
        if opts[key] not in values:
            names = ", ".join("null" if v is None else repr(v) for v in values)
            raise ConfigError(f"normalize.{key} must be one of {names}, got {opts[key]!r}")
    for key in ("scale", "box"):
        if not isinstance(opts[key], bool):
            raise ConfigError(f"normalize.{key} must be true or false, got {opts[key]!r}")


def normalize(
    x: Tensor,
    layout: Layout,
    mask: Tensor | None = None,
    *,
    smooth: float = 0.0,
    bones: str | None = None,
    center: str | None = "first",
    scale: bool = False,
    align: str | None = None,
    box: bool = False,
) -> Tensor:
    """Smooth, steady bones (``"clip"``), centre (``"first"``/``"frame"``), scale, align, box.

    ``smooth`` is the Gaussian sigma in sampled frames (:func:`smooth_frames`, 0 = off);
    ``bones="clip"`` gives each bone its mean length over the clip (:func:`steady_bones`).
    ``box`` (:func:`box_normalize`) comes last; the training loader applies it after augmentation
    so a rotated clip is boxed again, as in the CTR-GCN feeder.
    """
    opts = {"smooth": smooth, "bones": bones, "center": center, "scale": scale, "align": align}
    check_normalize({**opts, "box": box})
    mask = frame_mask(x) if mask is None else mask
    x = smooth_frames(x, float(smooth), mask)
    if bones is not None:
        x = steady_bones(x, layout, mask)
    if center is not None:
        x = _center(x, layout, mask, per_frame=center == "frame")
    if scale:
        x = normalize_scale(x, layout, mask)
    if align is not None:
        x = align_view(x, layout, mask, mode=align)
    if box:
        x = box_normalize(x, mask)
    return x


# --------------------------------------------------------------------------- frame sampling
SAMPLE_MODES = ("even", "random")


def train_positions(
    lengths: Tensor,
    num_frames: int,
    generator: torch.Generator,
    p_interval: Sequence[float] = (0.5, 1.0),
    num_clips: int = 1,
    sample: str = "even",
) -> Tensor:
    """Random-crop-and-resize frame positions ``(N*K, T)`` float, relative to each clip's start.

    Per clip (and per each of its ``K`` copies) a ratio ``p ~ U(p_interval)`` of the clip is kept
    (at least one frame), at a random offset, and resampled to ``num_frames`` positions with the
    pixel-centre convention of linear resizing, so positions are within ``[0, length - 1]``.
    With ``sample="random"`` the positions are instead ``num_frames`` whole frames of the crop
    drawn independently and sorted, so the speed of the motion varies within the clip.
    Rows are grouped per clip: clip i owns rows ``i*K:(i+1)*K``.
    """
    if sample not in SAMPLE_MODES:
        raise ConfigError(f"sample must be one of {', '.join(SAMPLE_MODES)}, got {sample!r}")
    lo, hi = _interval(p_interval)
    lens = lengths.to(torch.float64).repeat_interleave(num_clips)
    p = lo + (hi - lo) * torch.rand(lens.shape, generator=generator, dtype=torch.float64)
    crop = torch.clamp(torch.floor(lens * p), min=1.0)
    crop = torch.minimum(crop, lens)
    start = torch.floor(
        torch.rand(lens.shape, generator=generator, dtype=torch.float64) * (lens - crop + 1)
    )
    if sample == "random":
        u = torch.rand(lens.shape[0], num_frames, generator=generator, dtype=torch.float64)
        rel = torch.minimum(torch.floor(u * crop[:, None]), crop[:, None] - 1)
        return (start[:, None] + rel.sort(dim=1).values).to(torch.float32)
    i = torch.arange(num_frames, dtype=torch.float64)
    rel = (i[None, :] + 0.5) * (crop[:, None] / num_frames) - 0.5
    rel = torch.minimum(rel.clamp_min(0.0), crop[:, None] - 1)
    return (start[:, None] + rel).to(torch.float32)


def eval_positions(lengths: Tensor, num_frames: int, num_clips: int = 1) -> Tensor:
    """Deterministic uniform frame positions ``(N*K, T)`` covering each whole clip.

    The clip is cut into ``num_frames`` equal segments; copy k of ``K`` samples each segment at
    fraction ``(k + 0.5) / K``, so ``K = 1`` takes segment centres and K > 1 gives K evenly
    shifted views. Rows are grouped per clip (clip i owns rows ``i*K:(i+1)*K``).
    """
    lens = lengths.to(torch.float64).repeat_interleave(num_clips)
    k = torch.arange(num_clips, dtype=torch.float64).repeat(lengths.shape[0])
    frac = (k + 0.5) / num_clips
    i = torch.arange(num_frames, dtype=torch.float64)
    pos = (i[None, :] + frac[:, None]) * (lens[:, None] / num_frames) - 0.5
    pos = torch.minimum(pos.clamp_min(0.0), lens[:, None] - 1)
    return pos.to(torch.float32)


def _interval(p: Sequence[float] | float) -> tuple[float, float]:
    vals = [float(p)] if isinstance(p, int | float) else [float(v) for v in p]
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2 or not (0.0 < vals[0] <= vals[1] <= 1.0):
        raise ConfigError(f"crop p_interval must be [lo, hi] with 0 < lo <= hi <= 1, got {p!r}")
    return vals[0], vals[1]


def _take_rows(packed: np.ndarray | Tensor, rows: Tensor) -> Tensor:
    """Rows of a packed ``(F, M, V, C)`` array in one gather (memmap or in-memory tensor)."""
    if isinstance(packed, Tensor):
        return packed.index_select(0, rows)
    return torch.from_numpy(np.take(packed, rows.numpy(), axis=0))


def gather_frames(
    packed: np.ndarray | Tensor,
    starts: Tensor,
    lengths: Tensor,
    positions: Tensor,
    *,
    interpolate: bool = True,
) -> tuple[Tensor, Tensor]:
    """Read frames at fractional ``positions`` from a packed store; return ``(x, mask)``.

    ``packed`` is the store's ``(F_total, M, V, C)`` array (np.memmap/ndarray or a tensor),
    ``starts``/``lengths`` ``(B,)`` the first row and frame count of each sampled row's clip,
    ``positions`` ``(B, T)`` clip-relative frame positions. With ``interpolate`` a position
    between two frames is linearly interpolated when the person is present in both, else the
    frame where it is present is used (blending with an empty slot would shrink the skeleton
    towards the origin). Returns x
    float32 ``(B, C, T, V, M)`` and the mask ``(B, T, M)``.
    """
    b, t = positions.shape
    starts = starts.to(torch.int64)[:, None]
    last = lengths.to(torch.int64)[:, None] - 1
    if not interpolate:
        idx = torch.minimum(torch.round(positions).to(torch.int64), last)
        frames = _take_rows(packed, (starts + idx).reshape(-1)).reshape(b, t, *packed.shape[1:])
        x = frames.permute(0, 4, 1, 3, 2).contiguous().to(torch.float32)
        return x, frame_mask(x)
    i0 = torch.minimum(torch.floor(positions).to(torch.int64), last)
    i1 = torch.minimum(i0 + 1, last)
    w = (positions - i0.to(positions.dtype)).clamp(0.0, 1.0)
    rows = torch.cat([(starts + i0).reshape(-1), (starts + i1).reshape(-1)])
    both = _take_rows(packed, rows).to(torch.float32).reshape(2, b, t, *packed.shape[1:])
    f0, f1 = both[0], both[1]  # (B, T, M, V, C)
    v0 = (f0 != 0).any(-1).any(-1)  # (B, T, M)
    v1 = (f1 != 0).any(-1).any(-1)
    wb = w[:, :, None].expand(v0.shape)
    wm = torch.where(v0 & v1, wb, torch.where(v1, torch.ones_like(wb), torch.zeros_like(wb)))
    frames = f0 + (f1 - f0) * wm[..., None, None]
    x = frames.permute(0, 4, 1, 3, 2).contiguous()
    return x, v0 | v1


# ------------------------------------------------------------------------------ augmentation
@dataclass(frozen=True)
class AugmentConfig:
    """Parsed augmentation settings; build with :meth:`from_dict` from a config mapping.

    Keys of the mapping (each optional; absent means off):
      ``crop``: ``[lo, hi]`` ratio of the clip kept by the training random crop (default
      ``[1, 1]``: whole clip); ``rotate``: ``{"p", "angle": [ax, ay, az]}`` max radians about
      x, y, z (2D uses az); ``scale``: ``{"p", "range": [lo, hi], "per_axis": bool}``;
      ``shear``: ``{"p", "amount"}``; ``jitter``: ``{"p", "std"}`` Gaussian joint noise;
      ``frame_drop``: ``{"p", "rate"}`` drop frames, filled by the previous kept frame;
      ``flip``: ``{"p"}`` left-right mirror; ``sample``: ``even`` (default) or ``random``
      frame positions within the crop (see :func:`train_positions`); ``travel``:
      ``{"p", "range": [lo, hi]}`` scale the reference person's path (its centre joint's
      displacement from its first valid frame) by a factor drawn from ``[lo, hi]``, keeping the
      posture around it (see :func:`scale_travel`); ``occlude``: ``{"p", "span": [lo, hi]}``
      hide one random body part of the layout for a contiguous stretch of ``lo``-``hi`` of the
      clip's frames (see :func:`occlude_parts`). A bare number or list is
      shorthand for the main parameter with ``p = 1`` (for ``flip``: the probability).
    """

    crop: tuple[float, float] = (1.0, 1.0)
    sample: str = "even"
    rotate_p: float = 0.0
    rotate_angle: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale_p: float = 0.0
    scale_range: tuple[float, float] = (1.0, 1.0)
    scale_per_axis: bool = False
    shear_p: float = 0.0
    shear_amount: float = 0.0
    jitter_p: float = 0.0
    jitter_std: float = 0.0
    drop_p: float = 0.0
    drop_rate: float = 0.0
    flip_p: float = 0.0
    travel_p: float = 0.0
    travel_range: tuple[float, float] = (1.0, 1.0)
    occlude_p: float = 0.0
    occlude_span: tuple[float, float] = (1.0, 1.0)

    @classmethod
    def from_dict(cls, config: Mapping[str, Any] | None) -> AugmentConfig:
        """Validate and parse an augmentation mapping (see the class docstring for keys)."""
        if config is None:
            return cls()
        if isinstance(config, AugmentConfig):
            return config
        if not isinstance(config, Mapping):
            raise ConfigError(f"augment must be a mapping, got {type(config).__name__}")
        known = (
            "crop",
            "sample",
            "rotate",
            "scale",
            "shear",
            "jitter",
            "frame_drop",
            "flip",
            "travel",
            "occlude",
        )
        for key in config:
            if key not in known:
                raise ConfigError(f"augment.{key}: unknown augmentation; known: {', '.join(known)}")
        kw: dict[str, Any] = {}
        if config.get("crop") is not None:
            kw["crop"] = _interval(config["crop"])
        if config.get("sample") is not None:
            if config["sample"] not in SAMPLE_MODES:
                raise ConfigError(
                    f"augment.sample: expected one of {', '.join(SAMPLE_MODES)}, "
                    f"got {config['sample']!r}"
                )
            kw["sample"] = str(config["sample"])
        if (r := _op(config, "rotate", "angle")) is not None:
            ang = r["angle"]
            ang = [ang] * 3 if isinstance(ang, int | float) else list(ang)
            if len(ang) != 3 or any(float(a) < 0 for a in ang):
                raise ConfigError(f"augment.rotate.angle: need 3 non-negative radians, got {ang}")
            kw.update(rotate_p=r["p"], rotate_angle=tuple(float(a) for a in ang))
        if (s := _op(config, "scale", "range", extra=("per_axis",))) is not None:
            rng = s["range"]
            rng = [1 - float(rng), 1 + float(rng)] if isinstance(rng, int | float) else rng
            if len(rng) != 2 or not (0 < float(rng[0]) <= float(rng[1])):
                raise ConfigError(
                    f"augment.scale.range: need [lo, hi] with 0 < lo <= hi, got {rng}"
                )
            kw.update(
                scale_p=s["p"],
                scale_range=(float(rng[0]), float(rng[1])),
                scale_per_axis=bool(s.get("per_axis", False)),
            )
        if (h := _op(config, "shear", "amount")) is not None:
            kw.update(shear_p=h["p"], shear_amount=_nonneg(h["amount"], "shear.amount"))
        if (j := _op(config, "jitter", "std")) is not None:
            kw.update(jitter_p=j["p"], jitter_std=_nonneg(j["std"], "jitter.std"))
        if (d := _op(config, "frame_drop", "rate")) is not None:
            rate = _nonneg(d["rate"], "frame_drop.rate")
            if rate >= 1:
                raise ConfigError(f"augment.frame_drop.rate: must be < 1, got {rate}")
            kw.update(drop_p=d["p"], drop_rate=rate)
        if (tr := _op(config, "travel", "range")) is not None:
            kw.update(travel_p=tr["p"], travel_range=_travel_range(tr["range"]))
        if (oc := _op(config, "occlude", "span")) is not None:
            kw.update(occlude_p=oc["p"], occlude_span=_span(oc["span"]))
        flip = config.get("flip")
        if flip is not None:
            p = flip.get("p", 0.5) if isinstance(flip, Mapping) else flip
            if isinstance(flip, Mapping) and set(flip) - {"p"}:
                raise ConfigError(f"augment.flip: only 'p' is allowed, got {sorted(flip)}")
            kw["flip_p"] = _prob(p, "flip.p")
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (for logs and checkpoints)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _op(
    config: Mapping[str, Any], key: str, main: str, extra: tuple[str, ...] = ()
) -> dict[str, Any] | None:
    """Normalise one augmentation entry to ``{"p": float, main: value, ...}``."""
    val = config.get(key)
    if val is None or val is False:
        return None
    if not isinstance(val, Mapping):
        return {"p": 1.0, main: val}
    unknown = set(val) - {"p", main, *extra}
    if unknown:
        allowed = ", ".join(["p", main, *extra])
        raise ConfigError(f"augment.{key}: unknown key {sorted(unknown)[0]!r}; allowed: {allowed}")
    if main not in val:
        raise ConfigError(f"augment.{key}: missing {main!r}")
    out = dict(val)
    out["p"] = _prob(val.get("p", 1.0), f"{key}.p")
    return out


def _float_pair(value: Any) -> tuple[float, float] | None:
    """``value`` as two floats if it is a 2-item sequence of numbers, else None."""
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        return None
    try:
        return float(value[0]), float(value[1])
    except (TypeError, ValueError):
        return None


def _travel_range(rng: Any) -> tuple[float, float]:
    """Check ``augment.travel.range``: ``[lo, hi]`` with ``0 <= lo <= hi``."""
    pair = _float_pair(rng)
    if pair is None or not 0.0 <= pair[0] <= pair[1]:
        raise ConfigError(
            f"augment.travel.range: need [lo, hi] with 0 <= lo <= hi, e.g. [0.25, 1.0]; got {rng!r}"
        )
    return pair


def _span(span: Any) -> tuple[float, float]:
    """Check ``augment.occlude.span``: a fraction or ``[lo, hi]`` with ``0 < lo <= hi <= 1``."""
    pair = _float_pair([span, span] if isinstance(span, int | float) else span)
    if pair is None or not 0.0 < pair[0] <= pair[1] <= 1.0:
        raise ConfigError(
            "augment.occlude.span: need a fraction of the clip's frames or [lo, hi] with "
            f"0 < lo <= hi <= 1, e.g. [0.25, 1.0]; got {span!r}"
        )
    return pair


@cache
def _part_anchors(parents: tuple[int, ...], parts: tuple[tuple[int, ...], ...]) -> Tensor:
    # Row i: where each joint goes when part i is hidden. A hidden joint sits on the nearest
    # ancestor outside the part (an arm on its shoulder's parent), so the part's bones become
    # zero as if the limb were not seen; a part holding a root collapses onto that root.
    table = []
    for members in parts:
        inside = set(members)
        row = list(range(len(parents)))
        for v in members:
            a = v
            while a in inside and parents[a] >= 0:
                a = parents[a]
            row[v] = a
        table.append(row)
    return torch.as_tensor(table, dtype=torch.int64)


def occlude_parts(
    x: Tensor,
    layout: Layout,
    part: Tensor,
    start: Tensor,
    length: Tensor,
) -> Tensor:
    """Hide body part ``part[i]`` of clip ``i`` in frames ``start[i]`` to ``start[i]+length[i]-1``.

    ``part`` indexes ``layout.parts`` (in order); a length of 0 leaves the clip unchanged. Each
    hidden joint is moved onto the nearest joint outside the part up the layout's tree, every
    person of the clip alike. Why: pose estimators and depth sensors lose limbs behind the body
    or objects, and a model that must do without one part cannot lean on it alone.
    """
    t = x.shape[2]
    anchors = _part_anchors(layout.parents, tuple(layout.parts.values()))[part]  # (N, V)
    moved = torch.gather(x, 3, anchors[:, None, None, :, None].expand_as(x))
    frames = torch.arange(t)[None, :]
    hidden = (frames >= start[:, None]) & (frames < (start + length)[:, None])  # (N, T)
    return torch.where(hidden[:, None, :, None, None], moved, x)


def scale_travel(x: Tensor, layout: Layout, factor: Tensor, mask: Tensor | None = None) -> Tensor:
    """Scale each clip's path by ``factor`` ``(N,)``, keeping the posture around the path.

    The path is the reference person's centre joint minus its first valid frame; every person of
    the clip moves with it, so persons keep their placement relative to each other. A factor of
    0 leaves the body walking on the spot, 1 leaves the clip unchanged. Why: on NW-UCLA the
    test view shows carrying with about a third of the walk the training views show (training
    with shorter walks did not fix that confusion, BENCHMARKS.md session 11).
    """
    mask = frame_mask(x) if mask is None else mask
    n = torch.arange(x.shape[0], device=x.device)
    person, frame, _ = _reference_slot(mask)
    c = _weighted(x, layout.center)[n, :, :, person]  # (N, C, T)
    path = c - c[n, :, frame][:, :, None]
    path = path * mask[n, :, person][:, None, :].to(x.dtype)
    shift = (factor.to(x.dtype) - 1)[:, None, None] * path
    return (x + shift[:, :, :, None, None]) * _expand_mask(mask, x.dtype)


def _prob(p: Any, where: str) -> float:
    try:
        f = float(p)
    except (TypeError, ValueError):
        raise ConfigError(f"augment.{where}: expected a probability, got {p!r}") from None
    if not 0.0 <= f <= 1.0:
        raise ConfigError(f"augment.{where}: probability must be in [0, 1], got {f}")
    return f


def _nonneg(v: Any, where: str) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ConfigError(f"augment.{where}: expected a number, got {v!r}") from None
    if f < 0:
        raise ConfigError(f"augment.{where}: must be >= 0, got {f}")
    return f


def random_rotation(
    n: int, dims: int, max_angle: Sequence[float], generator: torch.Generator
) -> Tensor:
    """Random rotations ``(n, dims, dims)``; angle about axis k ~ U(-max_angle[k], max_angle[k]).

    3D composes ``Rz @ Ry @ Rx``; 2D rotates in the plane by the z angle.
    """
    amax = torch.as_tensor([float(a) for a in max_angle], dtype=torch.float32)
    ang = (torch.rand(n, 3, generator=generator) * 2 - 1) * amax
    return rotation_matrices(ang, dims)


def rotation_angles(rotations: Any, where: str) -> Tensor:
    """Check a list of ``[ax, ay, az]`` angles (radians) and return them as ``(R, 3)``."""
    if not isinstance(rotations, Sequence) or isinstance(rotations, str):
        raise ConfigError(f"{where}: expected a list of [ax, ay, az] angles, got {rotations!r}")
    rows = []
    for i, r in enumerate(rotations):
        ok = isinstance(r, Sequence) and not isinstance(r, str) and len(r) == 3
        if not ok or not all(isinstance(a, int | float) and not isinstance(a, bool) for a in r):
            raise ConfigError(
                f"{where}[{i}]: expected [ax, ay, az] in radians, e.g. [0, 0.5, 0]; got {r!r}"
            )
        rows.append([float(a) for a in r])
    return torch.tensor(rows, dtype=torch.float32).reshape(len(rows), 3)


def rotation_matrices(ang: Tensor, dims: int) -> Tensor:
    """Rotations ``(n, dims, dims)`` from angles ``(n, 3)`` about x, y, z (radians).

    3D composes ``Rz @ Ry @ Rx``; 2D rotates in the plane by the z angle.
    """
    n = ang.shape[0]
    c, s = torch.cos(ang), torch.sin(ang)
    one, zero = torch.ones(n), torch.zeros(n)
    if dims == 2:
        return torch.stack([c[:, 2], -s[:, 2], s[:, 2], c[:, 2]], dim=1).reshape(n, 2, 2)
    if dims != 3:
        raise ConfigError(f"rotations need 2 or 3 coordinates, got C={dims}")
    rx = torch.stack([one, zero, zero, zero, c[:, 0], -s[:, 0], zero, s[:, 0], c[:, 0]], 1)
    ry = torch.stack([c[:, 1], zero, s[:, 1], zero, one, zero, -s[:, 1], zero, c[:, 1]], 1)
    rz = torch.stack([c[:, 2], -s[:, 2], zero, s[:, 2], c[:, 2], zero, zero, zero, one], 1)
    return rz.reshape(n, 3, 3) @ ry.reshape(n, 3, 3) @ rx.reshape(n, 3, 3)


def augment(
    x: Tensor,
    layout: Layout,
    config: AugmentConfig | Mapping[str, Any] | None,
    generator: torch.Generator,
    mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Path scaling, rotation/scale/shear (one matrix per clip), flip, jitter, drop, occlusion.

    Each operation is applied to a clip with its probability ``p``. Empty slots stay zero.
    Returns ``(x, mask)``; the mask changes only through frame drop. The generator is consumed
    in a fixed order, so the same config and generator state give the same result.
    """
    cfg = AugmentConfig.from_dict(config)
    mask = frame_mask(x) if mask is None else mask
    n, dims, t = x.shape[0], x.shape[1], x.shape[2]

    def chosen(p: float) -> Tensor:
        return torch.rand(n, generator=generator) < p

    if cfg.travel_p > 0:
        # Drawn first, and only when enabled, so recipes without it keep their random stream.
        lo, hi = cfg.travel_range
        f = lo + (hi - lo) * torch.rand(n, generator=generator)
        f = torch.where(chosen(cfg.travel_p), f, torch.ones_like(f))
        x = scale_travel(x, layout, f, mask)
    mat = torch.eye(dims).expand(n, dims, dims)
    linear = False
    if cfg.rotate_p > 0:
        rot = random_rotation(n, dims, cfg.rotate_angle, generator)
        mat = torch.where(chosen(cfg.rotate_p)[:, None, None], rot, mat)
        linear = True
    if cfg.scale_p > 0:
        lo, hi = cfg.scale_range
        k = dims if cfg.scale_per_axis else 1
        s = (lo + (hi - lo) * torch.rand(n, k, generator=generator)).expand(n, dims)
        s = torch.where(chosen(cfg.scale_p)[:, None], s, torch.ones_like(s))
        mat = s[:, :, None] * mat
        linear = True
    if cfg.shear_p > 0:
        off = (torch.rand(n, dims, dims, generator=generator) * 2 - 1) * cfg.shear_amount
        sh = torch.eye(dims) + off * (1 - torch.eye(dims))
        sh = torch.where(chosen(cfg.shear_p)[:, None, None], sh, torch.eye(dims))
        mat = sh @ mat
        linear = True
    if linear:
        x = _apply_linear(x, mat.to(x.dtype))
    if cfg.flip_p > 0:
        perm = torch.as_tensor(layout.flip_permutation(), dtype=torch.int64)
        sign = torch.ones(dims, dtype=x.dtype)
        sign[0] = -1.0  # mirror across the y-z plane (x is "across" after alignment)
        flipped = x[:, :, :, perm, :] * sign[None, :, None, None, None]
        x = torch.where(chosen(cfg.flip_p)[:, None, None, None, None], flipped, x)
    if cfg.jitter_p > 0:
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype) * cfg.jitter_std
        sel = chosen(cfg.jitter_p).to(x.dtype)[:, None, None, None, None]
        x = x + noise * sel * _expand_mask(mask, x.dtype)
    if cfg.drop_p > 0 and t > 1:
        keep = torch.rand(n, t, generator=generator) >= cfg.drop_rate
        keep = keep | ~chosen(cfg.drop_p)[:, None]
        keep[:, 0] = True  # a dropped frame copies the previous kept one, so frame 0 stays
        ar = torch.arange(t).expand(n, t)
        src = torch.cummax(torch.where(keep, ar, torch.zeros_like(ar)), dim=1).values
        x = torch.gather(x, 2, src[:, None, :, None, None].expand_as(x))
        mask = torch.gather(mask, 1, src[:, :, None].expand_as(mask))
    if cfg.occlude_p > 0:
        # The stretch lies within the first `valid` frames (sampled clips are padded only at
        # the end), so the length drawn is a share of what the clip really has.
        valid = mask.any(dim=2).sum(dim=1)
        lo, hi = cfg.occlude_span
        frac = lo + (hi - lo) * torch.rand(n, generator=generator)
        length = torch.clamp(torch.round(frac * valid), min=1).to(torch.int64)
        length = torch.minimum(length, valid) * chosen(cfg.occlude_p)
        start = (torch.rand(n, generator=generator) * (valid - length + 1)).floor().to(torch.int64)
        part = torch.randint(len(layout.parts), (n,), generator=generator)
        x = occlude_parts(x, layout, part, start, length)
    return x, mask


# ---------------------------------------------------------------------------------- streams
def _ancestors(layout: Layout, hops: int) -> Tensor:
    """Index of each joint's ancestor ``hops`` steps up the layout's tree (stopping at a root)."""
    return _ancestor_index(layout.parents, hops)


@cache
def _ancestor_index(parents: tuple[int, ...], hops: int) -> Tensor:
    # Cached on the parents tuple: every batch of every stream asks for the same few indices.
    up = [p if p >= 0 else v for v, p in enumerate(parents)]
    idx = list(range(len(parents)))
    for _ in range(hops):
        idx = [up[i] for i in idx]
    return torch.as_tensor(idx, dtype=torch.int64)


def _bones(x: Tensor, layout: Layout, hops: int = 1) -> Tensor:
    # A root is its own ancestor, so its bone is exactly zero.
    return x - x[:, :, :, _ancestors(layout, hops), :]


def _unit(x: Tensor) -> Tensor:
    # A zero vector (a root's bone, a padded frame) stays zero, so its cosines are 0, not NaN.
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-6)


def _angles(x: Tensor, layout: Layout) -> Tensor:
    """Cosines of each bone with the body's up axis, its across axis and its parent's bone."""
    bone = _unit(_bones(x, layout))
    parent_bone = bone[:, :, :, _ancestors(layout, 1), :]
    up = _unit(_axis(x, layout.up))[:, :, :, None]
    across = _unit(_axis(x, layout.across))[:, :, :, None]
    return torch.stack(
        [(bone * up).sum(1), (bone * across).sum(1), (bone * parent_bone).sum(1)], dim=1
    )


def _distances(x: Tensor) -> Tensor:
    """Each joint's Euclidean distance to every joint, one channel per joint: (N, V, T, V, M)."""
    n, c, t, v, m = x.shape
    pts = x.permute(0, 4, 2, 3, 1).reshape(n * m * t, v, c)
    # Exact differences, not the matrix-product shortcut: a joint's distance to itself stays 0.
    d = torch.cdist(pts, pts, compute_mode="donot_use_mm_for_euclid_dist")
    # d[., v, u] is |x_v - x_u|; the other joint u becomes the channel.
    return d.reshape(n, m, t, v, v).permute(0, 4, 2, 3, 1).contiguous()


def _motion(x: Tensor, mask: Tensor) -> Tensor:
    # Motion only between two valid frames: no jump into padding or where a person vanishes.
    d = x[:, :, 1:] - x[:, :, :-1]
    both = mask[:, 1:] & mask[:, :-1]
    d = d * _expand_mask(both, x.dtype)
    return torch.cat([d, torch.zeros_like(x[:, :, :1])], dim=2)


def make_stream(x: Tensor, stream: str, layout: Layout, mask: Tensor | None = None) -> Tensor:
    """Derive an input stream from joints ``(N, C, T, V, M)``: joint, bone, bone2, angle, motion.

    Several streams joined by ``+`` (e.g. ``"joint+bone"``) are stacked on the channel axis.

    ``bone`` is ``x[v] - x[parent(v)]`` (root 0); ``bone2`` is ``x[v] - x[grandparent(v)]``
    (InfoGCN's 2-hop relative positions; a root's child gets its bone), a coarser view of the
    body's shape for ensembles; ``angle`` is 3 cosines per joint whatever the coordinates: its
    bone's angle with the body's up axis, with its across axis (both from the layout) and with
    its parent's bone (0 where a bone is missing: the root's, and the root's children's parent
    bone), so no rotation, reflection, scale or shift of the camera frame changes it (Qin et
    al.'s angular encoding); ``distance`` is each joint's distance to every joint of the same
    person and frame, one channel per joint of the layout (DD-Net's joint collection distances
    as per-joint features), also unchanged by rotations and shifts of the camera; ``*_motion``
    is ``x[t+1] - x[t]`` where both frames are valid for that person, else 0 (the last frame
    is 0). ``mask`` (N, T, M) defaults to the non-zero slots of ``x``.
    """
    parts = stream_parts(stream)
    if x.shape[3] != layout.num_joints:
        raise ConfigError(
            f"stream {stream!r}: tensor has {x.shape[3]} joints but layout {layout.name!r} "
            f"has {layout.num_joints}"
        )
    if stream == "joint":
        return x
    mask = frame_mask(x) if mask is None else mask
    if len(parts) > 1:
        # Early fusion (EfficientGCN's multiple input branches, here simply stacked): one model
        # sees several streams at once.
        return torch.cat([make_stream(x, p, layout, mask) for p in parts], dim=1)
    if stream == "joint_motion":
        return _motion(x, mask)
    base, motion = stream.removesuffix("_motion"), stream.endswith("_motion")
    if base == "angle":
        y = _angles(x, layout)
    elif base == "distance":
        # Padded slots are all zero, so their distances are zero too: no mask needed here.
        y = _distances(x)
    else:
        y = _bones(x, layout, 2 if base == "bone2" else 1)
    return _motion(y, mask) if motion else y
