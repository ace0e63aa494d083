"""Saved predictions and paired comparison of two models on the same test clips.

NW-UCLA's test view has 464 clips, so one clip is 0.22 points and published tables differ by
a few clips. Two models evaluated on the same clips are compared by the clips only one of
them gets right (McNemar's exact test), and each accuracy gets a Wilson 95 % interval; a
difference is then read against what the test set can resolve.

A prediction file (``eval --save-probs`` / ``ensemble --save-probs``) is an ``.npz`` with
``probs`` (N, K) float64, ``labels`` (N,) int64, ``ids`` (N,) clip ids, ``classes`` (K,) and
``source``, a one-element JSON string saying what produced it. It is read with
``allow_pickle=False``, so a file from elsewhere cannot run code.
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from protoskel.data.readers.generic import atomic_write
from protoskel.errors import ConfigError

__all__ = [
    "Predictions",
    "check_predictions_path",
    "check_same_clips",
    "compare_predictions",
    "compare_to_reference",
    "holm_adjust",
    "load_predictions",
    "mcnemar_exact",
    "predictions_of",
    "raise_settings_for_file",
    "save_predictions",
    "wilson_interval",
]

_KEYS = ("probs", "labels", "ids", "classes", "source")


@dataclass(frozen=True)
class Predictions:
    """Class probabilities of one model (or ensemble) on one split, with clip ids and labels."""

    probs: np.ndarray
    labels: np.ndarray
    ids: list[str]
    classes: list[str]
    source: dict[str, Any]

    @property
    def correct(self) -> np.ndarray:
        """Boolean (N,): top-1 prediction equals the label."""
        return self.probs.argmax(1) == self.labels


def check_predictions_path(path: str | Path) -> Path:
    """Refuse a prediction file name that is not ``.npz`` (before any evaluation runs)."""
    p = Path(path)
    if p.suffix != ".npz":
        raise ConfigError(f"{p}: prediction files are .npz files; give a name ending in .npz")
    return p


def save_predictions(path: str | Path, pred: Predictions) -> Path:
    """Write a prediction file atomically (see the module docstring for its contents)."""
    p = check_predictions_path(path)
    arrays = {
        "probs": np.asarray(pred.probs, dtype=np.float64),
        "labels": np.asarray(pred.labels, dtype=np.int64),
        "ids": np.asarray(pred.ids, dtype=str),
        "classes": np.asarray(pred.classes, dtype=str),
        "source": np.asarray([json.dumps(pred.source)]),
    }
    return atomic_write(p, lambda f: np.savez(f, **arrays))


def load_predictions(path: str | Path) -> Predictions:
    """Read and check a prediction file; errors name the file and what is wrong."""
    p = Path(path)
    if p.is_file() and not zipfile.is_zipfile(p):
        # np.load would read it as a pickle and suggest unpickling it: never for such files.
        raise ConfigError(
            f"{p}: cannot read as a prediction .npz (not a zip archive); write one with "
            "eval --save-probs or ensemble --save-probs"
        )
    try:
        with np.load(p, allow_pickle=False) as z:
            missing = [k for k in _KEYS if k not in z.files]
            if missing:
                raise ConfigError(
                    f"{p}: not a prediction file (missing {', '.join(missing)}); write one "
                    "with eval --save-probs or ensemble --save-probs"
                )
            arrays = {k: z[k] for k in _KEYS}
    except (OSError, ValueError) as e:
        raise ConfigError(f"{p}: cannot read as a prediction .npz ({e})") from None
    probs, labels = arrays["probs"], arrays["labels"]
    ids, classes = [str(v) for v in arrays["ids"]], [str(v) for v in arrays["classes"]]
    n = len(labels)
    if probs.ndim != 2 or probs.shape != (n, len(classes)) or len(ids) != n:
        raise ConfigError(
            f"{p}: probs has shape {probs.shape}, expected ({n} clips, {len(classes)} classes) "
            f"with {len(ids)} ids"
        )
    if not np.issubdtype(probs.dtype, np.floating) or not np.isfinite(probs).all():
        raise ConfigError(f"{p}: probs must be finite floats")
    in_range = n == 0 or (labels.min() >= 0 and labels.max() < len(classes))
    if not np.issubdtype(labels.dtype, np.integer) or not in_range:
        raise ConfigError(f"{p}: labels must be integers in [0, {len(classes)})")
    try:
        source = json.loads(str(arrays["source"].reshape(-1)[0]))
    except (json.JSONDecodeError, IndexError):
        raise ConfigError(f"{p}: source is not a JSON string") from None
    return Predictions(probs.astype(np.float64), labels.astype(np.int64), ids, classes, source)


def wilson_interval(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval (percent) for k successes in n trials; 95 % by default."""
    if n <= 0:
        raise ValueError("wilson_interval needs n > 0")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return 100.0 * max(0.0, centre - half), 100.0 * min(1.0, centre + half)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts b and c (binomial, p=1/2)."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def holm_adjust(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order (family-wise error control)."""
    m = len(pvalues)
    out = [0.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda j: pvalues[j])):
        # Step-down: the k-th smallest p is multiplied by (m - k + 1); the running maximum
        # keeps the adjusted values in the order of the raw ones.
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def check_same_clips(a: Predictions, b: Predictions, names: tuple[str, str]) -> None:
    """Raise ConfigError unless ``a`` and ``b`` hold the same clips, labels and classes."""
    if a.classes != b.classes:
        raise ConfigError(f"{names[0]} and {names[1]} have different classes")
    if a.ids != b.ids:
        only = sorted(set(a.ids) ^ set(b.ids))
        detail = f"e.g. {only[0]!r} is in one only" if only else "the same clips in another order"
        raise ConfigError(
            f"{names[0]} and {names[1]} were evaluated on different clips ({detail}); "
            "use predictions made on the same split"
        )
    if not np.array_equal(a.labels, b.labels):
        raise ConfigError(f"{names[0]} and {names[1]} disagree on the labels of the same clips")


