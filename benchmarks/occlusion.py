"""Robustness to a lost limb: top-1 of each checkpoint with each body part hidden at test time.

Every test clip has one part of the layout hidden for all its frames (``eval --occlude``: each
hidden joint sits on the nearest joint outside the part), one part at a time; the table gives
the clean top-1, the top-1 per hidden part, and their mean over parts. The recipe's test-time
mirror applies as in ``eval``. Models trained with ``augment.occlude`` can be compared with
models of the same recipe trained without it.

    python benchmarks/occlusion.py PREPARED CHECKPOINT [CHECKPOINT ...] [--json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from protoskel.data.store import open_store
from protoskel.training.trainer import evaluate


def occlusion_table(checkpoints: list[str], data: str | Path) -> list[dict[str, Any]]:
    """One row per checkpoint: clean top-1, top-1 with each part hidden, mean over the parts."""
    parts = list(open_store(data).layout.parts)
    rows = []
    for ck in checkpoints:
        hidden = {p: evaluate(ck, data, occlude=p)["top1"] for p in parts}
        rows.append(
            {
                "checkpoint": ck,
                "clean": evaluate(ck, data)["top1"],
                "hidden": hidden,
                "mean_hidden": sum(hidden.values()) / len(hidden),
            }
        )
    return rows


def main() -> None:
    """Print the table as markdown (or JSON)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", help="prepared dataset folder")
    ap.add_argument("checkpoints", nargs="+", help="checkpoint files or shipped model names")
    ap.add_argument("--json", action="store_true", help="print JSON")
    args = ap.parse_args()
    rows = occlusion_table(args.checkpoints, args.data)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    parts = list(rows[0]["hidden"])
    print("| checkpoint | clean | " + " | ".join(parts) + " | mean hidden |")
    print("|---" * (len(parts) + 3) + "|")
    for r in rows:
        cells = [f"{r['clean']:.2f}", *(f"{r['hidden'][p]:.2f}" for p in parts)]
        print(f"| {r['checkpoint']} | " + " | ".join(cells) + f" | {r['mean_hidden']:.2f} |")


if __name__ == "__main__":
    main()
