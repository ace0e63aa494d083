"""Deletion faithfulness of explanations: delete what they rank first, watch the probability fall.

For every clip of the split, the model's input is built exactly as in evaluation and the
predicted class c is taken. Three rankings of the input's (frame, joint) cells are compared:

- ``prototype``: the prototype head's attribution: how much the evidence (weight x
  similarity) of the prototypes that support c depends on each joint over 4-frame blocks,
  from random removals (``--fill``, by default the same removal as ``--mode``);
- ``prototype_window``: each supporting prototype's contribution credited to its part's joints
  over the frames where it matched (where the prototypes matched, not what they used);
- ``saliency``: gradient x input of the logit of c (a common post-hoc baseline);
- ``random``: a seeded random order.

Cells are deleted in that order in ``--steps`` equal steps from 0 % to 100 %; ``zero`` sets the
joint's coordinates to 0 (the normalised clip's centre), ``still`` holds the joint at its mean
position over the clip (its motion is removed, its place kept). Ties in a ranking (cells with equal
importance) are broken by the same random order. The curve is the probability of c after each
step; its area (trapezoid over the deleted fraction in [0, 1]) is averaged over clips. A faithful
explanation has a small area: the probability drops as soon as the evidence it names is gone.

    python benchmarks/deletion.py CHECKPOINT --data PREPARED [--split val] [--mode zero|still]
        [--steps 20] [--limit N] [--seed 0] [--fill zero|still] [--proto-top K] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from protoskel.data.store import open_store
from protoskel.explain.attribution import (
    gradient_saliency,
    normalize01,
    own_part_share,
    prototype_attribution,
    prototype_evidence,
    prototype_masking,
    removal_fill,
    supporting_prototypes,
)
from protoskel.training.checkpoint import checkpoint_layout
from protoskel.training.trainer import eval_loader, load_for_eval

METHODS = ("prototype", "prototype_window", "saliency", "random")


def deletion_inputs(
    x: torch.Tensor, order: np.ndarray, steps: int, mode: str
) -> tuple[torch.Tensor, np.ndarray]:
    """Copies of one input (1, C, T, V, M) with the first k cells of ``order`` deleted, per step."""
    _, c, t, v, m = x.shape
    cells = t * v
    counts = np.round(np.linspace(0, cells, steps + 1)).astype(np.int64)
    rank = np.empty(cells, dtype=np.int64)
    rank[order] = np.arange(cells)
    gone = torch.as_tensor(rank[None, :] < counts[:, None]).reshape(-1, 1, t, v, 1)
    fill = removal_fill(x, mode)
    out = torch.where(
        gone, fill.expand(len(counts), c, t, v, m), x.expand(len(counts), -1, -1, -1, -1)
    )
    return out, counts / cells


def ranking(importance: np.ndarray, tiebreak: np.ndarray) -> np.ndarray:
    """Cells (flattened T*V) by decreasing importance, ties in the order of ``tiebreak``."""
    flat = importance.reshape(-1)
    pos = np.empty_like(tiebreak)
    pos[tiebreak] = np.arange(tiebreak.size)
    return np.lexsort((pos, -flat))


def main() -> None:
    """Print the mean area under the deletion curve per method (lower is more faithful)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default=None, help="default: the recipe's val split")
    ap.add_argument("--mode", choices=("zero", "still"), default="zero")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--limit", type=int, default=0, help="first N clips only (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--fill",
        choices=("zero", "still"),
        default=None,
        help="removal the prototype attribution uses to measure (default: same as --mode)",
    )
    ap.add_argument(
        "--proto-top", type=int, default=None, help="credit only the k strongest prototypes"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    ck, model, cfg = load_for_eval(args.checkpoint)
    lay = checkpoint_layout(ck)
    split = open_store(args.data).split(args.split or cfg.data.val_split)
    loader = eval_loader(split, lay, cfg, num_clips=1)  # one view: deletion edits it
    n = len(split) if args.limit <= 0 else min(args.limit, len(split))
    rng = np.random.default_rng(args.seed)
    curves: dict[str, list[np.ndarray]] = {k: [] for k in METHODS}
    locality: list[tuple[float, float]] = []
    parts = list(lay.parts.values())
    correct = 0
    for i in range(n):
        x, y = loader.batch(np.array([i]))
        with torch.no_grad():
            p0 = F.softmax(model(x), dim=1)[0]
        c = int(p0.argmax())
        correct += int(c == int(y[0]))
        t, v = x.shape[2], x.shape[3]
        tiebreak = rng.permutation(t * v)
        ev = prototype_evidence(model, x)
        support = supporting_prototypes(ev["contributions"][c], args.proto_top)
        per_proto = prototype_masking(model, x, c, fill=args.fill or args.mode)
        # How local are the matches: share of each of the 5 strongest prototypes' masking map
        # on its own part's joints, against the part's share of the joints.
        for q in support[:5]:
            joints = parts[int(ev["proto_part"][q])]
            locality.append((own_part_share(per_proto[q], joints), len(joints) / v))
        maps: dict[str, Any] = {
            "prototype": normalize01(per_proto[support].sum(0)),
            "prototype_window": prototype_attribution(
                model, x, c, lay, top=args.proto_top, evidence=ev, method="window"
            ),
            "saliency": gradient_saliency(model, x, c),
            "random": np.zeros((t, v)),
        }
        for name, imp in maps.items():
            xs, frac = deletion_inputs(x, ranking(np.asarray(imp), tiebreak), args.steps, args.mode)
            with torch.no_grad():
                p = F.softmax(model(xs), dim=1)[:, c].double().numpy()
            curves[name].append(p)
    out: dict[str, Any] = {
        "checkpoint": args.checkpoint,
        "clips": n,
        "mode": args.mode,
        "fill": args.fill or args.mode,
        "steps": args.steps,
        "top1_on_these_clips": 100.0 * correct / n,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    for name, rows in curves.items():
        arr = np.stack(rows)  # (n, steps+1)
        auc = np.trapezoid(arr, frac, axis=1)
        out[name] = {
            "auc_mean": float(auc.mean()),
            "auc_sem": float(auc.std(ddof=1) / np.sqrt(len(auc))) if len(auc) > 1 else 0.0,
            "curve": [round(float(a), 4) for a in arr.mean(0)],
        }
    loc = np.asarray(locality).reshape(-1, 2)
    out["own_part_share"] = {
        "mean": float(loc[:, 0].mean()) if len(loc) else 0.0,
        "chance": float(loc[:, 1].mean()) if len(loc) else 0.0,
        "prototypes": len(loc),
    }
    a = {k: np.trapezoid(np.stack(curves[k]), frac, axis=1) for k in METHODS}
    out["prototype_beats_random_clips"] = float((a["prototype"] < a["random"]).mean())
    out["prototype_beats_saliency_clips"] = float((a["prototype"] < a["saliency"]).mean())
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(
        f"{n} clips, mode={args.mode}, fill={out['fill']}, {args.steps} steps, {out['seconds']} s"
    )
    for name in METHODS:
        print(f"{name:<16} AUC {out[name]['auc_mean']:.4f} +- {out[name]['auc_sem']:.4f}")
    print(f"prototype < random on {100 * out['prototype_beats_random_clips']:.1f} % of clips")
    print(f"prototype < saliency on {100 * out['prototype_beats_saliency_clips']:.1f} % of clips")
    sh = out["own_part_share"]
    print(
        f"top-5 prototypes: {100 * sh['mean']:.1f} % of their masking map on their own part "
        f"(the part's share of the joints: {100 * sh['chance']:.1f} %)"
    )


if __name__ == "__main__":
    main()
