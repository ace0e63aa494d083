"""Prediction files and the paired comparison of two models (`eval/ensemble --save-probs`,
`protoskel compare`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from _tiny import tiny_recipe, write_tiny_store
from conftest import Cli
from protoskel.errors import ConfigError
from protoskel.training.compare import (
    Predictions,
    compare_predictions,
    compare_to_reference,
    holm_adjust,
    load_predictions,
    mcnemar_exact,
    save_predictions,
    wilson_interval,
)
from protoskel.training.config import load_config
from protoskel.training.trainer import evaluate, train


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A tiny store and two tiny checkpoints of different seeds."""
    root = tmp_path_factory.mktemp("cmp")
    store = write_tiny_store(root / "store")
    out = []
    for seed in (1, 2):
        (root / "r.yaml").write_text(yaml.safe_dump(tiny_recipe()))
        cfg = load_config(root / "r.yaml", [f"train.seed={seed}"])
        train(cfg, store, root / f"run{seed}", progress=False)
        out.append(root / f"run{seed}" / "last.pt")
    return store, out[0], out[1]


def _pred(correct: list[bool], ids: list[str] | None = None) -> Predictions:
    """Two-class predictions that are right exactly where ``correct`` says (labels all 0)."""
    n = len(correct)
    probs = np.array([[0.9, 0.1] if c else [0.2, 0.8] for c in correct])
    ids = ids or [f"c{i}" for i in range(n)]
    return Predictions(probs, np.zeros(n, dtype=np.int64), ids, ["x", "y"], {"name": "t"})


def test_wilson_interval_matches_textbook_values() -> None:
    # 5 of 10: Wilson's 95 % interval is [23.66, 76.34] (Newcombe 1998, table I style).
    lo, hi = wilson_interval(5, 10)
    assert (lo, hi) == pytest.approx((23.659, 76.341), abs=1e-3)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(27.753, abs=1e-3)
    lo, hi = wilson_interval(10, 10)
    assert hi == pytest.approx(100.0) and lo == pytest.approx(72.247, abs=1e-3)
    with pytest.raises(ValueError):
        wilson_interval(0, 0)


def test_mcnemar_exact_is_the_two_sided_binomial_tail() -> None:
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64)
    assert mcnemar_exact(1, 9) == pytest.approx(2 * (1 + 10) / 2**10)  # C(10,0) + C(10,1)
    assert mcnemar_exact(9, 1) == mcnemar_exact(1, 9)
    assert mcnemar_exact(5, 5) == 1.0  # capped at 1


def test_holm_adjust_matches_hand_values() -> None:
    # Sorted 0.01, 0.03, 0.04 times 3, 2, 1 -> 0.03, 0.06, 0.04 -> running max 0.03, 0.06, 0.06.
    assert holm_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm_adjust([0.5, 0.001]) == pytest.approx([0.5, 0.002])
    assert holm_adjust([0.6, 0.6]) == [1.0, 1.0]
    assert holm_adjust([0.2]) == [0.2] and holm_adjust([]) == []


def test_compare_to_reference_adjusts_over_the_family() -> None:
    ref = _pred([True] * 8 + [False] * 8)
    better = _pred([True] * 16)  # 8 clips only it gets right: p = 2 / 2**8
    same = _pred([True] * 8 + [False] * 8)
    r = compare_to_reference(ref, [better, same], ["ref", "better", "same"])
    first, second = r["comparisons"]
    assert r["n"] == 16 and first["b"]["name"] == "better" and first["a"]["name"] == "ref"
    assert first["mcnemar_p"] == pytest.approx(2 / 2**8)
    assert first["mcnemar_p_holm"] == pytest.approx(2 * 2 / 2**8)
    assert second["mcnemar_p"] == second["mcnemar_p_holm"] == 1.0
    assert first == {
        **compare_predictions(ref, better, ("ref", "better")),
        "mcnemar_p_holm": 4 / 2**8,
    }
    with pytest.raises(ValueError):
        compare_to_reference(ref, [better], ["ref"])


def test_compare_counts_the_discordant_clips() -> None:
    a = _pred([True, True, False, False, True, True])
    b = _pred([True, False, True, True, True, False])
    r = compare_predictions(a, b, ("a", "b"))
    assert (r["only_a_right"], r["only_b_right"]) == (2, 2)
    assert (r["both_right"], r["both_wrong"]) == (2, 0)
    assert r["a"]["correct"] == 4 and r["b"]["correct"] == 4 and r["difference"] == 0.0
    assert r["agreement"] == pytest.approx(100 * 2 / 6)
    assert r["mcnemar_p"] == 1.0
    assert r["a"]["top1_ci95"] == pytest.approx(list(wilson_interval(4, 6)))


