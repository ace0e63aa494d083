"""Cross-view consistency: the same performance seen by another camera should be read alike.

Multi-view datasets record one performance with several cameras at once and store each
view as its own clip (NW-UCLA ``a01_s01_e00_v01`` / ``_v02``, NTU ``S001C001P001R001A001`` /
``C002``). Rotation augmentation imitates a camera moving round the body, but not what really
changes between cameras: which joints the sensor loses to self-occlusion and how it guesses
them. With ``train.view_weight > 0`` each training step also forwards, for every clip, a clip
of the same performance from another camera (ids equal once ``train.view_pattern`` is removed)
and adds the symmetric KL divergence between the two predictions to the loss. A clip whose
performance has no other view is paired with itself under fresh augmentation.

Partners are drawn from a generator seeded by (seed, epoch, step, rank), so a resumed run
draws exactly as an uninterrupted one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from protoskel.errors import ConfigError

__all__ = ["pick_partners", "symmetric_kl", "view_partners"]


def view_partners(ids: Sequence[str], labels: Sequence[int], pattern: str) -> list[np.ndarray]:
    """For each clip, the indices of the other views of its performance (itself if none).

    The performance key of a clip is its id with every match of the regular expression
    ``pattern`` removed; clips sharing a key must share a label.
    """
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise ConfigError(
            f"train.view_pattern: not a regular expression ({e}): {pattern!r}"
        ) from None
    keys = [rx.sub("", clip_id) for clip_id in ids]
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    out: list[np.ndarray] = []
    for i, clip_id in enumerate(ids):
        others = [j for j in groups[keys[i]] if j != i]
        bad = [j for j in others if int(labels[j]) != int(labels[i])]
        if bad:
            raise ConfigError(
                f"train.view_pattern '{pattern}' pairs clips of different classes: "
                f"{clip_id} and {ids[bad[0]]}; the pattern must remove only the camera part of "
                "the id (e.g. '_v\\d+' for NW-UCLA, 'C\\d{3}' for NTU)"
            )
        out.append(np.asarray(others or [i], dtype=np.int64))
    return out


def pick_partners(
    partners: Sequence[np.ndarray], rows: np.ndarray, generator: torch.Generator
) -> np.ndarray:
    """One partner per clip of ``rows``, drawn uniformly among its other views."""
    counts = torch.as_tensor([len(partners[int(r)]) for r in rows], dtype=torch.float64)
    pick = torch.floor(torch.rand(len(rows), generator=generator, dtype=torch.float64) * counts)
    return np.asarray(
        [partners[int(r)][int(k)] for r, k in zip(rows, pick.tolist(), strict=True)],
        dtype=np.int64,
    )


def symmetric_kl(a: Tensor, b: Tensor) -> Tensor:
    """Mean over clips of ``(KL(p_a || p_b) + KL(p_b || p_a)) / 2`` from two logit tensors."""
    la, lb = F.log_softmax(a, dim=1), F.log_softmax(b, dim=1)
    ab = F.kl_div(lb, la, reduction="batchmean", log_target=True)
    ba = F.kl_div(la, lb, reduction="batchmean", log_target=True)
    return (ab + ba) / 2
