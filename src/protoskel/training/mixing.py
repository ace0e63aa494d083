"""Batch mixing regularisers: input mixup and body-part CutMix, driven by the layout's parts.

``blend`` is mixup (Zhang et al. 2018): each clip becomes ``lam * x + (1 - lam) * x[perm]``
and its loss mixes the two labels with the same weights. ``parts`` is CutMix on the skeleton
graph: the joints of a random set of the layout's body parts are taken from the partner clip
(all channels, all frames), and the label weight is the fraction of joints kept. On bone and
motion streams a part's vectors are relative, so a swapped arm is still a plausible arm.

The random draws come from a generator seeded by (seed, epoch, step) rather than a running
state, so a resumed run mixes exactly as an uninterrupted one.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from protoskel.layouts import Layout

__all__ = ["MIX_MODES", "mix_batch", "mix_rng"]

MIX_MODES = ("blend", "parts")


def mix_rng(seed: int, epoch: int, step: int) -> np.random.Generator:
    """The generator for one training step's mixing draws."""
    # Masked to 32 bits because SeedSequence takes non-negative integers only.
    return np.random.default_rng([seed & 0xFFFFFFFF, epoch, step, 0x6D1C])


def mix_batch(
    x: Tensor, layout: Layout, mode: str, alpha: float, rng: np.random.Generator
) -> tuple[Tensor, Tensor, float]:
    """Mix each clip of ``x`` (N, C, T, V, M) with a partner clip of the same batch.

    Returns the mixed batch, the partner index of each clip and ``lam``, the weight of each
    clip's own label (the partner's label gets ``1 - lam``).
    """
    if mode not in MIX_MODES:
        raise ValueError(f"mixing mode {mode!r}: expected one of {', '.join(MIX_MODES)}")
    n = x.shape[0]
    lam = float(rng.beta(alpha, alpha))
    perm = torch.as_tensor(rng.permutation(n), dtype=torch.long)
    if mode == "blend":
        return lam * x + (1.0 - lam) * x[perm], perm, lam
    num_parts = len(layout.parts)
    chosen = rng.choice(num_parts, size=round((1.0 - lam) * num_parts), replace=False)
    joints = np.flatnonzero(np.isin(layout.part_of_joint(), chosen))
    if not len(joints):
        return x, perm, 1.0
    idx = torch.as_tensor(joints, dtype=torch.long)
    out = x.clone()
    # Gather the swapped joints first, so only they are copied for the partner clips.
    out[:, :, :, idx] = x.index_select(3, idx)[perm]
    return out, perm, 1.0 - len(joints) / layout.num_joints
