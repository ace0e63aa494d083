"""Recipes are validated strictly; metrics match hand-computed values."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pytest

from protoskel.errors import ConfigError
from protoskel.models.registry import list_backbones
from protoskel.training.config import load_config
from protoskel.training.ensemble import fit_weights
from protoskel.training.metrics import classification_metrics
from protoskel.training.trainer import holdout_indices, lr_at


def test_defaults_and_overrides(tmp_path) -> None:
    p = tmp_path / "r.yaml"
    p.write_text("model:\n  backbone: stgcn\ntrain:\n  epochs: 3\n")
    cfg = load_config(p, ["train.lr=0.05", "data.stream=bone", "model.kwargs={width: 8}"])
    assert cfg.model.backbone == "stgcn"
    assert cfg.train.epochs == 3 and cfg.train.lr == 0.05
    assert cfg.data.stream == "bone" and cfg.model.kwargs == {"width": 8}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("train:\n  lrr: 0.1\n", "train.lrr: unknown key"),
        ("train:\n  epochs: many\n", "train.epochs: expected an integer"),
        ("data:\n  stream: skeleton\n", "data.stream: must be one of"),
        ("data:\n  stream: joint+joint\n", "each once"),
        ("data:\n  stream: joint+skeleton\n", "data.stream: must be one of"),
        (
            "model:\n  invariance: frame_averaging\ndata:\n  stream: joint+bone\n",
            "does not support stacked streams",
        ),
        (
            "model:\n  invariance: frame_averaging\ndata:\n  stream: angle\n",
            "model.invariance: the angle stream is already unchanged by camera rotations",
        ),
        (
            "model:\n  invariance: frame_averaging\ndata:\n  stream: distance\n",
            "model.invariance: the distance stream is already unchanged by camera rotations",
        ),
        ("train:\n  optimizer: rmsprop\n", "train.optimizer"),
        ("data:\n  augment:\n    rotat: 0.1\n", "data.augment.rotat: unknown augmentation"),
        ("data:\n  augment:\n    travel: [1, 0.5]\n", "data.augment.travel.range"),
        ("train:\n  view_weight: 1.0\n", "train.view_pattern: is needed"),
        ("model: 3\n", "model: expected a mapping"),
        ("train: [1, 2\n", "line"),
    ],
)
def test_bad_recipe_names_key(tmp_path, text: str, needle: str) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=r"bad\.yaml") as e:
        load_config(p)
    assert needle in str(e.value)


def test_bad_override() -> None:
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.lr"])


def test_metrics_by_hand() -> None:
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.2, 0.7]])
    y = np.array([0, 1, 1, 0])
    m = classification_metrics(scores, y, ["a", "b", "c"])
    assert m["top1"] == 50.0
    assert m["n"] == 4
    assert m["per_class"] == {"a": 50.0, "b": 50.0, "c": None}
    assert m["mean_class_acc"] == 50.0
    assert m["confusion"] == [[1, 0, 1], [1, 1, 0], [0, 0, 0]]
    assert m["top5"] == 100.0


def test_lr_schedule_warmup_then_cosine() -> None:
    cfg = load_config(None, ["train.epochs=10", "train.warmup_epochs=2", "train.lr=1.0"])
    steps = 5
    lrs = [lr_at(s, steps, cfg) for s in range(50)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))
    assert lrs[-1] < 0.01


def test_lr_schedule_step_decays_at_the_milestones() -> None:
    cfg = load_config(
        None,
        [
            *["train.epochs=10", "train.warmup_epochs=2", "train.lr=1.0"],
            *["train.schedule=step", "train.milestones=[5, 8]", "train.lr_decay=0.5"],
        ],
    )
    steps = 4
    by_epoch = [lr_at(e * steps, steps, cfg) for e in range(10)]
    assert by_epoch[0] == pytest.approx(0.125)  # warm-up: first of 8 steps
    assert by_epoch[2:5] == pytest.approx([1.0, 1.0, 1.0])
    assert by_epoch[5:8] == pytest.approx([0.5, 0.5, 0.5])
    assert by_epoch[8:] == pytest.approx([0.25, 0.25])
    # The decay happens at the first step of the milestone epoch, not before.
    assert lr_at(5 * steps - 1, steps, cfg) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["train.schedule=step"], "train.milestones: schedule step needs"),
        (["train.schedule=step", "train.milestones=[30]"], "between 6 and 29"),
        (
            ["train.schedule=step", "train.warmup_epochs=5", "train.milestones=[5, 20]"],
            "after the warm-up and before the end: between 6 and 29 (train.warmup_epochs=5",
        ),
        (["train.schedule=step", "train.warmup_epochs=0", "train.milestones=[0]"], "between 1 and"),
        (["train.schedule=step", "train.milestones=[20, 10]"], "must be increasing"),
        (["train.milestones=[x]"], "train.milestones[0]: expected an integer"),
        (["train.lr_decay=0"], "train.lr_decay: must be in (0, 1]"),
        (["train.schedule=linear"], "must be cosine, constant or step"),
    ],
)
def test_step_schedule_is_validated(overrides: list[str], needle: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(needle)):
        load_config(None, ["train.epochs=30", *overrides])


def test_holdout_is_seeded_and_disjoint() -> None:
    keep, held = holdout_indices(100, 0.1, seed=3)
    _, held2 = holdout_indices(100, 0.1, seed=3)
    assert len(held) == 10 and not set(keep) & set(held)
    np.testing.assert_array_equal(held, held2)
    assert len(holdout_indices(100, 0.0, 0)[1]) == 0


def test_fit_weights_prefers_the_informative_member() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    good = np.eye(3)[y] * 0.8 + 0.1
    noise = rng.random((200, 3))
    w = fit_weights([noise, good], y, step=0.25)
    assert w[1] > w[0]
    assert sum(w) == pytest.approx(1.0)


def test_fit_weights_breaks_top1_ties_by_log_loss() -> None:
    # Both members are right on every clip, so every weighting ties on top-1; the confident
    # member gives the true class more probability and should get all the weight.
    y = np.array([0, 1, 2, 0, 1])
    sure = np.eye(3)[y] * 0.85 + 0.05
    unsure = np.eye(3)[y] * 0.15 + 0.85 / 3
    assert fit_weights([unsure, sure], y, step=0.25) == [0.0, 1.0]
    assert fit_weights([sure, sure.copy()], y, step=0.25) == [0.5, 0.5]  # exact tie: uniform


def test_box_normalisation_moves_inside_the_invariance_wrapper() -> None:
    from protoskel.layouts import get_layout
    from protoskel.training.trainer import build_model_from_config

    plain = load_config(None, ["data.normalize={center: first, box: true}"])
    assert plain.loader_normalize() == {"center": "first", "box": True}
    fa = load_config(
        None,
        [
            "data.normalize={center: first, box: true}",
            "model.invariance=frame_averaging",
            "model.invariance_train=sample",
            "model.kwargs={width: 8, depth: 3, groups: 2}",
        ],
    )
    # Boxing in the camera frame would break invariance: the loader skips it, the wrapper does it.
    assert fa.loader_normalize() == {"center": "first", "box": False}
    model = build_model_from_config(fa, get_layout("kinect-v1-20"), 4, 3)
    assert model.box and model.train_sample
    assert load_config(None).loader_normalize() is None


def test_exponent_numbers_without_a_dot_are_numbers() -> None:
    # YAML 1.1 reads 1e-3 as text; --set train.lr=1e-3 is what people type.
    assert load_config(None, ["train.lr=1e-3"]).train.lr == pytest.approx(1e-3)
    with pytest.raises(ConfigError, match=r"train\.lr: expected a number, got 'fast'"):
        load_config(None, ["train.lr=fast"])


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.invariance_train=one", "model.invariance_train"),
        ("data.normalize={box: maybe}", "data.normalize.box"),
        ("data.normalize.smooth=-1", "data.normalize.smooth"),
        ("data.normalize.bones=mean", "data.normalize.bones"),
        ("data.normalize.centre=first", "data.normalize.centre: unknown key"),
        ("data.normalize={1: first}", "data.normalize.1: unknown key"),
        ("train.ema=1.0", "train.ema"),
        ("train.ema=-0.1", "train.ema"),
    ],
)
def test_invariance_train_and_box_are_validated_even_unused(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])


RECIPES = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_shipped_recipe_loads_and_is_named_after_its_file(recipe: Path) -> None:
    cfg = load_config(recipe)
    assert cfg.name == recipe.stem
    assert cfg.model.backbone in list_backbones()


def test_recipe_errors_name_the_key_and_where_its_value_came_from(tmp_path: Path) -> None:
    p = tmp_path / "r.yaml"
    p.write_text("model:\n  backbone: atgcn\n  kwargs: {widht: 8}\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value).startswith(
        f"{p}: model.kwargs: backbone 'atgcn' does not accept option(s) widht"
    )
    p.write_text("train:\n  lr: 0.1\n")
    with pytest.raises(ConfigError) as e:
        load_config(p, ["model.backbone=resnet"])
    assert str(e.value).startswith(
        f"{p}, --set model.backbone=resnet: model.backbone: unknown backbone"
    )
    with pytest.raises(ConfigError) as e:
        load_config(p, ["train.lr_decay=0.5", "train.lr=-1"])  # a prefix of another key
    assert str(e.value).startswith(f"{p}, --set train.lr=-1: train.lr: must be > 0")
    with pytest.raises(ConfigError) as e:
        load_config(None, ["model.head=nope"])
    assert str(e.value).startswith("--set model.head=nope: model.head: unknown head 'nope'")
