"""MSR Action3D: accuracy of one 20-class checkpoint on the AS1/AS2/AS3 action subsets.

The literature trains a separate classifier per action set; here one 20-class model is
restricted to each set's test clips and its prediction is the best class *within the set*.
That is a stricter-or-equal setting for the model (it never saw set-specific training) and is
reported as such in BENCHMARKS.md.

    python benchmarks/msr_action_sets.py CHECKPOINT --data PREPARED_MSR [--json]
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from protoskel.data.store import open_store
from protoskel.training.trainer import checkpoint_probs


def main() -> None:
    """Print top-1 on the full test split and on each action set."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--data", required=True)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    store = open_store(args.data)
    sets = store.manifest.get("action_sets")
    if not sets:
        raise SystemExit(f"{args.data}: manifest has no action_sets (not an MSR Action3D store?)")
    probs, labels = None, None
    for ck in args.checkpoints:
        p, labels, _, _ = checkpoint_probs(ck, args.data, "test")
        probs = p if probs is None else probs + p
    assert probs is not None and labels is not None
    out = {"all": {"top1": float(100 * (probs.argmax(1) == labels).mean()), "n": len(labels)}}
    for name, members in sets.items():
        members = np.asarray(members)
        rows = np.isin(labels, members)
        sub = probs[rows][:, members]
        pred = members[sub.argmax(1)]
        out[name] = {"top1": float(100 * (pred == labels[rows]).mean()), "n": int(rows.sum())}
    out["mean_AS"] = float(np.mean([out[k]["top1"] for k in sets]))
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for k, v in out.items():
            print(f"{k:<8} {v if isinstance(v, float) else v['top1']:.2f}")


if __name__ == "__main__":
    main()
