"""A tiny learnable dataset written as a prepared store, for fast training tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from protoskel.data.sequence import SkeletonSequence
from protoskel.data.store import write_store
from protoskel.layouts import get_layout

CLASSES = ["still", "raise_left", "raise_right"]


def tiny_clips(n: int, seed: int) -> list[SkeletonSequence]:
    """Clips of a noisy rest pose where class 1/2 lift the left/right hand over time."""
    lay = get_layout("kinect-v1-20")
    # One body shared by every split; only the per-clip noise and lengths depend on ``seed``.
    base = np.random.default_rng(1234).normal(scale=0.3, size=(20, 3)).astype(np.float32)
    rng = np.random.default_rng(seed)
    base[lay.index("head"), 1] = 1.0
    out = []
    for i in range(n):
        t = int(rng.integers(12, 24))
        label = i % 3
        kp = np.repeat(base[None], t, axis=0) + rng.normal(scale=0.05, size=(t, 20, 3))
        ramp = np.linspace(0, 1, t)[:, None]
        if label:
            hand = lay.index("left_hand" if label == 1 else "right_hand")
            kp[:, hand, 1] += ramp[:, 0]
        out.append(
            SkeletonSequence(
                keypoints=kp[None].astype(np.float32),
                layout=lay.name,
                label=label,
                id=f"tiny_{seed}_{i:03d}",
                subject=i % 4,
            )
        )
    return out


def write_tiny_store(out: Path, n_train: int = 36, n_val: int = 15) -> Path:
    """A prepared store with train/val splits of tiny clips."""
    return write_store(
        out,
        {"train": tiny_clips(n_train, 0), "val": tiny_clips(n_val, 1)},
        dataset="tiny",
        protocol="test",
        layout="kinect-v1-20",
        classes=CLASSES,
    )


def tiny_recipe(**model: object) -> dict:
    """A seconds-long training recipe (atgcn width 8) for test models; ``model`` overrides."""
    return {
        "model": {"backbone": "atgcn", "kwargs": {"width": 8, "depth": 3, "groups": 2}, **model},
        "data": {"num_frames": 16},
        "train": {
            "epochs": 2,
            "batch_size": 8,
            "optimizer": "adamw",
            "lr": 0.003,
            "warmup_epochs": 0,
            "threads": 1,
            "push_epochs": 1,
        },
    }
