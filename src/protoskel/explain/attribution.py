"""Per-joint and per-frame importance of an input for a class, for any model.

Two methods, both returning float arrays ``(T, V)`` over the model's input frames (T) and the
layout's joints (V), scaled to ``[0, 1]``:

- :func:`prototype_attribution` (prototype heads): every prototype's contribution to the class
  logit (last-layer weight x similarity) is credited to the joints of its body part over the
  input frames of the window where it matched best. This is the model's own reasoning: the
  logit *is* the sum of these contributions plus a bias.
- :func:`gradient_saliency` (any differentiable model): ``|grad x input|`` of the class logit,
  summed over coordinates, persons and views; a local sensitivity baseline.

:func:`prototype_evidence` gives the per-prototype facts (similarity, contribution, where it
matched, its provenance) that reports list.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from protoskel.errors import ConfigError
from protoskel.layouts import Layout

__all__ = [
    "frame_importance",
    "gradient_saliency",
    "joint_importance",
    "normalize01",
    "prototype_attribution",
    "prototype_evidence",
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


def prototype_attribution(
    model: nn.Module,
    x: Tensor,
    target: int,
    layout: Layout,
    *,
    top: int | None = None,
    evidence: dict[str, Any] | None = None,
) -> np.ndarray:
    """Importance ``(T, V)`` of input ``x`` (1, C, T, V, M) for class ``target`` from prototypes.

    Each prototype with a positive contribution to the target logit (only the ``top`` largest
    when given) adds its contribution to the joints of its part over its matched input frames.
    ``evidence`` reuses a :func:`prototype_evidence` result for the same input.
    """
    ev = prototype_evidence(model, x) if evidence is None else evidence
    contrib = ev["contributions"]
    if not 0 <= int(target) < contrib.shape[0]:
        raise ConfigError(f"target class {target} is out of range for {contrib.shape[0]} classes")
    c = contrib[int(target)]
    order = [int(i) for i in np.argsort(-c, kind="stable") if c[i] > 0]
    if top is not None:
        order = order[: max(0, int(top))]
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
