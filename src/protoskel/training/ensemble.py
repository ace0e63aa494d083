"""Multi-stream ensembles: weighted sums of class probabilities, weights fitted off the test set."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

from protoskel.errors import CheckpointError, ConfigError
from protoskel.training.checkpoint import load_checkpoint
from protoskel.training.compare import (
    Predictions,
    check_predictions_path,
    check_same_clips,
    predictions_of,
    raise_settings_for_file,
    save_predictions,
)
from protoskel.training.metrics import classification_metrics
from protoskel.training.trainer import check_occlude_part, checkpoint_probs, effective_flip

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


def _is_predictions(member: str | Path) -> bool:
    return Path(member).suffix == ".npz"


def _member(
    member: str | Path,
    data_dir: str | Path | None,
    split: str | None,
    kw: dict[str, Any],
    progress: bool = False,
) -> tuple[Predictions, dict[str, Any]]:
    """One member's predictions on the split, and how it is listed in the result."""
    if _is_predictions(member):
        given = [f"--{k}" for k, v in kw.items() if v is not None]
        if split is not None:
            given.insert(0, "--split")
        if given:
            raise_settings_for_file(member, given)
        pred = predictions_of(str(member), None)
        # eval --save-probs records the stream; fused or older files do not.
        return pred, {"predictions": str(member), "stream": pred.source.get("stream", "(file)")}
    if data_dir is None:
        raise ConfigError(f"{member}: a checkpoint needs --data to be evaluated on")
    from protoskel.data.store import open_store

    probs, labels, ck, classes = checkpoint_probs(member, data_dir, split, progress=progress, **kw)
    name = split or ck["config"]["data"]["val_split"]
    ids = open_store(data_dir).split(name).ids
    info = {"checkpoint": ck["path"], "flip": effective_flip(kw["flip"], ck), "split": name}
    pred = Predictions(probs, labels, list(ids), list(classes), info)
    return pred, {"checkpoint": ck["path"], "stream": ck["config"]["data"]["stream"], "ck": ck}


def ensemble(
    checkpoints: list[str | Path],
    data_dir: str | Path | None,
    *,
    weights: list[float] | None = None,
    fit: bool = False,
    split: str | None = None,
    clips: int | None = None,
    flip: bool | None = None,
    rotate: list[Any] | None = None,
    occlude: str | None = None,
    save_probs: str | Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Fuse checkpoints (e.g. the four streams) on a split; optionally fit weights on held-out
    training clips recorded in the checkpoints (never on the evaluated split).

    A member may also be a prediction file (``eval --save-probs``), fused as it was saved, so
    a slow member is evaluated once; the settings below then apply to the checkpoints only
    and are refused when given with a prediction file.
    ``clips`` test clips per video (default: each recipe's data.test_clips), like ``flip``,
    ``rotate`` and ``occlude`` applied to the held-out clips too, so weights are fitted on what
    is evaluated. ``occlude`` hides that body part in every clip, the held-out ones included;
    ``save_probs`` writes the fused probabilities as a prediction file for ``compare``;
    ``progress`` shows a bar per evaluated checkpoint on a terminal.
    """
    if save_probs is not None:
        check_predictions_path(save_probs)
    if len(checkpoints) < 2:
        raise ConfigError("ensemble needs at least two checkpoints")
    if weights is not None and fit:
        raise ConfigError("give either --weights or --fit-weights, not both")
    if weights is not None and len(weights) != len(checkpoints):
        raise ConfigError(f"{len(weights)} weights for {len(checkpoints)} checkpoints")
    if weights is not None and (min(weights) < 0 or sum(weights) <= 0):
        raise ConfigError(
            f"--weights {','.join(f'{w:g}' for w in weights)}: weights must be >= 0 with a "
            "positive sum (a member weighted 0 is left out in effect)"
        )
    files = [c for c in checkpoints if _is_predictions(c)]
    if fit and files:
        raise ConfigError(
            f"{files[0]}: --fit-weights evaluates every member on held-out training clips, "
            "which a prediction file cannot do; give its checkpoint or pass --weights"
        )
    kw: dict[str, Any] = {"clips": clips, "flip": flip, "rotate": rotate, "occlude": occlude}
    if occlude is not None:
        # Every member before any is evaluated, so a wrong part costs no evaluation time.
        for c in checkpoints:
            if not _is_predictions(c):
                check_occlude_part(load_checkpoint(c), occlude)
    runs = [_member(c, data_dir, split, kw, progress) for c in checkpoints]
    first = runs[0][0]
    for c, (pred, _) in zip(checkpoints[1:], runs[1:], strict=True):
        try:
            check_same_clips(first, pred, (str(checkpoints[0]), str(c)))
        except ConfigError as e:
            raise CheckpointError(str(e)) from None
    labels, classes = first.labels, first.classes
    fitted_on = None
    if fit:
        from protoskel.data.store import open_store

        cks = [r[1]["ck"] for r in runs]
        held = [tuple(ck.get("meta", {}).get("holdout_ids", [])) for ck in cks]
        if not held[0] or any(h != held[0] for h in held):
            raise ConfigError(
                "--fit-weights needs checkpoints trained with the same data.holdout_fraction "
                "and data.holdout_seed (their held-out training clips are used to fit); "
                "retrain with e.g. --set data.holdout_fraction=0.1 or pass --weights"
            )
        train_name = cks[0]["meta"]["train_split"]
        assert data_dir is not None  # every member is a checkpoint here, so _member checked it
        sp = open_store(data_dir).split(train_name)
        pos = {cid: i for i, cid in enumerate(sp.ids)}
        idx = np.array([pos[c] for c in held[0]], dtype=np.int64)
        hold = [checkpoint_probs(c, data_dir, train_name, indices=idx, **kw) for c in checkpoints]
        weights = fit_weights([h[0] for h in hold], hold[0][1])
        fitted_on = {"split": train_name, "clips": len(idx)}
    if weights is None:
        weights = [1.0] * len(checkpoints)
    fused = sum(w * r[0].probs for w, r in zip(weights, runs, strict=True))
    m = classification_metrics(fused, labels, classes)
    m["weights"] = list(map(float, weights))
    m["members"] = [
        {
            **{k: v for k, v in listed.items() if k != "ck"},
            "top1": classification_metrics(pred.probs, labels, classes)["top1"],
        }
        for pred, listed in runs
    ]
    if fitted_on:
        m["weights_fitted_on"] = fitted_on
    if occlude is not None:
        m["occluded_part"] = occlude
    m["split"] = split or first.source.get("split")
    if save_probs is not None:
        source: dict[str, Any] = {
            "checkpoints": [r[1].get("checkpoint", r[1].get("predictions")) for r in runs],
            "weights": m["weights"],
            "flip": [r[0].source.get("flip") for r in runs],
            "rotate": rotate,
            "clips": clips,
            "split": m["split"],
            "top1": m["top1"],
        }
        if files:
            # What produced each fused file, so the result stays traceable.
            source["prediction_files"] = {
                str(c): r[0].source
                for c, r in zip(checkpoints, runs, strict=True)
                if _is_predictions(c)
            }
        if data_dir is not None:
            source["data"] = str(data_dir)
        if occlude is not None:
            source["occlude"] = occlude
        pred = Predictions(fused, labels, first.ids, classes, source)
        m["probs_file"] = str(save_predictions(save_probs, pred))
    return m
