"""Proof by test that frame averaging makes any model invariant to rigid motions of the clip."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from torch import nn

from conftest import dataset_dir
from protoskel.errors import ConfigError
from protoskel.models.invariance import (
    FrameAveraging,
    canonicalize,
    frame_count,
    frames,
    random_rotation,
    rotate,
    wrap_invariance,
)

TOL = 1e-4  # float32 invariance tolerance on logits
CHANGE = 1e-2  # a non-invariant model must move by more than this


class TinyNet(nn.Module):
    """Deliberately orientation-sensitive model: per-joint MLP, pooled over T and M, then linear."""

    def __init__(self, channels: int = 3, joints: int = 7, classes: int = 5, seed: int = 0) -> None:
        super().__init__()
        with torch.random.fork_rng():  # seeded weights without touching the global RNG
            torch.manual_seed(seed)
            self.joint = nn.Linear(channels, 16)
            self.out = nn.Linear(16 * joints, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, T, V, M) -> logits (N, K)."""
        h = torch.tanh(self.joint(x.permute(0, 2, 4, 3, 1)))  # (N, T, M, V, 16)
        return self.out(h.mean(dim=(1, 2)).flatten(1))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _clips(n: int, c: int = 3, t: int = 10, v: int = 7, m: int = 2, seed: int = 0) -> torch.Tensor:
    g = _gen(seed)
    # Anisotropic, offset clouds like real bodies (tall, wide, shallow), far from the origin.
    scale = torch.tensor([1.0, 0.6, 0.3][:c])
    x = torch.randn(n, c, t, v, m, generator=g) * scale[:, None, None, None]
    return x + torch.randn(n, c, 1, 1, 1, generator=g) * 2


def _max_change(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x) - model(y)).abs().max().item()


def _reflection(n: int, dims: int, g: torch.Generator) -> torch.Tensor:
    """Random improper orthogonal matrices (det -1)."""
    flip = torch.ones(dims)
    flip[0] = -1.0
    return random_rotation(n, dims, g) * flip  # negating a column flips the determinant


def _same_set(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-6) -> bool:
    """Whether two stacks of matrices (F, c, c) are equal as sets."""
    if a.shape != b.shape:
        return False
    d = (a[:, None] - b[None, :]).abs().flatten(2).amax(-1)  # (F, F)
    return bool((d.amin(1) < atol).all() and (d.amin(0) < atol).all())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_average_mode_is_invariant_to_rotation_and_translation(seed: int) -> None:
    g = _gen(100 + seed)
    model = TinyNet(seed=seed).eval()
    wrapped = FrameAveraging(model)
    x = _clips(6, seed=seed)
    moved = rotate(x, random_rotation(6, 3, g), torch.randn(6, 3, generator=g) * 5)
    assert _max_change(wrapped, x, moved) < TOL
    assert _max_change(model, x, moved) > CHANGE
    assert wrapped.warning is None
    assert wrapped.last_stats == {"clips": 6, "tied": 0, "point": 0, "reduced": 0}


def test_output_is_the_mean_over_the_four_frames_in_one_batch() -> None:
    calls: list[tuple[int, ...]] = []
    model = TinyNet().eval()
    model.register_forward_hook(lambda _m, inp, _o: calls.append(tuple(inp[0].shape)))
    wrapped = FrameAveraging(model)
    x = _clips(3)
    with torch.no_grad():
        out = wrapped(x)
        per_frame = model(canonicalize(x, wrapped.frames(x)).flatten(0, 1)).view(3, 4, -1)
    assert calls[0] == (12, 3, 10, 7, 2)  # N*F in a single forward
    assert torch.allclose(out, per_frame.mean(1), atol=1e-6)
    assert out.shape == (3, 5)


def test_reflections_mode_is_invariant_to_mirror_images_too() -> None:
    g = _gen(7)
    model = TinyNet().eval()
    x = _clips(6, seed=3)
    mirrored = rotate(x, _reflection(6, 3, g), torch.randn(6, 3, generator=g))
    assert _max_change(FrameAveraging(model, reflections=True), x, mirrored) < TOL
    assert _max_change(FrameAveraging(model, mode="canonical", reflections=True), x, mirrored) < TOL
    # Rotation-only frames keep the handedness, so a mirror image is a different input.
    assert _max_change(FrameAveraging(model), x, mirrored) > 1e-3


