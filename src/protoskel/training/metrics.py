"""Classification metrics (accuracies in percent) and the confusion-matrix figure."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["classification_metrics", "confusion_matrix", "save_confusion_png"]


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts (K, K): row = true class, column = predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return cm


def classification_metrics(
    scores: np.ndarray, y_true: np.ndarray, classes: list[str]
) -> dict[str, Any]:
    """top1, top5, mean_class_acc (percent), n, per-class accuracy and the confusion matrix."""
    scores = np.asarray(scores, dtype=np.float64)
    y = np.asarray(y_true, dtype=np.int64)
    k = len(classes)
    n = len(y)
    order = np.argsort(-scores, axis=1)
    pred = order[:, 0]
    top5 = (order[:, : min(5, k)] == y[:, None]).any(axis=1)
    cm = confusion_matrix(y, pred, k)
    support = cm.sum(axis=1)
    per_class = {
        c: (float(100.0 * cm[i, i] / support[i]) if support[i] else None)
        for i, c in enumerate(classes)
    }
    present = [v for v in per_class.values() if v is not None]
    return {
        "top1": float(100.0 * (pred == y).mean()) if n else 0.0,
        "top5": float(100.0 * top5.mean()) if n else 0.0,
        "mean_class_acc": float(np.mean(present)) if present else 0.0,
        "n": int(n),
        "per_class": per_class,
        "confusion": cm.tolist(),
    }


def save_confusion_png(cm: np.ndarray, classes: list[str], path: str | Path, title: str) -> None:
    """Draw a row-normalised confusion matrix to a PNG (atomic write)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm, dtype=np.float64)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    k = len(classes)
    size = max(4.0, 0.45 * k + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), classes, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(k), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    if k <= 30:
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    colour = "white" if norm[i, j] > 0.5 else "black"
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7, c=colour)
    fig.tight_layout()
    from protoskel.training.checkpoint import plain_permissions

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.stem}.", suffix=".png", dir=p.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120)
        plain_permissions(tmp)
        os.replace(tmp, p)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)