def compare_predictions(a: Predictions, b: Predictions, names: tuple[str, str]) -> dict[str, Any]:
    """Paired comparison of two prediction sets on the same clips (same ids, labels, classes)."""
    check_same_clips(a, b, names)
    ra, rb = a.correct, b.correct
    n = len(ra)
    only_a, only_b = int((ra & ~rb).sum()), int((~ra & rb).sum())

    def side(name: str, right: np.ndarray, pred: Predictions) -> dict[str, Any]:
        k = int(right.sum())
        lo, hi = wilson_interval(k, n) if n else (0.0, 0.0)
        return {"name": name, "top1": 100.0 * k / n if n else 0.0, "top1_ci95": [lo, hi],
                "correct": k, "source": pred.source}  # fmt: skip

    return {
        "n": n,
        "a": side(names[0], ra, a),
        "b": side(names[1], rb, b),
        "difference": 100.0 * (int(rb.sum()) - int(ra.sum())) / n if n else 0.0,
        "both_right": int((ra & rb).sum()),
        "both_wrong": int((~ra & ~rb).sum()),
        "only_a_right": only_a,
        "only_b_right": only_b,
        "agreement": 100.0 * float((a.probs.argmax(1) == b.probs.argmax(1)).mean()) if n else 0.0,
        "mcnemar_p": mcnemar_exact(only_a, only_b),
    }


def raise_settings_for_file(path: str | Path, options: list[str]) -> None:
    """Refuse evaluation options given with a prediction file, naming the file and them."""
    # The file holds probabilities already computed with its own settings.
    verb = "apply" if len(options) > 1 else "applies"
    raise ConfigError(
        f"{path}: {' and '.join(options)} {verb} to checkpoints only; a prediction file "
        "holds probabilities already computed with the settings it was written with (its "
        "'source' entry records them); give the checkpoint instead to change them"
    )


def predictions_of(
    source: str,
    data_dir: str | Path | None,
    split: str | None = None,
    flip: bool | None = None,
) -> Predictions:
    """A prediction file (``.npz``) as it is, or a checkpoint evaluated on ``data_dir``."""
    if Path(source).suffix == ".npz":
        if not Path(source).is_file():
            raise ConfigError(f"{source}: no such prediction file")
        given = [o for o, v in (("--split", split), ("--flip", flip)) if v is not None]
        if given:
            raise_settings_for_file(source, given)
        return load_predictions(source)
    if data_dir is None:
        raise ConfigError(f"{source}: a checkpoint needs --data to be evaluated on")
    from protoskel.data.store import open_store
    from protoskel.training.trainer import checkpoint_probs, effective_flip

    probs, labels, ck, classes = checkpoint_probs(source, data_dir, split, flip=flip)
    name = split or ck["config"]["data"]["val_split"]
    info = {"checkpoint": ck["path"], "flip": effective_flip(flip, ck), "data": str(data_dir)}
    info["split"] = name
    return Predictions(probs, labels, open_store(data_dir).split(name).ids, classes, info)


def compare_to_reference(
    reference: Predictions, others: list[Predictions], names: list[str]
) -> dict[str, Any]:
    """Each of ``others`` against one reference, McNemar p-values Holm-adjusted over the family.

    ``names`` has the reference's name first. With several candidates the smallest raw p-value
    is expected to be small by chance alone; Holm's adjustment keeps the chance of any false
    "significant" at 5 % over the whole table.
    """
    if len(names) != len(others) + 1:
        raise ValueError("names needs the reference's name and one name per other model")
    rows = [
        compare_predictions(reference, o, (names[0], n))
        for o, n in zip(others, names[1:], strict=True)
    ]
    for row, adj in zip(rows, holm_adjust([r["mcnemar_p"] for r in rows]), strict=True):
        row["mcnemar_p_holm"] = adj
    return {"n": rows[0]["n"] if rows else len(reference.labels), "comparisons": rows}
