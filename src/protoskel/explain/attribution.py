"""Per-joint and per-frame importance of an input for a class, for any model.

Two methods, both returning float arrays ``(T, V)`` over the model's input frames (T) and the
layout's joints (V), scaled to ``[0, 1]``:

- :func:`prototype_attribution` (prototype heads): the class logit *is* the sum of prototype
  contributions (last-layer weight x similarity) plus a bias; the map is gradient x input of
  the contributions that support the class, i.e. the input cells those matches depended on
  (:func:`prototype_gradient_maps` gives one map per prototype). The ``window`` variant
  instead credits each contribution to its part's joints over the frames where it matched.
- :func:`gradient_saliency` (any differentiable model): ``|grad x input|`` of the class logit,
  summed over coordinates, persons and views; a local sensitivity baseline.

:func:`prototype_evidence` gives the per-prototype facts (similarity, contribution, where it
matched, its provenance) that reports list.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from protoskel.errors import ConfigError
from protoskel.layouts import Layout

__all__ = [
    "block_effects",
    "frame_importance",
    "gradient_saliency",
    "joint_importance",
    "normalize01",
    "own_part_share",
    "prototype_attribution",
    "prototype_evidence",
    "prototype_masking",
    "removal_fill",
    "supporting_prototypes",
]


def normalize01(a: np.ndarray | Tensor) -> np.ndarray:
    """Non-negative part of ``a`` divided by its maximum (all zeros stay zeros), float64."""
    arr = np.nan_to_num(np.asarray(a, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    arr = np.clip(arr, 0.0, None)
    m = float(arr.max()) if arr.size else 0.0
    return arr / m if m > 0 else np.zeros_like(arr)


def frame_importance(imp: np.ndarray) -> np.ndarray:
    """Per-frame importance (T,) of a (T, V) map: the sum over joints, scaled to [0, 1]."""
    return normalize01(np.asarray(imp).sum(axis=1))


def joint_importance(imp: np.ndarray) -> np.ndarray:
    """Per-joint importance (V,) of a (T, V) map: the sum over frames, scaled to [0, 1]."""
    return normalize01(np.asarray(imp).sum(axis=0))


def _check_input(x: Tensor, target: int, num_classes: int | None = None) -> None:
    if not isinstance(x, Tensor) or x.dim() != 5:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ConfigError(f"attribution expects an input tensor (N, C, T, V, M), got {shape}")
    if num_classes is not None and not 0 <= int(target) < num_classes:
        raise ConfigError(f"target class {target} is out of range for {num_classes} classes")


def gradient_saliency(model: nn.Module, x: Tensor, target: int) -> np.ndarray:
    """``|d logit_target / dx * x|`` summed over coords, persons and the N views: ``(T, V)``.

    Gradients are taken with respect to the input only (parameters get no ``.grad``); the
    model stays in eval mode.
    """
    _check_input(x, target)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            xi = x.detach().clone().requires_grad_(True)
            logits = model(xi)
            if not 0 <= int(target) < logits.shape[1]:
                raise ConfigError(
                    f"target class {target} is out of range for {logits.shape[1]} classes"
                )
            (grad,) = torch.autograd.grad(logits[:, int(target)].sum(), xi)
        sal = (grad * xi.detach()).abs().sum(dim=(0, 1, 4))  # (T, V)
    finally:
        model.train(was_training)
    return normalize01(sal.numpy())


@torch.no_grad()
def prototype_evidence(
    model: nn.Module, x: Tensor, positions: Tensor | None = None
) -> dict[str, Any]:
    """Per-prototype evidence of ONE input ``x`` (1, C, T, V, M), as the model's forward sees it.

    Returns numpy arrays: ``logits`` (K,), ``similarity`` (Q,), ``contributions`` (K, Q)
    (``contributions.sum(-1) + bias == logits``), ``bias`` (K,), ``proto_class``/``proto_part``
    (Q,), and where each prototype matched best: ``person``, ``frame_start``, ``frame_end``
    (input frames, end exclusive) and, with ``positions`` (T,) of the sampled frames,
    ``clip_frame_start``/``clip_frame_end`` in the original clip; plus ``part_names`` and
    ``provenance``. Under frame averaging the evidence is averaged over canonical copies (so it
    still sums to the model's logits) and the location is that of the best-matching copy.
    """
    from protoskel.models.prototypes import feature_rows, find_prototype_head

    _check_input(x, 0)
    if x.shape[0] != 1:
        raise ConfigError(f"prototype_evidence explains one input at a time, got N={x.shape[0]}")
    head = find_prototype_head(model)
    was_training = model.training
    model.eval()
    try:
        feats, _, _ = feature_rows(model, x)
        # No person mask: the model's own forward scores every person slot.
        ex = head.explain(feats, None, input_frames=x.shape[2])
    finally:
        model.train(was_training)
    sim = ex["similarity"]  # (R, Q)
    best_row = sim.argmax(0)  # (Q,)
    q = torch.arange(sim.shape[1])
    out: dict[str, Any] = {
        "logits": ex["logits"].mean(0).double().numpy(),
        "similarity": sim.mean(0).double().numpy(),
        "contributions": ex["contributions"].mean(0).double().numpy(),
        "bias": ex["bias"].double().numpy(),
        "weight": ex["weight"].double().numpy(),
        "proto_class": ex["proto_class"].numpy(),
        "proto_part": ex["proto_part"].numpy(),
        "person": ex["person"][best_row, q].numpy(),
        "frame_start": ex["frame_start"][best_row, q].numpy(),
        "frame_end": ex["frame_end"][best_row, q].numpy(),
        "part_names": ex["part_names"],
        "provenance": ex["provenance"],
        "num_frames": int(x.shape[2]),
    }
    if positions is not None:
        pos = torch.as_tensor(positions, dtype=torch.float64).reshape(-1).numpy()
        if pos.size != x.shape[2]:
            raise ConfigError(f"positions have {pos.size} entries for a {x.shape[2]}-frame input")
        out["clip_frame_start"] = np.floor(pos[out["frame_start"]]).astype(np.int64)
        out["clip_frame_end"] = np.ceil(pos[out["frame_end"] - 1]).astype(np.int64) + 1
    return out


def removal_fill(x: Tensor, mode: str = "still") -> Tensor:
    """What removed cells of ``x`` (N, C, T, V, M) become: ``zero`` -> 0 (the normalised
    clip's centre); ``still`` -> the joint's mean position over the frames where it is present
    (its motion is removed, its place kept). Absent (all-zero) cells stay zero."""
    if mode == "zero":
        return torch.zeros_like(x)
    if mode == "still":
        present = (x != 0).any(dim=1, keepdim=True).to(x.dtype)  # (N, 1, T, V, M)
        mean = (x * present).sum(2, keepdim=True) / present.sum(2, keepdim=True).clamp_min(1)
        return mean.expand_as(x) * present
    raise ConfigError(f"removal mode must be zero or still, got {mode!r}")


def prototype_attribution(
    model: nn.Module,
    x: Tensor,
    target: int,
    layout: Layout,
    *,
    top: int | None = None,
    evidence: dict[str, Any] | None = None,
    method: str = "masking",
    fill: str = "still",
) -> np.ndarray:
    """Importance ``(T, V)`` of input ``x`` (1, C, T, V, M) for class ``target`` from prototypes.

    The supporting prototypes are those with a positive contribution to the target logit (only
    the ``top`` largest when given). ``method="masking"`` (default): how much their summed
    evidence depends on each joint over 4-frame blocks, from random removals (``fill``) of
    many blocks at once, i.e. what the matches actually used (:func:`prototype_masking`).
    ``method="window"``: each
    contribution credited to its part's joints over the frames where it matched; that is where
    the prototypes matched, not what they used: deep part features see the whole body, and
    this map deletes worse than random (BENCHMARKS.md).
    ``evidence`` reuses a :func:`prototype_evidence` result for the same input.
    """
    if method not in ("masking", "window"):
        raise ConfigError(f"prototype attribution method must be masking or window, got {method!r}")
    ev = prototype_evidence(model, x) if evidence is None else evidence
    contrib = ev["contributions"]
    if not 0 <= int(target) < contrib.shape[0]:
        raise ConfigError(f"target class {target} is out of range for {contrib.shape[0]} classes")
    order = supporting_prototypes(contrib[int(target)], top)
    c = contrib[int(target)]
    if method == "masking":
        return normalize01(prototype_masking(model, x, target, fill=fill)[order].sum(0))
    parts = list(layout.parts.values())
    if len(parts) != len(ev["part_names"]):
        raise ConfigError(
            f"layout {layout.name!r} has {len(parts)} parts but the prototype head has "
            f"{len(ev['part_names'])}"
        )
    imp = np.zeros((ev["num_frames"], layout.num_joints), dtype=np.float64)
    for qi in order:
        joints = list(parts[int(ev["proto_part"][qi])])
        fs, fe = int(ev["frame_start"][qi]), int(ev["frame_end"][qi])
        imp[fs:fe, joints] += c[qi]
    return normalize01(imp)


def own_part_share(imp: np.ndarray, joints: Sequence[int]) -> float:
    """Share of the positive mass of a (T, V) map that lies on ``joints`` (0 for an empty map)."""
    per_joint = np.clip(np.asarray(imp, dtype=np.float64), 0.0, None).sum(0)
    total = float(per_joint.sum())
    return float(per_joint[list(joints)].sum()) / total if total > 0 else 0.0


def supporting_prototypes(contributions: np.ndarray, top: int | None = None) -> list[int]:
    """Prototypes with a positive contribution (Q,) to a logit, largest first (``top`` only)."""
    c = np.asarray(contributions)
    order = [int(i) for i in np.argsort(-c, kind="stable") if c[i] > 0]
    return order if top is None else order[: max(0, int(top))]


@torch.no_grad()
def prototype_masking(
    model: nn.Module,
    x: Tensor,
    target: int,
    *,
    masks: int = 256,
    chunk: int = 4,
    fill: str = "still",
    seed: int = 0,
    batch: int = 64,
) -> np.ndarray:
    """Per-prototype importance ``(Q, T, V)`` of the cells of ONE input ``x`` (1, C, T, V, M).

    Blocks of one joint over ``chunk`` frames are removed (``fill``, see :func:`removal_fill`)
    at random: each of ``masks`` copies keeps every block with its own probability p ~ U(0, 1),
    so small and large removals are both sampled (RISE, Petsiuk et al. 2018, with a random
    keep rate). A block's importance for prototype q is its estimated additive effect on the
    evidence of q for ``target`` (weight x similarity, averaged over frame-averaging copies),
    see :func:`block_effects`; interactions with other removed blocks are part of what is
    sampled, which single-block occlusion misses. Seeded: the same call gives the same map.
    """
    from protoskel.models.prototypes import feature_rows, find_prototype_head

    _check_input(x, 0)
    if x.shape[0] != 1:
        raise ConfigError(f"prototype_masking explains one input at a time, got N={x.shape[0]}")
    if chunk < 1 or masks < 2:
        raise ConfigError(f"masking needs chunk >= 1 and masks >= 2, got {chunk} and {masks}")
    head = find_prototype_head(model)
    if not 0 <= int(target) < head.num_classes:
        raise ConfigError(f"target class {target} is out of range for {head.num_classes} classes")
    w = head.weight()[int(target)]
    _, _, t, v, _ = x.shape
    g = torch.Generator().manual_seed(int(seed))
    rate = torch.rand(masks, 1, 1, generator=g)
    keep = torch.rand(masks, -(-t // chunk), v, generator=g) < rate  # (K, blocks, V)
    cells = keep.repeat_interleave(chunk, dim=1)[:, :t]  # (K, T, V)
    filled = removal_fill(x, fill)
    was_training = model.training
    model.eval()
    try:
        ev = []
        for kb in cells.split(batch):
            feats, _, _ = feature_rows(model, torch.where(kb[:, None, :, :, None], x, filled))
            sim = head.similarity_from_distance(head._best(feats, None)["distance"])  # (R, Q)
            ev.append((sim * w).view(len(kb), -1, sim.shape[1]).mean(1))
    finally:
        model.train(was_training)
    effects = block_effects(torch.cat(ev), keep.flatten(1), rate.flatten())  # (Q, B)
    imp = effects.view(-1, *keep.shape[1:])  # (Q, blocks, V)
    return imp.repeat_interleave(chunk, dim=1)[:, :t].numpy()


def block_effects(evidence: Tensor, keep: Tensor, rate: Tensor) -> Tensor:
    """Additive effect (Q, B) of keeping each of B blocks on Q scores, from K random masks.

    ``evidence`` (K, Q) scores of masked copies, ``keep`` (K, B) bool, ``rate`` (K,) each
    copy's keep probability. Estimator: cov(score, keep_b - rate) / E[(keep_b - rate)^2].
    Centring on the copy's own rate makes other blocks cancel in expectation (they are
    independent of ``keep_b`` given the rate): for a score sum_b a_b keep_b it estimates a_b,
    where a plain kept-minus-removed difference estimates 2/3 a_b + 1/3 sum_b a_b.
    """
    e = evidence.double()
    centred = keep.double() - rate.double().view(-1, 1)
    return ((e - e.mean(0)).T @ centred) / (centred * centred).sum(0).clamp_min(1e-12)
