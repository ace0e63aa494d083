"""Skeleton drawings for reports: 2D views, importance colours, animated GIFs, PNG panels.

Everything draws on matplotlib ``Figure`` objects with the Agg canvas directly (no pyplot, no
global backend switch, no display needed). Skeletons come in as the model's normalised joint
input ``(N, C, T, V, M)``; :func:`to_xy` turns the first view into 2D points by aligning it
(the layout's up axis to +y, across axis to +x) and viewing it from the front.
"""

from __future__ import annotations

import base64
import io
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from torch import Tensor

from protoskel.layouts import Layout

__all__ = [
    "CMAP",
    "Panel",
    "data_uri",
    "heatmap_png",
    "panels_png",
    "skeleton_gif",
    "to_xy",
    "write_gif",
]

#: Colour map of importance (0 = pale, 1 = dark red).
CMAP = "YlOrRd"
_FLOOR = 0.12  # lowest colour-map value used, so unimportant joints stay visible


def to_xy(x: Tensor | np.ndarray, layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """Front-view 2D points ``(M, T, V, 2)`` and a validity mask ``(M, T)`` of the first view.

    The clip is rotated so the layout's up axis points to +y and its across axis (the subject's
    left -> right) to +x, then x is mirrored so the subject faces the viewer.
    """
    from protoskel.data.transforms import align_view, frame_mask

    t = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x)[:1].float()
    mask = frame_mask(t)
    if t.shape[1] in (2, 3):
        t = align_view(t, layout, mask)
    pts = t[0, :2].permute(3, 1, 2, 0).numpy().astype(np.float64)  # (M, T, V, 2)
    pts[..., 0] *= -1.0
    return pts, mask[0].T.numpy()


def _limits(xy: np.ndarray, valid: np.ndarray, margin: float = 0.08) -> tuple[float, ...]:
    """Square axis limits holding every valid point."""
    pts = xy[valid].reshape(-1, 2) if valid.any() else np.zeros((1, 2))
    lo, hi = pts.min(0), pts.max(0)
    c, r = (lo + hi) / 2, max(float((hi - lo).max()) / 2, 1e-3) * (1 + margin)
    return c[0] - r, c[0] + r, c[1] - r, c[1] + r