def test_2d_version_with_and_without_a_score_channel() -> None:
    g = _gen(11)
    x = _clips(5, c=2, seed=4)
    rot, shift = random_rotation(5, 2, g), torch.randn(5, 2, generator=g) * 3
    model = TinyNet(channels=2).eval()
    assert _max_change(FrameAveraging(model), x, rotate(x, rot, shift)) < TOL
    assert _max_change(model, x, rotate(x, rot, shift)) > CHANGE
    mirrored = rotate(x, _reflection(5, 2, g), shift)
    assert _max_change(FrameAveraging(model, reflections=True), x, mirrored) < TOL

    # 2D + score: only the two coordinate channels rotate; the score passes through unchanged.
    score = torch.rand(5, 1, 10, 7, 2, generator=g)
    xs = torch.cat([x, score], dim=1)
    wrapped = FrameAveraging(TinyNet(channels=3).eval(), coords=2)
    assert _max_change(wrapped, xs, rotate(xs, rot, shift)) < TOL
    z = wrapped.canonicalize(xs)
    assert z.shape == (5, 2, 3, 10, 7, 2)
    assert torch.equal(z[:, 0, 2], score[:, 0]) and torch.equal(z[:, 1, 2], score[:, 0])


def test_score_channel_is_not_rotated_in_3d() -> None:
    x = torch.cat([_clips(2), torch.rand(2, 1, 10, 7, 2, generator=_gen(5))], dim=1)
    z = FrameAveraging(TinyNet(channels=4).eval(), coords=3).canonicalize(x)
    assert torch.equal(z[:, :, 3], x[:, None, 3].expand(-1, 4, -1, -1, -1))
    with pytest.raises(ConfigError, match="coords"):
        frames(x[:, :1])  # a single channel cannot hold 2D/3D coordinates


@pytest.mark.parametrize("seed", [0, 1])
def test_canonical_mode_is_invariant_on_generic_inputs(seed: int) -> None:
    g = _gen(200 + seed)
    model = TinyNet(seed=seed).eval()
    wrapped = FrameAveraging(model, mode="canonical")
    x = _clips(8, seed=10 + seed)
    moved = rotate(x, random_rotation(8, 3, g), torch.randn(8, 3, generator=g) * 5)
    assert wrapped.frames(x).rotations.shape == (8, 1, 3, 3)
    assert _max_change(wrapped, x, moved) < TOL
    assert _max_change(model, x, moved) > CHANGE
    x2 = _clips(8, c=2, seed=20 + seed)
    moved2 = rotate(x2, random_rotation(8, 2, g), torch.randn(8, 2, generator=g))
    assert _max_change(FrameAveraging(TinyNet(channels=2), mode="canonical"), x2, moved2) < TOL


@pytest.mark.parametrize(("dims", "reflections"), list(itertools.product([2, 3], [False, True])))
def test_frame_set_is_equivariant(dims: int, reflections: bool) -> None:
    g = _gen(300 + dims)
    x = _clips(4, c=dims, seed=dims)
    q = random_rotation(4, dims, g, reflections=reflections).double()
    t = torch.randn(4, dims, generator=g, dtype=torch.float64)
    a = frames(x, reflections=reflections)
    b = frames(rotate(x, q.float(), t.float()), reflections=reflections)
    num = frame_count(dims, reflections)
    assert a.rotations.shape == (4, num, dims, dims) == b.rotations.shape
    assert torch.allclose(b.centre, (q @ a.centre[..., None])[..., 0] + t, atol=1e-5)
    for i in range(4):
        assert _same_set(b.rotations[i], q[i] @ a.rotations[i], atol=1e-5)
    # Every frame is orthonormal, and proper unless reflections are allowed.
    eye = torch.eye(dims, dtype=torch.float64)
    r = a.rotations
    assert torch.allclose(r.transpose(-1, -2) @ r, eye.expand_as(r), atol=1e-10)
    dets = torch.linalg.det(r)
    assert torch.allclose(dets.abs(), torch.ones_like(dets))
    assert bool((dets > 0).all()) != reflections


