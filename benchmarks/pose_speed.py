"""Speed of video -> skeleton extraction (MediaPipe Pose, model_complexity=1, CPU), one run.

Usage: python benchmarks/pose_speed.py [VIDEO] [--max-frames N]
VIDEO defaults to ../shared/media/vtest.avi (795 frames, 768x576, 10 fps) next to the repository,
or $PROTOSKEL_MEDIA/vtest.avi. Wall time includes opening the video and loading the model;
"extraction" is the per-frame loop only. One run: on a shared machine, treat it as indicative.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

from protoskel.pose import extract_pose

REPO = Path(__file__).resolve().parents[1]
DEFAULT_VIDEO = Path(os.environ.get("PROTOSKEL_MEDIA", REPO.parent / "shared" / "media")) / (
    "vtest.avi"
)


def main() -> None:
    """Run one extraction and print frames, frames with a pose, wall time and frames/s."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("video", nargs="?", type=Path, default=DEFAULT_VIDEO)
    ap.add_argument("--max-frames", type=int, default=None)
    args = ap.parse_args()

    import cv2
    import mediapipe as mp

    start = time.perf_counter()
    seq = extract_pose(args.video, max_frames=args.max_frames, progress=False)
    wall = time.perf_counter() - start
    loop = float(seq.meta["extraction_seconds"])
    width, height = seq.meta["image_size"]
    print(f"video               {args.video.name} ({width}x{height}, {seq.fps} fps)")
    print(f"mediapipe / opencv  {mp.__version__} / {cv2.__version__}, model_complexity=1")
    print(
        f"cpu                 {os.cpu_count()} cores, {platform.processor() or platform.machine()}"
    )
    print(f"frames              {seq.num_frames}")
    print(f"frames with pose    {seq.meta['frames_with_pose']}")
    print(f"wall time           {wall:.2f} s (incl. model load)")
    print(f"extraction time     {loop:.2f} s")
    n = seq.num_frames
    print(f"frames/s            {n / wall:.1f} (wall), {n / loop:.1f} (extraction loop)")


if __name__ == "__main__":
    main()
