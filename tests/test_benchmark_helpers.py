"""The pieces of the benchmark scripts that decide what a number means (deletion, rotations)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _tiny_run(tmp_path: Path, **data: object) -> Path:
    """A 2-epoch tiny atgcn run in ``tmp_path/run`` on a tiny store; returns the store."""
    import yaml

    from _tiny import write_tiny_store
    from protoskel.training.config import load_config
    from protoskel.training.trainer import train

    store = write_tiny_store(tmp_path / "store")
    recipe = {
        "model": {"backbone": "atgcn", "kwargs": {"width": 8, "depth": 3}},
        "data": {"num_frames": 12, **data},
        "train": {"epochs": 2, "batch_size": 6, "optimizer": "adamw", "lr": 0.01, "threads": 1},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    train(load_config(tmp_path / "r.yaml"), store, tmp_path / "run", progress=False)
    return store


def test_deletion_removes_cells_in_rank_order_and_step_counts() -> None:
    deletion = _load("deletion")
    x = torch.arange(1, 1 + 3 * 4 * 5 * 2, dtype=torch.float32).reshape(1, 3, 4, 5, 2)
    imp = np.zeros((4, 5))
    imp[2, 3], imp[0, 1] = 5.0, 2.0  # most important cell first, then the runner-up
    order = deletion.ranking(imp, np.arange(20))
    assert list(order[:2]) == [2 * 5 + 3, 0 * 5 + 1] and sorted(order) == list(range(20))
    xs, frac = deletion.deletion_inputs(x, order, steps=4, mode="zero")
    assert xs.shape == (5, 3, 4, 5, 2) and frac[0] == 0 and frac[-1] == 1
    assert torch.equal(xs[0], x[0])  # step 0 deletes nothing
    assert (xs[1][:, 2, 3] == 0).all() and (xs[1][:, 0, 1] == 0).all()  # 5 of 20 cells gone
    assert int((xs[1] == 0).all(dim=0).all(dim=-1).sum()) == 5
    assert (xs[-1] == 0).all()
    still, _ = deletion.deletion_inputs(x, order, steps=4, mode="still")
    # Held still: the joint sits at its mean position over the clip.
    assert torch.allclose(still[-1][:, 0], x[0].mean(dim=1))


def test_ties_follow_the_shared_random_order() -> None:
    deletion = _load("deletion")
    tiebreak = np.random.default_rng(0).permutation(12)
    assert list(deletion.ranking(np.zeros((3, 4)), tiebreak)) == list(tiebreak)


def test_rotated_copies_are_rigid_and_keep_missing_joints() -> None:
    rotated_eval = _load("rotated_eval")

    class Split:
        offsets = np.array([0, 3, 5])
        keypoints = np.random.default_rng(1).normal(size=(5, 2, 4, 3)).astype(np.float32)
        scores = None
        labels = np.array([0, 1])
        subjects = views = np.array([0, 0])
        ids = ("a", "b")

        def __len__(self) -> int:
            return 2

    Split.keypoints[:, 1] = 0  # an absent second person
    for kind in ("vertical", "random"):
        rots = rotated_eval.clip_rotations(2, kind, seed=0)
        assert np.allclose(rots @ rots.transpose(0, 2, 1), np.eye(3), atol=1e-9)
        assert np.allclose(np.linalg.det(rots), 1.0)
        if kind == "vertical":
            assert np.allclose(rots[:, 1], [0, 1, 0]) and np.allclose(rots[:, :, 1], [0, 1, 0])
        out = rotated_eval.rotated(Split(), rots)
        assert (out.keypoints[:, 1] == 0).all()
        dist = np.linalg.norm(out.keypoints[:3, 0, 0] - out.keypoints[:3, 0, 1], axis=-1)
        ref = np.linalg.norm(Split.keypoints[:3, 0, 0] - Split.keypoints[:3, 0, 1], axis=-1)
        assert np.allclose(dist, ref, atol=1e-5)
    assert np.allclose(rotated_eval.clip_rotations(2, "original", 0), np.eye(3))


def test_ship_checkpoint_test_flip_keeps_weights_and_records_the_mirrored_score(
    tmp_path: Path, monkeypatch
) -> None:
    import json

    from protoskel.training.checkpoint import load_checkpoint
    from protoskel.training.trainer import evaluate

    store = _tiny_run(tmp_path)
    ship = _load("ship_checkpoint")
    monkeypatch.setattr(ship, "shipped_dir", lambda: tmp_path / "shipped")
    (tmp_path / "shipped").mkdir()
    run = str(tmp_path / "run" / "last.pt")
    argv = ["ship", run, "--name", "tiny", "--data", str(store), "--test-flip"]
    monkeypatch.setattr(sys, "argv", argv)
    ship.main()
    row = json.loads((tmp_path / "shipped" / "index.json").read_text())["models"][0]
    shipped = load_checkpoint(tmp_path / "shipped" / "tiny.pt")
    original = load_checkpoint(run)
    assert row["test_flip"] is True and shipped["config"]["data"]["test_flip"] is True
    assert shipped["config"]["name"] == "tiny"
    assert original["config"]["data"]["test_flip"] is False
    assert all(torch.equal(shipped["model"][k], original["model"][k]) for k in original["model"])
    assert row["top1"] == round(evaluate(run, store, flip=True)["top1"], 2)
    assert row["test_clips"] == 1

    argv = ["ship", run, "--name", "tiny3", "--data", str(store), "--test-clips", "3"]
    monkeypatch.setattr(sys, "argv", argv)
    ship.main()
    row = json.loads((tmp_path / "shipped" / "index.json").read_text())["models"][1]
    shipped = load_checkpoint(tmp_path / "shipped" / "tiny3.pt")
    assert row["test_clips"] == 3 and shipped["config"]["data"]["test_clips"] == 3
    assert row["test_flip"] is False
    assert row["top1"] == round(evaluate(run, store, clips=3)["top1"], 2)
    argv = ["ship", run, "--name", "tiny0", "--data", str(store), "--test-clips", "0"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as e:
        ship.main()
    assert e.value.code == 2 and not (tmp_path / "shipped" / "tiny0.pt").exists()


def test_rotated_eval_follows_the_recipe_flip_unless_told(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    import json

    from protoskel.training.trainer import evaluate

    store = _tiny_run(tmp_path, test_flip=True)
    run = str(tmp_path / "run" / "last.pt")
    rot = _load("rotated_eval")
    rows = {}
    for extra in ([], ["--no-flip"]):
        argv = ["rot", run, "--data", str(store), "--sets", "original", "--json", *extra]
        monkeypatch.setattr(sys, "argv", argv)
        rot.main()
        rows[bool(extra)] = json.loads(capsys.readouterr().out)[run]
    assert rows[False]["flip"] is True and rows[True]["flip"] is False
    assert rows[False]["original"] == evaluate(run, store, flip=True)["top1"]
    assert rows[True]["original"] == evaluate(run, store, flip=False)["top1"]


def test_clip_stats_travel_and_extent_in_body_lengths() -> None:
    from protoskel.layouts import get_layout

    stats = _load("clip_stats").clip_stats
    lay = get_layout("kinect-v1-20")
    rng = np.random.default_rng(0)
    body = rng.normal(size=(20, 3)).astype(np.float32)
    up = lay.up[1] - lay.up[0]
    unit = np.linalg.norm(np.einsum("v,vc->c", up, body))
    # Clip 0 stands still for 3 frames; clip 1 walks 2 units along x over 5 frames.
    walk = body[None] + np.array([[t * 0.5, 0.0, 0.0] for t in range(5)])[:, None, :]
    frames = np.concatenate([np.repeat(body[None], 3, axis=0), walk])[:, None]
    got = stats(frames, np.array([0, 3]), np.array([3, 5]), lay)
    assert got["frames"].tolist() == [3, 5]
    np.testing.assert_allclose(got["travel"], [0.0, 2.0 / unit], rtol=1e-5)
    still = (body.max(0) - body.min(0)) / unit
    np.testing.assert_allclose(got["extent"][0], still, rtol=1e-5)
    walked = still + np.array([2.0 / unit, 0.0, 0.0])
    np.testing.assert_allclose(got["extent"][1], walked, rtol=1e-5)


def test_occlusion_table_matches_eval_per_part(tmp_path: Path) -> None:
    from protoskel.data.store import open_store
    from protoskel.training.trainer import evaluate

    occlusion = _load("occlusion")
    store = _tiny_run(tmp_path)
    ck = str(tmp_path / "run" / "last.pt")
    (row,) = occlusion.occlusion_table([ck], store)
    parts = list(open_store(store).layout.parts)
    assert list(row["hidden"]) == parts
    assert row["clean"] == evaluate(ck, store)["top1"]
    assert row["hidden"][parts[1]] == evaluate(ck, store, occlude=parts[1])["top1"]
    assert row["mean_hidden"] == sum(row["hidden"].values()) / len(parts)


def test_subject_splits_parses_ranges_and_summarises() -> None:
    ss = _load("subject_splits")
    assert ss.parse_splits("0-3,7") == [0, 1, 2, 3, 7] and ss.parse_splits("5") == [5]
    s = ss.summary({0: 90.0, 1: 100.0})
    assert (s["mean"], s["std"], s["min"], s["max"]) == (95.0, 5.0, 90.0, 100.0)


def test_subject_splits_trains_each_split_once(tmp_path: Path) -> None:
    import scipy.io
    import yaml

    from test_datasets_cli import fake_utkinect

    ss = _load("subject_splits")
    src = fake_utkinect(tmp_path)
    tr, te = np.array([[1], [2]]), np.array([[2], [1]])
    scipy.io.savemat(src / "tr_te_splits.mat", {"tr_subjects": tr, "te_subjects": te})
    recipe = {
        "model": {"backbone": "atgcn", "kwargs": {"width": 8, "depth": 3}},
        "data": {"num_frames": 8, "val_split": "test"},
        "train": {"epochs": 2, "batch_size": 2, "optimizer": "adamw", "lr": 0.01, "threads": 1},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    top1 = ss.run_split("utkinect", str(src), str(tmp_path / "r.yaml"), [], tmp_path / "b", 1)
    store, last = tmp_path / "b" / "store-1", tmp_path / "b" / "run-1" / "last.pt"
    from protoskel.data.store import open_store
    from protoskel.training.trainer import evaluate

    assert set(open_store(store).split("train").subjects.tolist()) == {2}
    assert top1 == evaluate(last, store, split="test")["top1"]
    stamp = last.stat().st_mtime_ns
    assert (
        ss.run_split("utkinect", str(src), str(tmp_path / "r.yaml"), [], tmp_path / "b", 1) == top1
    )
    assert last.stat().st_mtime_ns == stamp  # finished: evaluated again, not retrained
