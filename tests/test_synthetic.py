"""The procedural synthetic action generator (protoskel.data.synthetic)."""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pytest

from protoskel.data.synthetic import (
    CLASSES,
    FPS,
    LAYOUT,
    generate,
    subject_bones,
    synthetic_splits,
    write_synthetic_store,
)
from protoskel.errors import ConfigError
from protoskel.layouts import get_layout

LAY = get_layout(LAYOUT)


def _stack(clips: list) -> np.ndarray:
    return np.concatenate([c.keypoints for c in clips], axis=1)


def test_same_seed_same_clips_other_seed_differs() -> None:
    a, b, c = generate(3, seed=7), generate(3, seed=7), generate(3, seed=8)
    assert [s.id for s in a] == [s.id for s in b]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.keypoints, y.keypoints)
        assert (x.label, x.subject, x.view, x.meta) == (y.label, y.subject, y.view, y.meta)
    same_shape = [
        (x, y) for x, y in zip(a, c, strict=True) if x.keypoints.shape == y.keypoints.shape
    ]
    assert not all(np.array_equal(x.keypoints, y.keypoints) for x, y in same_shape)
    assert [s.num_frames for s in a] != [s.num_frames for s in c]


def test_shapes_metadata_and_validation() -> None:
    clips = generate(4, seed=0)
    assert len(clips) == 4 * len(CLASSES)
    for s in clips:
        s.validate(layout=LAY)  # float32, finite, (M, T, V, C) in the layout
        assert s.layout == LAYOUT
        assert s.keypoints.shape[0] == 1 and s.keypoints.shape[2:] == (20, 3)
        assert 30 <= s.num_frames <= 70
        assert s.scores is None and s.fps == FPS
        assert s.id == f"syn_{CLASSES[s.label]}_{int(s.id[-4:]):04d}"
        assert 0 <= s.subject < 10 and s.view in (0, 1, 2)
    assert len({s.id for s in clips}) == len(clips)
    assert len({s.num_frames for s in clips}) > 5  # lengths vary


def test_class_balance_and_order() -> None:
    clips = generate(5, seed=1)
    assert Counter(s.label for s in clips) == dict.fromkeys(range(len(CLASSES)), 5)
    assert [s.label for s in clips] == sorted(s.label for s in clips)
    sub = generate(2, seed=1, classes=["squat", "jump"])
    assert [s.meta["class"] for s in sub] == ["squat", "squat", "jump", "jump"]
    assert [s.label for s in sub] == [0, 0, 1, 1]


def test_bone_lengths_constant_without_noise() -> None:
    clips = generate(3, seed=2, noise=0.0, glitch_prob=0.0)
    child = np.array([c for c, _ in LAY.bones])
    parent = np.array([p for _, p in LAY.bones])
    for s in clips:
        kp = s.keypoints[0].astype(np.float64)
        lengths = np.linalg.norm(kp[:, child] - kp[:, parent], axis=-1)  # (T, bones)
        np.testing.assert_allclose(lengths, lengths[:1].repeat(len(kp), 0), atol=2e-5)
        # ... and they are this subject's bones.
        ref = np.linalg.norm(subject_bones(s.subject)[child], axis=-1)
        np.testing.assert_allclose(lengths[0], ref, atol=2e-5)


def test_noise_perturbs_but_keeps_bones_close() -> None:
    clean = generate(2, seed=3, noise=0.0, glitch_prob=0.0)
    noisy = generate(2, seed=3, noise=0.015, glitch_prob=0.0)
    diff = np.concatenate(
        [(a.keypoints - b.keypoints).ravel() for a, b in zip(clean, noisy, strict=True)]
    )
    assert 0.01 < diff.std() < 0.02


def test_anatomy_head_up_feet_down_person_in_front_of_camera() -> None:
    kp = _stack(generate(4, seed=4))[0]  # (T_all, V, 3)
    head, hip = LAY.index("head"), LAY.index("hip_center")
    feet = [LAY.index("left_foot"), LAY.index("right_foot")]
    assert (kp[:, head, 1] > kp[:, hip, 1] + 0.3).all()
    assert (kp[:, feet, 1].max(1) < kp[:, hip, 1]).all()
    assert (kp[:, hip, 2] > 2.0).all() and (np.abs(kp[:, hip, 0]) < 1.0).all()
    # Standing adults: head 1.4-2.1 m above the lowest foot in a standing frame.
    standing = kp[:, head, 1] - kp[:, feet, 1].min(1)
    assert 1.4 < np.median(standing) < 2.1