def _colors(values: np.ndarray) -> np.ndarray:
    cmap = colormaps[CMAP]
    return cmap(_FLOOR + (1 - _FLOOR) * np.clip(values, 0.0, 1.0))


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buf)
    return buf.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    """``data:`` URI of some bytes (for self-contained HTML)."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def write_gif(path: str | Path, frames: Sequence[np.ndarray], fps: float = 8.0) -> Path:
    """Write RGB frames (H, W, 3) uint8 as a looping GIF, atomically (temp file + rename)."""
    import imageio.v3 as iio

    p = Path(path)
    # A temp name (not mkstemp) so the file gets the usual umask permissions.
    tmp = p.parent / f".{p.name}.{uuid.uuid4().hex[:8]}.gif"
    try:
        iio.imwrite(
            tmp,
            np.stack(list(frames)),
            extension=".gif",
            duration=round(1000.0 / fps),
            loop=0,
        )
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def skeleton_gif(
    path: str | Path,
    xy: np.ndarray,
    valid: np.ndarray,
    layout: Layout,
    joint_imp: np.ndarray | None = None,
    frame_imp: np.ndarray | None = None,
    *,
    title: str = "",
    frame_labels: Sequence[str] | None = None,
    fps: float = 8.0,
    size: tuple[float, float] = (3.6, 4.2),
    dpi: int = 80,
) -> Path:
    """Animated GIF of a skeleton ``xy`` (M, T, V, 2) with importance as colour and a frame bar.

    ``joint_imp`` (T, V) in [0, 1] colours and sizes the joints (and bones, by their child
    joint); ``frame_imp`` (T,) is drawn as a bar chart under the skeleton with the current frame
    marked. ``frame_labels`` (T,) are printed under the title.
    """
    m, t, v, _ = xy.shape
    ji = np.zeros((t, v)) if joint_imp is None else np.asarray(joint_imp, dtype=np.float64)
    fig = Figure(figsize=size, dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0.02, 0.2, 0.96, 0.7))
    x0, x1, y0, y1 = _limits(xy, valid)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal")
    ax.set_axis_off()
    fig.text(0.5, 0.955, title, ha="center", va="center", fontsize=9)
    label = fig.text(0.5, 0.91, "", ha="center", va="center", fontsize=8, color="0.3")
    bones = layout.bones
    lc = LineCollection([], linewidths=2.5, capstyle="round", animated=True)
    ax.add_collection(lc)
    sc = ax.scatter([], [], s=[], edgecolors="0.2", linewidths=0.4, zorder=3, animated=True)
    label.set_animated(True)
    cursor = None
    if frame_imp is not None:
        bar_ax = fig.add_axes((0.08, 0.04, 0.88, 0.12))
        fi = np.asarray(frame_imp, dtype=np.float64)
        bar_ax.bar(np.arange(t), fi, width=1.0, color=_colors(fi), edgecolor="none")
        bar_ax.set_xlim(-0.5, t - 0.5)
        bar_ax.set_ylim(0, 1.05)
        bar_ax.set_yticks([])
        bar_ax.tick_params(labelsize=6, length=2)
        bar_ax.set_title("frame importance", fontsize=7, pad=2)
        cursor = bar_ax.axvline(0, color="0.1", linewidth=1.2, animated=True)
    # Blitting: the static parts (title, bars, ticks) are drawn once; each frame only redraws
    # the skeleton, the label and the cursor on a copy of that background.
    canvas.draw()
    background = canvas.copy_from_bbox(fig.bbox)
    moving = [a for a in (lc, sc, label, cursor) if a is not None]
    frames = []
    for k in range(t):
        segs, seg_c, pts, pc = [], [], [], []
        for p in range(m):
            if not valid[p, k]:
                continue
            q = xy[p, k]
            segs += [(q[c], q[par]) for c, par in bones]
            seg_c += [ji[k, c] for c, _ in bones]
            pts.append(q)
            pc.append(ji[k])
        lc.set_segments(segs)
        lc.set_color(_colors(np.asarray(seg_c)) if seg_c else "0.5")
        if pts:
            imp = np.concatenate(pc)
            sc.set_offsets(np.concatenate(pts))
            sc.set_facecolor(_colors(imp))
            sc.set_sizes(14 + 70 * imp)
        else:
            sc.set_offsets(np.zeros((0, 2)))
        if frame_labels is not None:
            label.set_text(frame_labels[k])
        if cursor is not None:
            cursor.set_xdata([k, k])
        canvas.restore_region(background)
        for artist in moving:
            fig.draw_artist(artist)
        frames.append(np.asarray(canvas.buffer_rgba())[..., :3].copy())
    return write_gif(path, frames, fps)


@dataclass
class Panel:
    """One panel of a PNG strip: a skeleton segment, or a text placeholder when ``xy`` is None.

    ``xy`` (S, V, 2) frames of one person; ``highlight`` joint indices drawn in colour with
    their motion trails (the body part a prototype is about).
    """

    title: str
    xy: np.ndarray | None = None
    highlight: Sequence[int] = ()
    text: str = ""
    color: str = "#c0392b"
    subtitle: str = ""


def _draw_segment(ax: Axes, panel: Panel, layout: Layout) -> None:
    """Frames of a segment as one fading motion trail; the highlighted part in colour."""
    xy = np.asarray(panel.xy, dtype=np.float64)
    s = xy.shape[0]
    hl = {int(j) for j in panel.highlight}
    valid = np.abs(xy).sum(axis=(1, 2)) > 0
    x0, x1, y0, y1 = _limits(xy[None], valid[None])
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    base = np.array(to_rgba("0.55"))
    accent = np.array(to_rgba(panel.color))
    segs, colors, widths = [], [], []
    for k in np.flatnonzero(valid):
        last = k == s - 1
        a = 0.15 + 0.85 * (k + 1) / s
        for c, p in layout.bones:
            on = c in hl and p in hl
            col = (accent if on else base).copy()
            col[3] = a if (on or last) else a * 0.35
            segs.append(xy[k, [c, p]])
            colors.append(col)
            widths.append((2.6 if on else 1.4) * (1.3 if last else 1.0))
    ax.add_collection(LineCollection(segs, colors=colors, linewidths=widths, capstyle="round"))
    trails = [xy[valid, j] for j in sorted(hl)]
    if trails:
        ax.add_collection(LineCollection(trails, colors=[panel.color], linewidths=0.8, alpha=0.6))
        ends = np.stack([t[-1] for t in trails if len(t)]) if any(len(t) for t in trails) else None
        if ends is not None:
            ax.scatter(ends[:, 0], ends[:, 1], s=14, color=panel.color, zorder=3)


def panels_png(
    panels: Sequence[Panel], layout: Layout, *, size: float = 2.4, dpi: int = 80
) -> bytes:
    """A PNG with the panels side by side (segments drawn as fading motion trails)."""
    n = max(1, len(panels))
    fig = Figure(figsize=(size * n, size + 0.35), dpi=dpi)
    for i, panel in enumerate(panels):
        ax = fig.add_axes((i / n + 0.01, 0.02, 1 / n - 0.02, size / (size + 0.35) - 0.1))
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        for sp in ax.spines.values():
            sp.set_color("0.85")
        fig.text((i + 0.5) / n, 0.96, panel.title, ha="center", va="top", fontsize=8)
        if panel.subtitle:
            fig.text(
                (i + 0.5) / n, 0.89, panel.subtitle, ha="center", va="top", fontsize=7, color="0.35"
            )
        if panel.xy is None or not np.any(panel.xy):
            ax.text(
                0.5,
                0.5,
                panel.text or "no data",
                ha="center",
                va="center",
                fontsize=7,
                color="0.35",
                wrap=True,
                transform=ax.transAxes,
            )
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            continue
        _draw_segment(ax, panel, layout)
    return _png(fig)


def heatmap_png(
    imp: np.ndarray,
    layout: Layout,
    *,
    title: str = "",
    frame_labels: Sequence[str] | None = None,
    dpi: int = 80,
) -> bytes:
    """A (joints x frames) heat map PNG of an importance map ``imp`` (T, V) in [0, 1]."""
    t, v = imp.shape
    fig = Figure(figsize=(max(4.0, 1.6 + t * 0.09), 1.0 + v * 0.16), dpi=dpi)
    ax = fig.add_axes((0.28, 0.12, 0.68, 0.78))
    ax.imshow(
        np.asarray(imp).T,
        aspect="auto",
        cmap=CMAP,
        vmin=0,
        vmax=1,
        origin="upper",
        interpolation="nearest",
    )
    ax.set_yticks(range(v))
    ax.set_yticklabels(layout.joints, fontsize=6)
    step = max(1, t // 10)
    ticks = list(range(0, t, step))
    ax.set_xticks(ticks)
    ax.set_xticklabels(
        [frame_labels[i] for i in ticks] if frame_labels is not None else ticks, fontsize=6
    )
    ax.set_xlabel("input frame" if frame_labels is None else "clip frame", fontsize=7)
    ax.set_title(title, fontsize=8)
    return _png(fig)
