"""Transforms on tiny tensors: normalisation, alignment, sampling, augmentation, streams."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from protoskel.data.transforms import (
    DEFAULT_AUGMENT,
    AugmentConfig,
    align_view,
    augment,
    box_normalize,
    center,
    eval_positions,
    frame_mask,
    gather_frames,
    make_stream,
    normalize,
    normalize_scale,
    occlude_parts,
    random_rotation,
    scale_travel,
    smooth_frames,
    steady_bones,
    stream_channels,
    train_positions,
)
from protoskel.errors import ConfigError
from protoskel.layouts import get_layout

K3 = get_layout("kinect-v1-20")
P2 = get_layout("penn-13")


def _clips(n: int, c: int, t: int, v: int, m: int, seed: int = 0) -> torch.Tensor:
    """Random non-degenerate clips (N, C, T, V, M) offset away from the origin."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, c, 1, v, m, generator=g) + 3.0
    return (base + 0.1 * torch.randn(n, c, t, v, m, generator=g)).float()


def _combo(x: torch.Tensor, w: np.ndarray) -> torch.Tensor:
    return torch.einsum("nctvm,v->nctm", x, torch.as_tensor(w))


def _bone_lengths(x: torch.Tensor, layout) -> torch.Tensor:
    return torch.stack([(x[:, :, :, c] - x[:, :, :, p]).norm(dim=1) for c, p in layout.bones])


# ------------------------------------------------------------------------------- normalise
def test_center_first_valid_frame_and_empty_slots() -> None:
    x = _clips(3, 3, 6, 20, 2)
    x[0, :, 4:] = 0  # clip 0 has 4 frames, then padding
    x[1, :, :, :, 1] = 0  # clip 1 has one person
    x[2, :, :2, :, 0] = 0  # clip 2: person 0 absent in the first two frames
    mask = frame_mask(x)
    y = center(x, K3, mask)
    c = _combo(y, K3.center)  # (N, C, T, M)
    assert torch.allclose(c[0, :, 0, 0], torch.zeros(3), atol=1e-5)
    assert torch.allclose(c[1, :, 0, 0], torch.zeros(3), atol=1e-5)
    assert torch.allclose(c[2, :, 2, 0], torch.zeros(3), atol=1e-5)  # first valid frame is 2
    assert not torch.allclose(c[2, :, 2, 1], torch.zeros(3), atol=1e-3)  # person 1 kept relative
    assert (y[0, :, 4:] == 0).all() and (y[1, ..., 1] == 0).all() and (y[2, :, :2, :, 0] == 0).all()
    # One translation per clip: frame-to-frame motion is unchanged.
    assert torch.allclose(y[0, :, 1:4] - y[0, :, :3], x[0, :, 1:4] - x[0, :, :3], atol=1e-5)


def test_center_per_frame() -> None:
    x = _clips(2, 3, 5, 20, 1)
    y = center(x, K3, per_frame=True)
    assert torch.allclose(_combo(y, K3.center), torch.zeros(2, 3, 5, 1), atol=1e-5)


def test_normalize_scale_unit_up_axis_and_zero_safe() -> None:
    x = _clips(2, 3, 4, 20, 1) * 7.0
    x[1] = 0
    y = normalize_scale(x, K3)
    up = _combo(y, K3.up[1] - K3.up[0]).norm(dim=1)
    assert torch.isclose(up[0].mean(), torch.tensor(1.0), atol=1e-5)
    assert torch.isfinite(y).all() and (y[1] == 0).all()


def test_align_view_3d_maps_up_to_y_and_across_to_x() -> None:
    x = center(_clips(4, 3, 5, 20, 1, seed=3), K3)
    x = torch.einsum("nij,njtvm->nitvm", random_rotation(4, 3, (3.0, 3.0, 3.0), _g(9)), x)
    for mode in ("first", "mean"):
        y = align_view(x, K3, mode=mode)
        t = 0 if mode == "first" else slice(None)
        up = _combo(y, K3.up[1] - K3.up[0])[:, :, t]
        ac = _combo(y, K3.across[1] - K3.across[0])[:, :, t]
        if mode == "mean":
            up, ac = up.mean(2), ac.mean(2)
        up, ac = up.reshape(4, 3), ac.reshape(4, 3)
        assert torch.allclose(
            up / up.norm(dim=1, keepdim=True), torch.tensor([0.0, 1, 0]).expand(4, 3), atol=1e-4
        )
        assert (ac[:, 0] > 0).all() and torch.allclose(ac[:, 2], torch.zeros(4), atol=1e-4)
        # A rotation: bone lengths unchanged.
        assert torch.allclose(_bone_lengths(y, K3), _bone_lengths(x, K3), atol=1e-4)


