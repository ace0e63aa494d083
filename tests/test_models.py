"""Models: graphs from layouts, blocks, every registered backbone, heads and the registry."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn

from protoskel.errors import ConfigError
from protoskel.layouts import get_layout, layout_from_dict, list_layouts
from protoskel.models import Classifier, LinearHead, build_model, list_backbones
from protoskel.models.backbones import stage_plan
from protoskel.models.blocks import (
    AdaptiveGraphConv,
    AttentionGraphConv,
    DataNorm,
    GraphConv,
    MultiScaleTemporalConv,
    temporal_max_pool,
)
from protoskel.models.graph import (
    bone_adjacency,
    hop_distance,
    khop_adjacency,
    multiscale_adjacency,
    normalize_adjacency,
    spatial_partitions,
)

TINY = {"width": 16, "depth": 3}  # every registered backbone accepts width/depth


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny tensors gain nothing from threads, and on a busy machine threads only wait."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------- graph


@pytest.mark.parametrize("name", list_layouts())
def test_partitions_follow_the_tree(name: str) -> None:
    lay = get_layout(name)
    v = lay.num_joints
    raw = spatial_partitions(lay, normalize=False)
    assert raw.shape == (3, v, v)
    np.testing.assert_array_equal(raw[0], np.eye(v))
    # inward and outward are each other's transpose, one entry per bone, no self-loops
    np.testing.assert_array_equal(raw[1], raw[2].T)
    assert raw[1].sum() == raw[2].sum() == v - 1
    assert np.trace(raw[1]) == 0
    for child, parent in lay.bones:
        assert raw[1][parent, child] == 1  # the parent receives from its child (toward root)
        assert raw[2][child, parent] == 1
    # outward: every joint but the root has exactly one sender (its parent)
    senders = raw[2].sum(axis=1)
    assert senders[lay.root] == 0
    assert np.all(np.delete(senders, lay.root) == 1)
    # the three partitions together are the symmetric bone graph plus self-loops
    np.testing.assert_array_equal(raw.sum(0), bone_adjacency(lay) + np.eye(v))


@pytest.mark.parametrize("name", list_layouts())
def test_partition_normalisation_rows_sum_to_one(name: str) -> None:
    lay = get_layout(name)
    parts = spatial_partitions(lay)
    raw = spatial_partitions(lay, normalize=False)
    rows = parts.sum(axis=-1)
    has_sender = raw.sum(axis=-1) > 0
    np.testing.assert_allclose(rows[has_sender], 1.0, rtol=1e-6)
    np.testing.assert_array_equal(rows[~has_sender], 0.0)


def test_symmetric_normalisation() -> None:
    lay = get_layout("penn-13")
    a = bone_adjacency(lay) + np.eye(lay.num_joints, dtype=np.float32)
    s = normalize_adjacency(a, "sym")
    np.testing.assert_allclose(s, s.T, atol=1e-7)
    d = a.sum(1)
    np.testing.assert_allclose(s, a / np.sqrt(np.outer(d, d)), rtol=1e-6)
    # largest eigenvalue of D^-1/2 (A+I) D^-1/2 is 1
    assert math.isclose(float(np.linalg.eigvalsh(s).max()), 1.0, rel_tol=1e-5)
    with pytest.raises(ValueError, match="unknown normalisation"):
        normalize_adjacency(a, "col")


def test_hops() -> None:
    lay = get_layout("ntu-25")
    d = hop_distance(lay)
    np.testing.assert_array_equal(d, d.T)
    assert (d >= 0).all()  # a tree is connected
    np.testing.assert_array_equal(d == 1, bone_adjacency(lay) == 1)
    np.testing.assert_array_equal(khop_adjacency(lay, 0), np.eye(25))
    ms = multiscale_adjacency(lay, 3, normalize=False)
    assert ms.shape == (3, 25, 25)
    assert (ms.sum(0) <= 1).all()  # disjoint hop rings
    np.testing.assert_array_equal(ms[1], bone_adjacency(lay))


# ---------------------------------------------------------------- blocks


def test_temporal_max_pool_matches_maxpool2d() -> None:
    x = torch.randn(2, 3, 13, 5)
    for s in (1, 2, 3):
        ref = nn.functional.max_pool2d(x, (3, 1), (s, 1), (1, 0))
        torch.testing.assert_close(temporal_max_pool(x, s), ref, rtol=0, atol=0)


def test_adaptive_graph_conv_matches_naive_per_group() -> None:
    torch.manual_seed(0)
    a = torch.from_numpy(spatial_partitions(get_layout("coco-17")))
    gc = AdaptiveGraphConv(6, 8, a, groups=4, rel_channels=3)
    with torch.no_grad():
        gc.alpha.fill_(0.7)
        gc.topology.add_(0.1 * torch.randn_like(gc.topology))
    x = torch.randn(2, 6, 5, 17)
    h = gc.conv(x)
    pooled = x.mean(2).transpose(1, 2)
    p, q = gc.phi(pooled), gc.psi(pooled)
    expected = torch.empty_like(h)
    for n in range(2):
        corr = torch.tanh(p[n][:, None, :] - q[n][None, :, :])  # (U, V, r)
        for g in range(4):
            r = gc.topology[g] + 0.7 * (corr @ gc.mix.weight[g])
            for c in range(2 * g, 2 * g + 2):
                expected[n, c] = h[n, c] @ r.T  # y_u = sum_v R[u, v] x_v
    torch.testing.assert_close(gc(x), expected, rtol=1e-4, atol=1e-5)


def test_adaptive_graph_conv_starts_from_partitions() -> None:
    a = torch.from_numpy(spatial_partitions(get_layout("penn-13")))
    gc = AdaptiveGraphConv(4, 12, a, groups=6)
    r = gc.topologies(torch.randn(3, 4, 7, 13))
    assert r.shape == (3, 6, 13, 13)
    for g in range(6):  # alpha = 0: each group is exactly its partition, for every sample
        torch.testing.assert_close(r[:, g], a[g % 3].expand(3, -1, -1))
    with pytest.raises(ConfigError, match="divisible"):
        AdaptiveGraphConv(4, 10, a, groups=4)


def test_attention_graph_conv_matches_loop_reference() -> None:
    torch.manual_seed(0)
    lay = get_layout("coco-17")
    a = torch.from_numpy(spatial_partitions(lay))
    hops = torch.from_numpy(hop_distance(lay))
    gc = AttentionGraphConv(6, 8, a, hops, heads=4, qk_channels=3, max_hop=2)
    with torch.no_grad():
        gc.hop_bias.add_(0.3 * torch.randn_like(gc.hop_bias))
        gc.topology.add_(0.1 * torch.randn_like(gc.topology))
    x = torch.randn(2, 6, 5, 17)
    h = gc.conv(x)
    qk = gc.qk(x)
    expected = torch.empty_like(h)
    for n in range(2):
        for t in range(5):
            for g in range(4):
                q = qk[n, 3 * g : 3 * g + 3, t].T  # (V, d): queries of head g
                k = qk[n, 12 + 3 * g : 12 + 3 * g + 3, t].T
                logits = q @ k.T / math.sqrt(3)
                for u in range(17):
                    for v in range(17):
                        logits[u, v] += gc.hop_bias[g, min(int(hops[u, v]), 2)]
                r = torch.softmax(logits, dim=1) + gc.topology[g]
                for c in range(2 * g, 2 * g + 2):
                    expected[n, c, t] = r @ h[n, c, t]  # y_u = sum_v R[u, v] x_v
    torch.testing.assert_close(gc(x), expected, rtol=1e-4, atol=1e-5)


def test_attention_graph_conv_starts_local_and_checks_options() -> None:
    lay = get_layout("kinect-v1-20")
    a = torch.from_numpy(spatial_partitions(lay))
    hops = torch.from_numpy(hop_distance(lay))
    gc = AttentionGraphConv(4, 8, a, hops, heads=2, qk_channels=2)
    with torch.no_grad():
        gc.qk.weight.zero_()
        gc.qk.bias.zero_()
    att = gc.attention(torch.randn(1, 4, 3, 20))  # no content signal: the hop bias alone
    assert att.shape == (1, 2, 3, 20, 20)
    torch.testing.assert_close(att.sum(-1), torch.ones(1, 2, 3, 20))
    near = att[0, 0, 0][hops == 1].mean()
    far = att[0, 0, 0][hops >= 4].mean()
    assert near > 2.5 * far  # bias -hop: neighbours get e times the weight of 2 hops away
    with pytest.raises(ConfigError, match="divisible"):
        AttentionGraphConv(4, 10, a, hops, heads=4)
    with pytest.raises(ConfigError, match="max_hop"):
        AttentionGraphConv(4, 8, a, hops, heads=2, max_hop=0)
    with pytest.raises(ConfigError, match="out_channels=64 is not divisible by heads=5"):
        build_model("sagcn", lay, 10, heads=5)
    with pytest.raises(ConfigError, match="heads=0"):
        build_model("sagcn", lay, 10, heads=0)


def test_static_graph_conv_is_sum_over_partitions() -> None:
    torch.manual_seed(1)
    a = torch.from_numpy(spatial_partitions(get_layout("openpose-18")))
    gc = GraphConv(3, 5, a)
    x = torch.randn(2, 3, 4, 18)
    w = gc.conv.weight.view(3, 5, 3)
    expected = sum(torch.einsum("oc,nctv,uv->notu", w[k], x, a[k]) for k in range(3))
    torch.testing.assert_close(gc(x), expected, rtol=1e-4, atol=1e-5)


def test_multiscale_temporal_conv_shapes() -> None:
    tcn = MultiScaleTemporalConv(24, 24, stride=2, kernel=5, dilations=(1, 2))
    for t in (13, 16):
        assert tcn(torch.randn(2, 24, t, 7)).shape == (2, 24, math.ceil(t / 2), 7)
    assert MultiScaleTemporalConv(8, 10, dilations=(1, 2, 3)).split == [2, 2, 2, 2, 2]
    assert MultiScaleTemporalConv(8, 18).split == [4, 4, 4, 6]  # 1x1 branch takes the rest
    assert MultiScaleTemporalConv(16, 8, stride=3)(torch.randn(1, 16, 7, 3)).shape == (1, 8, 3, 3)
    with pytest.raises(ConfigError, match="too small"):
        MultiScaleTemporalConv(8, 3)


def test_data_norm_modes() -> None:
    x = torch.randn(4, 3, 6, 5, 2) * 10 + 3
    y = DataNorm(3, 5)(x)  # persons share statistics
    assert y.shape == (8, 3, 6, 5)
    per_channel = y.permute(1, 3, 0, 2).reshape(15, -1)
    torch.testing.assert_close(per_channel.mean(1), torch.zeros(15), atol=1e-5, rtol=0)
    assert DataNorm(3, 5, num_persons=2)(x).shape == (8, 3, 6, 5)
    with pytest.raises(ConfigError, match="num_persons=2"):
        DataNorm(3, 5, num_persons=2)(x[..., :1])


# ---------------------------------------------------------------- backbones


@pytest.mark.parametrize("name", ["atgcn", "sagcn", "stgcn"])
def test_builtin_backbones_are_registered(name: str) -> None:
    assert name in list_backbones()


@pytest.mark.parametrize("name", list_backbones())
@pytest.mark.parametrize(
    ("layout", "c", "m"), [("penn-13", 2, 1), ("mediapipe-33", 3, 2), ("ntu-25", 3, 2)]
)
def test_backbone_shapes(name: str, layout: str, c: int, m: int) -> None:
    torch.manual_seed(0)
    lay = get_layout(layout)
    model = build_model(name, lay, num_classes=7, in_channels=c, **TINY)
    x = torch.randn(2, c, 12, lay.num_joints, m)
    feats = model.features(x)
    bb = model.backbone
    assert feats.shape == (2, m, bb.out_channels, 3, lay.num_joints)  # two stride-2 stages
    assert model(x).shape == (2, 7)
    # one model handles one and two persons
    assert model(x[..., :1]).shape == (2, 7)
    with pytest.raises(ConfigError, match="expects input"):
        model(torch.randn(2, c, 12, lay.num_joints + 1, m))


@pytest.mark.parametrize("name", list_backbones())
def test_gradients_reach_every_parameter(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, "coco-17", num_classes=4, in_channels=2, **TINY)
    for pname, p in model.named_parameters():
        # alpha = 0 at init gates the refinement branch; open it so every weight gets signal
        if pname.endswith("alpha"):
            nn.init.constant_(p, 0.5)
    x = torch.randn(3, 2, 8, 17, 2)
    loss = nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 3]))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, f"no gradient for: {missing}"


@pytest.mark.parametrize("name", list_backbones())
def test_same_seed_same_model_and_output(name: str) -> None:
    x = torch.randn(2, 3, 8, 20, 1)
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = build_model(name, "kinect-v1-20", 5, **TINY)
        outs.append(model(x))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    torch.manual_seed(124)
    other = build_model(name, "kinect-v1-20", 5, **TINY)(x)
    assert not torch.allclose(outs[0], other)


@pytest.mark.parametrize("name", list_backbones())
def test_eval_mode_is_batch_independent(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, "msr-20", 6, **TINY)
    model.train()
    for _ in range(2):  # move BatchNorm running statistics away from their init
        model(torch.randn(4, 3, 8, 20, 1) * 3)
    model.eval()
    x = torch.randn(5, 3, 8, 20, 1)
    with torch.no_grad():
        full = model(x)
        single = torch.cat([model(x[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(full, single, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", list_backbones())
def test_user_layout_without_any_builtin_fact(name: str) -> None:
    # a 6-joint chain + branch layout the models have never seen: nothing may be hard-coded
    lay = layout_from_dict(
        {
            "name": "toy-6",
            "dims": 2,
            "up": ["a", "c"],
            "across": ["d", "e"],
            "joints": [{"a": None}, {"b": "a"}, {"c": "b"}, {"d": "c"}, {"e": "c"}, {"f": "e"}],
            "parts": {"torso": ["a", "b", "c"], "limbs": ["d", "e", "f"]},
        }
    )
    model = build_model(name, lay, 3, in_channels=2, **TINY)
    assert model(torch.randn(2, 2, 8, 6, 1)).shape == (2, 3)


def test_atgcn_default_plan_and_options() -> None:
    model = build_model("atgcn", "kinect-v1-20", 10)
    assert model.backbone.out_channels == 256
    assert len(model.backbone.units) == 8
    feats = model.features(torch.randn(1, 3, 52, 20, 1))
    assert feats.shape == (1, 1, 256, 13, 20)
    narrow = build_model("atgcn", "kinect-v1-20", 10, width=32, depth=6, dropout=0.2)
    assert narrow.backbone.out_channels == 128
    gcn_wide = build_model("atgcn", "kinect-v1-20", 10, widen="gcn")
    assert gcn_wide.backbone.units[2].gcn.conv.out_channels == 128  # widens in the graph conv
    assert model.backbone.units[2].gcn.conv.out_channels == 64  # default: in the temporal conv
    assert gcn_wide.features(torch.randn(1, 3, 52, 20, 1)).shape == feats.shape
    with pytest.raises(ConfigError, match="widen"):
        build_model("atgcn", "kinect-v1-20", 10, widen="both")
    custom = build_model(
        "atgcn", "penn-13", 3, in_channels=2, channels=[16, 32], strides=[1, 3], groups=4
    )
    assert custom.features(torch.randn(1, 2, 9, 13, 1)).shape == (1, 1, 32, 3, 13)


def test_stage_plan() -> None:
    assert stage_plan(64, 10) == (
        [64, 64, 64, 128, 128, 128, 256, 256, 256, 256],
        [1, 1, 1, 2, 1, 1, 2, 1, 1, 1],
    )
    assert stage_plan(64, 10, late=False)[0] == [64] * 4 + [128] * 3 + [256] * 3
    assert stage_plan(48, 8) == ([48, 48, 96, 96, 96, 192, 192, 192], [1, 1, 2, 1, 1, 2, 1, 1])
    with pytest.raises(ConfigError, match="depth"):
        stage_plan(64, 2)


# ---------------------------------------------------------------- heads and registry


def test_linear_head_pools_over_persons_frames_joints() -> None:
    head = LinearHead(4, 3)
    feats = torch.randn(2, 2, 4, 5, 6)
    expected = head.fc(feats.mean(dim=(1, 3, 4)))
    torch.testing.assert_close(head(feats), expected)
    assert isinstance(LinearHead(4, 3, dropout=0.5).drop, nn.Dropout)


def test_build_model_errors_and_options() -> None:
    with pytest.raises(ConfigError, match=r"unknown backbone 'resnet'.*atgcn.*stgcn"):
        build_model("resnet", "ntu-25", 60)
    with pytest.raises(ConfigError, match=r"does not accept option\(s\) widht.*width"):
        build_model("atgcn", "ntu-25", 60, widht=32)
    with pytest.raises(ConfigError, match="unknown head"):
        build_model("atgcn", "ntu-25", 60, head="mlp")
    with pytest.raises(ConfigError, match="head 'linear' does not accept"):
        build_model("atgcn", "ntu-25", 60, head_size=3)
    with pytest.raises(ConfigError, match="strides"):
        build_model("atgcn", "ntu-25", 60, channels=[16, 32], strides=[1])
    with pytest.raises(ConfigError, match="num_classes"):
        build_model("stgcn", "ntu-25", 0)
    model = build_model("stgcn", "ntu-25", 60, head_dropout=0.3, **TINY)
    assert isinstance(model, Classifier)
    assert model.head.drop.p == 0.3
    assert model.head.fc.out_features == 60
