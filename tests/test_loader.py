"""ClipLoader on a tiny stand-in split: order, determinism, sharding, labels, multi-clip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from protoskel.data.loader import ClipLoader
from protoskel.data.transforms import DEFAULT_AUGMENT
from protoskel.errors import ConfigError, DatasetError
from protoskel.layouts import get_layout

LAYOUT = get_layout("kinect-v1-20")
RAW = {"center": None}  # no normalisation: the raw coordinates identify clip and frame


class TinySplit:
    """Same attributes as ``PreparedSplit`` that ClipLoader reads.

    Coordinate 0 of every joint is ``clip id + 1``, coordinate 1 the frame within the clip and
    coordinate 2 the joint index + 1, so a batch tells which clip and frames it came from.
    """

    def __init__(self, n: int = 37, seed: int = 0, keypoints: np.ndarray | None = None) -> None:
        rng = np.random.default_rng(seed)
        self.lengths = rng.integers(1, 30, n).astype(np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)
        self.labels = rng.integers(0, 10, n).astype(np.int64)
        if keypoints is None:
            keypoints = np.ones((int(self.offsets[-1]), 1, 20, 3), np.float32)
            for i in range(n):
                rows = slice(self.offsets[i], self.offsets[i + 1])
                keypoints[rows, :, :, 0] = i + 1
                keypoints[rows, :, :, 1] = np.arange(self.lengths[i])[:, None, None]
            keypoints[..., 2] = np.arange(20, dtype=np.float32) + 1
        self.keypoints = keypoints

    def __len__(self) -> int:
        return len(self.labels)


def _loader(split: TinySplit, **kw) -> ClipLoader:
    args = {"batch_size": 8, "num_frames": 16, "train": True, "seed": 3, "normalize": RAW}
    args.update(kw)
    return ClipLoader(split, LAYOUT, **args)


def _clip_ids(x: torch.Tensor) -> torch.Tensor:
    ids = x[:, 0, :, :, 0] - 1  # (N, T, V)
    assert (ids == ids[:, :1, :1]).all(), "a row mixes clips"
    return ids[:, 0, 0].round().long()


def test_batches_have_right_labels_shapes_and_frames() -> None:
    split = TinySplit()
    loader = _loader(split, augment={"crop": [0.5, 1.0]})
    seen = []
    for x, y in loader:
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape == (8, 3, 16, 20, 1)
        ids = _clip_ids(x)
        assert torch.equal(y, torch.as_tensor(split.labels)[ids])
        frames = x[:, 1, :, 0, 0]  # frame position within the clip
        lens = torch.as_tensor(split.lengths)[ids][:, None].float()
        assert (frames >= 0).all() and (frames <= lens - 1).all()
        seen += ids.tolist()
    assert len(loader) == 37 // 8 and len(seen) == len(set(seen)) == 32  # drop_last for train


def test_same_seed_epoch_same_batches_and_epochs_differ() -> None:
    split = TinySplit()
    kw = {"augment": DEFAULT_AUGMENT, "normalize": None, "stream": "bone"}
    a, b = _loader(split, **kw), _loader(split, **kw)
    a.set_epoch(4)
    b.set_epoch(4)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    b.set_epoch(5)
    assert not np.array_equal(a.epoch_indices(), b.epoch_indices())
    # The batch generator drives augmentation: other draws, other tensors for the same clips.
    xa, _ = a.batch(np.arange(4), torch.Generator().manual_seed(1))
    xb, _ = a.batch(np.arange(4), torch.Generator().manual_seed(2))
    assert not torch.allclose(xa, xb)
    # A different seed gives a different order.
    c = _loader(split, seed=4, **kw)
    c.set_epoch(4)
    assert not np.array_equal(a.epoch_indices(), c.epoch_indices())


def test_sharding_covers_epoch_without_overlap() -> None:
    split = TinySplit(n=37)
    shards = [_loader(split, rank=r, world_size=2, drop_last=False) for r in range(2)]
    for s in shards:
        s.set_epoch(2)
    idx = [s.epoch_indices() for s in shards]
    pads = [s.padding_mask() for s in shards]
    assert len(idx[0]) == len(idx[1]) == 19 and len(shards[0]) == len(shards[1]) == 3
    real = np.concatenate([i[~p] for i, p in zip(idx, pads, strict=True)])
    assert sorted(real.tolist()) == list(range(37))  # every clip once, no overlap
    assert sum(int(p.sum()) for p in pads) == 1  # one wrap-padded entry
    # The yielded batches follow epoch_indices.
    got = torch.cat([_clip_ids(x) for x, _ in shards[1]])
    assert got.tolist() == idx[1].tolist()


def test_eval_order_multi_clip_grouping_and_no_drop() -> None:
    split = TinySplit(n=10)
    loader = _loader(split, train=False, num_clips=3, batch_size=4)
    assert len(loader) == 3 and not loader.drop_last
    ys, ids = [], []
    for x, y in loader:
        assert x.shape[0] == 3 * y.shape[0]
        ids.append(_clip_ids(x).reshape(-1, 3))
        ys.append(y)
        # The 3 views of a clip are shifted samplings of the same frames.
        frames = x[:, 1, :, 0, 0].reshape(-1, 3, 16)
        assert (frames[:, 0] <= frames[:, 1]).all() and (frames[:, 1] <= frames[:, 2]).all()
    ids_t = torch.cat(ids)
    assert (ids_t == ids_t[:, :1]).all()  # rows i*K:(i+1)*K belong to clip i
    assert ids_t[:, 0].tolist() == list(range(10))  # eval keeps split order
    assert torch.equal(torch.cat(ys), torch.as_tensor(split.labels))


def test_mirror_appends_left_right_mirrors_of_every_view() -> None:
    rng = np.random.default_rng(1)
    split = TinySplit(n=6)
    split.keypoints = rng.normal(size=split.keypoints.shape).astype(np.float32)
    perm = torch.as_tensor(LAYOUT.flip_permutation())
    assert not torch.equal(perm, torch.arange(20))  # the layout really has left/right joints
    for stream in ("joint", "bone", "joint_motion"):
        plain = _loader(split, train=False, num_clips=2, batch_size=6, stream=stream)
        both = _loader(split, train=False, num_clips=2, batch_size=6, stream=stream, mirror=True)
        assert both.copies == 4 and plain.copies == 2
        (x, y), (xm, ym) = next(iter(plain)), next(iter(both))
        assert torch.equal(y, ym) and xm.shape[0] == 2 * x.shape[0]
        xm = xm.view(6, 2, 2, *x.shape[1:])
        x = x.view(6, 2, *x.shape[1:])
        assert torch.equal(xm[:, 0], x)  # the clip's own views first, unchanged
        expect = x[..., perm, :].clone()
        expect[:, :, 0] *= -1  # mirrored: left/right joints swapped and x negated
        torch.testing.assert_close(xm[:, 1], expect)
    with pytest.raises(ConfigError, match=r"augment\.flip"):
        _loader(split, train=True, mirror=True)


def test_rotations_add_rotated_copies_before_box_normalisation() -> None:
    from protoskel.data.transforms import box_normalize, rotation_matrices

    rng = np.random.default_rng(2)
    split = TinySplit(n=5)
    split.keypoints = rng.normal(size=split.keypoints.shape).astype(np.float32)
    angles = [[0.0, -0.5, 0.0], [0.0, 0.0, 0.0], [0.3, 0.7, -0.2]]
    norm = {"center": "first", "box": True}
    kw = {"train": False, "num_clips": 2, "batch_size": 5, "normalize": norm}
    plain = _loader(split, **kw)
    rot = _loader(split, **kw, rotations=angles)
    both = _loader(split, **kw, rotations=angles, mirror=True)
    assert (plain.copies, rot.copies, both.copies) == (2, 6, 12)
    (x, y), (xr, yr), (xb, _) = next(iter(plain)), next(iter(rot)), next(iter(both))
    assert torch.equal(y, yr) and xr.shape[0] == 3 * x.shape[0] and xb.shape[0] == 6 * x.shape[0]
    # By hand: the centred, un-boxed rows rotated by each matrix, then boxed.
    raw = _loader(split, **{**kw, "normalize": {"center": "first", "box": False}})
    x0, _ = next(iter(raw))
    mats = rotation_matrices(torch.tensor(angles), 3)
    expect = torch.stack([box_normalize(torch.einsum("ij,njtvm->nitvm", m, x0)) for m in mats], 1)
    torch.testing.assert_close(xr.view(10, 3, *x.shape[1:]), expect)
    torch.testing.assert_close(xr.view(10, 3, *x.shape[1:])[:, 1], x)  # identity row: plain
    assert not torch.allclose(xr.view(10, 3, *x.shape[1:])[:, 0], x)
    # With mirroring, each clip's rotated rows come first and their mirrors after.
    torch.testing.assert_close(xb.view(5, 2, 6, *x.shape[1:])[:, 0], xr.view(5, 6, *x.shape[1:]))
    with pytest.raises(ConfigError, match=r"augment\.rotate"):
        _loader(split, train=True, rotations=angles)
    with pytest.raises(ConfigError, match=r"rotations\[1\]: expected \[ax, ay, az\]"):
        _loader(split, **kw, rotations=[[0, 0, 0], [0.5, 0.1]])


def test_occlude_hides_the_named_part_in_every_frame_before_the_mirror() -> None:
    split = TinySplit(n=6)
    kw = {"train": False, "batch_size": 6, "normalize": RAW}
    (x, _), (xo, _) = (
        next(iter(_loader(split, **kw))),
        next(iter(_loader(split, **kw, occlude="left_arm"))),
    )
    arm = list(LAYOUT.parts["left_arm"])
    rest = [v for v in range(20) if v not in arm]
    sc = LAYOUT.index("shoulder_center")
    assert torch.equal(xo[:, :, :, rest], x[:, :, :, rest])
    assert torch.equal(xo[:, :, :, arm], x[:, :, :, [sc] * 4])  # every frame, every clip
    assert (xo[:, 2, :, arm] == sc + 1).all()  # coordinate 2 names the joint: all are the anchor
    # Mirrored rows are mirrors of the occluded clip: the hidden arm is then on the right.
    (xm, _) = next(iter(_loader(split, **kw, occlude="left_arm", mirror=True)))
    right = list(LAYOUT.parts["right_arm"])
    assert (xm.view(6, 2, *x.shape[1:])[:, 1, 2][:, :, right] == sc + 1).all()
    with pytest.raises(ConfigError, match="has no part 'left_hand'; its parts: torso, left_arm"):
        _loader(split, **kw, occlude="left_hand")
    with pytest.raises(ConfigError, match=r"augment\.occlude"):
        _loader(split, train=True, occlude="left_arm")


def test_memmap_and_preload_give_same_batches(tmp_path: Path) -> None:
    split = TinySplit(n=12)
    np.save(tmp_path / "kp.npy", split.keypoints)
    mm = TinySplit(n=12, keypoints=np.load(tmp_path / "kp.npy", mmap_mode="r"))
    kw = {"augment": DEFAULT_AUGMENT, "stream": "joint_motion", "normalize": None}
    a = _loader(split, preload=True, **kw)
    b = _loader(mm, preload=False, **kw)
    assert a.preloaded and not b.preloaded
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.allclose(xa, xb) and torch.equal(ya, yb)


def test_small_shard_still_yields_and_bad_inputs_raise() -> None:
    split = TinySplit(n=5)
    loader = _loader(split, batch_size=16)
    assert len(loader) == 1 and sum(1 for _ in loader) == 1
    bad = TinySplit(n=5)
    bad.lengths = bad.lengths + 1
    with pytest.raises(DatasetError):
        _loader(bad)
    with pytest.raises(ConfigError):
        _loader(split, stream="speed")
    with pytest.raises(ConfigError):
        _loader(split, rank=2, world_size=2)
    with pytest.raises(ConfigError, match=r"normalize\.centre: unknown key"):
        _loader(split, normalize={"centre": "first"})
    # Bad values are refused when the loader is built, before any batch.
    with pytest.raises(ConfigError, match=r"normalize\.smooth"):
        _loader(split, normalize={"smooth": -2})
    with pytest.raises(ConfigError, match=r"normalize\.align"):
        _loader(split, normalize={"align": "up"})


def test_reads_a_real_prepared_store(tmp_path: Path) -> None:
    store = pytest.importorskip("protoskel.data.store")
    from protoskel.data.sequence import SkeletonSequence

    rng = np.random.default_rng(1)
    clips = []
    for i in range(6):
        kp = rng.normal(size=(2, 8, 20, 3)).astype(np.float32) + 2
        if i % 2:
            kp[1] = 0  # second person absent
        clips.append(SkeletonSequence(kp, "kinect-v1-20", label=i % 3, id=f"c{i}"))
    path = store.write_store(
        tmp_path / "store",
        {"train": clips},
        dataset="toy",
        protocol="all",
        layout="kinect-v1-20",
        classes=["a", "b", "c"],
    )
    split = store.open_store(path).split("train")
    # num_frames == clip length: uniform sampling reads every frame exactly once.
    loader = ClipLoader(
        split, LAYOUT, batch_size=4, num_frames=8, train=False, seed=0, normalize=RAW
    )
    xs, ys = zip(*loader, strict=True)
    x, y = torch.cat(xs), torch.cat(ys)
    want = torch.stack([torch.from_numpy(c.keypoints).permute(3, 1, 2, 0) for c in clips])
    assert torch.allclose(x, want) and y.tolist() == [c.label for c in clips]
    train = ClipLoader(
        split, LAYOUT, batch_size=4, num_frames=16, train=True, seed=0, augment=DEFAULT_AUGMENT
    )
    order = train.epoch_indices()
    for b, (xb, yb) in enumerate(train):
        idx = order[b * 4 : (b + 1) * 4]
        assert xb.shape == (4, 3, 16, 20, 2) and torch.isfinite(xb).all()
        assert yb.tolist() == [clips[i].label for i in idx]
        absent = (xb[..., 1] == 0).flatten(1).all(dim=1)
        assert absent.tolist() == [bool(i % 2) for i in idx]  # missing person stays zero