def test_align_view_2d() -> None:
    x = _clips(3, 2, 4, 13, 1, seed=5)
    up = _combo(x, P2.up[1] - P2.up[0])[:, :, 0, 0]
    ac = _combo(x, P2.across[1] - P2.across[0])[:, :, 0, 0]
    # Make every clip "right-handed" (across x up > 0) so a rotation can reach both targets.
    handed = ac[:, 0] * up[:, 1] - ac[:, 1] * up[:, 0]
    x[handed < 0, 0] *= -1
    y = align_view(x, P2)
    up2 = _combo(y, P2.up[1] - P2.up[0])[:, :, 0, 0]
    ac2 = _combo(y, P2.across[1] - P2.across[0])[:, :, 0, 0]
    assert torch.allclose(up2[:, 0], torch.zeros(3), atol=1e-4) and (up2[:, 1] > 0).all()
    assert (ac2[:, 0] > 0).all()
    mirrored = x.clone()
    mirrored[:, 0] *= -1
    ac3 = _combo(align_view(mirrored, P2), P2.across[1] - P2.across[0])[:, :, 0, 0]
    assert (ac3[:, 0] < 0).all()  # documented: 2D rotation cannot fix a mirrored skeleton


def test_normalize_combines_and_validates() -> None:
    x = _clips(2, 3, 4, 20, 1)
    y = normalize(x, K3, center="first", scale=True, align="first")
    assert torch.allclose(_combo(y, K3.center)[:, :, 0, 0], torch.zeros(2, 3), atol=1e-5)
    with pytest.raises(ConfigError):
        normalize(x, K3, center="middle")


def _rotate(x: torch.Tensor, seed: int) -> torch.Tensor:
    rot = random_rotation(x.shape[0], 3, (3.0, 3.0, 3.0), _g(seed))
    return torch.einsum("nij,njtvm->nitvm", rot, x)


def test_smooth_frames_matches_a_loop_and_ignores_padding() -> None:
    x = _clips(2, 3, 9, 20, 2, seed=6)
    x[0, :, 6:] = 0  # clip 0 ends after 6 frames
    x[1, :, 2:4, :, 1] = 0  # person 1 of clip 1 is missing in frames 2-3
    mask = frame_mask(x)
    sigma = 1.3
    y = smooth_frames(x, sigma, mask)
    r = int(np.ceil(3 * sigma))
    ref = torch.zeros_like(x)
    for n in range(2):
        for m in range(2):
            for t in range(9):
                if not mask[n, t, m]:
                    continue
                num, den = torch.zeros(3, 20), 0.0
                for s in range(max(0, t - r), min(9, t + r + 1)):
                    if mask[n, s, m]:
                        wt = float(np.exp(-0.5 * ((s - t) / sigma) ** 2))
                        num, den = num + wt * x[n, :, s, :, m], den + wt
                ref[n, :, t, :, m] = num / den
    assert torch.allclose(y, ref, atol=1e-5)
    assert (y[0, :, 6:] == 0).all() and (y[1, :, 2:4, :, 1] == 0).all()
    # A linear filter with unit gain per frame: commutes with rotation and translation.
    assert torch.allclose(smooth_frames(_rotate(x, 3), sigma, mask), _rotate(y, 3), atol=1e-5)
    assert torch.equal(smooth_frames(x, 0.0, mask), x)
    still = x[:, :, :1].expand_as(x) * frame_mask(x)[:, None, :, None, :]
    assert torch.allclose(smooth_frames(still, sigma), still, atol=1e-5)


def test_steady_bones_gives_each_bone_its_clip_mean_length() -> None:
    x = _clips(2, 3, 7, 20, 2, seed=8)
    x[0, :, 5:] = 0
    x[1, :, :, :, 1] = 0  # one person in clip 1
    mask = frame_mask(x)
    y = steady_bones(x, K3, mask)
    before, after = _bone_lengths(x, K3), _bone_lengths(y, K3)  # (bones, N, T, M)
    for n, m, frames in [(0, 0, 5), (0, 1, 5), (1, 0, 7)]:
        want = before[:, n, :frames, m].mean(dim=1, keepdim=True).expand(-1, frames)
        assert torch.allclose(after[:, n, :frames, m], want, atol=1e-4)
    for c, p in K3.bones:  # directions kept
        d0 = x[:, :, :, c] - x[:, :, :, p]
        d1 = y[:, :, :, c] - y[:, :, :, p]
        cos = (d0 * d1).sum(1) / (d0.norm(dim=1) * d1.norm(dim=1)).clamp_min(1e-9)
        assert torch.allclose(cos[mask], torch.ones_like(cos[mask]), atol=1e-4)
    assert torch.equal(y[:, :, :, K3.root], x[:, :, :, K3.root])
    assert (y[0, :, 5:] == 0).all() and (y[1, ..., 1] == 0).all()
    assert torch.allclose(steady_bones(_rotate(x, 4), K3, mask), _rotate(y, 4), atol=1e-4)
    # Already steady: unchanged.
    assert torch.allclose(steady_bones(y, K3, mask), y, atol=1e-4)


