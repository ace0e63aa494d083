"""Top-1 of checkpoints on a split as recorded and on seeded rotated copies of it, with eval cost.

Every clip of the split is turned by its own rotation (one per clip, fixed seed) about the origin
of the recorded coordinates: ``vertical`` draws an angle in [0, 2 pi) about the layout's up axis
as measured by the camera (y for Kinect), ``random`` draws a Haar-uniform 3D rotation. The same
rotations are used for every checkpoint, so the columns are comparable.

``--invariance-mode canonical`` evaluates frame-averaged checkpoints with one canonical frame
per clip instead of the average over all frames (same weights), to measure that trade-off.
Clips/s is the model's evaluation throughput (loading, sampling and forward; batch 32).
Test-time mirroring follows each checkpoint's recipe (``data.test_flip``) unless ``--flip`` or
``--no-flip`` says otherwise, as in ``protoskel eval``.

    python benchmarks/rotated_eval.py CHECKPOINT... --data PREPARED [--split val] [--seed 0]
        [--sets original,vertical,random] [--invariance-mode average|canonical]
        [--flip|--no-flip] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch

from protoskel.data.store import open_store
from protoskel.models.invariance import FrameAveraging, random_rotation
from protoskel.training.checkpoint import checkpoint_layout
from protoskel.training.trainer import (
    _Subset,
    eval_loader,
    load_for_eval,
    predict_split,
    subset_split,
)

SETS = ("original", "vertical", "random")


def clip_rotations(n: int, kind: str, seed: int) -> np.ndarray:
    """One rotation per clip, (n, 3, 3): identity, about +y, or Haar-uniform."""
    g = torch.Generator().manual_seed(seed)
    if kind == "original":
        return np.broadcast_to(np.eye(3), (n, 3, 3)).copy()
    if kind == "vertical":
        a = torch.rand(n, generator=g, dtype=torch.float64) * 2 * np.pi
        c, s = torch.cos(a), torch.sin(a)
        one, zero = torch.ones(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
        rot = torch.stack([c, zero, s, zero, one, zero, -s, zero, c], 1).reshape(n, 3, 3)
        return rot.numpy()
    if kind == "random":
        return random_rotation(n, 3, g, dtype=torch.float64).numpy()
    raise SystemExit(f"unknown rotated set {kind!r}; choose from {', '.join(SETS)}")


def rotated(split: Any, rotations: np.ndarray) -> _Subset:
    """Copy of a split whose clip i is turned by ``rotations[i]`` (zero slots stay zero)."""
    sub = subset_split(split, np.arange(len(split)))
    per_row = np.repeat(rotations, np.diff(sub.offsets), axis=0)  # (rows, 3, 3)
    kp = sub.keypoints.astype(np.float64)  # (rows, M, V, C)
    kp[..., :3] = np.einsum("rij,rmvj->rmvi", per_row, kp[..., :3])
    sub.keypoints = kp.astype(np.float32)
    return sub


def main() -> None:
    """Print a table of top-1 per checkpoint and rotated set, and inference clips/s."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default=None, help="default: the recipe's val split")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--invariance-mode", choices=("average", "canonical"), default=None)
    ap.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="average with each clip's left-right mirror (default: the recipe's data.test_flip)",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sets = [s for s in args.sets.split(",") if s]
    store = open_store(args.data)
    out: dict[str, dict[str, Any]] = {}
    for ck_path in args.checkpoints:
        ck, model, cfg = load_for_eval(ck_path)
        mode = None
        if isinstance(model, FrameAveraging):
            if args.invariance_mode:
                model.mode = args.invariance_mode
            mode = model.mode
        split = store.split(args.split or cfg.data.val_split)
        flip = cfg.data.test_flip if args.flip is None else args.flip
        row: dict[str, Any] = {"invariance_mode": mode, "flip": flip}
        for kind in sets:
            sub = rotated(split, clip_rotations(len(split), kind, args.seed))
            loader = eval_loader(sub, checkpoint_layout(ck), cfg, mirror=flip)
            t0 = time.perf_counter()
            probs, labels = predict_split(model, loader)
            secs = time.perf_counter() - t0
            row[kind] = float(100 * (probs.argmax(1) == labels).mean())
            row[f"{kind}_clips_per_s"] = len(labels) / secs
        out[ck_path] = row
    if args.json:
        print(json.dumps(out, indent=2))
        return
    head = f"{'checkpoint':<44} {'mode':<9} {'flip':<5} "
    print(head + " ".join(f"{s:>9}" for s in sets) + "  clips/s")
    for name, row in out.items():
        rate = np.mean([row[f"{s}_clips_per_s"] for s in sets])
        mode = row["invariance_mode"] or "-"
        flip = "yes" if row["flip"] else "no"
        cells = " ".join(f"{row[s]:9.2f}" for s in sets)
        print(f"{name:<44} {mode:<9} {flip:<5} {cells}  {rate:7.1f}")


if __name__ == "__main__":
    main()
