"""Multi-stream ensembles: weighted sums of class probabilities, weights fitted off the test set."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

from protoskel.errors import CheckpointError, ConfigError
from protoskel.training.compare import check_predictions_path
from protoskel.training.metrics import classification_metrics
from protoskel.training.trainer import checkpoint_probs, effective_flip, save_split_predictions

__all__ = ["ensemble", "fit_weights"]


def fit_weights(probs: list[np.ndarray], labels: np.ndarray, step: float = 0.1) -> list[float]:
    """Grid-search simplex weights maximising top-1, ties broken by the lowest log loss."""
    k = len(probs)
    n_steps = round(1 / step)
    rows = np.arange(len(labels))
    # A held-out part is small (about a hundred clips), so top-1 moves in coarse steps and
    # many weightings tie; the fused probability given to the true class still tells them
    # apart. Exact ties then go to the most uniform.
    best: tuple[float, float, float] | None = None
    best_w: tuple[float, ...] = ()
    for combo in itertools.product(range(n_steps + 1), repeat=k):
        if sum(combo) != n_steps:
            continue
        w = tuple(c / n_steps for c in combo)
        fused = sum(wi * p for wi, p in zip(w, probs, strict=True))
        acc = float((fused.argmax(1) == labels).mean())
        log_loss = float(-np.log(np.clip(fused[rows, labels], 1e-12, None)).mean())
        # Rounded so that float noise in the sum cannot outrank the uniform tie-break.
        key = (acc, -round(log_loss, 9), -float(np.std(w)))
        if best is None or key > best:
            best, best_w = key, w
    if best is None:
        raise ValueError("fit_weights needs at least one member")
    return list(best_w)


def ensemble(
    checkpoints: list[str | Path],
    data_dir: str | Path,
    *,
    weights: list[float] | None = None,
    fit: bool = False,
    split: str | None = None,
    clips: int | None = None,
    flip: bool | None = None,
    rotate: list[Any] | None = None,
    occlude: str | None = None,
    save_probs: str | Path | None = None,
) -> dict[str, Any]:
    """Fuse checkpoints (e.g. the four streams) on a split; optionally fit weights on held-out
    training clips recorded in the checkpoints (never on the evaluated split).

    ``clips`` test clips per video (default: each recipe's data.test_clips), like ``flip``,
    ``rotate`` and ``occlude`` applied to the held-out clips too, so weights are fitted on what
    is evaluated. ``occlude`` hides that body part in every clip, the held-out ones included;
    ``save_probs`` writes the fused probabilities as a prediction file for ``compare``.
    """
    if save_probs is not None:
        check_predictions_path(save_probs)
    if len(checkpoints) < 2:
        raise ConfigError("ensemble needs at least two checkpoints")
    if weights is not None and fit:
        raise ConfigError("give either --weights or --fit-weights, not both")
    if weights is not None and len(weights) != len(checkpoints):
        raise ConfigError(f"{len(weights)} weights for {len(checkpoints)} checkpoints")
    kw: dict[str, Any] = {"clips": clips, "flip": flip, "rotate": rotate, "occlude": occlude}
    runs = [checkpoint_probs(c, data_dir, split, **kw) for c in checkpoints]
    labels = runs[0][1]
    classes = runs[0][3]
    for r in runs[1:]:
        if not np.array_equal(r[1], labels):
            raise CheckpointError("the checkpoints were evaluated on different clips")
    fitted_on = None
    if fit:
        from protoskel.data.store import open_store

        held = [tuple(r[2].get("meta", {}).get("holdout_ids", [])) for r in runs]
        if not held[0] or any(h != held[0] for h in held):
            raise ConfigError(
                "--fit-weights needs checkpoints trained with the same data.holdout_fraction "
                "and data.holdout_seed (their held-out training clips are used to fit); "
                "retrain with e.g. --set data.holdout_fraction=0.1 or pass --weights"
            )
        ck0 = runs[0][2]
        train_name = ck0["meta"]["train_split"]
        sp = open_store(data_dir).split(train_name)
        pos = {cid: i for i, cid in enumerate(sp.ids)}
        idx = np.array([pos[c] for c in held[0]], dtype=np.int64)
        hold = [checkpoint_probs(c, data_dir, train_name, indices=idx, **kw) for c in checkpoints]
        weights = fit_weights([h[0] for h in hold], hold[0][1])
        fitted_on = {"split": train_name, "clips": len(idx)}
    if weights is None:
        weights = [1.0] * len(checkpoints)
    fused = sum(w * r[0] for w, r in zip(weights, runs, strict=True))
    m = classification_metrics(fused, labels, classes)
    m["weights"] = list(map(float, weights))
    m["members"] = [
        {
            "checkpoint": r[2]["path"],
            "stream": r[2]["config"]["data"]["stream"],
            "top1": classification_metrics(r[0], labels, classes)["top1"],
        }
        for r in runs
    ]
    if fitted_on:
        m["weights_fitted_on"] = fitted_on
    if occlude is not None:
        m["occluded_part"] = occlude
    m["split"] = split or runs[0][2]["config"]["data"]["val_split"]
    if save_probs is not None:
        source = {
            "checkpoints": [r[2]["path"] for r in runs],
            "weights": m["weights"],
            "flip": [effective_flip(flip, r[2]) for r in runs],
            "rotate": rotate,
            "clips": clips,
        }
        m["probs_file"] = str(
            save_split_predictions(save_probs, fused, labels, data_dir, m, source)
        )
    return m