@pytest.mark.parametrize(
    ("key", "value"), [("smooth", -1.0), ("smooth", "wide"), ("smooth", True), ("bones", "mean")]
)
def test_normalize_rejects_bad_smooth_and_bones(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"normalize\.{key}"):
        normalize(_clips(1, 3, 4, 20, 1), K3, **{key: value})


def test_box_normalize_fills_unit_box_per_axis_and_keeps_empty_slots() -> None:
    x = _clips(3, 3, 6, 20, 2, seed=4) * torch.tensor([5.0, 1.0, 0.2])[None, :, None, None, None]
    x[:, :, 4:] = 0  # frames past the clip's end
    x[1, :, :, :, 1] = 0  # an absent second person
    x[2, 2] = torch.where(x[2, 2] != 0, 0.7, 0.0)  # a flat axis is only centred, not blown up
    mask = frame_mask(x)
    y = box_normalize(x, mask)
    valid = mask[:, None, :, None, :].expand_as(x)
    for n in range(3):
        for c in range(3 if n < 2 else 2):
            vals = y[n, c][valid[n, c]]
            assert vals.min().item() == pytest.approx(-1.0) and vals.max().item() == pytest.approx(
                1.0
            )
    assert (y[2, 2][valid[2, 2]] == 0).all()
    assert (y[~valid] == 0).all() and torch.isfinite(y).all()
    # Invariant to each clip's size and position; normalize(box=True) ends with it.
    assert torch.allclose(box_normalize(x * 3.0 + 1.0, mask), y, atol=1e-5)
    assert torch.allclose(normalize(x, K3, mask, center="first", box=True), y, atol=1e-5)


# ------------------------------------------------------------------------------ sampling
def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_train_positions_stay_in_clip_and_follow_crop() -> None:
    lengths = torch.tensor([1, 3, 40, 201])
    pos = train_positions(lengths, 52, _g(0), (0.5, 1.0), num_clips=2)
    assert pos.shape == (8, 52)
    lens = lengths.repeat_interleave(2)[:, None].float()
    assert (pos >= 0).all() and (pos <= lens - 1).all()
    assert (pos[:, 1:] >= pos[:, :-1]).all()  # resampling keeps time order
    span = pos[:, -1] - pos[:, 0]
    assert (span[-2:] >= 0.5 * 201 - 2).all()  # a 50% crop at least
    full = train_positions(lengths, 52, _g(0), (1.0, 1.0))
    assert torch.allclose(full, eval_positions(lengths, 52))  # p=1 crop == uniform sampling


def test_random_sampling_draws_sorted_whole_frames_inside_the_crop() -> None:
    lengths = torch.tensor([1, 5, 40, 201])
    pos = train_positions(lengths, 52, _g(0), (0.5, 1.0), num_clips=3, sample="random")
    lens = lengths.repeat_interleave(3)[:, None].float()
    assert pos.shape == (12, 52) and (pos >= 0).all() and (pos <= lens - 1).all()
    assert torch.equal(pos, pos.round())  # whole frames, as CTR-GCN's NW-UCLA feeder reads
    assert (pos[:, 1:] >= pos[:, :-1]).all()
    gaps = pos[-3:, 1:] - pos[-3:, :-1]
    assert gaps.std() > 0.5  # irregular steps, unlike the even resampling
    again = train_positions(lengths, 52, _g(0), (0.5, 1.0), num_clips=3, sample="random")
    assert torch.equal(pos, again)
    with pytest.raises(ConfigError, match="sample"):
        train_positions(lengths, 52, _g(0), sample="shuffle")
    with pytest.raises(ConfigError, match=r"augment\.sample"):
        AugmentConfig.from_dict({"sample": "shuffle"})
    assert AugmentConfig.from_dict({"sample": "random"}).sample == "random"


