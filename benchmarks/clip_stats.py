"""Per-class clip statistics of a prepared store, split by split: where train and test differ.

For each split and class: clips, median frames, and, in body lengths (the layout's up axis,
e.g. hip -> shoulder, averaged over the clip), the median travel of the centre joint from the
first to the last frame and the median extent of the whole clip per axis (what per-axis box
normalisation divides by). A class whose test clips travel much less than its training clips
is a dataset shift that no test-time rotation undoes. First person only.

    python benchmarks/clip_stats.py PREPARED [--classes carry,throw] [--json]
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from protoskel.data.store import open_store
from protoskel.layouts import Layout


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
    return {"frames": lengths, "travel": travel, "extent": (hi - lo) / body[:, None]}


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
                }
            )
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"{'split':<6} {'class':<24} {'clips':>5} {'frames':>6} {'travel':>6}  extent per axis")
    for r in rows:
        ext = " ".join(f"{e:5.2f}" for e in r["extent"])
        print(
            f"{r['split']:<6} {r['class']:<24} {r['clips']:>5} {r['frames']:>6.0f} "
            f"{r['travel']:>6.2f}  {ext}"
        )


if __name__ == "__main__":
    main()