def test_center_false_keeps_the_origin_for_translation_free_streams() -> None:
    g = _gen(350)
    bones = _clips(4, seed=5) - 2.0  # stand-in for a bone stream: vectors about the origin
    model = TinyNet().eval()
    wrapped = FrameAveraging(model, center=False)
    fr = wrapped.frames(bones)
    assert torch.equal(fr.centre, torch.zeros(4, 3, dtype=torch.float64))
    z = wrapped.canonicalize(bones)
    lengths = bones.norm(dim=1)[:, None].expand(-1, 4, -1, -1, -1)
    assert torch.allclose(z.norm(dim=2), lengths, atol=1e-5)  # rotation only, no shift
    rotated = rotate(bones, random_rotation(4, 3, g))
    assert _max_change(wrapped, bones, rotated) < TOL
    assert _max_change(model, bones, rotated) > CHANGE
    # No translation invariance by design: a shifted bone stream is a different input.
    assert _max_change(wrapped, bones, rotate(bones, torch.eye(3), torch.ones(3))) > CHANGE


def test_frame_counts() -> None:
    assert [frame_count(3), frame_count(3, True), frame_count(2), frame_count(2, True)] == [
        4,
        8,
        2,
        4,
    ]
    assert frame_count(3, True, mode="canonical") == 1


def test_padded_zero_frames_and_persons_do_not_change_the_frames() -> None:
    x = _clips(3, m=1, seed=9)
    padded = torch.zeros(3, 3, 16, 7, 2)
    padded[:, :, 3:13, :, :1] = x  # zero frames before and after, a zero second person
    for mode in ("average", "canonical"):
        a, b = frames(x, mode=mode), frames(padded, mode=mode)
        assert torch.allclose(a.centre, b.centre, atol=1e-12)
        assert torch.allclose(a.eigenvalues, b.eigenvalues, atol=1e-12)
        for i in range(3):
            assert _same_set(a.rotations[i], b.rotations[i], atol=1e-9)
    model = TinyNet().eval()
    wrapped = FrameAveraging(model, mode="canonical")
    z = wrapped.canonicalize(padded)
    assert bool((z[:, :, :, :3] == 0).all()) and bool((z[..., 1] == 0).all())  # padding stays 0


def _symmetric_clouds() -> dict[str, torch.Tensor]:
    """Clips whose covariance has repeated eigenvalues, as (1, 3, T, V, 1)."""
    octa = torch.tensor([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1.0]])
    cube = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=3)))
    square = torch.tensor([[1, 0, 0], [0, 1, 0], [-1, 0, 0], [0, -1, 0.0]])  # planar, l1 = l2
    rod = torch.tensor([[0, 0, -2], [0, 0, -1], [0, 0, 1], [0, 0, 2.0]])  # line, l2 = l3 = 0
    out = {}
    for name, pts in {"octahedron": octa, "cube": cube, "square": square, "rod": rod}.items():
        out[name] = (pts + torch.tensor([0.3, -0.2, 4.0])).T[None, :, None, :, None]
    return out


@pytest.mark.parametrize("name", ["octahedron", "cube", "square", "rod"])
def test_repeated_eigenvalues_are_resolved_equivariantly(name: str) -> None:
    x = _symmetric_clouds()[name]
    g = _gen(400)
    fr = frames(x)
    assert bool(fr.tied[0]) and not bool(fr.reduced[0]) and not bool(fr.point[0])
    for mode in ("average", "canonical"):
        wrapped = FrameAveraging(TinyNet(joints=x.shape[3]).eval(), mode=mode)
        first = wrapped(x)
        assert torch.isfinite(first).all()
        assert torch.equal(first, wrapped(x))  # deterministic
        for _ in range(3):
            moved = rotate(x, random_rotation(1, 3, g), torch.randn(3, generator=g))
            assert _max_change(wrapped, x, moved) < TOL
        assert wrapped.warning is None


