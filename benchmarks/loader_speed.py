"""ClipLoader throughput on a synthetic split the size of NW-UCLA's training set.

Usage: python benchmarks/loader_speed.py [--clips 1020] [--batch 16] [--frames 52] [--epochs 3]

Prints batches/s and clips/s per configuration (RAM-preloaded vs. memory-mapped, joint vs.
bone_motion stream), all with the NW-UCLA training augmentation. Training runs at ~30-100
clips/s on CPU, so the loader must be far faster than that for an epoch never to wait on data.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from protoskel.data.loader import ClipLoader
from protoskel.data.transforms import DEFAULT_AUGMENT
from protoskel.layouts import get_layout


class SyntheticSplit:
    """Packed random clips with NW-UCLA-like lengths (1-201 frames, mean ~40)."""

    def __init__(self, n: int, keypoints: np.ndarray | None = None, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.lengths = np.clip(rng.gamma(4.0, 10.0, n).round(), 1, 201).astype(np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)
        self.labels = rng.integers(0, 10, n).astype(np.int64)
        if keypoints is None:
            keypoints = rng.normal(size=(int(self.offsets[-1]), 1, 20, 3)).astype(np.float32)
        self.keypoints = keypoints

    def __len__(self) -> int:
        return len(self.labels)


def measure(loader: ClipLoader, epochs: int) -> tuple[float, float]:
    """Return (batches/s, clips/s) over ``epochs`` full passes."""
    batches = clips = 0
    start = time.perf_counter()
    for e in range(epochs):
        loader.set_epoch(e)
        for _x, y in loader:
            batches += 1
            clips += int(y.shape[0])
    dt = time.perf_counter() - start
    return batches / dt, clips / dt


def main() -> None:
    """Run the benchmark and print one line per configuration."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=1020)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--frames", type=int, default=52)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 = a data worker)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    layout = get_layout("kinect-v1-20")
    split = SyntheticSplit(args.clips)
    print(
        f"synthetic split: {len(split)} clips, {split.offsets[-1]} frames "
        f"(mean {split.lengths.mean():.1f}), {split.keypoints.nbytes / 1e6:.1f} MB; "
        f"batch {args.batch}, {args.frames} frames, V=20, torch threads {args.threads}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "keypoints.npy"
        np.save(path, split.keypoints)
        mapped = SyntheticSplit(args.clips, keypoints=np.load(path, mmap_mode="r"))
        for name, src, preload in (("preload", split, True), ("memmap", mapped, False)):
            for stream in ("joint", "bone_motion"):
                loader = ClipLoader(
                    src,
                    layout,
                    batch_size=args.batch,
                    num_frames=args.frames,
                    train=True,
                    stream=stream,
                    augment=DEFAULT_AUGMENT,
                    seed=0,
                    preload=preload,
                )
                bps, cps = measure(loader, args.epochs)
                print(
                    f"train {name:7s} {stream:11s}: {bps:8.1f} batches/s  {cps:9.0f} clips/s  "
                    f"(epoch of {len(loader)} batches in {len(loader) / bps * 1000:.0f} ms)"
                )
        evl = ClipLoader(
            split, layout, batch_size=args.batch, num_frames=args.frames, train=False, num_clips=5
        )
        bps, cps = measure(evl, args.epochs)
        print(f"eval  preload joint, 5 clips: {bps:8.1f} batches/s  {cps:9.0f} clips/s")


if __name__ == "__main__":
    main()
