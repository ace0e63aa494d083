"""Pose extraction: video -> SkeletonSequence (MediaPipe Pose, offline), see ``mediapipe_pose``."""

from protoskel.pose.mediapipe_pose import (
    LAYOUT,
    PoseFrame,
    available_model_complexities,
    extract_pose,
    pose_frames,
    write_pose_npz,
)

__all__ = [
    "LAYOUT",
    "PoseFrame",
    "available_model_complexities",
    "extract_pose",
    "pose_frames",
    "write_pose_npz",
]
