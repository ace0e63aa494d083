"""Speed benchmark: train and inference clips/s, parameters and FLOPs per clip.

Every registered backbone (with a linear head) and the reference CTR-GCN
(``benchmarks/ref_ctrgcn.py``) are measured at the NW-UCLA shape (C=3, T=52, V=20, M=1,
layout kinect-v1-20, 10 classes) and the NTU shape (C=3, T=100, V=25, M=2, layout ntu-25,
60 classes). Ratios are against CTR-GCN measured in the same run.

Timing is made robust to a shared, noisy machine: models are measured round-robin (every
repeat times each model once, so a burst of load hits all of them) and the best repeat is
reported (load only ever adds time); the median is in the JSON output too. ``--clock cpu
--threads 1`` measures process CPU time instead, which other processes barely disturb.

    python benchmarks/speed.py                       # table on stdout
    python benchmarks/speed.py --json --repeats 5    # one JSON object on stdout
    python benchmarks/speed.py --clock cpu --threads 1 --shapes nw-ucla
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ref_ctrgcn import CTRGCN

from protoskel.layouts import get_layout
from protoskel.models import build_model, list_backbones

SHAPES: dict[str, dict[str, Any]] = {
    "nw-ucla": {"layout": "kinect-v1-20", "C": 3, "T": 52, "M": 1, "classes": 10},
    "ntu": {"layout": "ntu-25", "C": 3, "T": 100, "M": 2, "classes": 60},
}
REF = "ctrgcn-ref"


def log(msg: str) -> None:
    """Progress goes to stderr so ``--json`` stdout stays one object."""
    print(msg, file=sys.stderr, flush=True)


def make_model(name: str, shape: dict[str, Any], kw: dict[str, Any]) -> nn.Module:
    """A classifier for ``name`` (a registered backbone or the reference) at ``shape``."""
    layout = get_layout(shape["layout"])
    if name == REF:
        return CTRGCN(layout, shape["classes"], shape["C"], num_persons=shape["M"])
    return build_model(name, layout, shape["classes"], shape["C"], **kw)


def flops_per_clip(model: nn.Module, x: torch.Tensor) -> float:
    """Forward FLOPs for one clip (eval mode), counted by torch's FlopCounterMode."""
    model.eval()
    counter = FlopCounterMode(display=False)
    # Not under no_grad: FlopCounterMode's module tracker needs autograd to be recording.
    with counter:
        model(x[:1])
    return float(counter.get_total_flops())


class Runner:
    """Holds one model, its optimiser and inputs; times train steps and inference batches."""

    def __init__(
        self, name: str, shape: dict[str, Any], kw: dict[str, Any], batch: int, infer_batch: int
    ) -> None:
        torch.manual_seed(0)
        self.name = name
        self.model = make_model(name, shape, kw)
        g = torch.Generator().manual_seed(0)
        dims = (shape["C"], shape["T"], get_layout(shape["layout"]).num_joints, shape["M"])
        self.x = torch.randn(batch, *dims, generator=g)
        self.y = torch.randint(0, shape["classes"], (batch,), generator=g)
        self.xi = torch.randn(infer_batch, *dims, generator=g)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        self.params = sum(p.numel() for p in self.model.parameters())
        self.flops = flops_per_clip(self.model, self.x)

    def train_step(self) -> None:
        """One forward + backward + SGD step on a training batch."""
        self.opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()

    def infer_step(self) -> None:
        """One eval-mode forward pass without gradients."""
        with torch.no_grad():
            self.model(self.xi)

    def timed(
        self,
        fn: Callable[[], None],
        iters: int,
        clips: int,
        train: bool,
        clock: Callable[[], float] = time.perf_counter,
    ) -> float:
        """Clips per second over ``iters`` calls of ``fn``."""
        self.model.train(train)
        t0 = clock()
        for _ in range(iters):
            fn()
        return clips * iters / (clock() - t0)