def test_eval_positions_centred_and_multi_clip_grouping() -> None:
    lengths = torch.tensor([10, 100])
    one = eval_positions(lengths, 5)
    assert torch.allclose(one[1], torch.tensor([9.5, 29.5, 49.5, 69.5, 89.5]))
    many = eval_positions(lengths, 5, num_clips=3)
    assert many.shape == (6, 5)
    assert (many[:3] <= 9).all() and (many[3:] >= 0).all() and (many[3:] <= 99).all()
    assert (many[4] == one[1]).all()  # middle of 3 copies = centre sampling
    assert (many[3] < many[4]).all() and (many[4] < many[5]).all()  # shifted views of clip 1


def test_gather_frames_reads_each_clip_and_interpolates() -> None:
    # Packed (F, M, V, C): coordinate 0 encodes the global row, person 1 missing in row 3.
    f = 10
    packed = np.ones((f, 2, 20, 3), np.float32)
    packed[..., 0] = np.arange(f, dtype=np.float32)[:, None, None] + 1
    packed[3, 1] = 0
    starts, lengths = torch.tensor([0, 4]), torch.tensor([4, 6])
    pos = torch.tensor([[0.0, 1.0, 2.5, 3.0], [0.0, 0.25, 4.0, 5.0]])
    for src in (packed, torch.from_numpy(packed)):
        x, mask = gather_frames(src, starts, lengths, pos)
        assert x.shape == (2, 3, 4, 20, 2)
        assert torch.allclose(x[0, 0, :, 0, 0], torch.tensor([1.0, 2.0, 3.5, 4.0]))
        assert torch.allclose(x[1, 0, :, 0, 0], torch.tensor([5.0, 5.25, 9.0, 10.0]))
        # Person 1 is absent in row 3: no blend with the empty slot, the present frame instead.
        assert x[0, 0, 2, 0, 1] == 3.0 and (x[0, :, 3, :, 1] == 0).all()
        assert mask[0, :, 1].tolist() == [True, True, True, False]
        assert torch.allclose(x[0, 0, 2, 0, 0], torch.tensor(3.5))
    xn, _ = gather_frames(packed, starts, lengths, pos, interpolate=False)
    assert xn[1, 0, 1, 0, 0] == 5.0


# ---------------------------------------------------------------------------- augmentation
FULL = {
    "rotate": {"p": 1.0, "angle": [0.3, 0.3, 0.3]},
    "scale": {"p": 0.5, "range": [0.8, 1.2]},
    "shear": {"p": 0.5, "amount": 0.1},
    "jitter": {"p": 1.0, "std": 0.01},
    "frame_drop": {"p": 1.0, "rate": 0.2},
    "flip": 0.5,
}


def test_rotation_augmentation_preserves_bone_lengths() -> None:
    x = center(_clips(4, 3, 5, 20, 2), K3)
    x[0, ..., 1] = 0
    y, _ = augment(x, K3, {"rotate": {"angle": [0.5, 0.5, 0.5]}}, _g(1))
    assert not torch.allclose(x, y)
    assert torch.allclose(_bone_lengths(y, K3), _bone_lengths(x, K3), atol=1e-5)
    assert (y[0, ..., 1] == 0).all()
    y2, _ = augment(x[:, :2], K3, {"rotate": 0.5}, _g(1))  # 2D, shorthand form
    assert y2.shape == (4, 2, 5, 20, 2) and not torch.allclose(y2, x[:, :2])
    assert torch.allclose(_bone_lengths(y2, K3), _bone_lengths(x[:, :2], K3), atol=1e-5)


def test_augment_seeded() -> None:
    x = _clips(3, 3, 8, 20, 1)
    a, ma = augment(x, K3, FULL, _g(7))
    b, mb = augment(x, K3, FULL, _g(7))
    c, _ = augment(x, K3, FULL, _g(8))
    assert torch.equal(a, b) and torch.equal(ma, mb)
    assert not torch.allclose(a, c)


def test_frame_drop_keeps_length_with_earlier_frames() -> None:
    t = 12
    x = torch.zeros(2, 3, t, 20, 1)
    x[:, 0] = torch.arange(1, t + 1, dtype=torch.float32)[None, :, None, None]
    y, mask = augment(x, K3, {"frame_drop": {"rate": 0.5}}, _g(3))
    src = y[:, 0, :, 0, 0]
    assert y.shape == x.shape and mask.all()
    assert (src[:, 0] == 1).all() and (src[:, 1:] >= src[:, :-1]).all()
    assert (src <= torch.arange(1, t + 1)).all()
    assert (src[:, 1:] == src[:, :-1]).any()  # something was dropped


