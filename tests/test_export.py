"""ONNX / TorchScript export: same logits as PyTorch on prepared clips, invariance included."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from _tiny import tiny_recipe
from conftest import dataset_dir
from protoskel.cli import app
from protoskel.data.store import open_store
from protoskel.data.synthetic import write_synthetic_store
from protoskel.errors import CheckpointError, ConfigError
from protoskel.export import (
    export_checkpoint,
    read_export_metadata,
    symmetric_eig,
    traceable_frames,
)
from protoskel.inference import Predictor
from protoskel.models.invariance import (
    FrameAveraging,
    canonicalize,
    frames,
    random_rotation,
    rotate,
)
from protoskel.training.config import config_from_dict
from protoskel.training.trainer import train

ort = pytest.importorskip("onnxruntime")

TINY = tiny_recipe()
VARIANTS = {
    "linear": {},
    "fa": {"invariance": "frame_averaging"},
    "fa_canonical": {"invariance": "frame_averaging", "invariance_mode": "canonical"},
    "fa_up": {"invariance": "frame_averaging", "invariance_axes": "up"},
    "prototype": {"head": "prototype", "head_kwargs": {"window": 2, "proto_dim": 8}},
    "stacked": {},
    "distance": {},
    "sagcn": {"backbone": "sagcn", "kwargs": {"width": 8, "depth": 3, "heads": 2}},
}
#: Data settings of a variant beside its model settings: two streams stacked on channels, and
#: a stream with one channel per joint.
DATA_VARIANTS = {"stacked": {"stream": "joint+bone"}, "distance": {"stream": "distance"}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny atgcn checkpoints trained for 2 epochs on the synthetic set (a few seconds)."""
    root = tmp_path_factory.mktemp("export")
    store = write_synthetic_store(root / "store", n_train_per_class=4, n_val_per_class=2)
    out = {"store": store}
    for name, model in VARIANTS.items():
        cfg = copy.deepcopy(TINY)
        cfg["model"].update(model)
        cfg["data"].update(DATA_VARIANTS.get(name, {}))
        train(config_from_dict(cfg), store, root / name, progress=False)
        out[name] = root / name / "last.pt"
    return out


class _Exports:
    """Each (variant, format) exported once per module, on first use (exports take seconds)."""

    def __init__(self, runs: dict[str, Path], root: Path) -> None:
        self.runs, self.root, self.done = runs, root, {}

    def __call__(self, variant: str, fmt: str = "onnx") -> Path:
        key = (variant, fmt)
        if key not in self.done:
            out = self.root / f"{variant}.{fmt if fmt in ('onnx', 'pt2') else 'pt'}"
            self.done[key] = export_checkpoint(self.runs[variant], out, fmt)
        return Path(self.done[key]["out"])

    def info(self, variant: str, fmt: str = "onnx") -> dict:
        """The summary export_checkpoint returned."""
        self(variant, fmt)
        return self.done[(variant, fmt)]


