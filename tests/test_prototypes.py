"""Part-prototype head, projection, last-layer fine-tuning, enrollment and forgetting."""

from __future__ import annotations

import copy
import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from protoskel.errors import ConfigError
from protoskel.explain import enroll, forget, forget_example
from protoskel.explain.enroll import calibrated_bias
from protoskel.layouts import Layout, get_layout
from protoskel.models.prototypes import (
    PrototypeHead,
    feature_rows,
    finetune_last_layer,
    project_prototypes,
    push_and_finetune,
)

LAYOUTS = ["penn-13", "kinect-v1-20", "mediapipe-33"]


class TinyBackbone(nn.Module):
    """Stand-in backbone: one temporal conv (stride 2) per person, (N, M, C_out, T/2, V)."""

    def __init__(self, layout: Layout, in_channels: int, out_channels: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, (3, 1), stride=(2, 1), padding=(1, 0))
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, t, v, m = x.shape
        y = torch.relu(self.conv(x.permute(0, 4, 1, 2, 3).reshape(n * m, c, t, v)))
        return y.view(n, m, *y.shape[1:])


class Net(nn.Module):
    """Backbone + head with the Classifier interface (features(), head)."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def make_model(layout: Layout, classes: int, seed: int = 0, **kw) -> Net:
    torch.manual_seed(seed)
    bb = TinyBackbone(layout, 3)
    head = PrototypeHead(bb.out_channels, classes, layout, proto_dim=16, **kw)
    return Net(bb, head)


def toy(
    layout: Layout, labels: list[int], *, t: int = 16, m: int = 1, seed: int = 0, noise=0.05
) -> torch.Tensor:
    """Clips (N, 3, T, V, M) whose class sets a fixed pose pattern and motion frequency."""
    v = layout.num_joints
    pat = torch.randn(8, 3, 1, v, generator=torch.Generator().manual_seed(123)) * 2
    g = torch.Generator().manual_seed(seed)
    y = torch.tensor(labels)
    time = torch.arange(t, dtype=torch.float32)
    wave = torch.sin(time[None, :] * (y[:, None] + 1) * 0.4)  # (N, T)
    x = pat[y] * (1 + 0.5 * wave[:, None, :, None])
    x = x + noise * torch.randn(len(labels), 3, t, v, generator=g)
    x = x[..., None].repeat(1, 1, 1, 1, m)
    if m > 1:
        x[::2, ..., 1:] = 0  # every other clip has a single person (padding slot)
    return x


def batches_of(x: torch.Tensor, y: torch.Tensor, size: int = 4):
    out = []
    for s in range(0, len(y), size):
        idx = torch.arange(s, min(s + size, len(y)))
        pos = (torch.arange(x.shape[2], dtype=torch.float32) * 2.0).repeat(len(idx), 1)
        out.append((x[idx], y[idx], idx, pos))
    return out


@pytest.mark.parametrize("layout_name", LAYOUTS)
@pytest.mark.parametrize("m", [1, 2])
def test_shapes_for_layouts_and_persons(layout_name: str, m: int) -> None:
    lay = get_layout(layout_name)
    model = make_model(lay, 3, window=3, stride=2)
    x = toy(lay, [0, 1, 2, 1], m=m, t=12)
    feats = model.features(x)
    assert feats.shape == (4, m, 8, 6, lay.num_joints)
    head = model.head
    z = head.segments(feats)
    # T' = 6, window 3, stride 2: starts 0, 2 and a last one ending at 6 (start 3)
    assert head.windows(6).tolist() == [[0, 3], [2, 5], [3, 6]]
    assert z.shape == (4, m, len(lay.parts), 3, 16)
    assert head.num_prototypes == 3 * len(lay.parts) * 2
    assert head.prototype_grid().shape == (3, len(lay.parts), 2, 16)
    logits = model(x)
    assert logits.shape == (4, 3)
    ex = head.explain(feats, input_frames=12)
    q = head.num_prototypes
    assert ex["similarity"].shape == (4, q) and ex["contributions"].shape == (4, 3, q)
    assert int(ex["person"].max()) < m and int(ex["window"].max()) < 3
    assert bool((ex["frame_end"] > ex["frame_start"]).all()) and int(ex["frame_end"].max()) <= 12
    # A clip shorter than the window gets one window over all of it.
    assert head.windows(2).tolist() == [[0, 2]]


def test_bad_feature_shape_is_a_config_error() -> None:
    lay = get_layout("penn-13")
    head = PrototypeHead(8, 3, lay)
    with pytest.raises(ConfigError, match="V=13"):
        head(torch.zeros(2, 1, 8, 4, 20))
    with pytest.raises(ConfigError, match="similarity"):
        PrototypeHead(8, 3, lay, similarity="dot")


@pytest.mark.parametrize("similarity", ["log", "cosine"])
def test_gradients_reach_every_part(similarity: str) -> None:
    lay = get_layout("kinect-v1-20")
    model = make_model(lay, 3, similarity=similarity)
    x, y = toy(lay, [0, 1, 2, 0], m=2), torch.tensor([0, 1, 2, 0])
    loss = F.cross_entropy(model(x), y) + model.head.weighted_aux_loss(None, y)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name


def test_last_layer_stays_non_negative() -> None:
    lay = get_layout("penn-13")
    model = make_model(lay, 3)
    head = model.head
    x = toy(lay, [0, 1, 2])
    assert float(head.last_weight.detach().min()) == 0.0  # off-class init is 0 when nonneg
    opt = torch.optim.SGD([head.last_weight], lr=10.0)
    model(x).sum().backward()  # gradient 1 * similarity > 0 on every weight: step goes negative
    opt.step()
    assert float(head.last_weight.detach().min()) < 0
    assert float(head.weight().detach().min()) >= 0  # the effective weight is clamped
    model(x)
    assert float(head.last_weight.detach().min()) >= 0  # and the parameter is projected back
    # without nonneg, ProtoPNet's -0.5 off-class init
    free = make_model(lay, 3, nonneg=False)
    assert sorted(set(free.head.last_weight.flatten().tolist())) == [-0.5, 1.0]


def _segment_of(model: Net, batches, clip_index: int, prov: dict) -> torch.Tensor:
    """Recompute (eval mode, same batch) the segment a provenance record points to."""
    for x, _, idx, _ in batches:
        hits = (idx == clip_index).nonzero().flatten()
        if len(hits):
            with torch.no_grad():
                z = model.head.segments(model.features(x))
            return z[int(hits[0]), prov["person"], prov["part_index"], prov["window"]]
    raise AssertionError(f"clip {clip_index} not found")


@pytest.mark.parametrize("m", [1, 2])
def test_projection_copies_real_training_segments(m: int) -> None:
    lay = get_layout("kinect-v1-20")
    model = make_model(lay, 3, window=4, stride=2)
    labels = [0, 1, 2] * 3
    x, y = toy(lay, labels, m=m), torch.tensor(labels)
    ids = [f"clip{i:02d}" for i in range(len(labels))]
    batches = batches_of(x, y)
    model.train()
    prov = project_prototypes(model, batches, ids, classes=["a", "b", "c"])
    assert model.training  # mode restored
    model.eval()
    head = model.head
    assert len(prov) == head.num_prototypes == len(head.provenance)
    for qi, p in enumerate(prov):
        assert p is not None and p["clip_id"] in ids
        ci = ids.index(p["clip_id"])
        assert int(y[ci]) == p["class"] == int(head.proto_class[qi])
        assert p["class_name"] == ["a", "b", "c"][p["class"]]
        assert p["part"] == lay.part_names[p["part_index"]] and p["part_index"] == int(
            head.proto_part[qi]
        )
        # padding persons are never chosen
        assert bool((x[ci, ..., p["person"]] != 0).any())
        # T=16, T'=8: feature window [s, e) is input frames [2s, 2e)
        assert (p["frame_start"], p["frame_end"]) == (2 * p["feature_start"], 2 * p["feature_end"])
        assert 0 <= p["frame_start"] < p["frame_end"] <= 16 and p["num_frames"] == 16
        # positions were 2 * sampled frame index
        assert p["orig_frame_start"] == 2 * p["frame_start"]
        assert p["orig_frame_end"] == 2 * (p["frame_end"] - 1) + 1
        seg = _segment_of(model, batches, ci, p)
        assert torch.equal(seg, head.prototypes[qi].detach())
        assert p["distance"] >= 0.0  # how far the push moved the learned prototype


def test_explain_contributions_sum_to_logits() -> None:
    lay = get_layout("mediapipe-33")
    model = make_model(lay, 4).eval()
    x = toy(lay, [0, 1, 2, 3], m=2)
    feats = model.features(x)
    ex = model.head.explain(feats, input_frames=16)
    recon = ex["contributions"].sum(-1) + ex["bias"]
    assert torch.allclose(recon, ex["logits"], atol=1e-5)
    assert torch.allclose(ex["logits"], model(x), atol=1e-5)
    # similarity is the ProtoPNet log ratio of the reported distance
    d = ex["distance"]
    assert torch.allclose(ex["similarity"], torch.log((d + 1) / (d + 1e-4)))


def test_aux_losses_behave() -> None:
    lay = get_layout("penn-13")
    model = make_model(lay, 3).eval()
    head = model.head
    labels = [0, 1, 2] * 2
    x, y = toy(lay, labels), torch.tensor(labels)
    with torch.no_grad():
        model(x)
        before = head.aux_loss(None, y)
        assert set(before) == {"cluster", "separation", "diversity", "l1"}
        assert set(head.loss_weights) == set(before) and head.loss_weights["separation"] < 0
        project_prototypes(model, batches_of(x, y), [str(i) for i in range(6)])
        model(x)
        after = head.aux_loss(None, y)
    # prototypes moved onto own-class segments: cluster cost drops to ~0
    assert float(after["cluster"]) < 1e-4 < float(before["cluster"])
    assert float(after["separation"]) > float(after["cluster"])
    # gradient steps on the cluster term alone pull prototypes toward own-class features
    fresh = make_model(lay, 3, seed=1).eval()
    opt = torch.optim.SGD([fresh.head.prototypes], lr=0.05)
    values = []
    for _ in range(5):
        fresh(x)
        c = fresh.head.aux_loss(None, y)["cluster"]
        values.append(float(c.detach()))
        opt.zero_grad()
        c.backward()
        opt.step()
    assert values[-1] < values[0]
    # diversity: identical prototypes of a (class, part) cost more than orthogonal ones
    with torch.no_grad():
        head.prototypes.zero_()
        head.prototypes[:, 0] = 1.0
        same = float(head.aux_loss(model.features(x), y)["diversity"])
        head.prototypes.zero_()
        head.prototypes[0::2, 0] = 1.0
        head.prototypes[1::2, 1] = 1.0
        ortho = float(head.aux_loss(model.features(x), y)["diversity"])
    assert same == pytest.approx(1.0) and ortho == pytest.approx(0.0)
    # labels for repeated rows (frame averaging) are expanded; a mismatch is an error
    model(x.repeat_interleave(2, dim=0))  # 12 rows, 2 per label
    assert torch.isfinite(head.aux_loss(None, y)["cluster"])
    with pytest.raises(ConfigError, match="labels"):
        head.aux_loss(None, y[:5])


_TRAINED: dict[str, Net] = {}


def _trained_toy(lay: Layout) -> Net:
    """A fresh copy of a prototype model trained on the toy problem (built once per layout)."""
    if lay.name not in _TRAINED:
        _TRAINED[lay.name] = _train_toy(lay)
    return copy.deepcopy(_TRAINED[lay.name])


def _train_toy(lay: Layout, k: int = 3) -> Net:
    """A prototype model on a toy problem: projected and last-layer fine-tuned."""
    model = make_model(lay, k, window=4, stride=2).eval()
    labels = list(range(k)) * 4
    x, y = toy(lay, labels, seed=1), torch.tensor(labels)
    ids = [f"train{i}" for i in range(len(labels))]
    batches = batches_of(x, y)
    project_prototypes(model, batches, ids)
    stats = finetune_last_layer(model, batches, epochs=30, lr=0.05)
    assert stats["train_acc"] == 100.0 and stats["samples"] == len(labels)
    assert float(model.head.weight().detach().min()) >= 0
    return model


def test_finetune_only_touches_the_last_layer() -> None:
    lay = get_layout("penn-13")
    model = make_model(lay, 3).eval()
    labels = [0, 1, 2] * 2
    x, y = toy(lay, labels), torch.tensor(labels)
    before = {k: v.clone() for k, v in model.state_dict().items() if torch.is_tensor(v)}
    finetune_last_layer(model, batches_of(x, y), epochs=3, lr=0.1)
    after = model.state_dict()
    changed = {k for k, v in before.items() if not torch.equal(v, after[k])}
    assert changed == {"head.last_weight", "head.last_bias"}


def test_enroll_then_forget_restores_logits_exactly() -> None:
    lay = get_layout("kinect-v1-20")
    model = _trained_toy(lay)
    classes = ["a", "b", "c"]
    test_labels = [0, 1, 2] * 3
    xt = toy(lay, test_labels, seed=7)
    with torch.no_grad():
        base = model(xt)
    assert (base.argmax(1) == torch.tensor(test_labels)).all()
    state = {k: v.clone() for k, v in model.state_dict().items() if torch.is_tensor(v)}

    new = toy(lay, [3, 3, 3], seed=3)
    examples = [new[i] for i in range(3)]
    model, classes2 = enroll(model, "wave", examples, ["n0", "n1", "n2"], classes=classes)
    assert classes2 == ["a", "b", "c", "wave"] and model.head.num_classes == 4
    head = model.head
    enrolled = [p for p in head.provenance if p and p.get("enrolled")]
    assert len(enrolled) == 3 * len(lay.parts) * 2
    assert {p["clip_id"] for p in enrolled} == {"n0", "n1", "n2"}
    assert all(p["class_name"] == "wave" for p in enrolled)
    with torch.no_grad():
        fresh = toy(lay, [3, 3, 3, 3], seed=11)  # unseen examples of the new class
        assert (model(fresh).argmax(1) == 3).all()
        assert (model(torch.stack(examples)).argmax(1) == 3).all()
        after = model(xt)
    assert (after.argmax(1) == torch.tensor(test_labels)).all()  # old classes still win
    assert torch.allclose(after[:, :3], base, atol=1e-5)  # new columns have weight 0 elsewhere
    with pytest.raises(ConfigError, match="already exists"):
        enroll(model, "wave", examples, ["x", "y", "z"], classes=classes2)

    model, classes3 = forget(model, "wave", classes=classes2)
    assert classes3 == classes
    with torch.no_grad():
        assert torch.equal(model(xt), base)
    now = model.state_dict()
    assert all(torch.equal(v, now[k]) for k, v in state.items())
    assert all(not (p and p.get("enrolled")) for p in model.head.provenance)
    with pytest.raises(ConfigError, match="unknown class"):
        forget(model, "wave", classes=classes3)


@pytest.mark.parametrize("with_negatives", [False, True])
def test_forget_example_equals_enrolling_the_rest(with_negatives: bool) -> None:
    lay = get_layout("penn-13")
    model = _trained_toy(lay)
    classes = ["a", "b", "c"]
    new = toy(lay, [3, 3, 3], seed=3)
    ex = [new[i] for i in range(3)]
    neg = toy(lay, [0, 1, 2] * 4, seed=21) if with_negatives else None
    twin = _trained_toy(lay)
    twin, _ = enroll(twin, "wave", ex[:2], ["n0", "n1"], classes=classes, negatives=neg)

    model, cl = enroll(model, "wave", ex, ["n0", "n1", "n2"], classes=classes, negatives=neg)
    assert ("negatives" in model.head.class_meta[3]) == with_negatives
    with pytest.raises(ConfigError, match="trained, not enrolled"):
        forget_example(model, "a", "train0", classes=cl)
    with pytest.raises(ConfigError, match="no enrolled example"):
        forget_example(model, "wave", "zz", classes=cl)
    model, cl = forget_example(model, "wave", "n2", classes=cl)
    assert cl == ["a", "b", "c", "wave"]
    h, t = model.head, twin.head
    assert torch.equal(h.prototypes, t.prototypes)
    assert torch.equal(h.last_weight, t.last_weight)
    assert torch.equal(h.proto_class, t.proto_class) and torch.equal(h.proto_part, t.proto_part)
    assert float(h.last_bias[3].detach()) == pytest.approx(float(t.last_bias[3].detach()), abs=1e-5)
    assert h.provenance == t.provenance
    assert all(p["clip_id"] != "n2" for p in h.provenance if p and p.get("enrolled"))
    # removing the last examples removes the class
    model, cl = forget_example(model, "wave", "n0", classes=cl)
    model, cl = forget_example(model, "wave", "n1", classes=cl)
    assert cl == classes and model.head.num_classes == 3


def test_single_example_enrollment_is_calibrated_without_self_match() -> None:
    lay = get_layout("penn-13")
    model = _trained_toy(lay)
    new = toy(lay, [3], seed=3)
    model, _ = enroll(model, "wave", [new[0]], ["solo"], classes=["a", "b", "c"])
    meta = model.head.class_meta[3]
    # the self score excludes the prototype's own (overlapping) windows: it is finite and
    # below the score of an exact self-match (every prototype at distance 0)
    exact = meta["weight"] * model.head.num_parts * 2 * math.log(1 / 1e-4)
    assert 0 < meta["scores"][0][0] < exact
    with torch.no_grad():
        assert int(model(toy(lay, [3, 3], seed=12)).argmax(1)[0]) == 3


def test_negative_calibration_keeps_known_classes_and_recognises_new_ones() -> None:
    lay = get_layout("kinect-v1-20")
    model = _trained_toy(lay)
    classes = ["a", "b", "c"]
    xt = toy(lay, [0, 1, 2] * 3, seed=7)
    new = toy(lay, [3, 3], seed=3)
    neg = toy(lay, [0, 1, 2] * 5, seed=21)
    model, _ = enroll(model, "wave", [new[0], new[1]], ["n0", "n1"], classes=classes, negatives=neg)
    meta = model.head.class_meta[3]
    stats = meta["negatives"]
    assert len(stats["top_other"]) == 15 and len(stats["scores"]) == 2
    assert stats["known_classes"] == 3
    # Only scores are kept: one float per (example, negative clip), no clip data.
    assert all(isinstance(v, float) for row in stats["scores"] for v in row)
    with torch.no_grad():
        assert (model(xt).argmax(1) == torch.tensor([0, 1, 2] * 3)).all()
        assert (model(toy(lay, [3, 3, 3], seed=11)).argmax(1) == 3).all()
    assert meta["bias"] == pytest.approx(calibrated_bias(meta))
    with pytest.raises(ConfigError, match="negatives must be"):
        enroll(model, "jump", [new[0]], ["j0"], classes=[*classes, "wave"], negatives=neg[0])


@pytest.mark.parametrize(
    ("need", "allow", "ratio", "expect"),
    [
        ([0.0], [2.0], 1.0, (0.0, 2.0)),  # separable: strictly between
        ([0.0, 1.0], [3.0, 4.0], 1.0, (1.0, 3.0)),
        ([3.0], [1.0, 2.0], 9.0, (-math.inf, 1.0)),  # conflict: the frequent negatives win
        ([1.0, 2.0], [1.5], 0.1, (2.0, math.inf)),  # conflict: rare negatives lose
    ],
)
def test_best_threshold_picks_inside_the_optimal_interval(
    need: list[float], allow: list[float], ratio: float, expect: tuple[float, float]
) -> None:
    from protoskel.explain.enroll import _best_threshold

    b = _best_threshold(need, allow, ratio)
    assert expect[0] < b < expect[1]


def _plain(obj) -> bool:
    if isinstance(obj, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in obj.items())
    if isinstance(obj, list | tuple):
        return all(_plain(v) for v in obj)
    return obj is None or isinstance(obj, bool | int | float | str)


def test_checkpoint_round_trip_keeps_provenance_and_enrolled_classes() -> None:
    lay = get_layout("kinect-v1-20")
    model = _trained_toy(lay)
    new = toy(lay, [3, 3], seed=3)
    model, classes = enroll(model, "wave", [new[0], new[1]], ["n0", "n1"], classes=["a", "b", "c"])
    state = model.state_dict()
    extra = state["head._extra_state"]
    assert _plain(extra)
    # no tensor in the checkpoint carries clip data: only parameters and index buffers
    assert {k for k, v in state.items() if torch.is_tensor(v)} == {
        k for k in state if not k.endswith("_extra_state")
    }
    buf = io.BytesIO()
    torch.save({"model": state, "classes": classes}, buf)
    buf.seek(0)
    ck = torch.load(buf, weights_only=True)
    rebuilt = make_model(lay, len(ck["classes"]), seed=5, window=4, stride=2).eval()
    rebuilt.load_state_dict(ck["model"])
    assert rebuilt.head.provenance == model.head.provenance
    assert rebuilt.head.class_meta == model.head.class_meta
    x = toy(lay, [0, 1, 2, 3], seed=9)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))
    # and it can still forget the enrolled class after reloading
    rebuilt, cl = forget_example(rebuilt, "wave", "n0", classes=ck["classes"])
    assert cl == classes


def test_frame_averaged_model_projection_and_aux_loss() -> None:
    from protoskel.models.invariance import FrameAveraging

    lay = get_layout("penn-13")
    net = make_model(lay, 2)
    model = FrameAveraging(net).eval()
    labels = [0, 1, 0, 1]
    x, y = toy(lay, labels), torch.tensor(labels)
    feats, rows, _ = feature_rows(model, x)
    frames = feats.shape[0] // 4
    assert frames > 1 and rows.tolist() == [i for i in range(4) for _ in range(frames)]
    prov = project_prototypes(model, batches_of(x, y), ["p", "q", "r", "s"])
    assert all(0 <= p["frame_copy"] < frames for p in prov)
    model(x)
    assert torch.isfinite(net.head.weighted_aux_loss(None, y))
    stats = finetune_last_layer(model, batches_of(x, y), epochs=2, lr=0.01)
    assert stats["samples"] == 4


def test_registry_builds_the_prototype_head() -> None:
    from protoskel.models import build_model, list_heads

    if "prototype" not in list_heads():
        pytest.skip("the prototype head is not registered in protoskel.models.registry yet")
    lay = get_layout("penn-13")
    model = build_model(
        "stgcn",
        lay,
        4,
        in_channels=3,
        head="prototype",
        width=8,
        depth=3,
        head_window=2,
        head_proto_dim=8,
    )
    assert isinstance(model.head, PrototypeHead)
    x = toy(lay, [0, 1, 2, 3], t=16, m=2)
    assert model(x).shape == (4, 4)
    prov = project_prototypes(model, batches_of(x, torch.tensor([0, 1, 2, 3])), list("abcd"))
    assert all(p["frame_end"] <= 16 for p in prov)


class FakeSplit:
    """In-memory packed split with the attributes ClipLoader and projection read."""

    def __init__(self, layout: Layout, labels: list[int], lengths: list[int]) -> None:
        pairs = enumerate(zip(labels, lengths, strict=True))
        clips = [toy(layout, [c], t=n, m=2, seed=i)[0] for i, (c, n) in pairs]
        self.keypoints = torch.cat([c.permute(1, 3, 2, 0) for c in clips]).numpy()  # (F, M, V, C)
        self.offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.scores = None
        self.ids = [f"s{i:02d}_c{c}" for i, c in enumerate(labels)]

    def __len__(self) -> int:
        return len(self.labels)


def test_push_and_finetune_on_a_packed_split() -> None:
    lay = get_layout("penn-13")
    lengths = [20, 37, 25, 50, 16, 33]
    split = FakeSplit(lay, [0, 1, 2, 0, 1, 2], lengths)
    model = make_model(lay, 3, window=2, stride=1)
    out = push_and_finetune(model, split, lay, num_frames=16, batch_size=4, epochs=3)
    assert out["finetune"]["samples"] == 6
    for p in out["provenance"]:
        clip = split.ids.index(p["clip_id"])
        assert split.labels[clip] == p["class"]
        assert 0 <= p["frame_start"] < p["frame_end"] <= 16
        # original frames lie inside the clip and cover at least the sampled span
        assert 0 <= p["orig_frame_start"] < p["orig_frame_end"] <= lengths[clip]
    decay = {f"head.{n}" for n in model.head.no_weight_decay()}
    assert decay <= {n for n, _ in model.named_parameters()}