def test_flip_swaps_sides_and_negates_x() -> None:
    x = _clips(2, 3, 3, 20, 1)
    y, _ = augment(x, K3, {"flip": {"p": 1.0}}, _g(0))
    ls, rs = K3.index("left_shoulder"), K3.index("right_shoulder")
    assert torch.allclose(y[:, 0, :, ls], -x[:, 0, :, rs])
    assert torch.allclose(y[:, 1:, :, ls], x[:, 1:, :, rs])
    assert torch.allclose(
        y[:, :, :, K3.index("spine")] * torch.tensor([-1.0, 1, 1])[None, :, None, None],
        x[:, :, :, K3.index("spine")],
    )
    z, _ = augment(y, K3, {"flip": {"p": 1.0}}, _g(0))
    assert torch.allclose(z, x)


def _occlude_loop(x, layout, part, start, length):
    """Plain-loop reference: walk each hidden joint up the tree until it leaves the part."""
    y = x.clone()
    parts = list(layout.parts.values())
    for i in range(x.shape[0]):
        members = set(parts[int(part[i])])
        for v in members:
            a = v
            while a in members and layout.parents[a] >= 0:
                a = layout.parents[a]
            for t in range(int(start[i]), int(start[i]) + int(length[i])):
                y[i, :, t, v] = x[i, :, t, a]
    return y


@pytest.mark.parametrize("layout", [K3, P2])
def test_occlude_parts_matches_a_loop_and_hides_whole_limbs(layout) -> None:
    x = _clips(4, layout.dims, 7, layout.num_joints, 2)
    x[1, ..., 1] = 0  # a missing person stays missing
    part = torch.tensor([0, 1, len(layout.parts) - 1, 2])
    start, length = torch.tensor([0, 2, 6, 3]), torch.tensor([7, 3, 1, 0])
    y = occlude_parts(x, layout, part, start, length)
    assert torch.equal(y, _occlude_loop(x, layout, part, start, length))
    assert torch.equal(y[3], x[3]) and (y[1, ..., 1] == 0).all()
    assert torch.equal(y[1, :, :2], x[1, :, :2]) and torch.equal(y[1, :, 5:], x[1, :, 5:])


def test_occlude_parts_sends_an_arm_to_its_attachment_and_the_torso_to_the_root() -> None:
    x = _clips(2, 3, 4, 20, 1)
    names = list(K3.parts)
    arm, torso = names.index("left_arm"), names.index("torso")
    y = occlude_parts(x, K3, torch.tensor([arm, torso]), torch.zeros(2), torch.full((2,), 4))
    sc, hc = K3.index("shoulder_center"), K3.index("hip_center")
    for j in ("left_shoulder", "left_elbow", "left_wrist", "left_hand"):
        assert torch.equal(y[0, :, :, K3.index(j)], x[0, :, :, sc])
    for j in ("spine", "shoulder_center", "head"):
        assert torch.equal(y[1, :, :, K3.index(j)], x[1, :, :, hc])
    rest = [v for v in range(20) if v not in K3.parts["left_arm"]]
    assert torch.equal(y[0][:, :, rest], x[0][:, :, rest])
    # The hidden limb's bones are zero, as a root's are: the bone stream sees no arm.
    bones = make_stream(y, "bone", K3)
    assert (bones[0][:, :, list(K3.parts["left_arm"])] == 0).all()


def test_occlude_augmentation_stretch_within_valid_frames_and_seeded() -> None:
    t = 10
    x = _clips(64, 3, t, 20, 1)
    x[:8, :, 6:] = 0  # short clips: 6 valid frames, then padding
    cfg = {"occlude": {"p": 1.0, "span": [0.3, 0.6]}}
    y, mask = augment(x, K3, cfg, _g(5))
    assert torch.equal(mask, frame_mask(x))
    changed = (y != x).any(dim=1).any(dim=2).any(dim=2)  # (N, T)
    assert (y[:8, :, 6:] == 0).all()
    for i in range(64):
        hit = changed[i].nonzero().flatten()
        valid = 6 if i < 8 else t
        assert len(hit) > 0 and hit.max() < valid
        assert hit.max() - hit.min() + 1 <= round(0.6 * valid)  # one contiguous stretch
        assert torch.equal(hit, torch.arange(int(hit.min()), int(hit.max()) + 1))
        parts_hit = {
            k for k, v in K3.parts.items() if (y[i][:, :, list(v)] != x[i][:, :, list(v)]).any()
        }
        assert len(parts_hit) == 1
    y2, _ = augment(x, K3, cfg, _g(5))
    assert torch.equal(y, y2)
    none, _ = augment(x, K3, {"occlude": {"p": 0.0, "span": 0.5}}, _g(5))
    assert torch.equal(none, x)
    half, _ = augment(x, K3, {"occlude": {"p": 0.5, "span": 1.0}}, _g(5))
    n_hit = int((half != x).flatten(1).any(1).sum())
    assert 16 <= n_hit <= 48