@pytest.fixture(scope="module")
def exported(runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> _Exports:
    """Lazily exported files of the tiny checkpoints."""
    return _Exports(runs, tmp_path_factory.mktemp("exported"))


_SESSIONS: dict[str, object] = {}


def _prepared(pred: Predictor, seqs: list) -> torch.Tensor:
    """A batch of clips prepared by the inference pipeline (one row per clip)."""
    return torch.cat([pred.prepare(s) for s in seqs])


def _synthetic_batch(runs: dict[str, Path], pred: Predictor) -> torch.Tensor:
    val = open_store(runs["store"]).split("val")
    return _prepared(pred, [val.get(i) for i in range(len(val))])


def _onnx_logits(path: Path, x: torch.Tensor) -> np.ndarray:
    if str(path) not in _SESSIONS:
        _SESSIONS[str(path)] = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return _SESSIONS[str(path)].run(["logits"], {"x": x.numpy()})[0]


def _torch_logits(pred: Predictor, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return pred.model(x).numpy()


@pytest.mark.parametrize(
    "variant", ["linear", "fa", "fa_canonical", "fa_up", "stacked", "distance", "sagcn"]
)
def test_onnx_matches_pytorch_on_synthetic_clips(
    runs: dict[str, Path], exported: _Exports, variant: str
) -> None:
    pred = Predictor.from_checkpoint(runs[variant])
    out = exported(variant)
    assert out.stat().st_size == exported.info(variant)["bytes"] > 0
    x = _synthetic_batch(runs, pred)
    assert x.shape[0] == 12
    ref, got = _torch_logits(pred, x), _onnx_logits(out, x)
    assert got.shape == ref.shape == (12, 6)
    assert read_export_metadata(out)["input_channels"] == str(x.shape[1])
    assert exported.info(variant)["input_shape"][1] == x.shape[1]
    assert np.abs(got - ref).max() < 1e-4
    # Dynamic batch axis: a single clip and two persons (zero-padded) work too.
    one = x[:1]
    assert np.abs(_onnx_logits(out, one) - _torch_logits(pred, one)).max() < 1e-4
    two = torch.cat([x[:3], torch.zeros_like(x[:3])], dim=4)
    assert np.abs(_onnx_logits(out, two) - _torch_logits(pred, two)).max() < 1e-4


@pytest.mark.parametrize(("variant", "channels"), [("stacked", 6), ("distance", 20)])
def test_derived_streams_predict_over_a_sliding_window(
    runs: dict[str, Path], variant: str, channels: int
) -> None:
    from protoskel.inference import Frame

    pred = Predictor.from_checkpoint(runs[variant])
    assert pred.prepare(open_store(runs["store"]).split("val").get(0)).shape[1] == channels
    seq = open_store(runs["store"]).split("val").get(0)
    frames = [Frame(i, seq.keypoints[:, i], seq.layout, arrived=0.0) for i in range(seq.num_frames)]
    (row,) = pred.predict_windows(frames, window=seq.num_frames)
    assert row["prob"] == pytest.approx(pred.predict(seq, 1)["predictions"][0]["prob"])


@pytest.mark.realdata
def test_onnx_and_torchscript_match_pytorch_on_real_nwucla_clips(
    runs: dict[str, Path], exported: _Exports
) -> None:
    from protoskel.data.readers.nwucla import read_nwucla

    files = sorted((dataset_dir("nw-ucla") / "all_sqe").glob("*.json"))[::300][:5]
    assert len(files) == 5
    for variant in ("linear", "fa"):
        pred = Predictor.from_checkpoint(runs[variant])
        x = _prepared(pred, [read_nwucla(f) for f in files])
        ref = _torch_logits(pred, x)
        onnx_path, ts_path = exported(variant), exported(variant, "torchscript")
        assert np.abs(_onnx_logits(onnx_path, x) - ref).max() < 1e-4, variant
        with torch.no_grad():
            ts = torch.jit.load(str(ts_path))(x).numpy()
        assert np.abs(ts - ref).max() < 1e-4, variant


@pytest.mark.parametrize("variant", ["linear", "fa", "stacked", "sagcn"])
def test_torchscript_matches_pytorch(
    runs: dict[str, Path], exported: _Exports, variant: str
) -> None:
    pred = Predictor.from_checkpoint(runs[variant])
    out = exported(variant, "torchscript")
    x = _synthetic_batch(runs, pred)
    with torch.no_grad():
        got = torch.jit.load(str(out))(x).numpy()
    assert np.abs(got - _torch_logits(pred, x)).max() < 1e-4
    meta = read_export_metadata(out)
    assert meta["classes"] == pred.classes and meta["num_frames"] == "16"


@pytest.mark.parametrize("variant", ["linear", "fa", "prototype"])
def test_pt2_matches_pytorch_for_other_batch_and_person_counts(
    runs: dict[str, Path], exported: _Exports, variant: str
) -> None:
    pred = Predictor.from_checkpoint(runs[variant])
    program = torch.export.load(str(exported(variant, "pt2"))).module()
    x = _synthetic_batch(runs, pred)
    batches = [x[:1], x]
    if exported.info(variant, "pt2")["input_shape"][4] == "M":
        batches.append(torch.cat([x, x.roll(1, dims=0)], dim=4))  # twice the persons
    for b in batches:
        with torch.no_grad():
            got, ref = program(b).numpy(), pred.model(b).numpy()
        assert got.shape == (b.shape[0], len(pred.classes))
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)
    meta = read_export_metadata(exported(variant, "pt2"))
    assert meta["classes"] == pred.classes and meta["num_frames"] == "16"


def test_prototype_model_exports_with_float32_tolerance(
    runs: dict[str, Path], exported: _Exports
) -> None:
    # ProtoPNet's log((d + 1) / (d + 1e-4)) of a squared distance computed as |z|^2 - 2 z.p +
    # |p|^2 amplifies float32 rounding by up to ~1/d, so ONNX Runtime's different (equally
    # valid) summation order moves logits of ~50 by up to ~1e-3: compare relatively.
    pred = Predictor.from_checkpoint(runs["prototype"])
    out = exported("prototype")
    x = _synthetic_batch(runs, pred)
    ref, got = _torch_logits(pred, x), _onnx_logits(out, x)
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=2e-3)
    assert (got.argmax(1) == ref.argmax(1)).all()
    ts = exported("prototype", "torchscript")
    with torch.no_grad():
        np.testing.assert_allclose(torch.jit.load(str(ts))(x).numpy(), ref, rtol=1e-6, atol=1e-5)


