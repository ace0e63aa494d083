"""Ship a trained checkpoint inside the package (``protoskel models list`` shows it).

The optimizer and RNG state are dropped, the model is evaluated on the given prepared store
and the measured top-1 is written to ``src/protoskel/checkpoints/index.json`` with the
command that reproduces it. Checkpoints hold weights, config, layout and class names only;
prototype provenance is clip ids and frame ranges, never keypoints.

    python benchmarks/ship_checkpoint.py RUN/last.pt --name NAME --data PREPARED_STORE

``--test-flip`` turns on test-time mirroring (``data.test_flip``) in the shipped config; it
is an evaluation setting only (training never reads it), so the weights stay those of the run.
``--test-clips K`` likewise sets ``data.test_clips`` (K evenly shifted samplings averaged).
"""

from __future__ import annotations

import argparse
import json
import os

from protoskel.training.checkpoint import load_checkpoint, save_checkpoint, shipped_dir
from protoskel.training.config import config_from_dict
from protoskel.training.trainer import architecture, evaluate


def row_dataset(ck: dict) -> str:
    """The dataset name a checkpoint was trained on."""
    return str(ck["meta"].get("dataset", ""))


def main() -> None:
    """Strip, evaluate and register one checkpoint."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--name", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--test-flip", action="store_true", help="ship with data.test_flip: true")
    ap.add_argument("--test-clips", type=int, help="ship with data.test_clips: K")
    args = ap.parse_args()
    if args.test_clips is not None and args.test_clips < 1:
        ap.error(f"--test-clips must be >= 1, got {args.test_clips}")
    ck = load_checkpoint(args.checkpoint)
    keep = (
        "model",
        "config",
        "layout",
        "classes",
        "in_channels",
        "arch",
        "epoch",
        "history",
        "meta",
    )
    slim = {k: ck[k] for k in keep if k in ck}
    # Runs started before checkpoints recorded their options get them from today's defaults;
    # the evaluation below fails if those no longer build the trained network.
    slim.setdefault("arch", architecture(config_from_dict(ck["config"])))
    # A run trained from another recipe with --set overrides keeps that recipe's name; the
    # shipped checkpoint is known by its shipped name.
    slim["config"] = {**slim["config"], "name": args.name}
    data = dict(slim["config"]["data"])
    if args.test_flip:
        data["test_flip"] = True
    if args.test_clips is not None:
        data["test_clips"] = args.test_clips
    slim["config"] = {**slim["config"], "data": data}
    out = shipped_dir() / f"{args.name}.pt"
    save_checkpoint(slim, out)
    m = evaluate(out, args.data)
    cfg = slim["config"]
    row = {
        "name": args.name,
        "file": out.name,
        "dataset": row_dataset(ck),
        "protocol": ck["meta"].get("protocol", ""),
        "split": m["split"],
        "stream": cfg["data"]["stream"],
        "backbone": cfg["model"]["backbone"],
        "head": cfg["model"]["head"],
        "invariance": cfg["model"]["invariance"],
        "invariance_mode": cfg["model"]["invariance_mode"] if cfg["model"]["invariance"] else None,
        "epochs": ck["epoch"],
        "test_flip": bool(cfg["data"].get("test_flip", False)),
        "test_clips": int(cfg["data"].get("test_clips", 1)),
        "top1": round(m["top1"], 2),
        "top5": round(m["top5"], 2),
        "mean_class_acc": round(m["mean_class_acc"], 2),
        "n": m["n"],
        "reproduce": f"protoskel eval {args.name} --data prepared/{row_dataset(ck)} --json",
    }
    index = shipped_dir() / "index.json"
    rows = json.loads(index.read_text())["models"] if index.is_file() else []
    rows = [r for r in rows if r["name"] != args.name] + [row]
    tmp = index.with_suffix(".tmp")
    tmp.write_text(json.dumps({"models": rows}, indent=2) + "\n")
    os.replace(tmp, index)
    print(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