def test_occlude_config_forms_and_errors() -> None:
    assert AugmentConfig.from_dict({"occlude": 0.5}).occlude_span == (0.5, 0.5)
    oc = AugmentConfig.from_dict({"occlude": {"p": 0.3, "span": [0.25, 1]}})
    assert (oc.occlude_p, oc.occlude_span) == (0.3, (0.25, 1.0))
    for bad in ({"occlude": [0.5, 0.2]}, {"occlude": 0}, {"occlude": [0.2, 1.5]}, {"occlude": "x"}):
        with pytest.raises(ConfigError, match=r"augment\.occlude\.span"):
            AugmentConfig.from_dict(bad)
    with pytest.raises(ConfigError, match=r"augment\.occlude: unknown key 'parts'"):
        AugmentConfig.from_dict({"occlude": {"span": 0.5, "parts": 2}})


def test_travel_scales_the_path_and_keeps_the_posture() -> None:
    x = _clips(2, 3, 6, 20, 2)
    x[0, :, 4:] = 0  # clip 0 has 4 frames, then padding
    x[1, :, :, :, 0] = 0  # clip 1's person 0 is absent: person 1 is the reference
    x[1, :, 0] = 0  # ... and from frame 1 on only
    walk = (
        torch.linspace(0, 5, 6)[None, None, :, None, None]
        * torch.tensor([1.0, 0, 2])[None, :, None, None, None]
    )
    x = (x + walk) * frame_mask(x)[:, None, :, None, :].to(x.dtype)
    mask = frame_mask(x)
    ref = ((0, 0), (1, 1))  # reference person and its first valid frame, per clip

    def path(y: torch.Tensor) -> torch.Tensor:
        c = _combo(y, K3.center)  # (N, C, T, M)
        return torch.stack([c[i, :, :, r] - c[i, :, f : f + 1, r] for i, (r, f) in enumerate(ref)])

    half = scale_travel(x, K3, torch.tensor([0.5, 0.0]))
    assert torch.allclose(path(half)[0, :, :4], 0.5 * path(x)[0, :, :4], atol=1e-5)
    assert torch.allclose(path(half)[1, :, 1:], torch.zeros(3, 5), atol=1e-5)  # on the spot
    shift = half - x
    # the posture around the path is kept: every joint and person moves by the same amount
    assert torch.allclose(shift, shift[:, :, :, :1] * mask[:, None, :, None, :], atol=1e-5)
    assert (half[0, :, 4:] == 0).all() and (half[1, :, :, :, 0] == 0).all()
    assert (half[1, :, 0] == 0).all()
    assert torch.allclose(half[0, :, 0], x[0, :, 0]) and torch.allclose(half[1, :, 1], x[1, :, 1])
    assert torch.allclose(scale_travel(x, K3, torch.ones(2)), x)
    got, _ = augment(x, K3, {"travel": [0.5, 0.5]}, _g(0))
    assert torch.allclose(got, scale_travel(x, K3, torch.full((2,), 0.5)))
    # off by default: a config without it draws the same random numbers as before
    a, _ = augment(x, K3, {"rotate": 0.5}, _g(3))
    b, _ = augment(x, K3, {"rotate": 0.5, "travel": {"p": 0.0, "range": [0.1, 0.2]}}, _g(3))
    assert torch.equal(a, b)


def test_augment_config_parsing() -> None:
    cfg = AugmentConfig.from_dict(DEFAULT_AUGMENT)
    assert cfg.crop == (0.5, 1.0) and cfg.rotate_angle == (0.3, 0.3, 0.3) and cfg.rotate_p == 1.0
    assert AugmentConfig.from_dict({"scale": 0.1}).scale_range == (0.9, 1.1)
    travel = AugmentConfig.from_dict({"travel": [0.25, 1]})
    assert (travel.travel_p, travel.travel_range) == (1.0, (0.25, 1.0))
    bads = ({"rotat": 0.1}, {"crop": [0.0, 1.0]}, {"flip": 2}, {"jitter": {"sd": 1}})
    bads += ({"travel": [1.0, 0.5]}, {"travel": [-0.1, 1]}, {"travel": 0.5}, {"travel": ["a", 1]})
    for bad in bads:
        with pytest.raises(ConfigError):
            AugmentConfig.from_dict(bad)