def test_onnx_metadata_records_how_to_feed_the_model(
    runs: dict[str, Path], exported: _Exports
) -> None:
    out, info = exported("fa"), exported.info("fa")
    meta = read_export_metadata(out)
    assert meta["classes"] == list(open_store(runs["store"]).classes)
    assert meta["layout"] == "kinect-v1-20" and meta["layout_def"]["name"] == "kinect-v1-20"
    assert meta["stream"] == "joint" and meta["num_frames"] == "16"
    assert meta["test_flip"] == "false"  # the recipe did not ask for test-time mirroring
    assert meta["test_rotate"] == []  # nor rotations (decoded from JSON like normalize)
    assert meta["invariance"] == "frame_averaging" and meta["invariance_mode"] == "average"
    assert "inside the graph" in meta["frame_averaging"]
    assert info["input_shape"] == ["N", 3, 16, 20, "M"]
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    shape = sess.get_inputs()[0].shape
    assert isinstance(shape[0], str) and shape[1:4] == [3, 16, 20]


def test_onnx_averaged_over_the_prepared_views_is_what_predict_prints(
    runs: dict[str, Path], exported: _Exports, tmp_path: Path
) -> None:
    from protoskel.training.checkpoint import load_checkpoint, save_checkpoint

    ck = load_checkpoint(runs["fa"])
    ck["config"]["data"].update(test_flip=True, test_clips=2)
    save_checkpoint(ck, tmp_path / "flip.pt")
    pred = Predictor.from_checkpoint(tmp_path / "flip.pt")
    out = exported("fa")  # the graph does not depend on the test-time settings
    assert "outside the graph" in read_export_metadata(out)["test_time"]
    seq = open_store(runs["store"]).split("val").get(0)
    views = pred.prepare(seq, mirror=pred.test_flip, rotate=True)
    assert views.shape[0] == 4
    logits = torch.from_numpy(_onnx_logits(out, views))
    got = torch.softmax(logits, 1).mean(0).double().numpy()
    np.testing.assert_allclose(got, pred.probabilities(seq), atol=1e-5)


def test_exported_frame_averaging_stays_rotation_invariant(
    runs: dict[str, Path], exported: _Exports
) -> None:
    pred = Predictor.from_checkpoint(runs["fa"])
    out = exported("fa")
    x = _synthetic_batch(runs, pred)[:4]
    rot = random_rotation(4, 3, torch.Generator().manual_seed(3))
    moved = rotate(x, rot, torch.tensor([0.5, -1.0, 2.0]))
    a, b = _onnx_logits(out, x), _onnx_logits(out, moved)
    assert np.abs(a - b).max() < 1e-4
    # The plain model is not invariant, so the check above can fail.
    lin = exported("linear")
    assert np.abs(_onnx_logits(lin, x) - _onnx_logits(lin, moved)).max() > 1e-2


def _degenerate_clips() -> torch.Tensor:
    """Random clips plus an empty, a single-point, an isotropic, a planar and a padded one."""
    x = torch.randn(6, 3, 8, 5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x[1] = 0.0
    x[2] = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)[:, None, None, None]
    octa = torch.tensor([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1.0]])
    x[3] = 0.0
    x[3, :, 0, :, 0] = octa[:5].T
    x[3, :, 1, 0, 0] = octa[5]
    x[4, 2] = 0.0
    x[5, :, 4:] = 0.0
    return x.float()