def test_degenerate_clips_give_finite_deterministic_outputs() -> None:
    g = _gen(500)
    base = _clips(1, m=1, seed=12)
    planar = base.clone()
    planar[:, 2] = 0.5 * planar[:, 0] - planar[:, 1] + 1.0  # all points on one plane
    single = torch.zeros(1, 3, 10, 7, 1)
    single[0, :, :, 2, 0] = torch.tensor([0.5, 1.0, 3.0])[:, None]  # one joint, never moving
    one_joint_moving = base[:, :, :, :1]  # V = 1: a trajectory
    zeros = torch.zeros(1, 3, 10, 7, 1)
    cases = {"planar": planar, "single": single, "zeros": zeros, "one_joint": one_joint_moving}
    for name, x in cases.items():
        for mode, refl in itertools.product(("average", "canonical"), (False, True)):
            wrapped = FrameAveraging(TinyNet(joints=x.shape[3]).eval(), mode=mode, reflections=refl)
            fr = wrapped.frames(x)
            assert torch.isfinite(fr.rotations).all() and torch.isfinite(fr.centre).all(), name
            out = wrapped(x)
            assert torch.isfinite(out).all(), name
            assert torch.equal(out, wrapped(x)), name
            moved = rotate(x, random_rotation(1, 3, g), torch.randn(3, generator=g))
            assert _max_change(wrapped, x, moved) < TOL, (name, mode, refl)
    assert bool(frames(zeros).point[0]) and bool(frames(single).point[0])
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.equal(frames(zeros).rotations[0, 0], eye)
    assert torch.equal(frames(zeros).centre, torch.zeros(1, 3, dtype=torch.float64))
    # Planar: the third axis is the plane's normal, so all canonical depths are ~0.
    z = FrameAveraging(TinyNet().eval()).canonicalize(planar)
    assert z[:, :, 2].abs().max() < 1e-5


def test_nearly_collinear_cloud_is_flagged_as_reduced_invariance() -> None:
    # A rod with sub-eps wobble: the axes around the rod are not defined by the data.
    t = torch.linspace(-1, 1, 9)
    wobble = 1e-4 * torch.stack([torch.cos(7 * t), torch.sin(5 * t)])
    x = torch.cat([wobble, 2 * t[None]])[None, :, None, :, None] + 1.0
    wrapped = FrameAveraging(TinyNet(joints=9).eval())
    out = wrapped(x)
    assert torch.isfinite(out).all() and torch.equal(out, wrapped(x))
    assert wrapped.last_stats["reduced"] == 1 and "approximately" in (wrapped.warning or "")
    # Still close: the canonical input can only move by about eps times the clip size.
    moved = rotate(x, random_rotation(1, 3, _gen(600)))
    assert _max_change(wrapped, x, moved) < 1e-2
    wrapped(_clips(2, v=9))
    assert wrapped.warning is None  # the attribute describes the last batch only


def test_nearly_planar_cloud_is_reduced_only_for_canonical_with_reflections() -> None:
    x = _clips(1, m=1, seed=14)
    t, v = torch.arange(10.0)[:, None], torch.arange(7.0)[None, :]
    x[0, 2, :, :, 0] = 2.0 + 1e-4 * torch.sin(t) * torch.cos(v)  # wobble around z = 2
    assert not bool(frames(x).reduced[0])  # average mode enumerates both normal signs
    assert not bool(frames(x, mode="canonical").reduced[0])  # det +1 fixes the normal's sign
    fr = frames(x, mode="canonical", reflections=True)
    assert bool(fr.reduced[0]) and torch.isfinite(fr.rotations).all()


def test_gradients_reach_the_input_and_are_finite() -> None:
    octa = torch.zeros(1, 3, 10, 7, 1)
    octa[:, :, :, :6] = _symmetric_clouds()["octahedron"]  # tied eigenvalues, one missing joint
    x = torch.cat([_clips(2, m=1), octa, torch.zeros(1, 3, 10, 7, 1)]).requires_grad_(True)
    wrapped = FrameAveraging(TinyNet().eval())
    wrapped(x).sum().backward()
    assert wrapped.last_stats == {"clips": 4, "tied": 1, "point": 1, "reduced": 0}
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert x.grad[:3].abs().sum() > 0


def test_random_rotation_and_rotate_helpers() -> None:
    r = random_rotation(64, 3, _gen(1))
    assert r.dtype == torch.float32
    assert torch.allclose(r @ r.transpose(1, 2), torch.eye(3).expand(64, 3, 3), atol=1e-5)
    assert torch.allclose(torch.linalg.det(r), torch.ones(64), atol=1e-5)
    assert torch.equal(r, random_rotation(64, 3, _gen(1)))  # seeded
    dets = torch.linalg.det(random_rotation(64, 3, _gen(2), reflections=True))
    assert bool((dets < 0).any()) and bool((dets > 0).any())
    x = _clips(2, m=2)
    x[:, :, :, :, 1] = 0  # a missing person stays missing under rotate + translate
    moved = rotate(x, r[:2], torch.ones(2, 3))
    assert bool((moved[..., 1] == 0).all())
    assert torch.allclose(moved[..., 0], torch.einsum("nij,njtv->nitv", r[:2], x[..., 0]) + 1)


