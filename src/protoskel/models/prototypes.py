"""Part prototypes for skeletons (ProtoPNet, Chen et al. 2019, applied to body parts over time).

The head turns backbone features ``(N, M, C, T', V)`` into *segments*: the joints of each body
part of the layout (``layout.parts``) are averaged and the feature sequence is cut into sliding
temporal windows, giving ``(N, M, P parts, W windows, C)``; a small add-on network (linear, ReLU,
linear, sigmoid as in ProtoPNet) maps each segment to ``proto_dim``. Each class owns
``prototypes_per_class`` learnable prototypes *per part*; a prototype is only compared with the
windows of its own part, and its evidence is its best match over windows and persons. Class
logits are a last linear layer over the evidence (plus a bias), initialised to 1 for the class's
own prototypes and ``-0.5`` (or 0 when ``nonneg``) for the others.

Storage is flat so classes can be enrolled and forgotten after training (see
``protoskel.explain.enroll``): ``prototypes`` ``(Q, D)`` with buffers ``proto_class`` ``(Q,)`` and
``proto_part`` ``(Q,)``; ``prototype_grid()`` gives the ``(K, P, J, D)`` view while every class has
J per part. ``last_weight`` is ``(K, Q)``, ``last_bias`` ``(K,)``. A checkpoint holding a different
number of prototypes or classes resizes the head on ``load_state_dict``. Provenance of each
prototype (which training clip, person and frames it was projected onto) is plain Python data
kept in the module's extra state, so it travels inside ``model.state_dict()`` and survives
``torch.load(weights_only=True)``; it holds clip ids and frame ranges, never keypoints.

Non-negativity (``nonneg=True``) is projected gradient descent: the forward pass uses
``last_weight.clamp(min=0)`` (which passes gradients at 0) and, before each forward, any negative
entry the optimiser produced is set back to 0 in place, so the parameter itself stays
non-negative and a weight at 0 can still grow. See ``docs/prototypes.md``.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from protoskel.errors import CheckpointError, ConfigError
from protoskel.layouts import Layout

__all__ = [
    "DEFAULT_LOSS_WEIGHTS",
    "SIMILARITIES",
    "PrototypeHead",
    "feature_rows",
    "find_prototype_head",
    "finetune_last_layer",
    "project_prototypes",
    "projection_batches",
    "push_and_finetune",
]

SIMILARITIES = ("log", "cosine")
#: Weights of the auxiliary terms (ProtoPNet defaults; separation is negative: it is maximised).
DEFAULT_LOSS_WEIGHTS: dict[str, float] = {
    "cluster": 0.8,
    "separation": -0.08,
    "diversity": 0.01,
    "l1": 1e-4,
}
_STATE_VERSION = 1


class PrototypeHead(nn.Module):
    """Part-prototype classifier head: ``(N, M, C, T', V)`` features -> logits ``(N, K)``.

    ``window``/``stride`` are in feature frames (T' of the backbone output); windows are
    ``[s, s + window)`` for ``s = 0, stride, ...`` plus one ending at T' when the stride does not
    reach it; a clip shorter than ``window`` has one window covering it. ``similarity="log"`` is
    ProtoPNet's ``log((d + 1) / (d + eps))`` of the squared L2 distance ``d``; ``"cosine"`` uses
    the cosine (distance ``1 - cos``). ``loss_weights`` are the weights of :meth:`aux_loss`.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        layout: Layout,
        *,
        prototypes_per_class: int = 2,
        window: int = 4,
        stride: int | None = None,
        proto_dim: int = 64,
        similarity: str = "log",
        nonneg: bool = True,
        dropout: float = 0.0,
        eps: float = 1e-4,
        offclass_init: float | None = None,
        loss_weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        checks = [
            (in_channels >= 1, "in_channels", "must be >= 1"),
            (num_classes >= 1, "num_classes", "must be >= 1"),
            (prototypes_per_class >= 1, "prototypes_per_class", "must be >= 1"),
            (window >= 1, "window", "must be >= 1 (feature frames)"),
            (stride is None or stride >= 1, "stride", "must be >= 1 or null"),
            (proto_dim >= 1, "proto_dim", "must be >= 1"),
            (similarity in SIMILARITIES, "similarity", f"must be one of {list(SIMILARITIES)}"),
            (0.0 <= dropout < 1.0, "dropout", "must be in [0, 1)"),
            (eps > 0, "eps", "must be > 0"),
        ]
        for ok, key, what in checks:
            if not ok:
                raise ConfigError(f"prototype head: model.head_kwargs.{key} {what}")
        weights = dict(DEFAULT_LOSS_WEIGHTS)
        if loss_weights is not None:
            unknown = set(loss_weights) - set(weights)
            if unknown:
                raise ConfigError(
                    f"prototype head: loss_weights.{sorted(unknown)[0]} is unknown; known: "
                    f"{', '.join(weights)}"
                )
            weights.update({k: float(v) for k, v in loss_weights.items()})
        self.loss_weights: dict[str, float] = weights
        self.in_channels = int(in_channels)
        self.prototypes_per_class = int(prototypes_per_class)
        self.window = int(window)
        self.stride = int(stride) if stride is not None else max(1, self.window // 2)
        self.proto_dim = int(proto_dim)
        self.similarity = similarity
        self.nonneg = bool(nonneg)
        self.eps = float(eps)
        self.layout_name = layout.name
        self.part_names = list(layout.parts)
        self.num_joints = layout.num_joints

        num_parts = len(self.part_names)
        pool = torch.zeros(num_parts, layout.num_joints)
        for p, idx in enumerate(layout.parts.values()):
            pool[p, list(idx)] = 1.0 / len(idx)
        self.register_buffer("part_pool", pool, persistent=False)
        self.dropout = nn.Dropout(dropout)
        self.add_on = nn.Sequential(
            nn.Linear(in_channels, proto_dim),
            nn.ReLU(),
            nn.Linear(proto_dim, proto_dim),
            nn.Sigmoid(),
        )
        per_class = num_parts * self.prototypes_per_class
        q = num_classes * per_class
        # Sigmoid add-on features live in [0, 1]^D, so uniform [0, 1) is ProtoPNet's init too.
        self.prototypes = nn.Parameter(torch.rand(q, proto_dim))
        self.register_buffer("proto_class", torch.arange(num_classes).repeat_interleave(per_class))
        self.register_buffer(
            "proto_part",
            torch.arange(num_parts)
            .repeat_interleave(self.prototypes_per_class)
            .repeat(num_classes),
        )
        off = (0.0 if self.nonneg else -0.5) if offclass_init is None else float(offclass_init)
        if self.nonneg and off < 0:
            raise ConfigError("prototype head: offclass_init must be >= 0 when nonneg is true")
        own = self.proto_class[None, :] == torch.arange(num_classes)[:, None]
        self.last_weight = nn.Parameter(torch.where(own, 1.0, off))
        self.last_bias = nn.Parameter(torch.zeros(num_classes))
        #: Per prototype: where it was projected from (plain dicts), ``None`` before projection.
        self.provenance: list[dict[str, Any] | None] = [None] * q
        #: Per class: ``{}`` for trained classes, the enrollment record for enrolled ones.
        self.class_meta: list[dict[str, Any]] = [{} for _ in range(num_classes)]
        self._cache: dict[str, Tensor] | None = None

    # ------------------------------------------------------------------------- properties
    @property
    def num_classes(self) -> int:
        """Number of classes K (rows of the last layer)."""
        return int(self.last_weight.shape[0])

    @property
    def num_prototypes(self) -> int:
        """Total number of prototypes Q."""
        return int(self.prototypes.shape[0])

    @property
    def num_parts(self) -> int:
        """Number of body parts P of the layout."""
        return len(self.part_names)

    def extra_repr(self) -> str:
        """Settings shown by print(module)."""
        return (
            f"classes={self.num_classes}, prototypes={self.num_prototypes}, "
            f"parts={self.num_parts}, window={self.window}, stride={self.stride}, "
            f"similarity={self.similarity!r}, nonneg={self.nonneg}"
        )

    def no_weight_decay(self) -> set[str]:
        """Parameter names (relative to the head) that should not get weight decay."""
        # Decay would pull prototypes towards the origin, away from the sigmoid features they
        # must match; the last layer is regularised by the L1 term instead (ProtoPNet).
        return {"prototypes", "last_weight", "last_bias"}

    def weight(self) -> Tensor:
        """Effective last-layer weight (K, Q): clamped at 0 when ``nonneg``."""
        return self.last_weight.clamp(min=0) if self.nonneg else self.last_weight

    @torch.no_grad()
    def project_nonneg_(self) -> None:
        """Set negative last-layer entries back to 0 (the projection step of projected GD)."""
        # Only touch the tensor when needed: an in-place write bumps its version counter and
        # would break a backward through an earlier forward of the same step (frame averaging).
        if self.nonneg and bool((self.last_weight < 0).any()):
            self.last_weight.clamp_(min=0)

    def prototype_grid(self) -> Tensor:
        """Prototypes as (K, P, J, D) when every class has J per part in (class, part) order."""
        k, p, j = self.num_classes, self.num_parts, self.prototypes_per_class
        cls = torch.arange(k).repeat_interleave(p * j)
        part = torch.arange(p).repeat_interleave(j).repeat(k)
        if (
            self.num_prototypes != k * p * j
            or not torch.equal(self.proto_class.cpu(), cls)
            or not torch.equal(self.proto_part.cpu(), part)
        ):
            raise ConfigError(
                "prototype_grid(): prototypes are no longer a regular (class, part, j) grid "
                "(classes were enrolled or forgotten); use prototypes, proto_class, proto_part"
            )
        return self.prototypes.view(k, p, j, self.proto_dim)

    # --------------------------------------------------------------------------- segments
    def window_size(self, length: int) -> int:
        """Frames per window for T' = length (the window, or the whole clip when shorter)."""
        return min(self.window, int(length))

    def windows(self, length: int) -> Tensor:
        """Feature-frame windows ``[start, end)`` as a LongTensor (W, 2) for T' = length."""
        win = self.window_size(length)
        starts = list(range(0, length - win + 1, self.stride))
        if starts[-1] + win < length:
            starts.append(length - win)
        s = torch.tensor(starts, dtype=torch.int64)
        return torch.stack([s, s + win], dim=1)

    def _check(self, features: Tensor) -> None:
        if features.dim() != 5:
            raise ConfigError(
                f"prototype head expects features (N, M, C, T', V), got {tuple(features.shape)}"
            )
        _, _, c, _, v = features.shape
        if c != self.in_channels or v != self.num_joints:
            raise ConfigError(
                f"prototype head built for C={self.in_channels} channels and V={self.num_joints} "
                f"joints (layout {self.layout_name!r}) got features {tuple(features.shape)}"
            )

    def segments(self, features: Tensor) -> Tensor:
        """Projected part-window segments (N, M, P, W, D) of backbone features (N, M, C, T', V)."""
        self._check(features)
        pooled = torch.einsum("nmctv,pv->nmpct", features, self.part_pool.to(features.dtype))
        win = self.windows(features.shape[3]).to(features.device)
        # The window length from shapes, not from the tensor: no data-dependent int in the graph.
        size = self.window_size(features.shape[3])
        idx = win[:, :1] + torch.arange(size, device=features.device)
        seg = pooled[..., idx].mean(-1)  # (N, M, P, C, W)
        seg = self.dropout(seg.transpose(-1, -2))  # (N, M, P, W, C)
        return self.add_on(seg)

    def distances(
        self, z: Tensor, prototypes: Tensor | None = None, parts: Tensor | None = None
    ) -> Tensor:
        """Distance (N, M, Q, W) of each prototype to every window of its own part in ``z``."""
        protos = self.prototypes if prototypes is None else prototypes
        part = self.proto_part if parts is None else parts
        n, m, _, w, _ = z.shape
        if self.similarity == "cosine":
            zn, pn = F.normalize(z, dim=-1), F.normalize(protos, dim=-1)
            cross = torch.einsum("nmpwd,qd->nmpwq", zn, pn)
        else:
            cross = torch.einsum("nmpwd,qd->nmpwq", z, protos)
        # Keep only each prototype's own part: index the part axis with proto_part.
        index = part.view(1, 1, 1, 1, -1).expand(n, m, 1, w, -1)
        own = cross.gather(2, index).squeeze(2)  # (N, M, W, Q)
        if self.similarity == "cosine":
            d = 1.0 - own
        else:
            zz = (z * z).sum(-1)[:, :, part]  # (N, M, Q, W)
            pp = (protos * protos).sum(-1)
            d = (zz.transpose(2, 3) - 2.0 * own + pp).clamp_min(0.0)
        return d.transpose(2, 3)

    def pairwise(self, a: Tensor, b: Tensor) -> Tensor:
        """Distance matrix (A, B) between segment vectors, in this head's metric."""
        if self.similarity == "cosine":
            return 1.0 - F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
        return torch.cdist(a, b).pow(2)

    def similarity_from_distance(self, d: Tensor) -> Tensor:
        """Similarity (evidence) of a distance: ProtoPNet log ratio, or the cosine."""
        if self.similarity == "cosine":
            return 1.0 - d
        return torch.log((d + 1.0) / (d + self.eps))

    def _best(self, features: Tensor, person_mask: Tensor | None) -> dict[str, Tensor]:
        """Per prototype: min distance over persons and windows, and where it was found."""
        z = self.segments(features)
        d = self.distances(z)  # (N, M, Q, W)
        if person_mask is not None:
            pm = person_mask.to(torch.bool)
            pm = pm | ~pm.any(1, keepdim=True)  # an all-empty clip keeps every person
            d = d.masked_fill(~pm[:, :, None, None], math.inf)
        n, m, q, w = d.shape
        flat = d.permute(0, 2, 1, 3).reshape(n, q, m * w)
        dmin, arg = flat.min(-1)
        return {"z": z, "distance": dmin, "person": arg // w, "window": arg % w}

    # ----------------------------------------------------------------------------- forward
    def forward(self, features: Tensor, person_mask: Tensor | None = None) -> Tensor:
        """Class logits (N, K); caches the per-prototype distances for :meth:`aux_loss`.

        ``person_mask`` (N, M) bool, optional: persons to consider (absent ones are skipped).
        """
        if self.training:
            # Outside training weight() clamps anyway; skipping the data-dependent check keeps
            # the forward free of side effects (and exportable with torch.export).
            self.project_nonneg_()
        best = self._best(features, person_mask)
        self._cache = {"distance": best["distance"]}
        sim = self.similarity_from_distance(best["distance"])
        return sim @ self.weight().T + self.last_bias

    @torch.no_grad()
    def explain(
        self,
        features: Tensor,
        person_mask: Tensor | None = None,
        input_frames: int | None = None,
    ) -> dict[str, Any]:
        """Per-prototype evidence, best (person, window) and contributions to each logit.

        Returns tensors: ``logits`` (N, K), ``similarity``/``distance`` (N, Q), ``person`` and
        ``window`` (N, Q) of the best match, ``feature_start``/``feature_end`` (N, Q) of that
        window in feature frames (end exclusive), ``contributions`` (N, K, Q) =
        weight * similarity (so ``contributions.sum(-1) + bias == logits``), ``bias`` (K,),
        ``weight`` (K, Q), ``proto_class``/``proto_part`` (Q,); plus ``part_names`` and
        ``provenance``. With ``input_frames`` (T of the input), ``frame_start``/``frame_end``
        give the window in input frames (mapped by the backbone's temporal stride T / T').
        """
        best = self._best(features, person_mask)
        sim = self.similarity_from_distance(best["distance"])
        weight = self.weight()
        contrib = sim[:, None, :] * weight[None]
        logits = sim @ weight.T + self.last_bias
        win = self.windows(features.shape[3]).to(features.device)
        out: dict[str, Any] = {
            "logits": logits,
            "similarity": sim,
            "distance": best["distance"],
            "person": best["person"],
            "window": best["window"],
            "feature_start": win[best["window"], 0],
            "feature_end": win[best["window"], 1],
            "contributions": contrib,
            "bias": self.last_bias.detach().clone(),
            "weight": weight.detach().clone(),
            "proto_class": self.proto_class.clone(),
            "proto_part": self.proto_part.clone(),
            "part_names": list(self.part_names),
            "provenance": copy.deepcopy(self.provenance),
        }
        if input_frames is not None:
            t_in, t_f = int(input_frames), int(features.shape[3])
            out["frame_start"] = out["feature_start"] * t_in // t_f
            out["frame_end"] = (-((-out["feature_end"] * t_in) // t_f)).clamp(max=t_in)
        return out

    # ------------------------------------------------------------------------------ losses
    def aux_loss(self, features: Tensor | None, labels: Tensor) -> dict[str, Tensor]:
        """Cluster, separation, diversity and L1 terms (unweighted; see ``loss_weights``).

        Uses the distances cached by the last forward when ``features`` is None (the trainer's
        case: call right after ``logits = model(x)``); otherwise runs the head on ``features``.
        When the last forward saw R rows per label (frame averaging), labels are repeated.
        ``cluster``: per sample and part, min distance to a prototype of the sample's class,
        averaged; ``separation``: same to other classes' prototypes (its weight is negative);
        ``diversity``: mean positive cosine between prototypes of the same class and part;
        ``l1``: sum of |weight| from prototypes to classes other than their own.
        """
        if features is not None:
            self.forward(features)
        if self._cache is None:
            raise ConfigError("aux_loss(None, labels) needs a forward pass of the head first")
        d = self._cache["distance"]
        labels = labels.to(d.device)
        if d.shape[0] != labels.shape[0]:
            if labels.shape[0] == 0 or d.shape[0] % labels.shape[0]:
                raise ConfigError(
                    f"aux_loss: {labels.shape[0]} labels for {d.shape[0]} rows of the last forward"
                )
            labels = labels.repeat_interleave(d.shape[0] // labels.shape[0])
        own = self.proto_class[None, :] == labels[:, None]
        cluster, separation = [], []
        for p in range(self.num_parts):
            in_p = (self.proto_part == p)[None, :]
            for mask, out in ((own & in_p, cluster), (~own & in_p, separation)):
                v = d.masked_fill(~mask, math.inf).amin(1)
                out.append(v[torch.isfinite(v)])
        zero = d.sum() * 0.0

        def mean(vals: list[Tensor]) -> Tensor:
            v = torch.cat(vals)
            return v.mean() if v.numel() else zero

        pn = F.normalize(self.prototypes, dim=-1)
        cls, part = self.proto_class, self.proto_part
        pairs = (cls[:, None] == cls[None, :]) & (part[:, None] == part[None, :])
        pairs = torch.triu(pairs, diagonal=1)
        cos = (pn @ pn.T)[pairs]
        diversity = cos.clamp_min(0.0).mean() if cos.numel() else self.prototypes.sum() * 0.0
        wrong = cls[None, :] != torch.arange(self.num_classes, device=cls.device)[:, None]
        l1 = (self.weight() * wrong).abs().sum()
        return {
            "cluster": mean(cluster),
            "separation": mean(separation),
            "diversity": diversity,
            "l1": l1,
        }

    def weighted_aux_loss(self, features: Tensor | None, labels: Tensor) -> Tensor:
        """``sum(loss_weights[k] * aux_loss(...)[k])``: what to add to the cross-entropy."""
        terms = self.aux_loss(features, labels)
        return sum((self.loss_weights[k] * v for k, v in terms.items()), start=torch.zeros(()))

    # ------------------------------------------------------------------- growing/shrinking
    def _append_class(
        self,
        prototypes: Tensor,
        parts: Tensor,
        weight: float,
        bias: float,
        provenance: list[dict[str, Any]],
        meta: dict[str, Any],
    ) -> int:
        """Add a class with its own prototypes (weight ``weight`` to it, 0 elsewhere)."""
        k, q, n_new = self.num_classes, self.num_prototypes, prototypes.shape[0]
        dev, dt = self.prototypes.device, self.prototypes.dtype
        with torch.no_grad():
            self.prototypes.data = torch.cat([self.prototypes.data, prototypes.to(dev, dt)])
            w = torch.zeros(k + 1, q + n_new, dtype=dt, device=dev)
            w[:k, :q] = self.last_weight.data
            w[k, q:] = weight
            self.last_weight.data = w
            b = torch.tensor([bias], dtype=dt, device=dev)
            self.last_bias.data = torch.cat([self.last_bias.data, b])
        self.proto_class = torch.cat([self.proto_class, torch.full((n_new,), k, device=dev)])
        self.proto_part = torch.cat([self.proto_part, parts.to(dev, torch.int64)])
        self.provenance = [*self.provenance, *copy.deepcopy(provenance)]
        self.class_meta = [*self.class_meta, copy.deepcopy(meta)]
        self._cache = None
        return k

    def _keep_prototypes(self, keep: Tensor) -> None:
        """Keep only the prototypes where ``keep`` (Q,) is True (last-layer columns too)."""
        keep = keep.to(self.prototypes.device)
        with torch.no_grad():
            self.prototypes.data = self.prototypes.data[keep].clone()
            self.last_weight.data = self.last_weight.data[:, keep].clone()
        self.proto_class = self.proto_class[keep].clone()
        self.proto_part = self.proto_part[keep].clone()
        self.provenance = [p for p, k in zip(self.provenance, keep.tolist(), strict=True) if k]
        self._cache = None

    def _remove_class(self, k: int) -> None:
        """Remove class ``k``: its prototypes, its last-layer row and its metadata."""
        self._keep_prototypes(self.proto_class != k)
        rows = torch.arange(self.num_classes, device=self.last_bias.device) != k
        with torch.no_grad():
            self.last_weight.data = self.last_weight.data[rows].clone()
            self.last_bias.data = self.last_bias.data[rows].clone()
        self.proto_class = self.proto_class - (self.proto_class > k).to(self.proto_class.dtype)
        del self.class_meta[k]

    # -------------------------------------------------------------------------- checkpoint
    def get_extra_state(self) -> dict[str, Any]:
        """Provenance and class records as plain Python data (weights_only-safe)."""
        return {
            "version": _STATE_VERSION,
            "layout": self.layout_name,
            "part_names": list(self.part_names),
            "provenance": copy.deepcopy(self.provenance),
            "class_meta": copy.deepcopy(self.class_meta),
        }

    def set_extra_state(self, state: Any) -> None:
        """Restore provenance and class records saved by :meth:`get_extra_state`."""
        if not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
            raise CheckpointError("prototype head: unknown or missing provenance record")
        if list(state.get("part_names", [])) != self.part_names:
            raise CheckpointError(
                f"prototype head: checkpoint parts {state.get('part_names')} differ from the "
                f"layout's parts {self.part_names}"
            )
        prov, meta = list(state["provenance"]), list(state["class_meta"])
        if len(prov) != self.num_prototypes or len(meta) != self.num_classes:
            raise CheckpointError(
                f"prototype head: provenance for {len(prov)} prototypes / {len(meta)} classes but "
                f"the weights have {self.num_prototypes} / {self.num_classes}"
            )
        self.provenance = copy.deepcopy(prov)
        self.class_meta = copy.deepcopy(meta)
        self._cache = None

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # Enrolled/forgotten classes change Q and K: take the sizes from the checkpoint. The
        # Parameter objects are kept (only .data changes) so optimisers built earlier still work.
        for name in ("prototypes", "last_weight", "last_bias"):
            src = state_dict.get(prefix + name)
            param = getattr(self, name)
            if isinstance(src, Tensor) and src.dim() == param.dim() and src.shape != param.shape:
                if name == "prototypes" and src.shape[1:] != param.shape[1:]:
                    continue  # a different proto_dim is a real mismatch: let torch report it
                param.data = torch.empty(src.shape, dtype=param.dtype, device=param.device)
        for name in ("proto_class", "proto_part"):
            src = state_dict.get(prefix + name)
            buf = getattr(self, name)
            if isinstance(src, Tensor) and src.shape != buf.shape:
                setattr(self, name, torch.empty(src.shape, dtype=buf.dtype, device=buf.device))
        q, k = self.num_prototypes, self.num_classes
        self.provenance = [None] * q
        self.class_meta = [{} for _ in range(k)]
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


# ------------------------------------------------------------------------------ helpers
def _unwrap(model: nn.Module) -> nn.Module:
    """Strip DistributedDataParallel-style ``.module`` wrappers."""
    while isinstance(getattr(model, "module", None), nn.Module):
        model = model.module
    return model


def find_prototype_head(model: nn.Module) -> PrototypeHead:
    """The PrototypeHead inside a model (Classifier, frame-averaged, or DDP-wrapped)."""
    if isinstance(model, PrototypeHead):
        return model
    for mod in model.modules():
        if isinstance(mod, PrototypeHead):
            return mod
    raise ConfigError(
        "this model has no prototype head; train it with model.head: prototype to use "
        "projection, explanations by prototypes or enrollment"
    )


def feature_rows(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Backbone features the head sees for ``x`` (N, C, T, V, M), as used by ``model(x)``.

    Returns ``(features (R, M, C, T', V), sample (R,) row -> index into x, present (R, M))``.
    A plain classifier gives one row per sample; a frame-averaging wrapper gives one row per
    canonical frame (R = N * F). ``present`` marks persons that are not all-zero padding.
    """
    from protoskel.models.invariance import FrameAveraging

    m = _unwrap(model)
    n = x.shape[0]
    if isinstance(m, FrameAveraging):
        z = m.canonicalize(x)
        f = z.shape[1]
        xs, inner = z.reshape(n * f, *z.shape[2:]), m.model
        rows = torch.arange(n, device=x.device).repeat_interleave(f)
    else:
        xs, inner, rows = x, m, torch.arange(n, device=x.device)
    feats = getattr(inner, "features", None)
    if feats is None:
        raise ConfigError(f"{type(inner).__name__} has no features() method")
    present = (xs != 0).flatten(1, 3).any(dim=1)  # (R, M)
    return feats(xs), rows, present


def _as_index(v: Any, n: int) -> list[int]:
    """Batch clip indices as a list of ints."""
    out = v.tolist() if isinstance(v, Tensor) else [int(i) for i in v]
    if len(out) != n:
        raise ConfigError(f"batch has {n} samples but {len(out)} clip indices")
    return [int(i) for i in out]


def map_window(
    feature_start: int,
    feature_end: int,
    input_frames: int,
    feature_frames: int,
    positions: Tensor | None = None,
) -> dict[str, int]:
    """Map a feature window ``[s, e)`` to input frames and, with positions, to clip frames.

    Input frames are ``[s*T//T', ceil(e*T/T'))`` of the sampled clip; ``positions`` (T,) are the
    original (possibly fractional) clip frame of each sampled frame, giving the original
    ``[floor(pos[start]), ceil(pos[end-1]) + 1)``.
    """
    t, tf = int(input_frames), int(feature_frames)
    start = feature_start * t // tf
    end = min(t, -((-feature_end * t) // tf))
    out = {"frame_start": int(start), "frame_end": int(max(end, start + 1)), "num_frames": t}
    if positions is not None:
        pos = torch.as_tensor(positions, dtype=torch.float64).reshape(-1)
        if pos.numel() != t:
            raise ConfigError(f"positions have {pos.numel()} entries for a {t}-frame input")
        out["orig_frame_start"] = math.floor(float(pos[out["frame_start"]]))
        out["orig_frame_end"] = math.ceil(float(pos[out["frame_end"] - 1])) + 1
    return out


# --------------------------------------------------------------------------- projection
@torch.no_grad()
def project_prototypes(
    model: nn.Module,
    batches: Iterable[Any],
    ids: list[str],
    *,
    classes: list[str] | None = None,
) -> list[dict[str, Any]]:
    """ProtoPNet push: replace each prototype by its nearest own-class training segment.

    ``batches`` yields ``(x, y, clip_index)`` or ``(x, y, clip_index, positions)`` with x
    ``(N, C, T, V, M)`` (use un-augmented training clips), ``clip_index`` (N,) indexing
    ``ids`` and the optional ``positions`` (N, T) giving each sampled frame's original clip
    frame (see :func:`projection_batches`). Segments of padding persons are never chosen. The
    model runs in eval mode (restored afterwards). Sets ``head.provenance`` and returns it: per
    prototype ``{class, class_name?, part, part_index, clip_id, clip_index, person, window,
    feature_start, feature_end, frame_start, frame_end, num_frames[, orig_frame_start,
    orig_frame_end], frame_copy, distance, enrolled: False}`` (frame ends exclusive).
    """
    head = find_prototype_head(model)
    was_training = model.training
    model.eval()
    try:
        q = head.num_prototypes
        dev = head.prototypes.device
        best_d = torch.full((q,), math.inf, dtype=torch.float64, device=dev)
        best_vec = head.prototypes.detach().clone()
        info: list[dict[str, Any] | None] = [None] * q
        for batch in batches:
            x, y, idx = batch[0], batch[1], batch[2]
            positions = batch[3] if len(batch) > 3 else None
            clip_idx = _as_index(idx, x.shape[0])
            feats, rows, present = feature_rows(model, x)
            z = head.segments(feats)
            d = head.distances(z)  # (R, M, Q, W)
            yr = torch.as_tensor(y, device=dev)[rows.to(dev)]
            ok = yr[:, None] == head.proto_class[None, :]
            d = d.masked_fill(~ok[:, None, :, None], math.inf)
            d = d.masked_fill(~present.to(dev)[:, :, None, None], math.inf)
            r_, m_, _, w_ = d.shape
            val, arg = d.permute(2, 0, 1, 3).reshape(q, -1).min(1)
            better = val.to(torch.float64) < best_d
            if not bool(better.any()):
                continue
            r, mm, w = arg // (m_ * w_), (arg // w_) % m_, arg % w_
            cand = z[r, mm, head.proto_part, w]  # (Q, D) exact segment vectors
            best_vec[better] = cand[better]
            best_d[better] = val[better].to(torch.float64)
            win = head.windows(feats.shape[3])
            f = max(1, r_ // x.shape[0])
            for qi in better.nonzero().flatten().tolist():
                ri, wi = int(r[qi]), int(w[qi])
                n = int(rows[ri])
                fs, fe = int(win[wi, 0]), int(win[wi, 1])
                pos = None if positions is None else positions[n]
                cls = int(head.proto_class[qi])
                part = int(head.proto_part[qi])
                info[qi] = {
                    "class": cls,
                    **({"class_name": classes[cls]} if classes is not None else {}),
                    "part": head.part_names[part],
                    "part_index": part,
                    "clip_id": str(ids[clip_idx[n]]),
                    "clip_index": clip_idx[n],
                    "person": int(mm[qi]),
                    "window": wi,
                    "feature_start": fs,
                    "feature_end": fe,
                    **map_window(fs, fe, x.shape[2], feats.shape[3], pos),
                    "frame_copy": ri % f,
                    "distance": float(val[qi]),
                    "enrolled": False,
                }
        missing = [i for i, v in enumerate(info) if v is None]
        if missing:
            warnings.warn(
                f"{len(missing)} prototypes had no training segment of their class "
                f"(classes {sorted({int(head.proto_class[i]) for i in missing})}); "
                "they were left unchanged without provenance",
                stacklevel=2,
            )
        found = torch.tensor([v is not None for v in info], dtype=torch.bool, device=dev)
        head.prototypes.data[found] = best_vec[found]
        # Enrolled classes keep their own provenance (they were never in the training data).
        for i, v in enumerate(info):
            if v is not None:
                head.provenance[i] = v
        head._cache = None
        return copy.deepcopy(head.provenance)
    finally:
        model.train(was_training)


def projection_batches(
    split: Any,
    layout: Layout,
    *,
    num_frames: int,
    stream: str = "joint",
    batch_size: int = 32,
    normalize: Mapping[str, Any] | None = None,
) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor]]:
    """Un-augmented ``(x, y, clip_index, positions)`` batches of a split for projection.

    Frames are sampled uniformly as at test time; ``positions`` (N, T) are the clip frame
    positions each sampled frame was read from (fractional when interpolated).
    """
    from protoskel.data.loader import ClipLoader
    from protoskel.data.transforms import eval_positions

    loader = ClipLoader(
        split,
        layout,
        batch_size=batch_size,
        num_frames=num_frames,
        train=False,
        stream=stream,
        normalize=normalize,
    )
    lengths = torch.as_tensor(split.lengths, dtype=torch.int64)
    for s in range(0, len(split), batch_size):
        idx = torch.arange(s, min(s + batch_size, len(split)))
        x, y = loader.batch(idx.numpy())
        yield x, y, idx, eval_positions(lengths[idx], num_frames)


# ------------------------------------------------------------------ last-layer fine-tune
def _evidence(model: nn.Module, head: PrototypeHead, x: Tensor) -> Tensor:
    """Similarity (N, Q) of each sample as the last layer sees it (frame copies averaged)."""
    feats, _, _ = feature_rows(model, x)
    best = head._best(feats, None)
    sim = head.similarity_from_distance(best["distance"])
    if sim.shape[0] != x.shape[0]:
        # The logit is linear in the evidence, so averaging logits over frame copies equals
        # applying the last layer to the averaged evidence.
        sim = sim.view(x.shape[0], -1, sim.shape[1]).mean(1)
    return sim


def finetune_last_layer(
    model: nn.Module,
    batches: Iterable[Any],
    epochs: int = 20,
    lr: float = 1e-3,
    *,
    l1: float | None = None,
    batch_size: int = 64,
    seed: int = 0,
) -> dict[str, float]:
    """Train only the last layer (weights + bias): cross-entropy + L1 on wrong-class weights.

    Everything else is frozen and stays in eval mode, so the projected prototypes remain exact
    copies of training segments. The evidence of every sample in ``batches`` (``(x, y, ...)``)
    is computed once; ``epochs`` passes of Adam then run over it in seeded mini-batches.
    ``l1`` defaults to ``head.loss_weights["l1"]``. Returns the final loss and accuracy (%).
    """
    head = find_prototype_head(model)
    coef = head.loss_weights["l1"] if l1 is None else float(l1)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            sims, labels = [], []
            for batch in batches:
                sims.append(_evidence(model, head, batch[0]))
                labels.append(torch.as_tensor(batch[1]))
        if not sims:
            raise ConfigError("finetune_last_layer: no batches given")
        s, y = torch.cat(sims), torch.cat(labels).to(head.prototypes.device)
        params = [head.last_weight, head.last_bias]
        saved = {p: p.requires_grad for p in params}
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.Adam(params, lr=lr)
        classes = torch.arange(head.num_classes, device=y.device)
        wrong = head.proto_class[None, :] != classes[:, None]
        g = torch.Generator().manual_seed(int(seed))
        loss = torch.zeros(())
        for _ in range(int(epochs)):
            order = torch.randperm(len(y), generator=g)
            for i in range(0, len(y), batch_size):
                b = order[i : i + batch_size]
                w = head.weight()
                logits = s[b] @ w.T + head.last_bias
                loss = F.cross_entropy(logits, y[b]) + coef * (w * wrong).abs().sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                head.project_nonneg_()
        for p, r in saved.items():
            p.requires_grad_(r)
        with torch.no_grad():
            acc = float(((s @ head.weight().T + head.last_bias).argmax(1) == y).float().mean())
        head._cache = None
        return {"loss": float(loss.detach()), "train_acc": 100.0 * acc, "samples": len(y)}
    finally:
        model.train(was_training)


def push_and_finetune(
    model: nn.Module,
    split: Any,
    layout: Layout,
    *,
    num_frames: int,
    stream: str = "joint",
    normalize: Mapping[str, Any] | None = None,
    batch_size: int = 32,
    epochs: int = 20,
    lr: float = 1e-3,
    classes: list[str] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """After joint training: project prototypes onto a training split, then tune the last layer.

    ``split`` is a prepared split (``ids`` give the provenance clip ids). Returns
    ``{"provenance": [...], "finetune": {...}}``; the model is changed in place.
    """
    kw = {"num_frames": num_frames, "stream": stream, "batch_size": batch_size}
    prov = project_prototypes(
        model,
        projection_batches(split, layout, normalize=normalize, **kw),
        list(split.ids),
        classes=classes,
    )
    stats = finetune_last_layer(
        model,
        projection_batches(split, layout, normalize=normalize, **kw),
        epochs=epochs,
        lr=lr,
        seed=seed,
    )
    return {"provenance": prov, "finetune": stats}
