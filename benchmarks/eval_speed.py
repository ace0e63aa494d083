"""How long reproducing each shipped checkpoint's figure takes: ``protoskel eval`` per model.

For every shipped model trained on the prepared dataset given (default: all the NW-UCLA ones),
evaluates it with its recipe's test-time settings (clips, mirror, rotations) as ``protoskel
eval NAME --data DIR`` does, and prints the wall time, the process CPU time, the number of
forward samples (clips x views x frame-averaging frames) and top-1.

    python benchmarks/eval_speed.py --data prepared/nw-ucla
    python benchmarks/eval_speed.py --data prepared/nw-ucla --models NAME1,NAME2 --json
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch

from protoskel.data.store import open_store
from protoskel.training.checkpoint import load_checkpoint
from protoskel.training.config import config_from_dict
from protoskel.training.registry import shipped_models
from protoskel.training.trainer import eval_samples_per_clip, evaluate


def time_eval(name: str, data: str) -> dict[str, Any]:
    """Wall and CPU seconds of one shipped model's default evaluation, with its top-1."""
    cfg = config_from_dict(load_checkpoint(name)["config"])
    split = open_store(data).split(cfg.data.val_split)
    wall, cpu = time.perf_counter(), time.process_time()
    m = evaluate(name, data)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    coords = int(split.keypoints.shape[-1])
    return {
        "model": name,
        "clips": m["n"],
        "forward_samples": m["n"]
        * eval_samples_per_clip(cfg, coords, cfg.data.test_clips, cfg.data.test_flip),
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "top1": round(m["top1"], 2),
    }


def main() -> None:
    """Command line: time the shipped models of one dataset."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="prepared dataset folder")
    ap.add_argument(
        "--models",
        default="",
        help="comma-separated names (default: all shipped models whose dataset is the store's)",
    )
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = ap.parse_args()
    dataset = open_store(args.data).manifest.get("dataset", "")
    names = [n for n in args.models.split(",") if n] or [
        r["name"] for r in shipped_models() if r.get("dataset") == dataset
    ]
    rows = [time_eval(n, args.data) for n in names]
    head = f"torch {torch.__version__}, threads {torch.get_num_threads()}, dataset {dataset}"
    if args.json:
        print(json.dumps({"setup": head, "rows": rows}, indent=2))
        return
    print(head)
    print(f"{'model':<38} {'clips':>5} {'samples':>8} {'wall s':>7} {'cpu s':>7} {'top1':>6}")
    for r in rows:
        print(
            f"{r['model']:<38} {r['clips']:>5} {r['forward_samples']:>8} {r['wall_s']:>7} "
            f"{r['cpu_s']:>7} {r['top1']:>6.2f}"
        )


if __name__ == "__main__":
    main()
