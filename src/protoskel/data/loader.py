"""ClipLoader: fixed-length, normalised, augmented, stream-derived batches from a prepared split.

The loader reads the packed store layout directly (``keypoints`` (F_total, M, V, C), ``offsets``
(N+1,), ``labels`` (N,), ``lengths`` (N,)): one gather per batch, no per-clip Python work. Its
order and augmentation depend only on ``(seed, epoch, rank, batch)``, so resuming at an epoch
replays exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from protoskel.data.transforms import (
    DEFAULT_NORMALIZE,
    AugmentConfig,
    augment,
    box_normalize,
    check_normalize,
    eval_positions,
    gather_frames,
    make_stream,
    normalize,
    occlude_parts,
    rotation_angles,
    rotation_matrices,
    stream_parts,
    train_positions,
)
from protoskel.errors import ConfigError, DatasetError
from protoskel.layouts import Layout

__all__ = ["PRELOAD_LIMIT_BYTES", "ClipLoader", "SplitLike", "seeded_generator"]

#: Splits up to this size are copied into RAM by default (NW-UCLA is ~10 MB).
PRELOAD_LIMIT_BYTES = 1 << 30


class SplitLike(Protocol):
    """What ClipLoader needs from a split (``protoskel.data.store.PreparedSplit`` has it)."""

    keypoints: Any
    offsets: Any
    labels: Any
    lengths: Any

    def __len__(self) -> int: ...


def seeded_generator(*parts: int) -> torch.Generator:
    """A torch.Generator seeded from a tuple of ints (e.g. seed, epoch, rank, batch)."""
    state = np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


# Tags that keep the independent random streams of one (seed, epoch) apart.
_ORDER, _BATCH = 0, 1


class ClipLoader:
    """Iterable of ``(x, y)`` batches: x float32 ``(N, C, T, V, M)``, y int64 ``(N,)``.

    ``train=True`` shuffles per epoch, crops randomly (``augment["crop"]``) and augments;
    ``train=False`` keeps split order and samples uniformly. With ``num_clips=K`` each clip
    yields K rows, grouped per clip (clip i owns rows ``i*K:(i+1)*K``; y stays per clip);
    ``rotations`` (evaluation only) is a list of ``[ax, ay, az]`` angles (radians, composed as
    the rotation augmentation) applied after centring: each row becomes one row per rotation.
    ``mirror=True`` (evaluation only) appends the left-right mirror of each row, so a clip owns
    ``copies = 2 K R`` rows (``R`` rotations, 1 without), the mirrored ones last.
    ``occlude`` (evaluation only) names a body part of the layout hidden in every clip for all
    its frames, as ``augment.occlude`` hides one (a robustness test for lost limbs).
    ``rank``/``world_size`` shard each epoch's order; the order is padded by wrapping so every
    rank gets the same number of batches (at evaluation this repeats a few clips; use
    :meth:`epoch_indices` to drop them). ``set_epoch`` selects the epoch (iterating does not
    advance it). ``normalize`` takes the keys of :func:`protoskel.data.transforms.normalize`
    (default: centre at the first frame). ``preload=None`` copies the split into RAM when it is
    at most ``PRELOAD_LIMIT_BYTES``. ``drop_last`` defaults to ``train``; a shard smaller than
    one batch still yields one (short) batch.
    """

    def __init__(
        self,
        split: SplitLike,
        layout: Layout,
        *,
        batch_size: int,
        num_frames: int,
        train: bool,
        stream: str = "joint",
        augment: Mapping[str, Any] | None = None,
        seed: int = 0,
        num_clips: int = 1,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool | None = None,
        normalize: Mapping[str, Any] | None = None,
        preload: bool | None = None,
        interpolate: bool = True,
        mirror: bool = False,
        rotations: Sequence[Sequence[float]] | None = None,
        occlude: str | None = None,
    ) -> None:
        if batch_size < 1 or num_frames < 1 or num_clips < 1:
            raise ConfigError(
                f"batch_size, num_frames and num_clips must be >= 1, got {batch_size}, "
                f"{num_frames}, {num_clips}"
            )
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"need 0 <= rank < world_size, got rank={rank}, world={world_size}")
        stream_parts(stream)  # raises on an unknown stream
        check_normalize(normalize or {})
        norm = {**DEFAULT_NORMALIZE, **(normalize or {})}
        self.layout = layout
        self.batch_size = int(batch_size)
        self.num_frames = int(num_frames)
        self.train = bool(train)
        self.stream = stream
        self.augment = AugmentConfig.from_dict(augment)
        self.normalize = norm
        self.seed = int(seed)
        self.num_clips = int(num_clips)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.drop_last = self.train if drop_last is None else bool(drop_last)
        self.interpolate = bool(interpolate)
        if mirror and self.train:
            raise ConfigError("mirror is a test-time option; for training use augment.flip")
        self.mirror = bool(mirror)
        if rotations and self.train:
            raise ConfigError("rotations are a test-time option; for training use augment.rotate")
        self._rotations = (
            rotation_matrices(rotation_angles(rotations, "rotations"), split.keypoints.shape[-1])
            if rotations
            else None
        )
        if occlude is not None and self.train:
            raise ConfigError("occlude is a test-time option; for training use augment.occlude")
        if occlude is not None and occlude not in layout.parts:
            raise ConfigError(
                f"occlude: layout {layout.name!r} has no part {occlude!r}; its parts: "
                f"{', '.join(layout.parts)}"
            )
        self._occlude = None if occlude is None else list(layout.parts).index(occlude)
        n_rot = 1 if self._rotations is None else self._rotations.shape[0]
        self.copies = self.num_clips * n_rot * (2 if self.mirror else 1)
        self.epoch = 0

        kp = split.keypoints
        offsets = np.asarray(split.offsets, dtype=np.int64)
        n = len(split)
        if kp.ndim != 4 or kp.shape[2] != layout.num_joints:
            raise DatasetError(
                f"split keypoints have shape {tuple(kp.shape)}; expected (frames, persons, "
                f"{layout.num_joints} joints of layout {layout.name!r}, coords)"
            )
        if offsets.shape != (n + 1,) or offsets[0] != 0 or offsets[-1] != kp.shape[0]:
            raise DatasetError(
                f"split offsets (shape {offsets.shape}) do not match {n} clips and "
                f"{kp.shape[0]} frames; re-run `protoskel datasets prepare`"
            )
        lengths = np.asarray(split.lengths, dtype=np.int64)
        if lengths.shape != (n,) or (lengths < 1).any() or (np.diff(offsets) != lengths).any():
            raise DatasetError(
                "split lengths are inconsistent with offsets or contain empty clips; "
                "re-run `protoskel datasets prepare`"
            )
        if n == 0:
            raise DatasetError("split has no clips")
        if preload is None:
            preload = kp.size * kp.dtype.itemsize <= PRELOAD_LIMIT_BYTES
        # A preloaded tensor gathers with index_select; a memmap gathers with np.take (page-ins).
        self._kp: np.ndarray | Tensor = (
            torch.from_numpy(np.array(kp, dtype=np.float32)) if preload else kp
        )
        self.preloaded = bool(preload)
        self._starts = torch.from_numpy(offsets[:-1].copy())
        self._lengths = torch.from_numpy(lengths.copy())
        self._labels = torch.from_numpy(np.asarray(split.labels, dtype=np.int64).copy())
        self._n = n

    # ------------------------------------------------------------------------ order & size
    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        per_rank = self._per_rank()
        if self.drop_last:
            return max(1, per_rank // self.batch_size)
        return -(-per_rank // self.batch_size)

    def _per_rank(self) -> int:
        return -(-self._n // self.world_size)

    @property
    def num_samples(self) -> int:
        """Clips in the split (without wrap padding)."""
        return self._n

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next iteration reproduces."""
        self.epoch = int(epoch)

    def epoch_indices(self, epoch: int | None = None) -> np.ndarray:
        """Clip indices this rank yields in ``epoch`` (default: current), in order.

        Wrap-padded entries repeat earlier clips; positions ``>= num_samples`` in the padded
        global order are the padding (see :meth:`padding_mask`).
        """
        order = self._padded_order(self.epoch if epoch is None else epoch)
        mine = order[self.rank :: self.world_size]
        return mine[: self._used(len(mine))]

    def padding_mask(self, epoch: int | None = None) -> np.ndarray:
        """Bool per entry of :meth:`epoch_indices`: True where it is wrap padding."""
        total = self._per_rank() * self.world_size
        is_pad = np.arange(total) >= self._n
        mine = is_pad[self.rank :: self.world_size]
        return mine[: self._used(len(mine))]

    def _used(self, count: int) -> int:
        if not self.drop_last:
            return count
        return min(count, len(self) * self.batch_size)

    def _padded_order(self, epoch: int) -> np.ndarray:
        if self.train:
            g = seeded_generator(self.seed, epoch, _ORDER)
            order = torch.randperm(self._n, generator=g).numpy()
        else:
            order = np.arange(self._n)
        total = self._per_rank() * self.world_size
        return np.resize(order, total)  # np.resize repeats from the start: wrap padding

    # ------------------------------------------------------------------------------ batches
    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield this rank's batches of the current epoch."""
        idx = self.epoch_indices()
        for b in range(len(self)):
            chunk = idx[b * self.batch_size : (b + 1) * self.batch_size]
            if len(chunk) == 0:
                return
            g = seeded_generator(self.seed, self.epoch, _BATCH, self.rank, b)
            yield self.batch(chunk, g)

    def batch(
        self, indices: np.ndarray | Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Build the batch of the given clip indices (generator needed when ``train``)."""
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.int64)
        k = self.num_clips
        lengths = self._lengths[idx]
        if self.train and generator is None:
            raise ConfigError("a training batch needs a torch.Generator")
        if generator is not None and self.train:
            pos = train_positions(
                lengths, self.num_frames, generator, self.augment.crop, k, self.augment.sample
            )
        else:
            pos = eval_positions(lengths, self.num_frames, k)
        starts = self._starts[idx].repeat_interleave(k)
        x, mask = gather_frames(
            self._kp, starts, lengths.repeat_interleave(k), pos, interpolate=self.interpolate
        )
        x = normalize(x, self.layout, mask, **{**self.normalize, "box": False})
        if generator is not None and self.train:
            x, mask = augment(x, self.layout, self.augment, generator, mask)
        if self._occlude is not None:
            n = x.shape[0]
            part = torch.full((n,), self._occlude, dtype=torch.int64)
            whole = torch.full((n,), x.shape[2], dtype=torch.int64)
            x = occlude_parts(x, self.layout, part, torch.zeros_like(whole), whole)
        if self._rotations is not None:
            x, mask = _with_rotations(x, mask, self._rotations)
            k *= self._rotations.shape[0]
        if self.mirror:
            x, mask = _with_mirror(x, mask, self.layout, k)
        if self.normalize["box"]:
            x = box_normalize(x, mask)
        x = make_stream(x, self.stream, self.layout, mask)
        return x, self._labels[idx]


def _with_rotations(x: Tensor, mask: Tensor, rot: Tensor) -> tuple[Tensor, Tensor]:
    """Each row followed by its rotated copies: ``(N*K, ...)`` -> ``(N*K*R, ...)``."""
    r = rot.shape[0]
    n = x.shape[0]
    out = torch.einsum("rij,njtvm->nritvm", rot.to(x.dtype), x)
    return out.reshape(n * r, *x.shape[1:]), mask.repeat_interleave(r, 0)


def _with_mirror(x: Tensor, mask: Tensor, layout: Layout, k: int) -> tuple[Tensor, Tensor]:
    """Rows of each clip followed by their left-right mirrors: ``(N*K, ...)`` -> ``(N*2K, ...)``."""
    perm = torch.as_tensor(layout.flip_permutation(), dtype=torch.int64)
    sign = torch.ones(x.shape[1], dtype=x.dtype)
    sign[0] = -1.0  # x is the horizontal image/camera axis in every reader
    flipped = x[:, :, :, perm, :] * sign[None, :, None, None, None]
    n = x.shape[0] // k
    both = torch.stack([x.view(n, k, *x.shape[1:]), flipped.view(n, k, *x.shape[1:])], 1)
    masks = torch.stack([mask.view(n, k, *mask.shape[1:])] * 2, 1)
    return both.reshape(n * 2 * k, *x.shape[1:]), masks.reshape(n * 2 * k, *mask.shape[1:])
