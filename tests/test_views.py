"""Cross-view consistency: partner tables, partner draws, the loss, and training with it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from _tiny import CLASSES, tiny_clips, tiny_recipe
from protoskel.data.store import write_store
from protoskel.errors import ConfigError
from protoskel.training.checkpoint import load_checkpoint
from protoskel.training.config import Config, config_from_dict
from protoskel.training.trainer import train
from protoskel.training.views import pick_partners, symmetric_kl, view_partners

IDS = ["a1_s1_v01", "a1_s1_v02", "a1_s1_v03", "a2_s1_v01", "a2_s2_v02"]
LABELS = [0, 0, 0, 1, 1]


def test_view_partners_group_by_id_without_the_camera_part() -> None:
    got = view_partners(IDS, LABELS, r"_v\d+")
    assert [p.tolist() for p in got] == [[1, 2], [0, 2], [0, 1], [3], [4]]


def test_view_partners_refuse_a_pattern_that_pairs_other_classes() -> None:
    with pytest.raises(ConfigError, match="a1_s1_v01 and a2_s1_v01"):
        view_partners(IDS, LABELS, r"a\d_")
    with pytest.raises(ConfigError, match="not a regular expression"):
        view_partners(IDS, LABELS, "([")


def test_pick_partners_draws_among_the_other_views_only() -> None:
    parts = view_partners(IDS, LABELS, r"_v\d+")
    rows = np.array([0, 3, 0, 1, 2] * 40)
    a = pick_partners(parts, rows, torch.Generator().manual_seed(5))
    b = pick_partners(parts, rows, torch.Generator().manual_seed(5))
    assert np.array_equal(a, b)
    for r, p in zip(rows, a, strict=True):
        assert p in parts[r]
    assert set(a[rows == 0].tolist()) == {1, 2}  # both other views get drawn


def test_symmetric_kl_matches_the_definition() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    pa, pb = a.softmax(1).numpy(), b.softmax(1).numpy()
    kl = lambda p, q: (p * np.log(p / q)).sum(1).mean()  # noqa: E731
    want = (kl(pa, pb) + kl(pb, pa)) / 2
    assert float(symmetric_kl(a, b)) == pytest.approx(want, rel=1e-5)
    assert float(symmetric_kl(a, b)) == pytest.approx(float(symmetric_kl(b, a)), rel=1e-6)
    assert float(symmetric_kl(a, a + 3.0)) == pytest.approx(0.0, abs=1e-6)


@pytest.fixture(scope="module")
def two_view_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny clips seen by two cameras: view 2 is view 1 turned 40 degrees, with other noise."""
    one = tiny_clips(24, 0)
    c, s = np.cos(0.7), np.sin(0.7)
    yaw = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=np.float32)
    rng = np.random.default_rng(3)
    train_clips = []
    for clip in one:
        kp = clip.keypoints @ yaw.T + rng.normal(scale=0.03, size=clip.keypoints.shape)
        train_clips.append(dataclasses.replace(clip, id=f"{clip.id}_v1"))
        train_clips.append(
            dataclasses.replace(clip, id=f"{clip.id}_v2", keypoints=kp.astype(np.float32))
        )
    return write_store(
        tmp_path_factory.mktemp("views") / "store",
        {"train": train_clips, "val": tiny_clips(9, 1)},
        dataset="tiny",
        protocol="test",
        layout="kinect-v1-20",
        classes=CLASSES,
    )


def _cfg(**train_over: object) -> Config:
    d = tiny_recipe()
    d["data"]["augment"] = {"rotate": 0.2, "crop": [0.7, 1.0]}
    d["train"].update({"epochs": 3, "view_pattern": r"_v\d$", **train_over})
    return config_from_dict(d)


def test_training_with_view_consistency_changes_the_model_and_resumes_exactly(
    two_view_store: Path, tmp_path: Path
) -> None:
    full = train(_cfg(view_weight=1.0), two_view_store, tmp_path / "full", progress=False)
    train(_cfg(view_weight=1.0), two_view_store, tmp_path / "part", progress=False, max_epochs=1)
    train(_cfg(view_weight=1.0), two_view_store, tmp_path / "part", resume=True, progress=False)
    # Off, half the weight, and partners that are always the clip itself (no id has a twin):
    # each must train another model, so the weight and the partner draw both reach the loss.
    for name, over in {
        "off": {"view_weight": 0.0},
        "half": {"view_weight": 0.5},
        "self": {"view_weight": 1.0, "view_pattern": "_nomatch$"},
    }.items():
        train(_cfg(**over), two_view_store, tmp_path / name, progress=False)
    w = {r: load_checkpoint(tmp_path / r / "last.pt")["model"] for r in ("full", "part")}
    assert all(torch.equal(w["full"][k], w["part"][k]) for k in w["full"])
    for name in ("off", "half", "self"):
        other = load_checkpoint(tmp_path / name / "last.pt")["model"]
        assert any(not torch.allclose(w["full"][k], other[k]) for k in other), name
    assert np.isfinite(full["history"][-1]["train_loss"])


def test_a_pattern_that_pairs_other_classes_fails_before_the_run_folder(
    two_view_store: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="pairs clips of different classes"):
        train(_cfg(view_weight=1.0, view_pattern=r"_\d+_v\d$"), two_view_store, tmp_path / "r")
    assert not (tmp_path / "r").exists()
