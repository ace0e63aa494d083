"""Batch mixing (mixup and body-part CutMix): what is mixed, with which weights, reproducibly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from protoskel.layouts import get_layout
from protoskel.training.mixing import mix_batch, mix_rng


def _batch(n: int = 6, v: int = 20) -> torch.Tensor:
    return torch.randn(n, 3, 8, v, 1, generator=torch.Generator().manual_seed(0))


def test_blend_is_the_convex_combination_with_the_partner() -> None:
    x = _batch()
    out, perm, lam = mix_batch(x, get_layout("kinect-v1-20"), "blend", 0.4, mix_rng(1, 0, 0))
    assert 0.0 <= lam <= 1.0 and sorted(perm.tolist()) == list(range(6))
    torch.testing.assert_close(out, lam * x + (1 - lam) * x[perm])


def test_parts_swaps_whole_body_parts_and_weights_by_joints_kept() -> None:
    lay = get_layout("kinect-v1-20")
    x = _batch()
    seen_fractions = set()
    for step in range(40):
        out, perm, lam = mix_batch(x, lay, "parts", 1.0, mix_rng(3, 1, step))
        swapped = [v for v in range(20) if not torch.equal(out[..., v, :], x[..., v, :])]
        if torch.equal(perm, torch.arange(6)):
            continue  # a clip mixed with itself shows no change
        for v in range(20):
            src = x[perm] if v in swapped else x
            assert torch.equal(out[..., v, :], src[..., v, :])
        # The swapped joints are a union of whole parts, and lam is the share of joints kept.
        for members in lay.parts.values():
            inside = [m in swapped for m in members]
            assert all(inside) or not any(inside)
        assert lam == pytest.approx(1 - len(swapped) / 20)
        seen_fractions.add(len(swapped))
    assert len(seen_fractions) >= 3  # the number of parts swapped varies with Beta's draw


def test_draws_depend_only_on_seed_epoch_and_step() -> None:
    lay = get_layout("kinect-v1-20")
    x = _batch()
    a = mix_batch(x, lay, "parts", 0.8, mix_rng(7, 2, 5))
    b = mix_batch(x, lay, "parts", 0.8, mix_rng(7, 2, 5))
    c = mix_batch(x, lay, "parts", 0.8, mix_rng(7, 2, 6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2]
    assert not (torch.equal(a[0], c[0]) and a[2] == c[2])
    assert isinstance(mix_rng(-3, 0, 0), np.random.Generator)  # negative seeds are accepted


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="blend, parts"):
        mix_batch(_batch(), get_layout("kinect-v1-20"), "cutout", 1.0, mix_rng(0, 0, 0))
