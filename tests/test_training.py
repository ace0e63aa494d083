"""End-to-end training on a tiny store: learns, is deterministic, resumes exactly, evaluates,
ensembles, and trains identically on 2 processes (torchrun, gloo) and on 1."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from _tiny import tiny_clips, write_tiny_store
from protoskel.data.store import open_store
from protoskel.errors import CheckpointError, ConfigError
from protoskel.training.checkpoint import load_checkpoint
from protoskel.training.compare import load_predictions
from protoskel.training.config import load_config
from protoskel.training.ensemble import ensemble
from protoskel.training.trainer import checkpoint_probs, evaluate, train

TINY_MODEL = {"width": 8, "depth": 3}
RECIPE = {
    "model": {"backbone": "atgcn", "kwargs": TINY_MODEL},
    "data": {"num_frames": 12},
    "train": {
        "epochs": 4,
        "batch_size": 6,
        "optimizer": "adamw",
        "lr": 0.01,
        "warmup_epochs": 1,
        "threads": 1,
    },
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_store(tmp_path_factory.mktemp("tiny") / "store")


def _recipe(tmp: Path, **over: dict) -> Path:
    d = json.loads(json.dumps(RECIPE))
    for sec, vals in over.items():
        d[sec].update(vals)
    p = tmp / "recipe.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def test_train_writes_checkpoints_and_logs(store: Path, tmp_path: Path) -> None:
    cfg = load_config(_recipe(tmp_path), ["train.epochs=12"])
    res = train(cfg, store, tmp_path / "run", progress=False)
    run = tmp_path / "run"
    assert (run / "last.pt").is_file() and (run / "best.pt").is_file()
    rows = (run / "log.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 12 and rows[0].startswith("epoch,lr,train_loss")
    hist = res["history"]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    m = evaluate(run / "last.pt", store, confusion_png=tmp_path / "cm.png")
    assert m["n"] == 15 and set(m) >= {"top1", "top5", "mean_class_acc", "per_class"}
    assert m["top1"] >= 60.0  # chance is 33.3; the tiny task is learnable
    assert (tmp_path / "cm.png").stat().st_size > 1000
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "cm.png").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    ck = load_checkpoint(run / "last.pt")
    assert ck["classes"] == ["still", "raise_left", "raise_right"] and ck["epoch"] == 12


@pytest.mark.parametrize("stream", ["angle", "distance"])
def test_rotation_invariant_stream_trains_and_evaluates(
    store: Path, tmp_path: Path, stream: str
) -> None:
    # Raising the left or the right arm changes that arm's angle to the body's axes and its
    # hand's distance to the head and hips.
    cfg = load_config(_recipe(tmp_path), ["train.epochs=12", f"data.stream={stream}"])
    train(cfg, store, tmp_path / "run", progress=False)
    m = evaluate(tmp_path / "run" / "last.pt", store)
    assert m["top1"] >= 60.0  # chance is 33.3


def test_same_seed_same_model(store: Path, tmp_path: Path) -> None:
    cfg = load_config(_recipe(tmp_path), ["train.epochs=2"])
    train(cfg, store, tmp_path / "a", progress=False)
    train(cfg, store, tmp_path / "b", progress=False)
    wa, wb = _weights(tmp_path / "a" / "last.pt"), _weights(tmp_path / "b" / "last.pt")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_continues_exactly(store: Path, tmp_path: Path) -> None:
    aug = {"crop": [0.5, 1.0], "rotate": 0.3, "jitter": 0.01}
    recipe = _recipe(tmp_path, data={"augment": aug}, model={"dropout": 0.2})
    cfg = load_config(recipe)
    full = train(cfg, store, tmp_path / "full", progress=False)
    train(cfg, store, tmp_path / "part", progress=False, max_epochs=2)
    resumed = train(cfg, store, tmp_path / "part", resume=True, progress=False)
    wa, wb = _weights(tmp_path / "full" / "last.pt"), _weights(tmp_path / "part" / "last.pt")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert resumed["history"][-1]["val_top1"] == full["history"][-1]["val_top1"]
    assert len((tmp_path / "part" / "log.csv").read_text().strip().splitlines()) == 1 + 4


def test_resume_may_change_eval_every_and_threads_only(store: Path, tmp_path: Path) -> None:
    full = train(load_config(_recipe(tmp_path)), store, tmp_path / "full", progress=False)
    train(load_config(_recipe(tmp_path)), store, tmp_path / "part", progress=False, max_epochs=2)
    other = load_config(_recipe(tmp_path), ["train.eval_every=4"])
    resumed = train(other, store, tmp_path / "part", resume=True, progress=False)
    wa, wb = _weights(tmp_path / "full" / "last.pt"), _weights(tmp_path / "part" / "last.pt")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert resumed["history"][-1]["val_top1"] == full["history"][-1]["val_top1"]
    assert [h.get("val_top1") is None for h in resumed["history"][2:]] == [True, False]
    # A finished run resumed on more threads is accepted (and has nothing left to do).
    more = load_config(_recipe(tmp_path), ["train.threads=2"])
    again = train(more, store, tmp_path / "full", resume=True, progress=False)
    assert again["history"] == full["history"]
    torch.set_num_threads(1)
    changed = load_config(_recipe(tmp_path), ["train.lr=0.5"])
    with pytest.raises(
        ConfigError, match=r"different config \(train\.lr: 0\.01 in the run, 0\.5 now\)"
    ):
        train(changed, store, tmp_path / "part", resume=True, progress=False)


def test_eval_clips_makes_interim_evaluations_cheaper_and_the_last_one_the_recipes(
    store: Path, tmp_path: Path
) -> None:
    rec = _recipe(tmp_path, train={"epochs": 6})
    one = train(load_config(rec), store, tmp_path / "one", progress=False)
    many = train(load_config(rec, ["data.test_clips=3"]), store, tmp_path / "many", progress=False)
    # The number of test clips changes the figures on this store (else this test could not fail).
    assert [h["val_top1"] for h in one["history"]] != [h["val_top1"] for h in many["history"]]
    cheap = load_config(rec, ["data.test_clips=3", "train.eval_clips=1"])
    quick = train(cheap, store, tmp_path / "quick", progress=False)
    wa, wb = _weights(tmp_path / "many" / "last.pt"), _weights(tmp_path / "quick" / "last.pt")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # evaluation does not touch training
    got = [(h["val_clips"], h["val_top1"]) for h in quick["history"]]
    assert got[:5] == [(1, h["val_top1"]) for h in one["history"][:5]]
    assert got[5] == (3, many["history"][5]["val_top1"])
    assert got[5][1] == pytest.approx(evaluate(tmp_path / "quick" / "last.pt", store)["top1"])
    rows = (tmp_path / "quick" / "log.csv").read_text().strip().splitlines()
    assert rows[0].endswith(",val_clips") and [r.split(",")[-1] for r in rows[1:]] == list("111113")
    # It may change on --resume, like eval_every.
    train(
        load_config(rec, ["data.test_clips=3"]), store, tmp_path / "r", max_epochs=4, progress=False
    )
    resumed = train(cheap, store, tmp_path / "r", resume=True, progress=False)
    assert resumed["history"][-1]["val_top1"] == many["history"][-1]["val_top1"]
    with pytest.raises(ConfigError, match=r"train\.eval_clips: must be >= 0"):
        load_config(rec, ["train.eval_clips=-1"])


def test_eval_batches_hold_about_eval_samples_forwards_and_do_not_change_results(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from protoskel.training import trainer as tr

    fa = load_config(_recipe(tmp_path), ["model.invariance=frame_averaging"])
    plain = load_config(_recipe(tmp_path))
    assert tr.eval_batch_size(plain, 3, 1, False) == 32
    assert tr.eval_batch_size(plain, 3, 1, True) == 16
    assert tr.eval_batch_size(fa, 3, 1, True) == 4  # 2 copies x 4 frames (SO(3))
    assert tr.eval_batch_size(fa, 2, 1, True) == 8  # 2 frames in 2D
    assert tr.eval_batch_size(fa, 3, 5, True) == 1  # never 0
    rot = load_config(_recipe(tmp_path), ["data.test_rotate=[[0,0.1,0],[0,0,0]]"])
    assert tr.eval_batch_size(rot, 3, 2, False) == 8
    train(load_config(_recipe(tmp_path), ["train.epochs=1"]), store, tmp_path / "r", progress=False)
    ck = tmp_path / "r" / "last.pt"
    big, labels, _, _ = checkpoint_probs(ck, store, clips=3, flip=True)
    monkeypatch.setattr(tr, "EVAL_SAMPLES", 1)
    small, labels2, _, _ = checkpoint_probs(ck, store, clips=3, flip=True)
    np.testing.assert_allclose(small, big, rtol=1e-5, atol=1e-6)
    assert np.array_equal(labels, labels2)


def test_eval_progress_changes_nothing_and_stays_off_a_non_terminal(
    store: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    train(load_config(_recipe(tmp_path), ["train.epochs=1"]), store, tmp_path / "r", progress=False)
    ck = tmp_path / "r" / "last.pt"
    capfd.readouterr()
    quiet = evaluate(ck, store)
    shown = evaluate(ck, store, progress=True)
    assert shown["top1"] == quiet["top1"] and shown["per_class"] == quiet["per_class"]
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # stderr is not a terminal here: no bar in logs


def test_unreadable_checkpoints_get_a_short_error_that_never_suggests_unsafe_loading(
    tmp_path: Path,
) -> None:
    import fractions

    (tmp_path / "garbage.pt").write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(
        CheckpointError, match=r"garbage\.pt: not a protoskel checkpoint \(not a zip"
    ):
        load_checkpoint(tmp_path / "garbage.pt")
    # A real torch file holding a class weights_only refuses (torch then suggests
    # weights_only=False, which protoskel never does).
    torch.save({"x": fractions.Fraction(1, 3)}, tmp_path / "objects.pt")
    with pytest.raises(CheckpointError, match="holds Python objects beyond tensors") as err:
        load_checkpoint(tmp_path / "objects.pt")
    assert "weights_only=False" not in str(err.value) and "\n" not in str(err.value)


def test_a_finished_run_is_never_replaced_silently(store: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from protoskel.cli import app

    rec = _recipe(tmp_path, train={"epochs": 2})
    run = tmp_path / "run"
    train(load_config(rec), store, run, progress=False)
    before = (run / "last.pt").read_bytes()
    with pytest.raises(ConfigError, match=r"already holds a run \(last\.pt\); pass --resume"):
        train(load_config(rec, ["train.epochs=1"]), store, run, progress=False)
    assert (run / "last.pt").read_bytes() == before
    cmd = ["train", str(rec), "--data", str(store), "--out", str(run), "--set", "train.epochs=1"]
    r = CliRunner().invoke(app, cmd)
    assert r.exit_code != 0 and "already holds a run" in str(r.exception)
    assert (run / "last.pt").read_bytes() == before
    with pytest.raises(ConfigError, match="either --resume or --force"):
        train(load_config(rec), store, run, resume=True, overwrite=True, progress=False)
    r = CliRunner().invoke(app, [*cmd, "--force"])
    assert r.exit_code == 0, r.output
    assert load_checkpoint(run / "last.pt")["epoch"] == 1
    assert len((run / "log.csv").read_text().strip().splitlines()) == 1 + 1
    assert "last val top1 " in r.output and re.search(r"top1 \d+\.\d\d$", r.output.strip())


def test_a_run_that_fails_before_its_first_checkpoint_leaves_no_folder(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from protoskel.training import trainer as tr

    def broken(*a: object, **k: object) -> None:
        raise RuntimeError("the data broke")

    monkeypatch.setattr(tr, "_loader", broken)
    cfg = load_config(_recipe(tmp_path))
    with pytest.raises(RuntimeError, match="the data broke"):
        train(cfg, store, tmp_path / "new", progress=False)
    assert not (tmp_path / "new").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(RuntimeError, match="the data broke"):
        train(cfg, store, tmp_path / "mine", progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"  # not ours to remove
    with pytest.raises(CheckpointError, match=r"no last\.pt to resume"):
        train(cfg, store, tmp_path / "none", resume=True, progress=False)
    assert not (tmp_path / "none").exists()


def test_resume_keeps_the_columns_of_a_log_written_by_an_older_version(
    store: Path, tmp_path: Path
) -> None:
    rec = load_config(_recipe(tmp_path, train={"epochs": 3}))
    train(rec, store, tmp_path / "run", max_epochs=2, progress=False)
    log = tmp_path / "run" / "log.csv"
    old = [",".join(r.split(",")[:-1]) for r in log.read_text().strip().splitlines()]
    log.write_text("\n".join(old) + "\n")  # as written before log.csv had val_clips
    train(rec, store, tmp_path / "run", resume=True, progress=False)
    rows = [r.split(",") for r in log.read_text().strip().splitlines()]
    assert len(rows) == 4 and {len(r) for r in rows} == {len(rows[0])}
    assert "val_clips" not in rows[0] and rows[-1][0] == "3"


def test_ema_resumes_exactly_and_saves_the_average(store: Path, tmp_path: Path) -> None:
    cfg = load_config(_recipe(tmp_path), ["train.ema=0.9"])
    full = train(cfg, store, tmp_path / "full", progress=False)
    train(cfg, store, tmp_path / "part", progress=False, max_epochs=2)
    train(cfg, store, tmp_path / "part", resume=True, progress=False)
    a, b = (
        load_checkpoint(tmp_path / "full" / "last.pt"),
        load_checkpoint(tmp_path / "part" / "last.pt"),
    )
    for key in ("model", "raw_model"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key])
    assert a["ema_updates"] == b["ema_updates"] > 0
    # The saved (evaluated) weights are the average, not the optimiser's last weights.
    w = "head.fc.weight" if "head.fc.weight" in a["model"] else next(iter(a["raw_model"]))
    assert not torch.equal(a["model"][w], a["raw_model"][w])
    m = evaluate(tmp_path / "full" / "last.pt", store)
    assert m["top1"] == pytest.approx(full["history"][-1]["val_top1"])


def test_weight_ema_is_an_exponential_average() -> None:
    from protoskel.training.trainer import WeightEMA

    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    ema = WeightEMA(net, 0.5)
    w0 = net[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
        net[1].num_batches_tracked += 3
    ema.update(net)  # decay min(0.5, 2/11)
    d = 2 / 11
    assert torch.allclose(ema.model[0].weight, d * w0 + (1 - d) * (w0 + 1))
    assert int(ema.model[1].num_batches_tracked) == 3
    assert not ema.model[0].weight.requires_grad


def test_resume_refuses_other_config_or_missing_run(store: Path, tmp_path: Path) -> None:
    cfg = load_config(_recipe(tmp_path), ["train.epochs=1"])
    with pytest.raises(CheckpointError, match=r"no last\.pt"):
        train(cfg, store, tmp_path / "none", resume=True, progress=False)
    train(cfg, store, tmp_path / "r", progress=False)
    other = load_config(_recipe(tmp_path), ["train.epochs=1", "train.lr=0.02"])
    with pytest.raises(ConfigError, match="different config"):
        train(other, store, tmp_path / "r", resume=True, progress=False)


def test_ensemble_and_fitted_weights(store: Path, tmp_path: Path) -> None:
    runs = []
    for stream in ("joint", "bone"):
        cfg = load_config(
            _recipe(tmp_path),
            [f"data.stream={stream}", "data.holdout_fraction=0.25", "train.epochs=2"],
        )
        train(cfg, store, tmp_path / stream, progress=False)
        runs.append(tmp_path / stream / "last.pt")
    m = ensemble(runs, store, weights=[0.5, 0.5])
    assert m["n"] == 15 and m["weights"] == [0.5, 0.5]
    assert [x["stream"] for x in m["members"]] == ["joint", "bone"]
    fitted = ensemble(runs, store, fit=True)
    assert fitted["weights_fitted_on"] == {"split": "train", "clips": 9}
    assert sum(fitted["weights"]) == pytest.approx(1.0)
    held = load_checkpoint(runs[0])["meta"]["holdout_ids"]
    assert len(held) == 9 and all(h.startswith("tiny_0_") for h in held)
    for bad in ([0.0, 0.0], [-1.0, 2.0]):
        with pytest.raises(ConfigError, match="weights must be >= 0 with a positive sum"):
            ensemble(runs, store, weights=bad)
    assert ensemble(runs, store, weights=[1.0, 0.0])["weights"] == [1.0, 0.0]


def test_ensemble_multi_clip_fuses_each_members_multi_clip_probabilities(
    store: Path, tmp_path: Path
) -> None:
    runs = []
    for stream in ("joint", "bone"):
        cfg = load_config(_recipe(tmp_path), [f"data.stream={stream}", "train.epochs=1"])
        train(cfg, store, tmp_path / stream, progress=False)
        runs.append(tmp_path / stream / "last.pt")
    fused = {}
    for k in (1, 3):
        out = tmp_path / f"k{k}.npz"
        ensemble(runs, store, weights=[0.7, 0.3], clips=k, save_probs=out)
        fused[k] = load_predictions(out).probs
        members = [checkpoint_probs(r, store, clips=k)[0] for r in runs]
        np.testing.assert_allclose(fused[k], 0.7 * members[0] + 0.3 * members[1], atol=1e-6)
    # Three shifted samplings of these clips must change the probabilities, or the check above
    # could not tell whether --clips reached the members.
    assert np.abs(fused[3] - fused[1]).max() > 1e-4
    with pytest.raises(ConfigError, match="num_clips must be >= 1"):
        ensemble(runs, store, clips=0)


def test_distilling_from_a_one_hot_teacher_is_plain_training(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With alpha 1 and T 1 the distillation loss of a one-hot teacher is the cross-entropy, so
    # the run must match plain training; any misalignment of soft targets and clips breaks it.
    import protoskel.training.trainer as trainer

    def one_hot(cfg, data_dir, indices, labels):
        assert len(indices) == 27 and cfg.train.distill == ["teacher"]  # 36 minus the holdout
        return np.eye(3)[labels]

    monkeypatch.setattr(trainer, "teacher_probs", one_hot)
    base = ["train.epochs=2", "train.label_smoothing=0.0", "data.holdout_fraction=0.25"]
    train(load_config(_recipe(tmp_path), base), store, tmp_path / "plain", progress=False)
    kd = [*base, "train.distill=[teacher]", "train.distill_alpha=1.0"]
    train(load_config(_recipe(tmp_path), kd), store, tmp_path / "kd", progress=False)
    wa, wb = _weights(tmp_path / "plain" / "last.pt"), _weights(tmp_path / "kd" / "last.pt")
    assert all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-5) for k in wa)
    # A teacher that disagrees with the labels must change the model.
    monkeypatch.setattr(trainer, "teacher_probs", lambda c, d, i, y: np.eye(3)[(y + 1) % 3])
    train(load_config(_recipe(tmp_path), kd), store, tmp_path / "kd2", progress=False)
    wc = _weights(tmp_path / "kd2" / "last.pt")
    assert not all(torch.allclose(wa[k].float(), wc[k].float(), atol=1e-5) for k in wa)


def test_distillation_from_real_teachers(store: Path, tmp_path: Path) -> None:
    from protoskel.training.trainer import checkpoint_probs, soften, teacher_probs

    teachers = []
    for stream in ("joint", "bone"):
        cfg = load_config(_recipe(tmp_path), [f"data.stream={stream}", "train.epochs=2"])
        train(cfg, store, tmp_path / stream, progress=False)
        teachers.append(str(tmp_path / stream / "last.pt"))
    over = [
        "train.epochs=2",
        f"train.distill=[{teachers[0]}, {teachers[1]}]",
        "train.distill_weights=[3, 1]",
        "train.distill_temperature=2.0",
    ]
    cfg = load_config(_recipe(tmp_path), over)
    idx = np.arange(len(open_store(store).split("train")))
    labels = open_store(store).split("train").labels
    mixed = teacher_probs(cfg, store, idx, labels)
    pj, _, _, _ = checkpoint_probs(teachers[0], store, split="train")
    pb, _, _, _ = checkpoint_probs(teachers[1], store, split="train")
    np.testing.assert_allclose(mixed, 0.75 * pj + 0.25 * pb, rtol=1e-6)
    soft = soften(mixed, 2.0).numpy()
    np.testing.assert_allclose(soft.sum(1), 1.0, rtol=1e-5)
    assert soft.max(1).mean() < mixed.max(1).mean()  # a temperature above 1 flattens
    res = train(cfg, store, tmp_path / "student", progress=False)
    plain = train(
        load_config(_recipe(tmp_path), ["train.epochs=2"]), store, tmp_path / "p", progress=False
    )
    assert res["history"][0]["train_loss"] != plain["history"][0]["train_loss"]
    assert (
        load_checkpoint(tmp_path / "student" / "last.pt")["config"]["train"]["distill"] == teachers
    )


def test_a_missing_teacher_fails_before_the_run_folder_exists(store: Path, tmp_path: Path) -> None:
    cfg = load_config(_recipe(tmp_path), [f"train.distill=[{tmp_path / 'nope.pt'}]"])
    with pytest.raises(CheckpointError, match=r"nope\.pt"):
        train(cfg, store, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_a_teacher_of_other_classes_is_refused_with_advice(store: Path, tmp_path: Path) -> None:
    from protoskel.training.checkpoint import save_checkpoint

    train(load_config(_recipe(tmp_path), ["train.epochs=1"]), store, tmp_path / "t", progress=False)
    ck = load_checkpoint(tmp_path / "t" / "last.pt")
    ck["classes"] = ["a", "b", "c"]
    save_checkpoint(ck, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="evaluate on the dataset the model was trained"):
        evaluate(tmp_path / "other.pt", store)
    cfg = load_config(_recipe(tmp_path), [f"train.distill=[{tmp_path / 'other.pt'}]"])
    with pytest.raises(CheckpointError, match="needs teachers trained on the student's dataset"):
        train(cfg, store, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.distill_weights=[1, 2]", "one weight per"),
        ("train.distill_alpha=1.5", "distill_alpha"),
        ("train.distill_temperature=0", "distill_temperature"),
        ("train.distill_weights=[x]", r"distill_weights\[0\]: expected a number"),
        ("train.distill=teacher.pt", "distill: expected a list"),
    ],
)
def test_distillation_config_errors(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(_recipe(tmp_path), ["train.distill=[a.pt]", override])


@pytest.mark.parametrize("mode", ["blend", "parts"])
def test_mixup_trains_differently_and_resumes_exactly(
    store: Path, tmp_path: Path, mode: str
) -> None:
    plain = load_config(_recipe(tmp_path), ["train.epochs=2"])
    train(plain, store, tmp_path / "plain", progress=False)
    mix = ["train.mixup=0.4", f"train.mixup_mode={mode}"]
    # A mixing probability of 0 draws but never mixes: exactly plain training.
    off = load_config(_recipe(tmp_path), ["train.epochs=2", *mix, "train.mixup_prob=0.0"])
    train(off, store, tmp_path / "off", progress=False)
    wp, wo = _weights(tmp_path / "plain" / "last.pt"), _weights(tmp_path / "off" / "last.pt")
    assert all(torch.equal(wp[k], wo[k]) for k in wp)
    cfg = load_config(_recipe(tmp_path), mix)
    full = train(cfg, store, tmp_path / "full", progress=False)
    train(cfg, store, tmp_path / "part", progress=False, max_epochs=2)
    resumed = train(cfg, store, tmp_path / "part", resume=True, progress=False)
    wa, wb = _weights(tmp_path / "full" / "last.pt"), _weights(tmp_path / "part" / "last.pt")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    losses = [h["train_loss"] for h in full["history"]]
    assert [h["train_loss"] for h in resumed["history"]] == losses
    # The same two epochs as the plain run, with mixing on: a different model.
    on = load_config(_recipe(tmp_path), ["train.epochs=2", *mix])
    train(on, store, tmp_path / "on", progress=False)
    wm = _weights(tmp_path / "on" / "last.pt")
    assert not all(torch.allclose(wp[k].float(), wm[k].float()) for k in wp)


def test_mixed_distillation_targets_match_mixed_labels(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A one-hot teacher at alpha 1 and T 1 under mixing must give the mixed cross-entropy.
    import protoskel.training.trainer as trainer

    monkeypatch.setattr(trainer, "teacher_probs", lambda c, d, i, y: np.eye(3)[y])
    # SGD, because Adam's normalisation blows float-rounding gradient differences on
    # near-zero-gradient parameters (the learned topologies) up to 1e-2 in two epochs.
    base = ["train.epochs=2", "train.label_smoothing=0.0", "train.mixup=0.4", "train.optimizer=sgd"]
    train(load_config(_recipe(tmp_path), base), store, tmp_path / "mix", progress=False)
    kd = [*base, "train.distill=[teacher]", "train.distill_alpha=1.0"]
    train(load_config(_recipe(tmp_path), kd), store, tmp_path / "kd", progress=False)
    wa, wb = _weights(tmp_path / "mix" / "last.pt"), _weights(tmp_path / "kd" / "last.pt")
    assert all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-5) for k in wa)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.mixup=-1", "train.mixup: must be >= 0"),
        ("train.mixup_mode=cutout", "train.mixup_mode: must be one of blend, parts"),
        ("train.mixup_prob=1.5", r"train.mixup_prob: must be in \[0, 1\]"),
        ("model.head=prototype", "not supported with the prototype head"),
    ],
)
def test_mixup_config_errors(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(_recipe(tmp_path), ["train.mixup=0.2", override])


def test_ensemble_fit_needs_holdout(store: Path, tmp_path: Path) -> None:
    cfg = load_config(_recipe(tmp_path), ["train.epochs=1"])
    train(cfg, store, tmp_path / "x", progress=False)
    ck = tmp_path / "x" / "last.pt"
    with pytest.raises(ConfigError, match="holdout_fraction"):
        ensemble([ck, ck], store, fit=True)


@pytest.mark.parametrize("sam_rho", [0.0, 0.2])
def test_distributed_two_processes_match_one(store: Path, tmp_path: Path, sam_rho: float) -> None:
    """torchrun with 2 gloo processes = 1 process with the same global batch (also with SAM,
    whose ascent uses the all-reduced gradient, so every process moves alike).

    ST-GCN is used because atgcn's partition topologies have all-zero rows (the root has no
    inward neighbour), whose batch-normalised value is exactly 0 up to the last bit of the
    mean; the two runs sum that mean in a different order, so ReLU'(0) ties go either way.
    The same kind of tie makes SAM's rho matter in this tiny run (3 clips per process): with
    SGD over one epoch, rho 0.001 and 0.2 agree with one process to 2e-7 but 0.05 differs by
    2e-3, non-monotonic in rho, so a flipped tie and not an error of the SAM step.
    """
    train_opts = {"epochs": 2, "batch_size": 6, "sam_rho": sam_rho}
    recipe = _recipe(tmp_path, train=train_opts, model={"backbone": "stgcn"})
    cfg = load_config(recipe)
    train(cfg, store, tmp_path / "single", progress=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "protoskel.cli", "train", str(recipe), "--data", str(store),
        "--out", str(tmp_path / "ddp"),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single, ddp = _weights(tmp_path / "single" / "last.pt"), _weights(tmp_path / "ddp" / "last.pt")
    assert single.keys() == ddp.keys()
    for k in single:
        if single[k].is_floating_point():
            torch.testing.assert_close(ddp[k], single[k], rtol=1e-4, atol=1e-5, msg=k)
        else:
            assert torch.equal(ddp[k], single[k]), k


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_prototype_model_trains_projects_and_keeps_no_keypoints(
    store: Path, tmp_path: Path, ema: float
) -> None:
    recipe = _recipe(
        tmp_path,
        model={"head": "prototype", "head_kwargs": {"window": 2}},
        train={"epochs": 3, "push_epochs": 2, "ema": ema},
    )
    res = train(load_config(recipe), store, tmp_path / "proto", progress=False)
    assert res["history"][-1]["pushed_prototypes"] > 0
    ck = load_checkpoint(tmp_path / "proto" / "last.pt")
    state = ck["model"]["head._extra_state"]
    prov = state["provenance"]
    train_ids = set(open_store(store).split("train").ids)
    assert prov and all(p["clip_id"] in train_ids for p in prov)
    assert all(0 <= p["frame_start"] < p["frame_end"] for p in prov)
    # Only ids and frame ranges: no array in the provenance could hold a clip's keypoints.
    flat = json.dumps(prov)
    assert "keypoints" not in flat
    m = evaluate(tmp_path / "proto" / "last.pt", store)
    assert m["n"] == 15
    # The saved model is the projected one, whether or not weights were averaged.
    assert m["top1"] == pytest.approx(res["history"][-1]["val_top1"])


def test_frame_averaged_training_is_rotation_invariant(store: Path, tmp_path: Path) -> None:
    """model.invariance: frame_averaging trains, and the saved model ignores clip rotations."""
    from protoskel.models.invariance import random_rotation, rotate
    from protoskel.training.trainer import load_for_eval

    recipe = _recipe(
        tmp_path, model={"invariance": "frame_averaging", "backbone": "stgcn"}, train={"epochs": 2}
    )
    train(load_config(recipe), store, tmp_path / "fa", progress=False)
    _, model, _ = load_for_eval(tmp_path / "fa" / "last.pt")
    x = torch.randn(4, 3, 12, 20, 1, generator=torch.Generator().manual_seed(0))
    r = random_rotation(4, 3, torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = model(x), model(rotate(x, r, torch.tensor([0.3, -1.0, 2.0])))
    assert (a - b).abs().max() < 1e-4


def test_warm_start_copies_the_backbone_into_a_prototype_model(store: Path, tmp_path: Path) -> None:
    lin = load_config(_recipe(tmp_path), ["train.epochs=1"])
    train(lin, store, tmp_path / "lin", progress=False)
    src = _weights(tmp_path / "lin" / "last.pt")
    proto = load_config(
        _recipe(tmp_path, model={"head": "prototype"}),
        [
            "train.epochs=1",
            "train.lr=1e-12",
            "train.push_epochs=0",
            f"train.init={tmp_path}/lin/last.pt",
        ],
    )
    train(proto, store, tmp_path / "proto", progress=False, max_epochs=1)
    ck = load_checkpoint(tmp_path / "proto" / "last.pt")
    got = ck["model"]
    backbone = [k for k in src if k.startswith("backbone.") and k.endswith("weight")]
    assert backbone and all(torch.allclose(got[k], src[k], atol=1e-6) for k in backbone)
    assert ck["meta"]["init"]["copied"] >= len(backbone) and ck["meta"]["init"]["fresh"] > 0
    other = load_config(
        _recipe(tmp_path, model={"backbone": "stgcn"}), [f"train.init={tmp_path}/lin/last.pt"]
    )
    with pytest.raises(CheckpointError, match="does not fit this model"):
        train(other, store, tmp_path / "bad", progress=False)


@pytest.mark.parametrize("wrap", ["", "frame_averaging"])
def test_warm_start_from_another_dataset_fine_tunes_with_a_new_head(
    store: Path, tmp_path: Path, wrap: str
) -> None:
    from protoskel.data.store import write_store

    src_run = tmp_path / "src"
    # Frame averaging wraps the model, so its head's keys are prefixed (model.head.*).
    fa = [f"model.invariance={wrap}"] if wrap else []
    train(load_config(_recipe(tmp_path), ["train.epochs=1", *fa]), store, src_run, progress=False)
    src = _weights(src_run / "last.pt")
    # Another dataset: two classes, so the 3-class head cannot be reused.
    two = [c for c in tiny_clips(24, 5) if c.label < 2]
    other = write_store(
        tmp_path / "two",
        {"train": two, "val": two[:6]},
        dataset="two",
        protocol="test",
        layout="kinect-v1-20",
        classes=["still", "raise_left"],
    )
    cfg = load_config(
        _recipe(tmp_path),
        ["train.epochs=1", "train.lr=1e-12", f"train.init={src_run}/last.pt", *fa],
    )
    train(cfg, other, tmp_path / "ft", progress=False, max_epochs=1)
    ck = load_checkpoint(tmp_path / "ft" / "last.pt")
    got = ck["model"]
    pre = "model." if wrap else ""
    assert ck["meta"]["init"]["new_head"] == "3 -> 2 classes"
    assert got[f"{pre}head.fc.weight"].shape[0] == 2
    backbone = [k for k in src if k.startswith(f"{pre}backbone.") and k.endswith("weight")]
    assert backbone and all(torch.allclose(got[k], src[k], atol=1e-6) for k in backbone)
    # Same joints in another order: refused, naming the layouts and how to convert.
    msr = write_store(
        tmp_path / "msr",
        {"train": [c.to_layout("msr-20") for c in two], "val": [two[0].to_layout("msr-20")]},
        dataset="two",
        protocol="test",
        layout="msr-20",
        classes=["still", "raise_left"],
    )
    with pytest.raises(CheckpointError, match="--to-layout kinect-v1-20") as err:
        train(cfg, msr, tmp_path / "bad", progress=False)
    assert "'kinect-v1-20'" in str(err.value) and "'msr-20'" in str(err.value)
    assert not (tmp_path / "bad").exists()


def test_checkpoint_rebuilds_from_its_recorded_architecture(store: Path, tmp_path: Path) -> None:
    from protoskel.training.checkpoint import build_from_checkpoint

    cfg = load_config(_recipe(tmp_path), ["train.epochs=1"])
    train(cfg, store, tmp_path / "run", progress=False)
    ck = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ck["arch"]["backbone"]["width"] == 8 and ck["arch"]["backbone"]["kernel_size"] == 5
    assert ck["arch"]["head"] == {"dropout": 0.0}
    # A later default or recipe change must not change the network the checkpoint describes.
    ck["config"]["model"]["kwargs"] = {}
    model = build_from_checkpoint(ck)
    assert model.backbone.out_channels == ck["model"]["head.fc.weight"].shape[1]
    # An option this version does not have (e.g. from a newer or older protoskel): the error
    # names the checkpoint and says why, instead of a bare recipe error.
    ck["arch"]["head"]["pool"] = "mean"
    with pytest.raises(CheckpointError, match=r"cannot rebuild.*pool.*protoskel version") as err:
        build_from_checkpoint(ck)
    assert str(tmp_path / "run" / "last.pt") in str(err.value)


def test_test_time_rotations_average_the_rotated_evaluations(store: Path, tmp_path: Path) -> None:
    from protoskel.inference import Predictor
    from protoskel.training.checkpoint import build_from_checkpoint
    from protoskel.training.trainer import checkpoint_probs

    cfg = load_config(_recipe(tmp_path), ["train.epochs=2"])
    train(cfg, store, tmp_path / "run", progress=False)
    ck_path = tmp_path / "run" / "last.pt"
    a, b = [0.0, -0.6, 0.0], [0.2, 0.5, 0.1]
    plain, labels, _, _ = checkpoint_probs(ck_path, store)
    ident, _, _, _ = checkpoint_probs(ck_path, store, rotate=[[0, 0, 0]])
    pa, _, _, _ = checkpoint_probs(ck_path, store, rotate=[a])
    pb, _, _, _ = checkpoint_probs(ck_path, store, rotate=[b])
    both, labels2, _, _ = checkpoint_probs(ck_path, store, rotate=[a, b])
    np.testing.assert_allclose(ident, plain, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(both, (pa + pb) / 2, rtol=1e-5, atol=1e-6)
    assert (labels == labels2).all() and not np.allclose(pa, plain)
    # The recipe key does the same as the argument, and the predictor follows the recipe.
    rot_cfg = load_config(_recipe(tmp_path), ["train.epochs=2", f"data.test_rotate=[{a}, {b}]"])
    assert rot_cfg.data.test_rotate == [a, b]
    with pytest.raises(ConfigError, match=r"data\.test_rotate\[0\]"):
        load_config(_recipe(tmp_path), ["data.test_rotate=[[0, 1]]"])
    assert evaluate(ck_path, store, rotate=[a, b])["top1"] == pytest.approx(
        100 * float((both.argmax(1) == labels).mean())
    )
    ck = load_checkpoint(ck_path)
    ck["config"]["data"]["test_rotate"] = [a, b]
    clip = tiny_clips(1, 5)[0]
    rotated = Predictor(ck, build_from_checkpoint(ck))
    one = [Predictor(ck, rotated.model) for _ in range(2)]
    one[0].test_rotate, one[1].test_rotate = [a], [b]
    expect = (one[0].probabilities(clip) + one[1].probabilities(clip)) / 2
    np.testing.assert_allclose(rotated.probabilities(clip), expect, rtol=1e-5, atol=1e-6)
    from typer.testing import CliRunner

    from protoskel.cli import app

    cmd = ["eval", str(ck_path), "--data", str(store), "--json", "--rotate"]
    r = CliRunner().invoke(app, [*cmd, f"[{a}, {b}]"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["top1"] == pytest.approx(
        100 * float((both.argmax(1) == labels).mean())
    )
    r = CliRunner().invoke(app, [*cmd, "[[0, 1]]"])
    assert isinstance(r.exception, ConfigError) and "--rotate[0]: expected" in str(r.exception)


def test_occlude_evaluates_with_a_part_hidden(store: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from protoskel.cli import app
    from protoskel.training.checkpoint import checkpoint_layout
    from protoskel.training.trainer import checkpoint_probs, eval_loader, load_for_eval

    cfg = load_config(_recipe(tmp_path), ["train.epochs=2"])
    train(cfg, store, tmp_path / "run", progress=False)
    ck_path = tmp_path / "run" / "last.pt"
    ck, model, cfg = load_for_eval(ck_path)
    lay = checkpoint_layout(ck)
    part = next(iter(lay.parts))
    plain, labels, _, _ = checkpoint_probs(ck_path, store)
    hidden, labels2, _, _ = checkpoint_probs(ck_path, store, occlude=part)
    assert (labels == labels2).all() and not np.allclose(hidden, plain)
    # The same as predicting batches of the occluding loader by hand.
    from protoskel.data.store import open_store

    loader = eval_loader(open_store(store).split("val"), lay, cfg, occlude=part)
    with torch.no_grad():
        by_hand = torch.cat([model(x).softmax(1) for x, _ in loader]).numpy()
    np.testing.assert_allclose(hidden, by_hand[: len(labels)], rtol=1e-5, atol=1e-6)
    m = evaluate(ck_path, store, occlude=part)
    assert m["occluded_part"] == part
    assert m["top1"] == pytest.approx(100 * float((hidden.argmax(1) == labels).mean()))
    r = CliRunner().invoke(
        app, ["eval", str(ck_path), "--data", str(store), "--json", "--occlude", part]
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["top1"] == pytest.approx(m["top1"])
    r = CliRunner().invoke(
        app,
        ["ensemble", str(ck_path), str(ck_path), "--data", str(store), "--json", "--occlude", part],
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["occluded_part"] == part
    r = CliRunner().invoke(app, ["eval", str(ck_path), "--data", str(store), "--occlude", "tail"])
    assert isinstance(r.exception, ConfigError)
    assert str(r.exception).startswith(f"{ck_path}: cannot occlude 'tail'")
    assert "give one of torso, left_arm" in str(r.exception)


def test_ensemble_refuses_an_unknown_part_before_evaluating_any_member(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from protoskel.training import ensemble as ens_mod

    train(load_config(_recipe(tmp_path), ["train.epochs=1"]), store, tmp_path / "r", progress=False)
    ck_path = tmp_path / "r" / "last.pt"
    calls: list[object] = []
    monkeypatch.setattr(ens_mod, "checkpoint_probs", lambda *a, **k: calls.append(a))
    with pytest.raises(ConfigError, match="cannot occlude 'tail'"):
        ensemble([ck_path, ck_path], store, occlude="tail")
    assert calls == []


def test_test_time_mirror_averages_each_clip_with_its_mirror(store: Path, tmp_path: Path) -> None:
    from protoskel.training.checkpoint import checkpoint_layout
    from protoskel.training.trainer import checkpoint_probs, eval_loader, load_for_eval

    cfg = load_config(_recipe(tmp_path), ["train.epochs=2"])
    train(cfg, store, tmp_path / "run", progress=False)
    ck_path = tmp_path / "run" / "last.pt"
    plain, labels, _, _ = checkpoint_probs(ck_path, store)
    both, labels2, _, _ = checkpoint_probs(ck_path, store, flip=True)
    # By hand: the model on each validation clip mirrored (left/right swapped, x negated).
    ck, model, rcfg = load_for_eval(ck_path)
    lay = checkpoint_layout(ck)
    perm = torch.as_tensor(lay.flip_permutation())
    mirrored = []
    with torch.no_grad():
        for x, _ in eval_loader(open_store(store).split("val"), lay, rcfg):
            xf = x[:, :, :, perm, :].clone()
            xf[:, 0] *= -1
            mirrored.append(torch.softmax(model(xf), 1).double().numpy())
    expect = (plain + np.concatenate(mirrored)) / 2
    assert (labels == labels2).all()
    np.testing.assert_allclose(both, expect, rtol=1e-5, atol=1e-6)
    assert not np.allclose(both, plain)  # the mirror really changed the prediction
    # The recipe key does the same as the flag.
    flipped_cfg = load_config(_recipe(tmp_path), ["train.epochs=2", "data.test_flip=true"])
    assert flipped_cfg.data.test_flip is True
    assert evaluate(ck_path, store, flip=True)["top1"] == pytest.approx(
        100 * float((both.argmax(1) == labels).mean())
    )
    from typer.testing import CliRunner

    from protoskel.cli import app

    r = CliRunner().invoke(app, ["eval", str(ck_path), "--data", str(store), "--flip", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["top1"] == pytest.approx(
        100 * float((both.argmax(1) == labels).mean())
    )
    r = CliRunner().invoke(
        app, ["ensemble", str(ck_path), str(ck_path), "--data", str(store), "--flip", "--json"]
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["members"][0]["top1"] == pytest.approx(
        100 * float((both.argmax(1) == labels).mean())
    )


def test_train_cli_prints_one_line_per_epoch_into_a_log_file(store: Path, tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, train={"epochs": 3, "eval_every": 2})
    cmd = [sys.executable, "-m", "protoskel.cli", "train", str(recipe), "--data", str(store)]
    cmd += ["--out", str(tmp_path / "run")]
    with open(tmp_path / "train.log", "w") as log:  # not a terminal, as under nohup
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=300)
    text = (tmp_path / "train.log").read_text()
    assert proc.returncode == 0, text[-2000:]
    lines = [ln for ln in text.splitlines() if ln.startswith("epoch ")]
    assert [ln.split(":")[0] for ln in lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert ["val top1" in ln for ln in lines] == [False, True, True]
    assert all(" left" in ln for ln in lines) and lines[-1].endswith("about 0 s left")


def test_cleanup_leaves_an_active_process_group(tmp_path: Path) -> None:
    import torch.distributed as tdist

    from protoskel.training.distributed import cleanup

    store = f"file://{tmp_path / 'rendezvous'}"
    tdist.init_process_group("gloo", init_method=store, rank=0, world_size=1)
    assert tdist.is_initialized()
    cleanup()  # barrier with itself, then destroy
    assert not tdist.is_initialized()
    cleanup()  # nothing active: a no-op


def test_cli_train_leaves_the_process_group_after_success_and_failure(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from protoskel.cli import app
    from protoskel.training import distributed

    calls: list[bool] = []
    monkeypatch.setattr(distributed, "cleanup", lambda wait=True: calls.append(wait))
    recipe = str(_recipe(tmp_path, train={"epochs": 1}))
    ok = CliRunner().invoke(
        app, ["train", recipe, "--data", str(store), "--out", str(tmp_path / "a")]
    )
    assert ok.exit_code == 0, ok.output
    assert calls == [True]
    bad = CliRunner().invoke(
        app, ["train", recipe, "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "b")]
    )
    assert bad.exit_code != 0
    assert calls == [True, False]  # after an error no barrier: other processes may not reach it