def test_compare_refuses_different_clips_or_classes() -> None:
    a = _pred([True, False])
    with pytest.raises(ConfigError, match=r"different clips \(e\.g\. 'c1' is in one only\)"):
        compare_predictions(a, _pred([True, False], ids=["c0", "zz"]), ("a", "b"))
    with pytest.raises(ConfigError, match="another order"):
        compare_predictions(a, _pred([True, False], ids=["c1", "c0"]), ("a", "b"))
    other = Predictions(a.probs, a.labels, a.ids, ["p", "q"], {})
    with pytest.raises(ConfigError, match="different classes"):
        compare_predictions(a, other, ("a", "b"))


def test_prediction_file_round_trip_and_bad_files(tmp_path: Path) -> None:
    p = _pred([True, False, True])
    save_predictions(tmp_path / "p.npz", p)
    q = load_predictions(tmp_path / "p.npz")
    assert np.array_equal(q.probs, p.probs) and q.ids == p.ids and q.source == p.source
    assert [f.name for f in tmp_path.iterdir()] == ["p.npz"]  # no temp file left
    with pytest.raises(ConfigError, match=r"p\.txt: prediction files are \.npz"):
        save_predictions(tmp_path / "p.txt", p)
    np.savez(tmp_path / "miss.npz", probs=p.probs)
    with pytest.raises(ConfigError, match="missing labels, ids, classes, source"):
        load_predictions(tmp_path / "miss.npz")
    good = {"probs": p.probs, "labels": p.labels, "ids": np.array(p.ids), "classes": ["x", "y"]}
    np.savez(tmp_path / "shape.npz", **{**good, "probs": p.probs[:2]}, source=["{}"])
    with pytest.raises(ConfigError, match=r"shape\.npz: probs has shape \(2, 2\)"):
        load_predictions(tmp_path / "shape.npz")
    np.savez(tmp_path / "lab.npz", **{**good, "labels": np.array([0, 5, 0])}, source=["{}"])
    with pytest.raises(ConfigError, match=r"lab\.npz: labels must be integers in \[0, 2\)"):
        load_predictions(tmp_path / "lab.npz")
    # An object array would need the pickle loader, which is never used.
    obj = np.array([{"x": 1}, None, 3], dtype=object)
    np.savez(tmp_path / "obj.npz", **{**good, "ids": obj}, source=["{}"])
    with pytest.raises(ConfigError, match=r"obj\.npz: cannot read"):
        load_predictions(tmp_path / "obj.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match=r"junk\.npz: cannot read"):
        load_predictions(tmp_path / "junk.npz")


def test_saved_probabilities_reproduce_the_evaluation(runs, tmp_path: Path) -> None:
    store, one, _ = runs
    m = evaluate(one, store, save_probs=tmp_path / "one.npz")
    pred = load_predictions(tmp_path / "one.npz")
    assert m["probs_file"] == str(tmp_path / "one.npz")
    assert 100 * pred.correct.mean() == pytest.approx(m["top1"])
    assert len(pred.ids) == m["n"] == 15 and pred.source["checkpoint"] == str(one)
    assert pred.source["split"] == "val" and pred.source["flip"] is False


def test_compare_cli_on_checkpoints_and_files(runs, tmp_path: Path, cli: Cli) -> None:
    store, one, two = runs
    d = ["--data", str(store)]
    code, _, err = cli("eval", str(one), *d, "--save-probs", str(tmp_path / "1.npz"))
    assert code == 0, err
    code, out, err = cli("compare", str(tmp_path / "1.npz"), str(one), *d, "--json")
    assert code == 0, err
    same = json.loads(out)
    assert same["agreement"] == 100.0 and same["mcnemar_p"] == 1.0 and same["n"] == 15
    code, out, err = cli("compare", str(one), str(two), *d, "--json")
    r = json.loads(out)
    want = compare_predictions(
        load_predictions(tmp_path / "1.npz"),
        load_predictions(_saved(two, store, tmp_path / "2.npz")),
        (str(one), str(two)),
    )
    assert {k: r[k] for k in ("only_a_right", "only_b_right", "mcnemar_p")} == {
        k: want[k] for k in ("only_a_right", "only_b_right", "mcnemar_p")
    }
    code, out, _ = cli("compare", str(one), str(two), *d)
    assert code == 0 and "McNemar exact p = " in out and "95% CI" in out and "Holm" not in out
    # Several candidates against one reference: each pairwise result, plus Holm's adjustment.
    code, out, err = cli("compare", str(one), str(two), str(tmp_path / "1.npz"), *d, "--json")
    assert code == 0, err
    fam = json.loads(out)
    assert [c["b"]["name"] for c in fam["comparisons"]] == [str(two), str(tmp_path / "1.npz")]
    assert fam["comparisons"][0]["mcnemar_p"] == r["mcnemar_p"]
    assert fam["comparisons"][1]["mcnemar_p"] == 1.0
    assert fam["comparisons"][0]["mcnemar_p_holm"] == min(1.0, 2 * r["mcnemar_p"])
    code, out, _ = cli("compare", str(one), str(two), str(tmp_path / "1.npz"), *d)
    assert code == 0 and out.count("over the 2 comparisons") == 2 and "C - A +0.00 points" in out
    # An ensemble's fused probabilities are a prediction file too.
    ens = ["ensemble", str(one), str(two), *d, "--save-probs", str(tmp_path / "e.npz"), "--json"]
    code, out, err = cli(*ens)
    assert code == 0, err
    fused = load_predictions(tmp_path / "e.npz")
    assert 100 * fused.correct.mean() == pytest.approx(json.loads(out)["top1"])
    assert fused.source["checkpoints"] == [str(one), str(two)]


def test_ensemble_fuses_saved_prediction_files_as_saved(runs, tmp_path: Path, cli: Cli) -> None:
    store, one, two = runs
    d, w = ["--data", str(store)], ["--weights", "0.7,0.3"]
    p1, p2 = str(tmp_path / "1.npz"), str(tmp_path / "2.npz")
    for ck, path in ((one, p1), (two, p2)):
        code, _, err = cli("eval", str(ck), *d, "--save-probs", path)
        assert code == 0, err
    code, out, err = cli("ensemble", str(one), str(two), *d, *w)
    assert code == 0, err
    want = out.splitlines()[-1]
    # Files only (no --data needed), and a file beside a checkpoint: the same fused result.
    code, out, err = cli("ensemble", p1, p2, *w, "--save-probs", str(tmp_path / "e.npz"))
    assert code == 0, err
    assert out.splitlines()[-1] == want
    # Members are listed by the stream eval recorded in each file, as checkpoints are.
    assert [ln.split()[1] for ln in out.splitlines() if ln.startswith("  w=")] == ["joint"] * 2
    assert load_predictions(p1).source["clips"] == 1  # the recipe's, not "default"
    code, out, err = cli("ensemble", str(tmp_path / "e.npz"), p2, *w)
    assert code == 0, err  # a fused file records no single stream
    assert [ln.split()[1] for ln in out.splitlines() if ln.startswith("  w=")] == [
        "(file)",
        "joint",
    ]
    fused = load_predictions(tmp_path / "e.npz")
    expect = 0.7 * load_predictions(p1).probs + 0.3 * load_predictions(p2).probs
    np.testing.assert_allclose(fused.probs, expect, atol=1e-12)
    assert fused.source["checkpoints"] == [p1, p2]
    assert set(fused.source["prediction_files"]) == {p1, p2}
    code, out, err = cli("ensemble", p1, str(two), *d, *w)
    assert code == 0 and out.splitlines()[-1] == want, err
    # Settings cannot reach probabilities already computed: refused, naming the file.
    code, _, err = cli("ensemble", str(one), p2, *d, *w, "--flip")
    assert code == 2 and "2.npz: --flip applies to checkpoints only" in err, err
    code, _, err = cli("ensemble", p1, p2, *w, "--split", "val", "--clips", "2")
    assert code == 2 and "1.npz: --split and --clips apply to checkpoints only" in err, err
    code, _, err = cli("ensemble", p1, str(two), *w)
    assert code == 2 and "needs --data" in err
    code, _, err = cli("ensemble", p1, p2, "--fit-weights")
    assert code == 2 and "1.npz: --fit-weights evaluates every member" in err
    code, _, err = cli("ensemble", p1, str(tmp_path / "none.npz"))
    assert code == 2 and "none.npz: no such prediction file" in err
    (tmp_path / "junk.npz").write_text("not a zip")
    code, _, err = cli("ensemble", p1, str(tmp_path / "junk.npz"))
    assert code == 2 and "junk.npz: cannot read as a prediction .npz (not a zip" in err, err
    assert "allow_pickle" not in err


def _saved(ck: Path, store: Path, path: Path) -> Path:
    evaluate(ck, store, save_probs=path)
    return path


def test_compare_and_save_probs_errors(runs, tmp_path: Path, cli: Cli) -> None:
    store, one, two = runs
    code, _, err = cli("compare", str(one), str(two))
    assert code == 2 and "needs --data" in err
    code, _, err = cli("compare", str(tmp_path / "none.npz"), str(one))
    assert code == 2 and "none.npz: no such prediction file" in err
    evaluate(one, store, save_probs=tmp_path / "1.npz")
    code, _, err = cli("compare", str(tmp_path / "1.npz"), str(one), "--flip")
    assert code == 2 and "1.npz: --flip applies to checkpoints only" in err  # only what was given
    code, _, err = cli("eval", str(one), "--data", str(store), "--save-probs", tmp_path / "t.npz")
    assert code == 0 and f"predictions written to {tmp_path / 't.npz'}" in err
    (tmp_path / "t.npz").unlink()
    (tmp_path / "1.npz").unlink()
    bad = ["eval", str(one), "--data", str(store), "--save-probs", str(tmp_path / "p.csv")]
    code, _, err = cli(*bad)
    assert code == 2 and "p.csv: prediction files are .npz" in err
    bad = ["ensemble", str(one), str(two), "--data", str(store), "--save-probs", "x.json"]
    code, _, err = cli(*bad)
    assert code == 2 and "x.json: prediction files are .npz" in err
    assert list(tmp_path.iterdir()) == []