# -------------------------------------------------------------------------------- streams
def _naive(x: np.ndarray, stream: str, parents: tuple[int, ...]) -> np.ndarray:
    """Reference implementation with plain loops (slow, obviously right)."""
    n, _, t, v, m = x.shape
    valid = np.abs(x).sum(axis=(1, 3)) > 0  # (N, T, M)
    base = x.copy()
    if "bone" in stream:
        for i in range(n):
            for f in range(t):
                for j in range(v):
                    for p in range(m):
                        anc = j
                        for _ in range(2 if "bone2" in stream else 1):
                            anc = anc if parents[anc] < 0 else parents[anc]
                        base[i, :, f, j, p] = x[i, :, f, j, p] - x[i, :, f, anc, p]
    if "motion" not in stream:
        return base
    out = np.zeros_like(x)
    for i in range(n):
        for f in range(t - 1):
            for p in range(m):
                if valid[i, f, p] and valid[i, f + 1, p]:
                    out[i, :, f, :, p] = base[i, :, f + 1, :, p] - base[i, :, f, :, p]
    return out


@pytest.mark.parametrize(
    "stream", ["joint", "bone", "joint_motion", "bone_motion", "bone2", "bone2_motion"]
)
def test_streams_match_naive_loops(stream: str) -> None:
    x = _clips(2, 3, 6, 20, 2)
    x[0, :, 4:] = 0  # padded tail
    x[1, :, 2, :, 1] = 0  # person 1 missing in frame 2
    got = make_stream(x, stream, K3).numpy()
    np.testing.assert_allclose(got, _naive(x.numpy(), stream, K3.parents), atol=1e-6)


def test_stacked_streams_are_their_parts_on_the_channel_axis() -> None:
    x = _clips(2, 3, 6, 20, 2)
    x[1, :, 2, :, 1] = 0
    got = make_stream(x, "joint+bone+bone_motion", K3)
    assert got.shape == (2, 9, 6, 20, 2)
    for i, s in enumerate(("joint", "bone", "bone_motion")):
        np.testing.assert_allclose(
            got[:, 3 * i : 3 * i + 3].numpy(), _naive(x.numpy(), s, K3.parents), atol=1e-6
        )
    assert stream_channels("joint+bone", 2) == 4 and stream_channels("bone", 3) == 3
    for bad, needle in [("joint+velocity", "'velocity'"), ("bone+bone", "repeats")]:
        with pytest.raises(ConfigError, match=needle):
            make_stream(x, bad, K3)


def _naive_angles(x: np.ndarray, layout) -> np.ndarray:
    """Reference angle stream with plain loops: cosines with up, across and the parent bone."""
    n, _, t, v, m = x.shape

    def cos(a: np.ndarray, b: np.ndarray) -> float:
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        return 0.0 if na < 1e-6 or nb < 1e-6 else float(a @ b / (na * nb))

    out = np.zeros((n, 3, t, v, m), dtype=x.dtype)
    for i in range(n):
        for f in range(t):
            for p in range(m):
                pose = x[i, :, f, :, p].T  # (V, C)
                up = layout.up[1] @ pose - layout.up[0] @ pose
                across = layout.across[1] @ pose - layout.across[0] @ pose
                for j in range(v):
                    par = layout.parents[j]
                    bone = pose[j] - pose[par] if par >= 0 else 0 * pose[j]
                    gp = layout.parents[par] if par >= 0 else -1
                    pbone = pose[par] - pose[gp] if gp >= 0 else 0 * pose[j]
                    out[i, :, f, j, p] = (cos(bone, up), cos(bone, across), cos(bone, pbone))
    return out


@pytest.mark.parametrize("layout", [K3, P2], ids=lambda lay: lay.name)
def test_angle_stream_matches_naive_loops(layout) -> None:
    x = _clips(2, layout.dims, 5, layout.num_joints, 2)
    x[0, :, 3:] = 0  # padded tail
    x[1, :, 1, :, 1] = 0  # person 1 missing in frame 1
    got = make_stream(x, "angle", layout).numpy()
    want = _naive_angles(x.numpy(), layout)
    np.testing.assert_allclose(got, want, atol=1e-5)
    # Three cosines per joint whatever the coordinates, so 2D and 3D models see the same C.
    assert got.shape[1] == 3 == stream_channels("angle", layout.dims)
    assert (got[:, :, :, layout.root] == 0).all() and (got[0, :, 3:] == 0).all()
    assert stream_channels("joint+angle", 2) == 5
    motion = make_stream(x, "angle_motion", layout).numpy()
    np.testing.assert_allclose(motion[1, :, 2:4], want[1, :, 3:5] - want[1, :, 2:4], atol=1e-5)
    assert (motion[0, :, 2:] == 0).all()  # frame 2 is clip 0's last: no jump into padding


