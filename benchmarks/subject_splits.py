"""Train and score one recipe on each published half-subject split (UTKinect, MSR Action3D).

The Lie-group line of work (Vemulapalli et al. 2014) reports UTKinect and MSR Action3D as the
mean over the ten train/test subject splits of ``tr_te_splits.mat``. This prepares a store per
split (``datasets prepare --subject-split K``), trains the recipe on it and evaluates the last
epoch, then prints each split's top-1 and their mean, standard deviation, minimum and maximum.
A split whose run already finished (its ``last.pt`` at the recipe's last epoch) is evaluated
again, not retrained, so an interrupted benchmark continues where it stopped.

    python benchmarks/subject_splits.py utkinect --src SRC --recipe RECIPE.yaml --out DIR \
        [--splits 0-9] [--set key=value ...] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from protoskel.data.protocols import prepare_dataset
from protoskel.data.store import open_store
from protoskel.training.checkpoint import load_checkpoint
from protoskel.training.config import load_config
from protoskel.training.trainer import evaluate, train


def parse_splits(text: str) -> list[int]:
    """``"0-9"`` or ``"0,3,5"`` (or a mix) to a sorted list of split indices."""
    out: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return sorted(out)


def summary(top1: dict[int, float]) -> dict[str, Any]:
    """Per-split top-1 and mean / std (population) / min / max over the splits."""
    v = np.array(list(top1.values()), dtype=np.float64)
    return {
        "splits": {str(k): x for k, x in top1.items()},
        "mean": float(v.mean()),
        "std": float(v.std()),
        "min": float(v.min()),
        "max": float(v.max()),
    }


def run_split(
    dataset: str, src: str, recipe: str, overrides: list[str], out: Path, k: int
) -> float:
    """Prepare, train (unless finished) and evaluate one split; returns its top-1."""
    store, run = out / f"store-{k}", out / f"run-{k}"
    if not (store / "manifest.json").is_file():
        out.mkdir(parents=True, exist_ok=True)
        prepare_dataset(dataset, src, store, subject_split=k, log=lambda _: None)
    if open_store(store).manifest.get("subject_split") != k:
        raise SystemExit(f"{store}: not the store of subject split {k}; remove it")
    cfg = load_config(recipe, overrides)
    last = run / "last.pt"
    if not (last.is_file() and load_checkpoint(last)["epoch"] == cfg.train.epochs):
        train(cfg, store, run, resume=last.is_file(), progress=False)
    return float(evaluate(last, store, split=cfg.data.val_split)["top1"])


def main() -> None:
    """Run every requested split and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", help="utkinect or msr-action3d")
    ap.add_argument("--src", required=True, help="the dataset's source folder")
    ap.add_argument("--recipe", required=True)
    ap.add_argument("--out", required=True, help="folder for the stores and runs")
    ap.add_argument("--splits", default="0-9")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    top1: dict[int, float] = {}
    for k in parse_splits(args.splits):
        t0 = time.perf_counter()
        top1[k] = run_split(args.dataset, args.src, args.recipe, args.overrides, out, k)
        if not args.json:
            print(f"split {k}: top1 {top1[k]:.2f}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    s = summary(top1)
    if args.json:
        print(json.dumps(s, indent=2))
    else:
        print(
            f"mean {s['mean']:.2f}  std {s['std']:.2f}  min {s['min']:.2f}  max {s['max']:.2f}"
            f"  over {len(top1)} splits"
        )


if __name__ == "__main__":
    main()
