"""Attribution, explanation reports, prototype galleries and the demo's report."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import Cli, dataset_dir, vtest_excerpt
from protoskel.data.readers.generic import write_generic_npz
from protoskel.data.store import open_store, write_store
from protoskel.errors import ConfigError, ProtoskelError
from protoskel.explain.attribution import (
    block_effects,
    frame_importance,
    gradient_saliency,
    joint_importance,
    normalize01,
    prototype_attribution,
    prototype_evidence,
    prototype_masking,
)
from protoskel.explain.report import write_report
from protoskel.inference import Predictor, load_input
from protoskel.models.prototypes import find_prototype_head
from protoskel.training.config import config_from_dict
from protoskel.training.trainer import train
from test_inference import TINY_CFG, train_tiny


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A prototype checkpoint, its store, a sample clip and a report written with --data."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("explain")
    out = train_tiny(root)
    out["clip"] = write_generic_npz(open_store(out["store"]).split("val").get(1), root / "c.npz")
    out["report"] = write_report(out["ck"], out["clip"], root / "report", data_root=out["store"])
    return out


def no_web_resources(text: str) -> bool:
    """True when a page references nothing on the network."""
    return "http://" not in text and "https://" not in text and "//cdn" not in text


def gif_frames(path: Path) -> int:
    with Image.open(path) as im:
        return int(im.n_frames)


# ------------------------------------------------------------------------------ attribution
def test_saliency_is_a_normalised_map_that_ignores_empty_frames(tiny: dict[str, Path]) -> None:
    pred = Predictor.from_checkpoint(tiny["ck"])
    x = pred.prepare(load_input(tiny["clip"]))
    x[:, :, :4] = 0.0  # grad x input is zero where the input is
    sal = gradient_saliency(pred.model, x, target=2)
    assert sal.shape == (16, 20) and sal.max() == pytest.approx(1.0) and sal.min() >= 0
    assert not sal[:4].any() and sal[4:].any()
    assert all(p.grad is None for p in pred.model.parameters())
    fi, ji = frame_importance(sal), joint_importance(sal)
    assert fi.shape == (16,) and ji.shape == (20,) and fi.max() == pytest.approx(1.0)


def test_prototype_evidence_sums_to_the_logits_and_maps_to_parts(tiny: dict[str, Path]) -> None:
    pred = Predictor.from_checkpoint(tiny["ck"])
    seq = load_input(tiny["clip"])
    x = pred.prepare(seq)
    pos = pred.positions(seq.num_frames)[0]
    ev = prototype_evidence(pred.model, x, pos)
    with torch.no_grad():
        logits = pred.model(x)[0].double().numpy()
    np.testing.assert_allclose(ev["logits"], logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ev["contributions"].sum(1) + ev["bias"], logits, atol=1e-4)
    assert (ev["clip_frame_start"] <= np.floor(pos[ev["frame_start"]].numpy())).all()

    target = int(np.argmax(logits))
    top = int(np.argmax(ev["contributions"][target]))
    imp = prototype_attribution(
        pred.model, x, target, pred.layout, top=1, evidence=ev, method="window"
    )
    part = list(pred.layout.parts.values())[int(ev["proto_part"][top])]
    fs, fe = int(ev["frame_start"][top]), int(ev["frame_end"][top])
    expect = np.zeros((16, 20))
    expect[fs:fe, list(part)] = 1.0
    np.testing.assert_array_equal(imp, expect)  # exactly the matched part and frames
    full = prototype_attribution(pred.model, x, target, pred.layout, method="window")
    assert full.shape == (16, 20) and full.max() == pytest.approx(1.0) and full.min() >= 0


def test_prototype_masking_maps_are_seeded_and_sum_to_the_class_map(
    tiny: dict[str, Path],
) -> None:
    pred = Predictor.from_checkpoint(tiny["ck"])
    x = pred.prepare(load_input(tiny["clip"]))
    ev = prototype_evidence(pred.model, x)
    target = int(np.argmax(ev["logits"]))
    maps = prototype_masking(pred.model, x, target, masks=64)
    assert maps.shape == (ev["contributions"].shape[1], 16, 20)
    np.testing.assert_array_equal(maps, prototype_masking(pred.model, x, target, masks=64))
    assert not np.array_equal(maps, prototype_masking(pred.model, x, target, masks=64, seed=1))
    # 4-frame blocks: every block of 4 frames of one joint shares one value.
    assert (maps[:, 0::4] == maps[:, 3::4]).all()
    support = [q for q in range(maps.shape[0]) if ev["contributions"][target, q] > 0]
    class_map = prototype_attribution(pred.model, x, target, pred.layout)
    full = prototype_masking(pred.model, x, target)  # the defaults the class map uses
    np.testing.assert_allclose(class_map, normalize01(full[support].sum(0)), atol=0)
    with pytest.raises(ConfigError, match="masking or window"):
        prototype_attribution(pred.model, x, target, pred.layout, method="grad")
    with pytest.raises(ConfigError, match="zero or still"):
        prototype_masking(pred.model, x, target, fill="blur")


def test_block_effects_recover_additive_effects() -> None:
    g = torch.Generator().manual_seed(0)
    k, b = 20000, 6
    rate = torch.rand(k, generator=g)
    keep = torch.rand(k, b, generator=g) < rate[:, None]
    a = torch.tensor([3.0, 0.0, -1.0, 0.5, 2.0, 0.0], dtype=torch.float64)
    # Two scores: additive, and additive plus an interaction of blocks 0 and 4.
    e1 = keep.double() @ a
    e2 = e1 + 2.0 * (keep[:, 0] & keep[:, 4]).double()
    eff = block_effects(torch.stack([e1, e2], 1), keep, rate)
    np.testing.assert_allclose(eff[0].numpy(), a.numpy(), atol=0.1)
    # The interaction is credited to the blocks involved, not to the others.
    assert eff[1, 0] > a[0] + 0.3 and eff[1, 4] > a[4] + 0.3
    np.testing.assert_allclose(eff[1, [1, 2, 3, 5]].numpy(), a[[1, 2, 3, 5]].numpy(), atol=0.12)


# ----------------------------------------------------------------------------------- reports
def test_explanation_explains_the_prediction_predict_reports_with_the_mirror(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    from protoskel.explain.report import explain_clip
    from protoskel.training.checkpoint import load_checkpoint, save_checkpoint

    ck = load_checkpoint(train_tiny(tmp_path, "linear", epochs=1)["ck"])
    ck["config"]["data"].update(test_flip=True, test_clips=2)
    save_checkpoint(ck, tmp_path / "flip.pt")
    pred = Predictor.from_checkpoint(tmp_path / "flip.pt")
    seq = load_input(tiny["clip"])
    facts = explain_clip(pred, seq)["facts"]
    want = pred.predict(seq)["predictions"]
    assert [p["index"] for p in facts["predictions"]] == [p["index"] for p in want]
    got = [p["prob"] for p in facts["predictions"]]
    np.testing.assert_allclose(got, [p["prob"] for p in want], rtol=1e-6)
    # Without the mirror the probabilities differ (else this test could not fail).
    plain = pred.prepare(seq)
    with torch.no_grad():
        one = torch.softmax(pred.model(plain), 1).mean(0).double().numpy()
    assert not np.allclose(one[[p["index"] for p in want]], got, rtol=1e-6)
    assert facts["model"]["test_flip"] is True and facts["views_averaged"] == 4


def test_report_files_and_offline_html(tiny: dict[str, Path]) -> None:
    rep = tiny["report"]
    assert sorted(p.name for p in rep.iterdir() if not p.name.startswith("prototype_")) == [
        "explanation.gif",
        "explanation.json",
        "importance.png",
        "index.html",
        "saliency.png",
    ]
    page = (rep / "index.html").read_text(encoding="utf-8")
    assert no_web_resources(page)
    srcs = re.findall(r'src="([^"]+)"', page)
    assert srcs and all(s.startswith("data:image/") for s in srcs)
    assert "<script src" not in page and "<link" not in page
    assert gif_frames(rep / "explanation.gif") == 16 > 1


def test_report_json_facts_point_at_real_training_clips(tiny: dict[str, Path]) -> None:
    facts = json.loads((tiny["report"] / "explanation.json").read_text(encoding="utf-8"))
    pred = Predictor.from_checkpoint(tiny["ck"])
    probs = [p["prob"] for p in facts["predictions"]]
    assert probs == sorted(probs, reverse=True) and len(probs) == 5
    assert facts["explained_class"]["index"] == facts["predictions"][0]["index"]
    lg = facts["logit"]
    assert lg["value"] == pytest.approx(lg["bias"] + lg["prototypes_total"], abs=1e-3)
    protos = facts["prototypes"]
    assert 1 <= len(protos) <= 5
    assert [p["contribution"] for p in protos] == sorted(
        (p["contribution"] for p in protos), reverse=True
    )
    train_ids = set(open_store(tiny["store"]).split("train").ids)
    for p in protos:
        src = p["source"]
        assert src["clip_id"] in train_ids and src["found"] and src["found_in"] == "train"
        assert src["class_name"] == pred.classes[p["class"]]
        assert p["part"] in pred.layout.parts
        assert p["input"]["frame_end"] > p["input"]["frame_start"]
        assert (tiny["report"] / f"prototype_{p['rank']}.png").is_file()
    imp = np.asarray(facts["importance"]["map"])
    assert facts["importance"]["method"] == "prototype_masking" and imp.shape == (16, 20)
    for p in protos:
        dep = p["depends_on"]
        assert 0.0 <= dep["own_part_share"] <= 1.0
        assert len(dep["top_joints"]) == 3 and set(dep["top_joints"]) <= set(pred.layout.joints)
    assert np.asarray(facts["saliency"]["map"]).shape == (16, 20)


def test_report_replaces_only_reports(tiny: dict[str, Path], tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    with pytest.raises(ProtoskelError, match="not a protoskel"):
        write_report(tiny["ck"], tiny["clip"], mine)
    assert (mine / "keep.txt").read_text() == "mine"
    seq = load_input(tiny["clip"])
    out = write_report(tiny["ck"], seq, tmp_path / "r", top_k_classes=2, top_prototypes=2)
    first = json.loads((out / "explanation.json").read_text())
    assert len(first["predictions"]) == 2 and len(first["prototypes"]) == 2
    # Without --data the prototype panels say which clip it is and how to draw it.
    assert "--data" in (out / "index.html").read_text()
    write_report(tiny["ck"], seq, out, top_prototypes=1)  # a previous report is replaced
    assert len(json.loads((out / "explanation.json").read_text())["prototypes"]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "r"]  # no temp leftovers


def test_cli_explain_and_prototypes_gallery(
    tiny: dict[str, Path], tmp_path: Path, cli: Cli
) -> None:
    code, out, err = cli(
        "explain",
        tiny["ck"],
        tiny["clip"],
        "--out",
        tmp_path / "rep",
        "--json",
        "--top-prototypes",
        "3",
    )
    assert code == 0, err
    res = json.loads(out)
    assert res["index"] == str(tmp_path / "rep" / "index.html") and len(res["prototypes"]) == 3
    assert res["predictions"][0]["prob"] >= res["predictions"][-1]["prob"]

    code, out, err = cli(
        "prototypes", tiny["ck"], "--out", tmp_path / "gal", "--data", tiny["store"], "--json"
    )
    assert code == 0, err
    res = json.loads(out)
    head = find_prototype_head(Predictor.from_checkpoint(tiny["ck"]).model)
    assert res["prototypes"] == head.num_prototypes == 6 * 5
    facts = json.loads((tmp_path / "gal" / "prototypes.json").read_text())
    train_ids = set(open_store(tiny["store"]).split("train").ids)
    assert all(
        p["source"]["clip_id"] in train_ids and p["source"]["found"] for p in facts["prototypes"]
    )
    page = (tmp_path / "gal" / "index.html").read_text()
    assert no_web_resources(page) and page.count("data:image/png") == head.num_prototypes


def test_demo_ends_with_a_report_and_opens_no_browser_headless(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import webbrowser

    import protoskel.demo as demo

    opened: list[str] = []
    monkeypatch.setattr(webbrowser, "open", lambda url, *a, **k: opened.append(url))
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    res = demo.run_demo(
        tmp_path / "d",
        epochs=1,
        n_train_per_class=3,
        n_val_per_class=1,
        progress=False,
        overrides=["model.kwargs.width=8"],
        open_report=True,
    )
    rep = Path(res["report"])
    facts = json.loads((rep / "explanation.json").read_text())
    # The demo trains a prototype model and passes its store: every prototype is drawn
    # beside the training segment it was projected onto.
    assert facts["model"]["head"] == "prototype" and facts["prototypes"]
    assert all(p["source"] and p["source"]["found"] for p in facts["prototypes"])
    page = (rep / "index.html").read_text()
    assert "prototype head" in page and no_web_resources(page)
    assert gif_frames(rep / "explanation.gif") > 1 and opened == []


# ---------------------------------------------------------------------------------- real data
def test_real_nwucla_clip_explained_with_its_training_segments(tmp_path: Path) -> None:
    from protoskel.data.readers.nwucla import NWUCLA_CLASSES, read_nwucla

    src = dataset_dir("nw-ucla") / "all_sqe"
    files = sorted(src.glob("a*_s*_e*_v*.json"))
    per_class: dict[int, list[Path]] = {}
    for f in files:
        code = int(f.name[1:3])
        if code in (1, 2, 3, 4, 5, 6, 8, 9, 11, 12) and len(per_class.setdefault(code, [])) < 4:
            per_class[code].append(f)
    clips = [read_nwucla(f) for fs in per_class.values() for f in fs]
    assert len(clips) == 40
    store = write_store(
        tmp_path / "store",
        {"train": [c for i, c in enumerate(clips) if i % 4], "val": clips[::4]},
        dataset="nw-ucla",
        protocol="tiny",
        layout="kinect-v1-20",
        classes=list(NWUCLA_CLASSES),
    )
    cfg = json.loads(json.dumps(TINY_CFG))
    cfg["train"].update(epochs=1, push_epochs=1)
    train(config_from_dict(cfg), store, tmp_path / "run", progress=False)
    real = dataset_dir("nw-ucla") / "all_sqe" / f"{clips[0].id}.json"
    out = write_report(tmp_path / "run" / "last.pt", real, tmp_path / "rep", data_root=store)
    facts = json.loads((out / "explanation.json").read_text())
    train_ids = set(open_store(store).split("train").ids)
    assert facts["input"]["id"] == clips[0].id and facts["prototypes"]
    assert all(
        p["source"]["clip_id"] in train_ids and p["source"]["found"] for p in facts["prototypes"]
    )
    assert gif_frames(out / "explanation.gif") == 16
    # A raw dataset folder works too: clip files are found by their id.
    out = write_report(tmp_path / "run" / "last.pt", real, tmp_path / "raw", data_root=src)
    facts = json.loads((out / "explanation.json").read_text())
    found = [p["source"]["found_in"] for p in facts["prototypes"]]
    assert all(f and Path(f).parent == src for f in found)


def test_cli_explain_a_video(tiny: dict[str, Path], tmp_path: Path, cli: Cli) -> None:
    pytest.importorskip("mediapipe")
    video = vtest_excerpt(tmp_path / "walk.avi", 160, 10)
    code, out, err = cli(
        "explain", tiny["ck"], video, "--out", tmp_path / "v", "--max-frames", "10", "--json"
    )
    assert code == 0, err
    facts = json.loads((tmp_path / "v" / "explanation.json").read_text())
    assert facts["input"]["layout"] == "mediapipe-33" and facts["model"]["layout"] == "kinect-v1-20"
    assert facts["input"]["frames"] == 10 and json.loads(out)["predictions"]
    assert gif_frames(tmp_path / "v" / "explanation.gif") == 16