def test_actions_move_the_expected_limbs() -> None:
    clips = generate(6, seed=5, noise=0.0, glitch_prob=0.0, max_yaw_deg=0.0)
    hand_l, hand_r = LAY.index("left_hand"), LAY.index("right_hand")
    head, hip = LAY.index("head"), LAY.index("hip_center")

    def mean_over(name: str, fn) -> float:
        return float(np.mean([fn(s.keypoints[0]) for s in clips if s.meta["class"] == name]))

    # Waving raises that hand above the head at some point.
    def lift(k: np.ndarray, j: int) -> float:
        return float((k[:, j, 1] - k[:, head, 1]).max())

    assert mean_over("wave_right", lambda k: lift(k, hand_r)) > 0.0
    assert mean_over("wave_right", lambda k: lift(k, hand_l)) < -0.3
    assert mean_over("wave_left", lambda k: lift(k, hand_l)) > 0.0
    # Squats lower the hips; jumps raise them above their start.
    drop = mean_over("squat", lambda k: k[0, hip, 1] - k[:, hip, 1].min())
    rise = mean_over("jump", lambda k: k[:, hip, 1].max() - k[0, hip, 1])
    assert drop > 0.2 and rise > 0.05
    # Punching reaches the right hand forward (towards the camera, -z) far beyond the left.
    sh_l, sh_r = LAY.index("left_shoulder"), LAY.index("right_shoulder")
    reach_r = mean_over("punch_right", lambda k: (k[:, sh_r, 2] - k[:, hand_r, 2]).max())
    reach_l = mean_over("punch_right", lambda k: (k[:, sh_l, 2] - k[:, hand_l, 2]).max())
    assert reach_r > 0.5 and reach_r > reach_l + 0.15


def test_subjects_are_a_fixed_cast() -> None:
    np.testing.assert_array_equal(subject_bones(3), subject_bones(3))
    assert not np.allclose(subject_bones(3), subject_bones(4))
    clips = generate(5, seed=6, subjects=[7, 8])
    assert {s.subject for s in clips} <= {7, 8}
    splits = synthetic_splits(2, 1, seed=0)
    assert {s.subject for s in splits["train"]}.isdisjoint({s.subject for s in splits["val"]})
    ids = [s.id for v in splits.values() for s in v]
    assert len(set(ids)) == len(ids)


def test_views_follow_yaw() -> None:
    clips = generate(10, seed=9)
    for s in clips:
        yaw = s.meta["yaw_deg"]
        assert s.view == (0 if yaw < -20 else 1 if yaw < 20 else 2)
    assert {s.view for s in clips} == {0, 1, 2}


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="unknown"):
        generate(1, classes=["fly"])
    with pytest.raises(ConfigError, match="n_per_class"):
        generate(-1)
    with pytest.raises(ConfigError, match="subject"):
        generate(1, subjects=[])
    assert generate(0) == []


def test_fast() -> None:
    generate(1, seed=0)  # warm-up (imports, layout cache)
    t0 = time.perf_counter()
    clips = generate(50, seed=0)
    assert len(clips) == 300
    assert time.perf_counter() - t0 < 1.0


def test_write_store_roundtrip(tmp_path) -> None:
    from protoskel.data.store import open_store

    out = write_synthetic_store(tmp_path / "syn", n_train_per_class=2, n_val_per_class=1, seed=3)
    st = open_store(out)
    assert st.classes == list(CLASSES) and st.layout.name == LAYOUT
    assert len(st.split("train")) == 12 and len(st.split("val")) == 6
    again = synthetic_splits(2, 1, seed=3)["train"][4]
    got = st.split("train").get(4)
    assert got.id == again.id
    np.testing.assert_array_equal(got.keypoints, again.keypoints)
