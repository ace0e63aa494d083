"""Few-shot enrollment and forgetting of classes in a prototype model, backbone untouched.

``enroll`` adds a class from a few example clips: each example contributes its own most central
segments per body part as prototypes (exact copies of its segment features), the new last-layer
row connects the class to its prototypes only, and a bias calibrated on the examples lets the
class compete with the trained ones. ``forget`` removes a class; ``forget_example`` removes one
enrolled example, leaving exactly the class that enrolling the remaining examples would give
(prototypes of one example never depend on another). See ``docs/prototypes.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from protoskel.errors import ConfigError
from protoskel.models.prototypes import (
    PrototypeHead,
    feature_rows,
    find_prototype_head,
    map_window,
)

__all__ = ["calibrated_bias", "enroll", "forget", "forget_example"]


def _central(dist: Tensor, k: int) -> list[int]:
    """Greedy k-medoids (PAM BUILD): the medoid first, then the point that most cuts the cost."""
    n = dist.shape[0]
    cur = torch.full((n,), math.inf, dtype=dist.dtype)
    chosen: list[int] = []
    for _ in range(min(k, n)):
        cost = torch.minimum(cur[:, None], dist).sum(0)
        cost[chosen] = math.inf
        c = int(cost.argmin())
        chosen.append(c)
        cur = torch.minimum(cur, dist[:, c])
    return chosen


def calibrated_bias(meta: dict[str, Any]) -> float:
    """Bias of an enrolled class from its record.

    ``scores[e][i]`` is the class score example i gets from example e's prototypes alone; an
    example's held-out score h_i is the mean over the other examples (with a single example,
    its own prototypes matched only against its non-overlapping segments). Example i is
    recognised when bias > t_i - h_i (t_i: its top logit among the other classes).
    Without negatives: mean(t_i - h_i) + margin. With ``negatives`` (clips of the other classes,
    e.g. their training clips: ``scores[e][j]`` and ``top_other[j]``), a negative j keeps its
    class when bias < t_j - s_j (s_j: its mean score over the examples); the bias is the middle
    of the interval that maximises the accuracy expected when all K + 1 classes are equally
    frequent: (recognised examples + K x kept negatives, as fractions) / (K + 1).
    """
    s, t = meta["scores"], meta["top_other"]
    k = len(t)
    held = [
        (sum(s[e][i] for e in range(k) if e != i) / (k - 1)) if k > 1 else s[i][i] for i in range(k)
    ]
    need = [ti - hi for ti, hi in zip(t, held, strict=True)]
    neg = meta.get("negatives")
    if not neg or not neg["top_other"]:
        return float(sum(need) / k + meta["margin"])
    ns = neg["scores"]
    allow = [tj - sum(ns[e][j] for e in range(k)) / k for j, tj in enumerate(neg["top_other"])]
    return _best_threshold(need, allow, float(neg["known_classes"]))


def _best_threshold(need: Sequence[float], allow: Sequence[float], ratio: float) -> float:
    """b maximising #(need < b) / len(need) + ratio * #(allow > b) / len(allow), mid-interval."""
    pos = torch.tensor(need, dtype=torch.float64)
    neg = torch.tensor(allow, dtype=torch.float64)
    edges = torch.unique(torch.cat([pos, neg]))  # sorted
    # Candidates: the middle of every gap between edges, and one step beyond either end.
    step = float(edges[-1] - edges[0]) / max(len(edges) - 1, 1) if len(edges) > 1 else 1.0
    cand = torch.cat([edges[:1] - step, (edges[1:] + edges[:-1]) / 2, edges[-1:] + step])
    score = (pos[None, :] < cand[:, None]).double().mean(1) + ratio * (
        neg[None, :] > cand[:, None]
    ).double().mean(1)
    best = torch.nonzero(score >= score.max() - 1e-12).flatten()
    return float(cand[best[len(best) // 2]])


def _class_index(classes: Sequence[str], head: PrototypeHead, name: str) -> int:
    if len(classes) != head.num_classes:
        raise ConfigError(
            f"the class list has {len(classes)} names but the model has {head.num_classes} "
            "classes; pass the checkpoint's 'classes' list"
        )
    if name not in classes:
        raise ConfigError(f"unknown class {name!r}; classes are: {', '.join(classes)}")
    return list(classes).index(name)


def _mean_own_weight(head: PrototypeHead) -> float:
    """Mean weight from a trained class's prototypes to that class (1.0 if there is none)."""
    w = head.weight().detach()
    vals = [
        w[c, head.proto_class == c].mean()
        for c in range(head.num_classes)
        if not head.class_meta[c].get("enrolled") and bool((head.proto_class == c).any())
    ]
    return float(torch.stack(vals).mean()) if vals else 1.0


def enroll(
    model: nn.Module,
    class_name: str,
    examples: Sequence[Tensor],
    ids: Sequence[str],
    *,
    classes: Sequence[str],
    prototypes_per_part: int | None = None,
    margin: float = 1.0,
    positions: Sequence[Tensor | None] | None = None,
    negatives: Tensor | None = None,
    batch_size: int = 64,
) -> tuple[nn.Module, list[str]]:
    """Add ``class_name`` from example clips (C, T, V, M), already normalised + stream-derived.

    Per example and body part, the ``prototypes_per_part`` (default: the head's per-class count)
    most central segments of its present persons become prototypes, each weighted
    ``w / k`` (w: the trained classes' mean own-class weight, k examples) so the class score is
    the mean over examples of a trained-class-sized score. The bias is set by
    :func:`calibrated_bias`: from the examples alone, or, with ``negatives`` (N, C, T, V, M)
    clips of the classes the model knows (e.g. its training clips), from both (only their
    scores are kept, in the class record). ``positions`` optionally gives each example's
    original frame positions (T,) for provenance. Returns the model (changed in place) and the
    new class list.
    """
    head = find_prototype_head(model)
    if len(classes) != head.num_classes:
        raise ConfigError(
            f"the class list has {len(classes)} names but the model has {head.num_classes} "
            "classes; pass the checkpoint's 'classes' list"
        )
    if class_name in classes:
        raise ConfigError(f"class {class_name!r} already exists; forget it first or rename it")
    if not examples or len(examples) != len(ids):
        raise ConfigError(
            f"enroll needs >= 1 example and one id each, got {len(examples)} / {len(ids)}"
        )
    if len(set(ids)) != len(ids):
        raise ConfigError("enroll: example ids must be unique (forget_example uses them)")
    if positions is not None and len(positions) != len(examples):
        raise ConfigError("enroll: positions must have one entry (or None) per example")
    per_part = head.prototypes_per_class if prototypes_per_part is None else prototypes_per_part
    if per_part < 1:
        raise ConfigError("enroll: prototypes_per_part must be >= 1")
    if negatives is not None and (
        not isinstance(negatives, Tensor) or negatives.dim() != 5 or len(negatives) == 0
    ):
        raise ConfigError("enroll: negatives must be a non-empty tensor (N, C, T, V, M)")
    dev = head.prototypes.device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            segs, tops, protos, parts, prov, src = [], [], [], [], [], []
            for e, ex in enumerate(examples):
                if not isinstance(ex, Tensor) or ex.dim() != 4:
                    raise ConfigError(
                        f"enroll: examples[{e}] ({ids[e]!r}) must be a tensor (C, T, V, M), got "
                        f"{tuple(ex.shape) if isinstance(ex, Tensor) else type(ex).__name__}"
                    )
                x = ex.to(dev, torch.float32)[None]
                tops.append(float(model(x).max()))
                feats, _, present = feature_rows(model, x)
                z = head.segments(feats)  # (F, M, P, W, D)
                win = head.windows(feats.shape[3]).to(dev)
                segs.append((z, win))
                pres = present | ~present.any(1, keepdim=True)
                for p in range(head.num_parts):
                    slots = [
                        (f, m, w)
                        for f in range(z.shape[0])
                        for m in range(z.shape[1])
                        if pres[f, m]
                        for w in range(z.shape[3])
                    ]
                    cand = torch.stack([z[f, m, p, w] for f, m, w in slots])
                    for c in _central(head.pairwise(cand, cand).double(), per_part):
                        f, m, w = slots[c]
                        fs, fe = int(win[w, 0]), int(win[w, 1])
                        pos = None if positions is None else positions[e]
                        protos.append(z[f, m, p, w].clone())
                        parts.append(p)
                        src.append((e, f, m, fs, fe))
                        prov.append(
                            {
                                "class": head.num_classes,
                                "class_name": class_name,
                                "part": head.part_names[p],
                                "part_index": p,
                                "clip_id": str(ids[e]),
                                "person": m,
                                "window": w,
                                "feature_start": fs,
                                "feature_end": fe,
                                **map_window(fs, fe, ex.shape[1], feats.shape[3], pos),
                                "frame_copy": f,
                                "distance": 0.0,
                                "enrolled": True,
                            }
                        )
            pvec = torch.stack(protos)
            ptensor = torch.tensor(parts, dtype=torch.int64, device=dev)
            owner = torch.tensor([s[0] for s in src], device=dev)
            wbar = _mean_own_weight(head)
            k = len(examples)
            scores = [[0.0] * k for _ in range(k)]
            for i, (z, win) in enumerate(segs):
                d = head.distances(z, pvec, ptensor)  # (F, M, Q_new, W)
                masked = d.clone()
                for q, (e, f, m, fs, fe) in enumerate(src):
                    if e == i:
                        # A prototype must not score its own example by matching itself: drop
                        # its person's windows overlapping the source window, in that frame copy.
                        masked[f, m, q, (win[:, 0] < fe) & (win[:, 1] > fs)] = math.inf
                held = masked.permute(0, 2, 1, 3).flatten(2).amin(-1)  # (F, Q_new)
                full = d.permute(0, 2, 1, 3).flatten(2).amin(-1)
                held = torch.where(torch.isfinite(held), held, full)  # nothing left: keep all
                sim = head.similarity_from_distance(held).mean(0)  # (Q_new,)
                for e in range(k):
                    scores[e][i] = wbar * float(sim[owner == e].sum())
            meta = {
                "enrolled": True,
                "name": class_name,
                "clip_ids": [str(i) for i in ids],
                "weight": wbar,
                "margin": float(margin),
                "scores": scores,
                "top_other": tops,
                "prototypes_per_part": int(per_part),
            }
            if negatives is not None:
                meta["negatives"] = _negative_scores(
                    model, head, negatives, pvec, ptensor, owner, k, wbar, batch_size
                )
            bias = calibrated_bias(meta)
            meta["bias"] = bias
            head._append_class(pvec, ptensor, wbar / k, bias, prov, meta)
    finally:
        model.train(was_training)
    return model, [*classes, class_name]


def _negative_scores(
    model: nn.Module,
    head: PrototypeHead,
    negatives: Tensor,
    pvec: Tensor,
    parts: Tensor,
    owner: Tensor,
    k: int,
    wbar: float,
    batch_size: int,
) -> dict[str, Any]:
    """Per negative clip: its top logit now, and the score each example's prototypes give it."""
    dev = pvec.device
    tops: list[float] = []
    per_example: list[list[float]] = [[] for _ in range(k)]
    for xb in negatives.to(dev, torch.float32).split(max(1, batch_size)):
        tops += model(xb).max(1).values.tolist()
        feats, _, _ = feature_rows(model, xb)
        d = head.distances(head.segments(feats), pvec, parts)  # (R, M, Q_new, W)
        # As the forward pass: best over persons and windows, evidence averaged over copies.
        sim = head.similarity_from_distance(d.permute(0, 2, 1, 3).flatten(2).amin(-1))
        sim = sim.view(len(xb), -1, sim.shape[-1]).mean(1)  # (B, Q_new)
        for e in range(k):
            per_example[e] += (wbar * sim[:, owner == e].sum(1)).tolist()
    return {"top_other": tops, "scores": per_example, "known_classes": head.num_classes}


def forget(
    model: nn.Module, class_name: str, *, classes: Sequence[str]
) -> tuple[nn.Module, list[str]]:
    """Remove a class: its prototypes, its last-layer row, and their provenance."""
    head = find_prototype_head(model)
    k = _class_index(classes, head, class_name)
    if head.num_classes == 1:
        raise ConfigError(f"cannot forget {class_name!r}: it is the model's only class")
    head._remove_class(k)
    return model, [c for i, c in enumerate(classes) if i != k]


def forget_example(
    model: nn.Module, class_name: str, clip_id: str, *, classes: Sequence[str]
) -> tuple[nn.Module, list[str]]:
    """Remove one enrolled example's prototypes and recalibrate; the last one forgets the class."""
    head = find_prototype_head(model)
    k = _class_index(classes, head, class_name)
    meta = head.class_meta[k]
    if not meta.get("enrolled"):
        raise ConfigError(
            f"class {class_name!r} was trained, not enrolled: its examples also shaped the "
            "backbone; use forget to remove the whole class"
        )
    if clip_id not in meta["clip_ids"]:
        raise ConfigError(
            f"class {class_name!r} has no enrolled example {clip_id!r}; examples are: "
            f"{', '.join(meta['clip_ids'])}"
        )
    if len(meta["clip_ids"]) == 1:
        return forget(model, class_name, classes=classes)
    i = meta["clip_ids"].index(clip_id)
    mine = head.proto_class == k
    from_clip = torch.tensor(
        [bool(p and p.get("enrolled") and p.get("clip_id") == clip_id) for p in head.provenance],
        dtype=torch.bool,
        device=mine.device,
    )
    head._keep_prototypes(~(mine & from_clip))
    keep = [j for j in range(len(meta["clip_ids"])) if j != i]
    meta["clip_ids"] = [meta["clip_ids"][j] for j in keep]
    meta["scores"] = [[meta["scores"][a][b] for b in keep] for a in keep]
    meta["top_other"] = [meta["top_other"][j] for j in keep]
    if meta.get("negatives"):
        neg = meta["negatives"]
        neg["scores"] = [neg["scores"][j] for j in keep]
    meta["bias"] = calibrated_bias(meta)
    with torch.no_grad():
        head.last_weight.data[k, head.proto_class == k] = meta["weight"] / len(keep)
        head.last_bias.data[k] = meta["bias"]
    head.class_meta[k] = meta
    return model, list(classes)
