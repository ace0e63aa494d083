"""Pose extraction: video -> SkeletonSequence (MediaPipe Pose, offline), see ``mediapipe_pose``."""

from protoskel.pose.mediapipe_pose import (
    available_model_complexities,
    extract_pose,
    write_pose_npz,
)

__all__ = ["available_model_complexities", "extract_pose", "write_pose_npz"]
