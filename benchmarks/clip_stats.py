"""Per-class clip statistics of a prepared store, split by split: where train and test differ.

For each split and class: clips, median frames, and, in body lengths (the layout's up axis,
e.g. hip -> shoulder, averaged over the clip), the median travel of the centre joint from the
first to the last frame and the median extent of the whole clip per axis (what per-axis box
normalisation divides by). A class whose test clips travel much less than its training clips
is a dataset shift that no test-time rotation undoes. ``pca-up`` is the share of clips whose
first principal axis (the first axis of the default frame averaging's frames) lies within 45
degrees of the body's up: where it differs between splits, PCA frames show the same class in
differently ordered axes to the model (``invariance_axes: up`` fixes the up axis first).
First person only.

    python benchmarks/clip_stats.py PREPARED [--classes carry,throw] [--json]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from protoskel.data.store import open_store
from protoskel.layouts import Layout
from protoskel.models.invariance import frames


def clip_stats(
    keypoints: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, layout: Layout
) -> dict[str, np.ndarray]:
    """Per clip: frames, centre travel and per-axis extent, both in body lengths."""
    x = np.asarray(keypoints[:, 0], dtype=np.float64)  # (frames, V, C), person 0
    lengths = np.asarray(lengths, dtype=np.int64)
    offsets = np.asarray(offsets, dtype=np.int64)[: len(lengths)]
    up = np.einsum("v,fvc->fc", layout.up[1] - layout.up[0], x)
    body = np.add.reduceat(np.linalg.norm(up, axis=1), offsets) / lengths
    centre = np.einsum("v,fvc->fc", layout.center, x)
    travel = np.linalg.norm(centre[offsets + lengths - 1] - centre[offsets], axis=1) / body
    hi = np.maximum.reduceat(x.max(axis=1), offsets)
    lo = np.minimum.reduceat(x.min(axis=1), offsets)
    return {
        "frames": lengths,
        "travel": travel,
        "extent": (hi - lo) / body[:, None],
        "pca_up": _pca_up_cosine(x, offsets, lengths, up),
    }


def _pca_up_cosine(
    x: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, up: np.ndarray
) -> np.ndarray:
    """Per clip, |cos| between the first PCA frame axis and the clip-mean up vector."""
    n, t = len(lengths), int(lengths.max())
    rows = offsets[:, None] + np.minimum(np.arange(t)[None, :], lengths[:, None] - 1)
    batch = np.where((np.arange(t)[None, :] < lengths[:, None])[..., None, None], x[rows], 0.0)
    clips = torch.from_numpy(batch).permute(0, 3, 1, 2)[..., None]  # (N, C, T, V, 1)
    first = frames(clips).rotations[:, 0, :, 0].numpy()
    mean_up = np.add.reduceat(up, offsets, axis=0)
    mean_up /= np.linalg.norm(mean_up, axis=1, keepdims=True)
    return np.abs((first * mean_up).sum(1)).reshape(n)


def main() -> None:
    """Print one row per split and class."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("--classes", default="", help="comma-separated class names (default: all)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    store = open_store(args.data)
    wanted = [c for c in args.classes.split(",") if c] or list(store.classes)
    unknown = [c for c in wanted if c not in store.classes]
    if unknown:
        raise SystemExit(f"{args.data}: no class {unknown[0]!r}; classes: {store.classes}")
    rows = []
    for split in store.split_names:
        sp = store.split(split)
        st = clip_stats(sp.keypoints, sp.offsets, sp.lengths, store.layout)
        labels = np.asarray(sp.labels)
        for name in wanted:
            sel = labels == store.classes.index(name)
            if not sel.any():
                continue
            ext = np.median(st["extent"][sel], axis=0)
            rows.append(
                {
                    "split": split,
                    "class": name,
                    "clips": int(sel.sum()),
                    "frames": float(np.median(st["frames"][sel])),
                    "travel": round(float(np.median(st["travel"][sel])), 2),
                    "extent": [round(float(e), 2) for e in ext],
                    "pca_up": round(float(np.mean(st["pca_up"][sel] > np.sqrt(0.5))), 2),
                }
            )
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    head = f"{'split':<6} {'class':<24} {'clips':>5} {'frames':>6} {'travel':>6} {'pca-up':>6}"
    print(f"{head}  extent per axis")
    for r in rows:
        ext = " ".join(f"{e:5.2f}" for e in r["extent"])
        print(
            f"{r['split']:<6} {r['class']:<24} {r['clips']:>5} {r['frames']:>6.0f} "
            f"{r['travel']:>6.2f} {r['pca_up']:>6.2f}  {ext}"
        )


if __name__ == "__main__":
    main()
