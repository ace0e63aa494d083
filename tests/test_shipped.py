"""Shipped checkpoints: listed, loadable with weights_only, and reproduce their recorded top-1."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import dataset_dir
from protoskel.cli import app
from protoskel.data.sequence import SkeletonSequence
from protoskel.inference import Predictor
from protoskel.training.registry import shipped_models

MODELS = shipped_models()


def test_models_list_json_matches_index() -> None:
    res = CliRunner().invoke(app, ["models", "list", "--json"])
    assert res.exit_code == 0
    rows = json.loads(res.stdout)["models"]
    assert [r["name"] for r in rows] == [m["name"] for m in MODELS]
    for r in rows:
        assert r["present"] and {"dataset", "stream", "top1", "path"} <= set(r)


@pytest.mark.parametrize("row", MODELS, ids=[m["name"] for m in MODELS])
def test_shipped_checkpoint_predicts_and_holds_no_dataset_keypoints(row: dict) -> None:
    pred = Predictor.from_checkpoint(row["name"])
    assert set(pred.checkpoint) >= {"model", "config", "classes", "layout"}
    assert "optimizer" not in pred.checkpoint
    # Resolved options, so a later change of a code default cannot change the network.
    assert set(pred.checkpoint["arch"]) == {"backbone", "head"}
    assert pred.checkpoint["config"]["name"] == row["name"]
    clip = np.random.default_rng(0).normal(size=(1, 30, pred.layout.num_joints, 3))
    out = pred.predict(SkeletonSequence(clip.astype(np.float32), pred.layout.name), top_k=3)
    assert len(out["predictions"]) == 3
    assert out["predictions"][0]["label"] in pred.classes


_SOURCES = {
    "nw-ucla": "nw-ucla",
    "msr-action3d": "msr-action3d",
    "penn-action": "penn-action-2d",
    "utkinect": "utkinect-action3d",
}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The real datasets the shipped models were trained on, prepared once for this module."""
    from protoskel.data.protocols import prepare_dataset

    out = {}
    for name, folder in _SOURCES.items():
        if any(m["dataset"] == name for m in MODELS):
            store = Path(tmp_path_factory.mktemp(name)) / name
            prepare_dataset(name, dataset_dir(folder), store)
            out[name] = store
    return out


@pytest.mark.parametrize(
    "row", [m for m in MODELS if m["dataset"] in _SOURCES], ids=lambda m: m["name"]
)
def test_shipped_checkpoint_reproduces_its_top1(row: dict, prepared: dict[str, Path]) -> None:
    from protoskel.training.trainer import evaluate

    m = evaluate(row["name"], prepared[row["dataset"]])
    assert m["n"] == row["n"]
    assert m["top1"] == pytest.approx(row["top1"], abs=0.01)


@pytest.mark.parametrize("row", [m for m in MODELS if m.get("invariance")], ids=lambda m: m["name"])
def test_shipped_invariant_model_predicts_the_same_on_rotated_copies(
    row: dict, tmp_path: Path
) -> None:
    """`protoskel predict` on a real clip and on rotated + shifted copies of its file."""
    from protoskel.data.readers.generic import write_generic_npz
    from protoskel.data.readers.nwucla import read_nwucla
    from protoskel.models.invariance import random_rotation

    root = dataset_dir("nw-ucla") / "all_sqe"
    clip = sorted(root.glob("*.json"))[100]
    seq = read_nwucla(clip)
    files = [write_generic_npz(seq, tmp_path / "clip.npz")]
    for i in range(3):
        rot = random_rotation(1, generator=torch.Generator().manual_seed(i))[0].double().numpy()
        kp = seq.keypoints.astype(np.float64)
        moved = kp @ rot.T + np.array([0.5 * i, -1.0, 2.0])
        moved = np.where((kp != 0).any(-1, keepdims=True), moved, 0.0).astype(np.float32)
        copy = SkeletonSequence(moved, seq.layout, id=f"rot{i}")
        files.append(write_generic_npz(copy, tmp_path / f"rot{i}.npz"))
    probs = []
    for f in files:
        res = CliRunner().invoke(app, ["predict", row["name"], str(f), "--top-k", "10", "--json"])
        assert res.exit_code == 0, res.output
        ranked = json.loads(res.stdout)["predictions"]
        probs.append(np.array([p["prob"] for p in sorted(ranked, key=lambda p: p["index"])]))
    assert max(np.abs(p - probs[0]).max() for p in probs[1:]) < 1e-4
    assert probs[0].max() > 0.2  # a real prediction, not a flat distribution
