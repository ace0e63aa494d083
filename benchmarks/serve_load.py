"""Bounded load test of ``protoskel serve`` on loopback: throughput, latency percentiles, errors.

Usage: python benchmarks/serve_load.py [CHECKPOINT] [--clip FILE] [--requests 200]
       [--concurrency 8] [--warmup 8] [--json-body]

Starts ``protoskel serve CHECKPOINT`` as a subprocess on 127.0.0.1 (a free port; never another
interface), waits for ``/health``, sends ``--warmup`` requests, then exactly ``--requests``
``POST /predict`` requests from ``--concurrency`` client threads, each with its own keep-alive
connection (standard library ``http.client``, so the client adds little overhead). The clip is
uploaded as multipart NPZ, or sent as a JSON body with ``--json-body``. Without CHECKPOINT a tiny
atgcn (width 8, depth 3, 2 epochs) is trained on the synthetic set in a temp folder first, and
a synthetic validation clip is used. Latency is per request, from sending to the full response.
Exits with status 1 when any request failed. One run: on a shared machine, treat it as
indicative.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

HOST = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _tiny_model(root: Path) -> tuple[Path, Path]:
    """Train the tiny synthetic model; return (checkpoint, a validation clip as NPZ)."""
    from protoskel.data.readers import write_generic_npz
    from protoskel.data.store import open_store
    from protoskel.data.synthetic import write_synthetic_store
    from protoskel.training.config import config_from_dict
    from protoskel.training.trainer import train

    store = write_synthetic_store(root / "store", n_train_per_class=4, n_val_per_class=2)
    cfg = {
        "model": {"backbone": "atgcn", "kwargs": {"width": 8, "depth": 3, "groups": 2}},
        "data": {"num_frames": 16},
        "train": {"epochs": 2, "batch_size": 8, "optimizer": "adamw", "lr": 0.003,
                  "warmup_epochs": 0, "threads": 1},
    }  # fmt: skip
    train(config_from_dict(cfg), store, root / "run", progress=False)
    clip = write_generic_npz(open_store(store).split("val").get(0), root / "synthetic_clip.npz")
    return root / "run" / "last.pt", clip


def _request_body(clip: Path, as_json: bool) -> tuple[bytes, str]:
    """The /predict body and its content type."""
    if as_json:
        from protoskel.data.readers import read_clip

        seq = read_clip(clip)
        body = {"keypoints": seq.keypoints.tolist(), "layout": seq.layout}
        return json.dumps(body).encode(), "application/json"
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{clip.name}"'
        "\r\nContent-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return head + clip.read_bytes() + f"\r\n--{boundary}--\r\n".encode(), (
        f"multipart/form-data; boundary={boundary}"
    )


def _wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with status {proc.returncode}")
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("server did not answer /health in time")


def _run_load(
    port: int, body: bytes, ctype: str, total: int, concurrency: int
) -> tuple[list[float], list[str], float]:
    """Send ``total`` requests from ``concurrency`` threads; latencies (s), errors, wall (s)."""
    lock = threading.Lock()
    state = {"next": 0}
    latencies: list[float] = []
    errors: list[str] = []
    headers = {"Content-Type": ctype, "Content-Length": str(len(body))}

    def worker() -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=120)
        while True:
            with lock:
                if state["next"] >= total:
                    break
                state["next"] += 1
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/predict", body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                dt = time.perf_counter() - t0
                ok = resp.status == 200 and b'"predictions"' in data
                with lock:
                    latencies.append(dt)
                    if not ok:
                        errors.append(f"HTTP {resp.status}: {data[:200]!r}")
            except (OSError, http.client.HTTPException) as e:
                with lock:
                    errors.append(f"{type(e).__name__}: {e}")
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=120)
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors, time.perf_counter() - start


def main() -> None:
    """Start the server, run the load, print the summary (exit 1 on any error)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", nargs="?", type=Path, default=None)
    ap.add_argument("--clip", type=Path, default=None, help="Clip to send (default: synthetic).")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--json-body", action="store_true", help="Send JSON keypoints, not NPZ.")
    args = ap.parse_args()
    if args.requests < 1 or args.concurrency < 1 or args.warmup < 0:
        raise SystemExit("--requests and --concurrency must be >= 1, --warmup >= 0")

    with tempfile.TemporaryDirectory(prefix="protoskel-serve-load-") as tmp:
        checkpoint, clip = args.checkpoint, args.clip
        if checkpoint is None:
            print("training a tiny synthetic model ...", file=sys.stderr)
            checkpoint, synthetic = _tiny_model(Path(tmp))
            clip = clip or synthetic
        if clip is None:
            raise SystemExit("--clip FILE is needed with a CHECKPOINT")
        body, ctype = _request_body(clip, args.json_body)
        port = _free_port()
        cmd = [sys.executable, "-m", "protoskel.cli", "serve", str(checkpoint),
               "--host", HOST, "--port", str(port), "--log-level", "warning"]  # fmt: skip
        proc = subprocess.Popen(cmd)
        try:
            _wait_healthy(port, proc)
            if args.warmup:
                _run_load(port, body, ctype, args.warmup, min(args.warmup, args.concurrency))
            lat, errors, wall = _run_load(port, body, ctype, args.requests, args.concurrency)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()

    ms = np.asarray(lat) * 1000.0
    kind = "JSON body" if args.json_body else "multipart NPZ upload"
    print(f"server        protoskel serve {Path(checkpoint).name} on {HOST} (subprocess)")
    print(f"request       POST /predict, {kind} of {clip.name}, {len(body) / 1024:.1f} KB")
    print(f"load          {args.requests} requests at concurrency {args.concurrency} "
          f"(after {args.warmup} warm-up)")  # fmt: skip
    print(f"cpu           {os.cpu_count()} cores")
    print(f"wall time     {wall:.2f} s")
    print(f"throughput    {len(lat) / wall:.1f} req/s")
    if ms.size:
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        print(f"latency       p50 {p50:.1f} ms, p90 {p90:.1f} ms, p99 {p99:.1f} ms, "
              f"max {ms.max():.1f} ms")  # fmt: skip
    print(f"errors        {len(errors)}")
    for e in errors[:5]:
        print(f"  {e}")
    if errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