def test_angle_stream_is_unchanged_by_rotation_reflection_scale_and_shift() -> None:
    x = _clips(3, 3, 6, 20, 2, seed=7)
    x[2, :, 4:] = 0
    q = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(1)))[0]
    for r in (q, -q):  # one of the two is a reflection
        moved = (
            torch.einsum("ij,njtvm->nitvm", r, x) * 2.5
            + torch.tensor([1.0, -2.0, 0.5])[None, :, None, None, None]
            * frame_mask(x)[:, None, :, None, :].float()
        )
        torch.testing.assert_close(
            make_stream(moved, "angle", K3), make_stream(x, "angle", K3), atol=2e-5, rtol=0
        )
    # ... but not by a per-axis stretch, which changes the body's angles.
    stretched = x * torch.tensor([1.0, 2.0, 1.0])[None, :, None, None, None]
    assert (make_stream(stretched, "angle", K3) - make_stream(x, "angle", K3)).abs().max() > 0.05


@pytest.mark.parametrize("layout", [K3, P2], ids=lambda lay: lay.name)
def test_distance_stream_matches_naive_loops(layout) -> None:
    x = _clips(2, layout.dims, 5, layout.num_joints, 2, seed=3)
    x[0, :, 3:] = 0  # padded tail
    x[1, :, 1, :, 1] = 0  # person 1 missing in frame 1
    got = make_stream(x, "distance", layout).numpy()
    n, _, t, v, m = x.shape
    want = np.zeros((n, v, t, v, m), dtype=np.float32)
    for i in range(n):
        for f in range(t):
            for p in range(m):
                for j in range(v):
                    for u in range(v):
                        want[i, u, f, j, p] = np.linalg.norm(x[i, :, f, j, p] - x[i, :, f, u, p])
    np.testing.assert_allclose(got, want, atol=1e-5)
    # One channel per joint of the layout, whatever the coordinates.
    assert stream_channels("distance", layout.dims, layout.num_joints) == layout.num_joints
    assert stream_channels("joint+distance", 3, 20) == 23
    with pytest.raises(ValueError, match="joint count"):
        stream_channels("distance", 3)
    assert (got[0, :, 3:] == 0).all() and (got[1, :, 1, :, 1] == 0).all()
    motion = make_stream(x, "distance_motion", layout).numpy()
    np.testing.assert_allclose(motion[1, :, 2:4], want[1, :, 3:5] - want[1, :, 2:4], atol=1e-5)
    assert (motion[0, :, 2:] == 0).all()  # frame 2 is clip 0's last: no jump into padding


def test_distance_stream_is_unchanged_by_rotation_reflection_and_shift() -> None:
    x = _clips(2, 3, 6, 20, 1, seed=5)
    q = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(2)))[0]
    for r in (q, -q):
        moved = torch.einsum("ij,njtvm->nitvm", r, x) + torch.tensor([0.5, 1.0, -1.0]).view(
            1, 3, 1, 1, 1
        )
        torch.testing.assert_close(
            make_stream(moved, "distance", K3), make_stream(x, "distance", K3), atol=2e-5, rtol=0
        )
    stretched = x * torch.tensor([1.0, 2.0, 1.0])[None, :, None, None, None]
    change = make_stream(stretched, "distance", K3) - make_stream(x, "distance", K3)
    assert change.abs().max() > 0.05


def test_root_bone_zero_and_motion_zero_on_padded_tail() -> None:
    x = _clips(1, 3, 8, 20, 1)
    x[0, :, 5:] = 0
    bone = make_stream(x, "bone", K3)
    assert (bone[:, :, :, K3.root] == 0).all()
    bone2 = make_stream(x, "bone2", K3)
    assert (bone2[:, :, :, K3.root] == 0).all()
    # A child of the root has no grandparent: its 2-hop vector is its bone.
    child = K3.parents.index(K3.root)
    torch.testing.assert_close(bone2[:, :, :, child], bone[:, :, :, child])
    for s in ("joint_motion", "bone_motion"):
        mo = make_stream(x, s, K3)
        assert (mo[:, :, 4:] == 0).all()  # frame 4 is the clip's last: no jump into padding
        assert (mo[:, :, :4].abs().sum(dim=(0, 1, 3, 4)) > 0).all()
    with pytest.raises(ConfigError):
        make_stream(x, "velocity", K3)
