"""Shipped checkpoints: listed, loadable with weights_only, and reproduce their recorded top-1."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
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
    clip = np.random.default_rng(0).normal(size=(1, 30, pred.layout.num_joints, 3))
    out = pred.predict(SkeletonSequence(clip.astype(np.float32), pred.layout.name), top_k=3)
    assert len(out["predictions"]) == 3
    assert out["predictions"][0]["label"] in pred.classes


@pytest.mark.parametrize(
    "row", [m for m in MODELS if m["dataset"] == "nw-ucla"], ids=lambda m: m["name"]
)
def test_shipped_nwucla_checkpoint_reproduces_its_top1(
    row: dict, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from protoskel.data.protocols import prepare_dataset
    from protoskel.training.trainer import evaluate

    src = dataset_dir("nw-ucla")
    store = Path(tmp_path_factory.mktemp("ucla")) / "nw-ucla"
    prepare_dataset("nw-ucla", src, store)
    m = evaluate(row["name"], store)
    assert m["n"] == row["n"] == 464
    assert m["top1"] == pytest.approx(row["top1"], abs=0.01)