def run_shape(
    shape_name: str, names: list[str], args: argparse.Namespace, kw: dict[str, Any]
) -> dict[str, Any]:
    """Measure every model at one input shape, round-robin over repeats."""
    shape = SHAPES[shape_name]
    runners = [
        Runner(n, shape, kw if n != REF else {}, args.batch, args.infer_batch) for n in names
    ]
    for r in runners:  # warm-up: allocator, oneDNN primitive caches
        r.timed(r.train_step, args.warmup, args.batch, True)
        r.timed(r.infer_step, args.warmup, args.infer_batch, False)
    train: dict[str, list[float]] = {n: [] for n in names}
    infer: dict[str, list[float]] = {n: [] for n in names}
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    for rep in range(args.repeats):
        for r in runners:
            train[r.name].append(r.timed(r.train_step, args.iters, args.batch, True, clock))
            infer[r.name].append(r.timed(r.infer_step, args.iters, args.infer_batch, False, clock))
        log(f"[{shape_name}] repeat {rep + 1}/{args.repeats} done")
    out: dict[str, Any] = {}
    for r in runners:
        out[r.name] = {
            "params": r.params,
            "gflops_per_clip": r.flops / 1e9,
            "train_clips_s": max(train[r.name]),
            "train_clips_s_median": statistics.median(train[r.name]),
            "infer_clips_s": max(infer[r.name]),
            "infer_clips_s_median": statistics.median(infer[r.name]),
        }
    if REF in out:
        ref = out[REF]
        for row in out.values():
            row["train_ratio"] = row["train_clips_s"] / ref["train_clips_s"]
            row["infer_ratio"] = row["infer_clips_s"] / ref["infer_clips_s"]
            row["train_ratio_median"] = row["train_clips_s_median"] / ref["train_clips_s_median"]
            row["infer_ratio_median"] = row["infer_clips_s_median"] / ref["infer_clips_s_median"]
            row["flops_ratio"] = ref["gflops_per_clip"] / row["gflops_per_clip"]
    return out


def print_table(results: dict[str, Any], meta: dict[str, Any]) -> None:
    """Human-readable table, one block per shape."""
    print(
        f"torch {meta['torch']}, threads {meta['threads']}, batch {meta['batch']} (train), "
        f"{meta['infer_batch']} (inference), best of {meta['repeats']} repeats x "
        f"{meta['iters']} iterations, {meta['clock']} clock"
    )
    for shape_name, rows in results.items():
        s = SHAPES[shape_name]
        print(f"\n{shape_name}: C={s['C']} T={s['T']} layout={s['layout']} M={s['M']}")
        print(
            f"{'model':<12} {'params':>9} {'GFLOPs':>7} {'train c/s':>10} {'infer c/s':>10}"
            f" {'x train':>8} {'x infer':>8} {'x FLOPs':>8}"
        )
        for name, r in rows.items():
            print(
                f"{name:<12} {r['params']:>9,} {r['gflops_per_clip']:>7.3f} "
                f"{r['train_clips_s']:>10.1f} {r['infer_clips_s']:>10.1f} "
                f"{r.get('train_ratio', float('nan')):>8.2f} "
                f"{r.get('infer_ratio', float('nan')):>8.2f} "
                f"{r.get('flops_ratio', float('nan')):>8.2f}"
            )


def main(argv: list[str] | None = None) -> int:
    """Parse options, run the benchmark, print a table or one JSON object."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--backbones", default=",".join(list_backbones()), help="comma-separated")
    p.add_argument("--no-ref", action="store_true", help="skip the reference CTR-GCN")
    p.add_argument("--shapes", default="nw-ucla,ntu", help=f"of {', '.join(SHAPES)}")
    p.add_argument("--batch", type=int, default=16, help="training batch size")
    p.add_argument("--infer-batch", type=int, default=16, help="inference batch size")
    p.add_argument("--iters", type=int, default=5, help="timed iterations per repeat")
    p.add_argument("--warmup", type=int, default=3, help="untimed warm-up iterations")
    p.add_argument("--repeats", type=int, default=3, help="repeats (best one is reported)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall: elapsed time (default); cpu: process CPU time, steadier on a busy machine "
        "(use with --threads 1, where CPU time is compute time)",
    )
    p.add_argument("--set", action="append", default=[], help="backbone option key=value (JSON)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    kw = {}
    for item in args.set:
        k, _, v = item.partition("=")
        try:
            kw[k] = json.loads(v)
        except json.JSONDecodeError:
            kw[k] = v
    names = [n for n in args.backbones.split(",") if n] + ([] if args.no_ref else [REF])
    shapes = [s for s in args.shapes.split(",") if s]
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        p.error(f"unknown shape(s) {unknown}; known: {', '.join(SHAPES)}")
    results = {s: run_shape(s, names, args, kw) for s in shapes}
    meta = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "infer_batch": args.infer_batch,
        "iters": args.iters,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "clock": args.clock,
        "backbone_options": kw,
    }
    if args.json:
        print(json.dumps({"meta": meta, "results": results}, indent=2))
    else:
        print_table(results, meta)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