def test_train_sample_runs_one_frame_per_clip_and_eval_still_averages() -> None:
    calls: list[int] = []

    class Counting(TinyNet):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls.append(x.shape[0])
            return super().forward(x)

    x = _clips(6)
    fa = wrap_invariance(Counting(), "frame_averaging", train="sample")
    full = wrap_invariance(Counting(), "frame_averaging")
    fa.train()
    torch.manual_seed(0)
    out = fa(x)
    assert calls == [6] and out.shape == (6, 5)
    # The one-frame output is the model on one of the clip's own canonical inputs.
    with torch.no_grad():
        per_frame = fa.model(fa.canonicalize(x).flatten(0, 1)).reshape(6, -1, 5)
    assert all(
        any(torch.allclose(out[i], per_frame[i, f], atol=1e-6) for f in range(per_frame.shape[1]))
        for i in range(6)
    )
    calls.clear()
    fa.eval()
    y = rotate(x, random_rotation(1, generator=_gen(3))[0], torch.tensor([1.0, -2.0, 0.5]))
    assert calls == [] and _max_change(fa, x, y) < TOL and calls == [24, 24]
    assert torch.allclose(fa(x), full(x))
    with pytest.raises(ConfigError, match="'invariance_train'"):
        wrap_invariance(TinyNet(), "frame_averaging", train="one")


def test_box_normalisation_inside_the_wrapper_keeps_invariance() -> None:
    x = _clips(5)
    boxed = FrameAveraging(TinyNet(), box=True).eval()
    plain = FrameAveraging(TinyNet()).eval()
    y = rotate(x * 1.0, random_rotation(1, generator=_gen(7))[0], torch.tensor([0.3, 2.0, -1.0]))
    assert _max_change(boxed, x, y) < TOL
    # Boxing is scale-free too, and it really changes what the model sees.
    assert _max_change(boxed, x, x * 2.5) < TOL and _max_change(plain, x, x * 2.5) > CHANGE
    z = boxed.canonicalize(x)
    assert torch.allclose(z.amax(dim=(3, 4, 5)), torch.ones(5, z.shape[1], 3), atol=1e-5)


def test_bad_settings_raise_config_errors() -> None:
    model = TinyNet()
    with pytest.raises(ConfigError, match="invariance_mode"):
        FrameAveraging(model, mode="mean")
    with pytest.raises(ConfigError, match="coords"):
        FrameAveraging(model, coords=4)
    with pytest.raises(ConfigError, match=r"\(N, C, T, V, M\)"):
        FrameAveraging(model)(torch.zeros(2, 3, 10, 7))
    assert wrap_invariance(model, None) is model and wrap_invariance(model, "none") is model
    wrapped = wrap_invariance(model, "frame_averaging", "canonical")
    assert isinstance(wrapped, FrameAveraging) and wrapped.mode == "canonical"
    with pytest.raises(ConfigError, match="'invariance'"):
        wrap_invariance(model, "frame_avg")
    with pytest.raises(ConfigError, match="'invariance_mode'"):
        wrap_invariance(model, "frame_averaging", "fast")


