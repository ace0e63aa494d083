"""`protoskel demo` end to end on tiny settings (synthetic data -> store -> train -> eval)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

import protoskel.demo as demo
from protoskel.cli import app
from protoskel.data.store import open_store
from protoskel.errors import ConfigError, DatasetError
from protoskel.training.checkpoint import load_checkpoint
from protoskel.training.config import load_config

REPO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / demo.DEMO_CONFIG
TINY = {"n_train_per_class": 3, "n_val_per_class": 1, "overrides": ["model.kwargs.width=8"]}


def test_packaged_recipe_matches_repository_copy() -> None:
    packaged = demo.demo_config_path()
    assert packaged.read_bytes() == REPO_CONFIG.read_bytes()
    cfg = load_config(packaged)
    assert cfg.model.backbone == "atgcn" and cfg.train.threads == 1


def test_run_demo_tiny(tmp_path: Path) -> None:
    res = demo.run_demo(
        tmp_path / "d", epochs=1, report=False, open_report=False, progress=False, **TINY
    )
    ck = load_checkpoint(res["checkpoint"])
    assert Path(res["checkpoint"]) == tmp_path / "d" / "run" / "last.pt"
    assert ck["config"]["model"]["kwargs"]["width"] == 8 and ck["epoch"] == 1
    assert ck["classes"] == list(demo_classes())
    st = open_store(res["data"])
    assert (len(st.split("train")), len(st.split("val"))) == (18, 6)
    assert res["n"] == 6 and 0.0 <= res["top1"] <= 100.0
    assert set(res["per_class"]) == set(demo_classes())
    assert Path(res["sample"]).is_file() and Path(res["confusion_png"]).is_file()
    assert res["report"] is None
    # A second run replaces the previous demo's store instead of failing.
    again = demo.run_demo(
        tmp_path / "d", epochs=1, report=False, open_report=False, progress=False, **TINY
    )
    assert again["top1"] == pytest.approx(res["top1"])


def test_cli_demo_prints_accuracy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = demo.run_demo
    monkeypatch.setattr(demo, "run_demo", lambda out, **kw: real(out, **TINY, **kw))
    out = tmp_path / "cli"
    r = CliRunner().invoke(app, ["demo", "--out", str(out), "--epochs", "1", "--no-open"])
    assert r.exit_code == 0, r.output
    m = re.search(r"val accuracy (\d+\.\d)% .*chance 16\.7%, 6 clips", r.stdout)
    assert m is not None, r.stdout
    assert f"checkpoint: {out / 'run' / 'last.pt'}" in r.stdout
    assert (out / "run" / "last.pt").is_file() and (out / "run" / "log.csv").is_file()

    r = CliRunner().invoke(app, ["demo", "--out", str(out), "--epochs", "1", "--json", "--no-open"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["checkpoint"] == str(out / "run" / "last.pt") and summary["n"] == 6


def test_demo_refuses_foreign_data_folder_and_bad_values(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not a protoskel store"):
        demo.run_demo(tmp_path, epochs=1, report=False, progress=False, **TINY)
    assert (tmp_path / "data" / "notes.txt").read_text() == "mine"
    with pytest.raises(ConfigError, match="epochs"):
        demo.run_demo(tmp_path / "x", epochs=0, report=False, progress=False)


def demo_classes() -> tuple[str, ...]:
    """The synthetic class names."""
    from protoskel.data.synthetic import CLASSES

    return CLASSES
