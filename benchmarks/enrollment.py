"""Few-shot enrollment: add held-out classes to a prototype model from k clips, backbone frozen.

Two steps.

``prepare`` writes a copy of a prepared store without the held-out classes (default: two drawn
with ``--seed``), to train a prototype model on the others::

    python benchmarks/enrollment.py prepare --data PREPARED --out HELD_OUT_STORE [--hold a,b]

``run`` takes that model, and for each k and each of ``--draws`` seeded draws picks k training
clips of every held-out class from the full store, enrolls the classes one after the other
(``protoskel.explain.enroll.enroll``, what ``protoskel enroll`` runs) into a fresh copy of the
model, and evaluates on the full store's val split: top-1 on the held-out classes' clips (all
classes compete) and on the other clips, before and after enrollment::

    python benchmarks/enrollment.py run CHECKPOINT --data PREPARED [--k 1,5] [--draws 5]
        [--negatives] [--json]

``--negatives`` calibrates each new class's bias against the training clips of the classes the
model knows (its own training data), as ``protoskel enroll --negatives`` does.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from typing import Any

import numpy as np
import torch

from protoskel.data.store import open_store, write_store
from protoskel.explain.enroll import enroll
from protoskel.training.checkpoint import checkpoint_layout
from protoskel.training.trainer import eval_loader, load_for_eval, subset_split


def held_classes(classes: list[str], hold: str | None, seed: int) -> list[str]:
    """The held-out class names: given, or two drawn with ``seed``."""
    if hold:
        names = [h for h in hold.split(",") if h]
        unknown = [h for h in names if h not in classes]
        if unknown:
            raise SystemExit(f"--hold: unknown classes {unknown}; classes: {classes}")
        return names
    pick = np.random.default_rng(seed).choice(len(classes), size=2, replace=False)
    return [classes[i] for i in sorted(pick)]


def prepare(args: argparse.Namespace) -> None:
    """Write the store without the held-out classes."""
    store = open_store(args.data)
    classes = list(store.classes)
    hold = held_classes(classes, args.hold, args.seed)
    kept = [c for c in classes if c not in hold]
    splits = {}
    for name in store.split_names:
        sp = store.split(name)
        seqs = []
        for i in range(len(sp)):
            s = sp.get(i)
            if classes[s.label] in hold:
                continue
            s.label = kept.index(classes[s.label])
            seqs.append(s)
        splits[name] = seqs
    write_store(
        args.out,
        splits,
        dataset=f"{store.manifest.get('dataset', 'dataset')}-without-{'-'.join(hold)}",
        protocol=str(store.manifest.get("protocol", "")),
        layout=store.layout,
        classes=kept,
        source=str(args.data),
        extra={"held_out_classes": hold, "full_classes": classes},
        force=args.force,
    )
    print(f"{args.out}: {len(kept)} classes, held out {hold}")


@torch.no_grad()
def _predict(model: torch.nn.Module, loader: Any) -> np.ndarray:
    """Predicted class index per clip (multi-clip views averaged)."""
    model.eval()
    out = []
    for x, _ in loader:
        p = torch.softmax(model(x), dim=1)
        k = loader.num_clips
        out.append(p.view(-1, k, p.shape[1]).mean(1).argmax(1).numpy())
    return np.concatenate(out)


def run(args: argparse.Namespace) -> None:
    """Enroll the held-out classes for each k and draw; print accuracies."""
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    ck, model, cfg = load_for_eval(args.checkpoint)
    lay = checkpoint_layout(ck)
    store = open_store(args.data)
    full = list(store.classes)
    known = list(ck["classes"])
    hold = [c for c in full if c not in known]
    if not hold or any(c not in full for c in known):
        raise SystemExit(f"{args.checkpoint}: its classes {known} are not a subset of {full}")
    val = store.split(args.split)
    names = np.array(full)[np.asarray(val.labels)]
    is_held = np.isin(names, hold)
    before = np.array(known)[_predict(model, eval_loader(val, lay, cfg))]
    base_other = float(100 * (before[~is_held] == names[~is_held]).mean())
    train = store.split("train")
    train_names = np.array(full)[np.asarray(train.labels)]
    ex_loader = eval_loader(train, lay, cfg)
    negatives = None
    if args.negatives:
        # The model's own training data: training clips of the classes it knows.
        known_idx = np.flatnonzero(np.isin(train_names, known))
        negatives, _ = eval_loader(subset_split(train, known_idx), lay, cfg, num_clips=1).batch(
            np.arange(len(known_idx))
        )
    result: dict[str, Any] = {
        "checkpoint": args.checkpoint,
        "held_out": hold,
        "val_clips_held": int(is_held.sum()),
        "val_clips_other": int((~is_held).sum()),
        "other_top1_before": base_other,
        "negatives": 0 if negatives is None else len(negatives),
        "k": {},
    }
    for k in [int(v) for v in args.k.split(",")]:
        held_acc, other_acc = [], []
        for draw in range(args.draws):
            rng = np.random.default_rng([args.seed, k, draw])
            m = copy.deepcopy(model)
            classes = known
            for name in hold:
                pool = np.flatnonzero(train_names == name)
                pick = np.sort(rng.choice(pool, size=k, replace=False))
                x, _ = ex_loader.batch(pick)
                xs = [x[i * ex_loader.num_clips] for i in range(k)]  # first view per clip
                ids = [train.ids[i] for i in pick]
                m, classes = enroll(m, name, xs, ids, classes=classes, negatives=negatives)
            pred = np.array(classes)[_predict(m, eval_loader(val, lay, cfg))]
            held_acc.append(100 * (pred[is_held] == names[is_held]).mean())
            other_acc.append(100 * (pred[~is_held] == names[~is_held]).mean())
        result["k"][str(k)] = {
            "held_top1_mean": float(np.mean(held_acc)),
            "held_top1_std": float(np.std(held_acc)),
            "other_top1_mean": float(np.mean(other_acc)),
            "other_change_mean": float(np.mean(other_acc) - base_other),
            "draws": [
                {"held": float(h), "other": float(o)}
                for h, o in zip(held_acc, other_acc, strict=True)
            ],
        }
    result["seconds"] = round(time.perf_counter() - t0, 1)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"held out {hold}; other classes before enrollment: {base_other:.2f}")
    for k, r in result["k"].items():
        print(
            f"k={k}: held-out top-1 {r['held_top1_mean']:.2f} +- {r['held_top1_std']:.2f}, "
            f"others {r['other_top1_mean']:.2f} ({r['other_change_mean']:+.2f}) "
            f"over {args.draws} draws"
        )


def main() -> None:
    """Dispatch ``prepare`` or ``run``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--hold", default=None, help="comma-separated class names")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true")
    r = sub.add_parser("run")
    r.add_argument("checkpoint")
    r.add_argument("--data", required=True, help="the full prepared store")
    r.add_argument("--split", default="val")
    r.add_argument("--k", default="1,5")
    r.add_argument("--draws", type=int, default=5)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument(
        "--negatives", action="store_true", help="calibrate on the known classes' training clips"
    )
    r.add_argument("--json", action="store_true")
    args = ap.parse_args()
    prepare(args) if args.cmd == "prepare" else run(args)


if __name__ == "__main__":
    main()