def test_real_nw_ucla_clips_are_rotation_invariant() -> None:
    root = dataset_dir("nw-ucla") / "all_sqe"
    names = sorted(p.name for p in root.glob("*.json"))
    if not names:
        pytest.skip(f"no NW-UCLA clips in {root}")
    picks = [names[i * (len(names) - 1) // 3] for i in range(4)]
    skels = [torch.tensor(json.loads((root / n).read_text())["skeletons"]) for n in picks]
    # One batch, shorter clips padded with zero frames (the loader's convention for missing data).
    x = torch.zeros(len(picks), 3, max(len(s) for s in skels), 20, 1)
    for i, skel in enumerate(skels):  # skel: (T, V, 3) in metres, camera coordinates
        x[i, :, : len(skel), :, 0] = skel.permute(2, 0, 1)
    model = TinyNet(joints=20, classes=10).eval()
    g = _gen(700)
    for mode in ("average", "canonical"):
        wrapped = FrameAveraging(model, mode=mode)
        for _ in range(3):
            moved = rotate(x, random_rotation(4, 3, g), torch.randn(4, 3, generator=g))
            assert _max_change(wrapped, x, moved) < TOL, mode
            assert wrapped.last_stats["reduced"] == 0
    with torch.no_grad():
        assert bool(((model(x) - model(moved)).abs().amax(1) > CHANGE).all())


def test_wraps_the_registry_atgcn_model() -> None:
    try:
        from protoskel.layouts import get_layout
        from protoskel.models import build_model

        model = build_model("atgcn", get_layout("kinect-v1-20"), num_classes=4, in_channels=3)
    except (ImportError, AttributeError) as exc:
        pytest.skip(f"protoskel.models.build_model('atgcn') not available yet: {exc}")
    model.eval()
    wrapped = FrameAveraging(model)
    x = _clips(2, t=12, v=20, m=1, seed=13)
    g = _gen(800)
    both = torch.cat([x, rotate(x, random_rotation(2, 3, g), torch.randn(2, 3, generator=g))])
    with torch.no_grad():  # one batch holds the clips and their moved copies
        out, plain, feats = wrapped(both), model(both), wrapped.features(both)
    assert out.shape == (4, 4) and feats.shape[0] == 4
    assert (out[:2] - out[2:]).abs().max() < TOL
    assert (plain[:2] - plain[2:]).abs().max() > CHANGE
    assert torch.allclose(feats[:2], feats[2:], atol=TOL)  # averaged features are invariant too


# ----------------------------------------------------------------- up axes (body upright first)
def _up_pair(v: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    """Layout-style up weights on a 7-joint toy body: lower = mean of joints 0 and 1, upper = 2."""
    lo, hi = torch.zeros(v), torch.zeros(v)
    lo[:2], hi[2] = 0.5, 1.0
    return lo, hi


def _mean_up(x: torch.Tensor, up: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Each clip's lower -> upper vector averaged over frames and persons: (N, C)."""
    return torch.einsum("nctvm,v->nc", x.double(), (up[1] - up[0]).double()) / (
        x.shape[2] * x.shape[4]
    )


UP_CASES = [
    (3, False, "average"),
    (3, True, "average"),
    (3, False, "canonical"),
    (3, True, "canonical"),
    (2, False, "average"),
    (2, True, "average"),
    (2, True, "canonical"),
]


@pytest.mark.parametrize(("dims", "reflections", "mode"), UP_CASES)
def test_up_axes_are_invariant_and_stand_the_body_upright(
    dims: int, reflections: bool, mode: str
) -> None:
    g = _gen(900 + dims)
    up = _up_pair()
    x = _clips(4, c=dims, seed=40 + dims)
    model = TinyNet(channels=dims).eval()
    wrapped = FrameAveraging(model, mode=mode, reflections=reflections, up=up)
    q = random_rotation(4, dims, g, reflections=reflections)
    moved = rotate(x, q, torch.randn(4, dims, generator=g))
    assert _max_change(wrapped, x, moved) < TOL
    assert _max_change(model, x, moved) > CHANGE
    assert wrapped.last_stats["reduced"] == 0
    fr = wrapped.frames(x)
    num = frame_count(dims, reflections, mode, up=True)
    assert fr.rotations.shape == (4, num, dims, dims)
    # In every frame the body's up is the first axis, pointing +: never flipped, never tilted.
    u = _mean_up(x, up)
    along = torch.einsum("nfij,ni->nfj", fr.rotations, u)  # up in each canonical frame
    assert bool((along[..., 0] > 0).all())
    assert torch.allclose(along[..., 1:], torch.zeros_like(along[..., 1:]), atol=1e-9)
    assert torch.allclose(along[..., 0], u.norm(dim=1)[:, None].expand(-1, num))


def test_up_axes_second_axis_is_the_principal_direction_orthogonal_to_up() -> None:
    g = _gen(950)
    # Bodies standing along y with up of height ~1, walking far along a tilted horizontal line:
    # plain PCA puts the walk first; the up frame keeps up first and the walk second.
    t = torch.linspace(-4, 4, 20)
    x = torch.randn(2, 3, 20, 7, 1, generator=g) * 0.05
    x[:, 1, :, 2] += 1.0  # upper joint above the two lower ones
    walk = torch.tensor([0.6, 0.0, 0.8])
    x = x + walk[None, :, None, None, None] * t[None, None, :, None, None]
    fr = frames(x, up=_up_pair())
    a1, a2 = fr.rotations[:, 0, :, 0], fr.rotations[:, 0, :, 1]
    assert torch.allclose(a1.abs(), torch.tensor([0.0, 1.0, 0.0]).double().expand(2, 3), atol=0.05)
    assert torch.allclose(a2.abs(), walk.double().expand(2, 3), atol=0.05)
    plain = frames(x)
    assert torch.allclose(plain.rotations[:, 0, :, 0].abs(), walk.double().expand(2, 3), atol=0.05)


def test_up_axes_without_up_joints_fall_back_and_are_flagged() -> None:
    x = _clips(2, seed=60)
    x[1, :, :, 2] = 0.0  # clip 1 never shows the upper joint: no up vector to measure
    wrapped = FrameAveraging(TinyNet().eval(), up=_up_pair())
    with torch.no_grad():
        out = wrapped(x)
    assert bool(torch.isfinite(out).all())
    assert wrapped.last_stats["reduced"] == 1 and "1 of 2 clips" in (wrapped.warning or "")


def test_up_axes_ignore_slots_missing_an_up_joint() -> None:
    # A frame where a lower joint is missing must not pull the mean up vector towards it.
    x = _clips(1, seed=61)
    padded = x.clone()
    padded[:, :, 3, 0, 0] = 0.0  # joint 0 (a lower joint) missing in frame 3 of person 0
    fr = frames(padded, up=_up_pair())
    lo, hi = _up_pair()
    ok = torch.ones(10, 2, dtype=torch.bool)
    ok[3, 0] = False
    vec = torch.einsum("ctvm,v->ctm", padded[0].double(), (hi - lo).double())[:, ok]
    want = vec.mean(1)
    assert torch.allclose(fr.rotations[0, 0, :, 0], want / want.norm(), atol=1e-9)


def test_invariance_axes_up_from_a_recipe() -> None:
    from protoskel.layouts import get_layout
    from protoskel.training.config import config_from_dict
    from protoskel.training.trainer import build_model_from_config

    recipe = {
        "model": {"backbone": "stgcn", "invariance": "frame_averaging", "invariance_axes": "up"},
        "data": {"stream": "joint"},
    }
    layout = get_layout("kinect-v1-20")
    model = build_model_from_config(config_from_dict(recipe), layout, num_classes=3, in_channels=3)
    assert isinstance(model, FrameAveraging) and model.up is not None
    assert "axes='up'" in repr(model)
    x = _clips(2, t=12, v=20, m=1, seed=62)
    with torch.no_grad():
        model.eval()
        moved = rotate(x, random_rotation(2, 3, _gen(963)), torch.randn(2, 3, generator=_gen(4)))
        assert (model(x) - model(moved)).abs().max() < TOL
    with pytest.raises(ConfigError, match="invariance_axes"):
        config_from_dict({**recipe, "data": {"stream": "bone"}})
    with pytest.raises(ConfigError, match="invariance_axes: must be pca or up"):
        config_from_dict({"model": {"invariance_axes": "gravity"}})
    with pytest.raises(ConfigError, match="frame averaging, which is off"):
        config_from_dict({"model": {"invariance_axes": "up"}, "data": {"stream": "joint"}})


def test_up_axes_resolve_a_tie_in_the_horizontal_plane_equivariantly() -> None:
    # Four joints on a horizontal cross: equal spread along x and z, so the second axis is
    # fixed by the equivariant vectors and the clip is flagged tied, not reduced.
    pts = [[0, -1, 0], [0, -1, 0], [0, 1, 0], [1, 0, 0], [-1, 0, 0], [0, 0, 1], [0, 0, -1]]
    x = torch.tensor(pts, dtype=torch.float32).T[None, :, None, :, None].repeat(1, 1, 3, 1, 1)
    x[:, :, 1] *= 1.1  # frames differ, so rank-weighted means break the symmetry
    wrapped = FrameAveraging(TinyNet().eval(), up=_up_pair())
    fr = wrapped.frames(x)
    assert fr.tied.tolist() == [True] and fr.reduced.tolist() == [False]
    g = _gen(970)
    for _ in range(3):
        moved = rotate(x, random_rotation(1, 3, g), torch.randn(1, 3, generator=g))
        assert _max_change(wrapped, x, moved) < TOL
