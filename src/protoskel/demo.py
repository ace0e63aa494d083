"""``protoskel demo``: the whole pipeline in about a minute, with nothing but the package.

Generates a procedural train/val set (:mod:`protoskel.data.synthetic`, cross-subject) into a
prepared store, trains a tiny adaptive-topology GCN from the packaged recipe
``atgcn_joint_synthetic-demo.yaml`` on the CPU, evaluates it on the validation subjects, saves a
sample clip to try ``predict``/``explain`` on, and, when the explanation module provides one,
writes an explanation report. Everything goes under one output folder::

    OUT/data/                 prepared store (train: subjects 0-6, val: subjects 7-9)
    OUT/run/last.pt (the demo model), best.pt  checkpoints; log.csv; confusion.png
    OUT/sample_<class>.npz    one validation clip (generic NPZ)
    OUT/report/               explanation report (when protoskel.explain.report exists)
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from protoskel.errors import ConfigError

__all__ = ["DEMO_CONFIG", "demo_config_path", "run_demo"]

DEMO_CONFIG = "atgcn_joint_synthetic-demo.yaml"
DEFAULT_OUT = "protoskel-demo"


def demo_config_path() -> Path:
    """The demo recipe shipped inside the package (a copy of ``configs/`` in the repository)."""
    p = resources.files("protoskel") / "configs" / DEMO_CONFIG
    path = Path(str(p))
    if not path.is_file():
        raise ConfigError(f"{path}: the packaged demo recipe is missing; reinstall protoskel")
    return path


def _display_available() -> bool:
    """Whether a browser window could appear (Linux/BSD need an X or Wayland display)."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _stderr(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def run_demo(
    out: str | Path = DEFAULT_OUT,
    *,
    epochs: int | None = None,
    n_train_per_class: int = 40,
    n_val_per_class: int = 15,
    seed: int = 0,
    overrides: list[str] | None = None,
    report: bool = True,
    open_report: bool = True,
    progress: bool = True,
    log: Callable[[str], None] = _stderr,
) -> dict[str, Any]:
    """Generate data, train, evaluate (and explain) under ``out``; return a summary dict.

    ``epochs`` and ``overrides`` (``key=value`` as in ``protoskel train --set``) change the
    recipe; the clip counts and ``seed`` change the generated set. The summary has ``top1``,
    ``mean_class_acc`` and ``per_class`` (percent, validation split), ``checkpoint``, ``data``,
    ``sample``, ``report`` (None without a report) and ``seconds``.
    """
    from protoskel.data.readers.generic import write_generic_npz
    from protoskel.data.store import open_store
    from protoskel.data.synthetic import CLASSES, write_synthetic_store
    from protoskel.training.config import load_config
    from protoskel.training.trainer import evaluate, train

    t0 = time.perf_counter()
    if n_train_per_class < 1 or n_val_per_class < 1:
        raise ConfigError("demo: need at least one train and one val clip per class")
    sets = list(overrides or [])
    if epochs is not None:
        if epochs < 1:
            raise ConfigError(f"demo --epochs: must be >= 1, got {epochs}")
        sets.append(f"train.epochs={int(epochs)}")
    cfg = load_config(demo_config_path(), sets)

    root = Path(out).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    data_dir, run_dir = root / "data", root / "run"
    log(
        f"[1/3] generating {len(CLASSES)} synthetic actions ({', '.join(CLASSES)}): "
        f"{n_train_per_class * len(CLASSES)} train clips (subjects 0-6), "
        f"{n_val_per_class * len(CLASSES)} val clips (subjects 7-9) -> {data_dir}"
    )
    # Only ever replaces a previous demo's store: write_store refuses any other folder.
    write_synthetic_store(
        data_dir,
        n_train_per_class=n_train_per_class,
        n_val_per_class=n_val_per_class,
        seed=seed,
        force=True,
    )
    width = cfg.model.kwargs.get("width", "default")
    log(
        f"[2/3] training {cfg.model.backbone} (width {width}) for {cfg.train.epochs} epochs "
        f"on {cfg.train.threads or 'all'} CPU thread(s) -> {run_dir}"
    )
    # Like its store, a previous demo's run is replaced.
    train(cfg, data_dir, run_dir, overwrite=True, progress=progress)
    ckpt = run_dir / "last.pt"  # the final model: no selection on the validation subjects
    log(f"[3/3] evaluating {ckpt} on the validation subjects")
    m = evaluate(ckpt, data_dir, split=cfg.data.val_split, confusion_png=run_dir / "confusion.png")

    val = open_store(data_dir).split(cfg.data.val_split)
    sample = val.get(0)
    sample.meta["label_name"] = CLASSES[sample.label]
    sample_path = write_generic_npz(sample, root / f"sample_{CLASSES[sample.label]}.npz")

    report_path: Path | None = None
    if report:
        from protoskel.explain.report import write_report

        log(f"writing an explanation report for {sample_path.name}")
        # The store lets the report draw each prototype's source training segment.
        res = write_report(ckpt, sample_path, root / "report", data_root=root / "data")
        report_path = Path(res) if res is not None else root / "report"
        if open_report and _display_available():
            import webbrowser

            target = report_path / "index.html" if report_path.is_dir() else report_path
            webbrowser.open(target.resolve().as_uri())
    return {
        "out": str(root),
        "data": str(data_dir),
        "checkpoint": str(ckpt),
        "top1": m["top1"],
        "mean_class_acc": m["mean_class_acc"],
        "n": m["n"],
        "per_class": m["per_class"],
        "chance": 100.0 / len(CLASSES),
        "confusion_png": m.get("confusion_png"),
        "sample": str(sample_path),
        "report": None if report_path is None else str(report_path),
        "seconds": time.perf_counter() - t0,
    }