@pytest.mark.parametrize("mode", ["average", "canonical"])
@pytest.mark.parametrize("reflections", [False, True])
@pytest.mark.parametrize("coords", [3, 2])
def test_traceable_frames_equal_eager_frames(mode: str, reflections: bool, coords: int) -> None:
    x = _degenerate_clips()
    ref = frames(x, coords, mode=mode, reflections=reflections)
    got = traceable_frames(x, coords, mode=mode, reflections=reflections)
    assert ref.tied.tolist() == got.tied.tolist() and ref.tied.any()
    assert ref.point.tolist() == got.point.tolist() and ref.point.any()
    assert ref.reduced.tolist() == got.reduced.tolist()
    torch.testing.assert_close(got.eigenvalues, ref.eigenvalues, atol=1e-12, rtol=1e-9)
    inner = torch.nn.Linear(3 * 8 * 5 * 2, 4)
    model = torch.nn.Sequential(torch.nn.Flatten(), inner)
    fa = FrameAveraging(model, mode=mode, reflections=reflections, coords=coords)
    from protoskel.export import TraceableFrameAveraging

    with torch.no_grad():
        torch.testing.assert_close(TraceableFrameAveraging(fa, 3)(x), fa(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", ["average", "canonical"])
@pytest.mark.parametrize("reflections", [False, True])
@pytest.mark.parametrize("coords", [3, 2])
def test_traceable_up_frames_equal_eager_frames(mode: str, reflections: bool, coords: int) -> None:
    x = _degenerate_clips()
    x[0, :, 2:5, 1] = 0.0  # the upper joint missing in some frames: those slots are skipped
    up = ([1.0, 0, 0, 0, 0], [0, 0.5, 0.5, 0, 0])  # lower: joint 0; upper: mean of joints 1, 2
    ref = frames(x, coords, mode=mode, reflections=reflections, up=up)
    got = traceable_frames(x, coords, mode=mode, reflections=reflections, up=up)
    assert ref.rotations.shape == got.rotations.shape
    assert ref.reduced.tolist() == got.reduced.tolist()
    assert ref.tied.tolist() == got.tied.tolist()
    # The up axis is unique; the other axes' signs differ between eigen-solvers, which the
    # frame set (average) or the third moments (canonical) absorb.
    torch.testing.assert_close(got.rotations[..., 0], ref.rotations[..., 0], atol=1e-9, rtol=0)
    if mode == "canonical":  # same canonical input (a flat axis's sign cannot change it)
        torch.testing.assert_close(canonicalize(x, got), canonicalize(x, ref), atol=1e-6, rtol=0)
    fa = FrameAveraging(
        torch.nn.Flatten(), mode=mode, reflections=reflections, coords=coords, up=up
    )
    from protoskel.export import TraceableFrameAveraging

    with torch.no_grad():
        torch.testing.assert_close(TraceableFrameAveraging(fa, 3)(x), fa(x), atol=1e-6, rtol=0)


def test_symmetric_eig_matches_eigh() -> None:
    a = torch.randn(64, 3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a = a @ a.transpose(1, 2)
    lam, vec = symmetric_eig(a)
    torch.testing.assert_close(lam, torch.linalg.eigvalsh(a).flip(-1), atol=1e-12, rtol=1e-12)
    rebuilt = vec @ torch.diag_embed(lam) @ vec.transpose(1, 2)
    torch.testing.assert_close(rebuilt, a, atol=1e-12, rtol=1e-12)
    eye = torch.eye(3, dtype=torch.float64).expand(64, 3, 3)
    torch.testing.assert_close(vec.transpose(1, 2) @ vec, eye, atol=1e-12, rtol=0)


def test_cli_export_json_and_errors(runs: dict[str, Path], tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "sub" / "m.onnx"
    res = runner.invoke(
        app, ["export", str(runs["linear"]), "--format", "onnx", "--out", str(out), "--json"]
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["out"] == str(out) and summary["format"] == "onnx" and out.is_file()
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # as a plain open() would (not 0600)
    with pytest.raises(ConfigError, match="must be one of onnx, pt2, torchscript"):
        export_checkpoint(runs["linear"], tmp_path / "m.x", "tflite")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        export_checkpoint(tmp_path / "missing.pt", tmp_path / "m.onnx", "onnx")
    # A name that says another format is refused before anything is written.
    (tmp_path / "keep.pt2").write_bytes(b"an earlier export")
    with pytest.raises(ConfigError, match=r"says pt2 but --format is onnx; name it keep\.onnx"):
        export_checkpoint(runs["linear"], tmp_path / "keep.pt2", "onnx")
    assert (tmp_path / "keep.pt2").read_bytes() == b"an earlier export"
    with pytest.raises(ConfigError, match="says onnx but --format is torchscript"):
        export_checkpoint(runs["linear"], tmp_path / "m2.onnx", "torchscript")


def test_failed_export_leaves_no_file(
    runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnx

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("simulated checker failure")

    monkeypatch.setattr(onnx.checker, "check_model", broken)
    out = tmp_path / "m.onnx"
    out.write_bytes(b"previous")
    with pytest.raises(CheckpointError, match="simulated checker failure"):
        export_checkpoint(runs["linear"], out, "onnx")
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
