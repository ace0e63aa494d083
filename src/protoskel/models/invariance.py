"""Frame averaging (Puny et al., ICLR 2022): exact rotation/translation invariance for any model.

A *frame* of a clip is a rigid motion (centre ``c``, orthogonal ``R``) computed from the clip
itself so that moving the clip moves the frame with it: for ``x' = Q x + t`` the frame set of
``x'`` is ``{(Q R, Q c + t)}``. Feeding the model the canonicalised clip ``R^T (x - c)`` for every
frame of the set and averaging the outputs therefore gives an output that no rigid motion of the
input can change, whatever the wrapped model is.

Frames come from PCA of the clip's point cloud (all valid joints of all frames and persons):
the centroid, and the covariance eigenvectors sorted by decreasing eigenvalue. Each eigenvector
is only defined up to sign, so the frame set is the set of sign choices: 4 rotations in 3D
(``SO(3)``), 8 with reflections (``O(3)``), 2 in 2D (``SO(2)``), 4 with reflections (``O(2)``).
``mode="canonical"`` picks one of them per clip from the third moments (1 forward instead of F).

Shapes: models take ``x`` float ``(N, C, T, V, M)``; the first ``coords`` channels are
coordinates (2 or 3) and rotate, further channels (a score, say) are passed through unchanged.
A joint whose coordinates are all exactly zero is *missing* (padding, undetected joints, padded
persons and frames): it is left out of the frame and stays zero after canonicalisation.

Degenerate clips (see ``docs/invariance.md``): all-missing and single-point clips get the
identity frame; near-equal eigenvalues (relative gap <= ``eps``) make the eigenvectors in that
subspace arbitrary, so those axes are fixed by rotation-equivariant vectors of the clip instead
(third-moment vector, rank-weighted means, then the labelled points themselves); the third axis
is always the cross product of the first two, so planar clips are fine. Only a nearly collinear
cloud (all points within ``eps`` of a line, yet not exactly on it; in canonical mode with
reflections also a nearly planar one, for the normal's sign) can leave an axis unfixed:
then the eigensolver's deterministic choice is used, the canonical input may move by up to
about ``eps`` times the clip's size, and the clip is counted as having *reduced invariance*
(``FrameAveraging.warning`` says so). Outputs are never NaN for finite inputs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from protoskel.data.transforms import _axis, box_normalize
from protoskel.errors import ConfigError

__all__ = [
    "DEFAULT_EPS",
    "FrameAveraging",
    "Frames",
    "canonicalize",
    "frame_count",
    "frames",
    "random_rotation",
    "rotate",
    "valid_mask",
    "wrap_invariance",
]

MODES = ("average", "canonical")
DEFAULT_EPS = 1e-3
# Spread below this fraction of the mean squared position is below float32 resolution: a point.
_POINT_TOL = 1e-14
# Variance fraction (of the largest eigenvalue) below which an axis carries no data, so the
# choice of that axis or of its sign cannot change the canonicalised coordinates.
_FLAT_TOL = 1e-10
# Tiny floor for norms in float64, only there so a zero vector never divides.
_TINY = 1e-300


@dataclass(frozen=True)
class Frames:
    """The frame set of a batch of clips (all float64, detached from autograd).

    ``rotations[n, f]`` has the frame's axes as columns (canonical coordinates are
    ``R^T (x - centre)``); ``eigenvalues`` are the covariance eigenvalues, descending.
    ``tied``: some eigenvalues were near-equal and equivariant vectors fixed the axes; ``point``:
    the clip is empty or a single point, identity frame; ``reduced``: an axis or sign could not
    be fixed equivariantly (nearly collinear cloud, or nearly planar in canonical mode with
    reflections), so this clip is only approximately invariant.
    """

    centre: Tensor  # (N, c), zeros when center=False
    rotations: Tensor  # (N, F, c, c)
    valid: Tensor  # (N, T, V, M) bool
    eigenvalues: Tensor  # (N, c)
    tied: Tensor  # (N,) bool
    point: Tensor  # (N,) bool
    reduced: Tensor  # (N,) bool


def _resolve_coords(x: Tensor, coords: int | None) -> int:
    """Number of coordinate channels of ``x`` (validated); ``None`` means min(C, 3)."""
    if x.dim() != 5:
        raise ConfigError(
            f"frame averaging expects x of shape (N, C, T, V, M), got {tuple(x.shape)}; "
            "reshape the input to the model boundary convention"
        )
    num_channels = x.shape[1]
    c = min(num_channels, 3) if coords is None else coords
    if c not in (2, 3) or c > num_channels:
        raise ConfigError(
            f"frame averaging needs 2 or 3 coordinate channels, got coords={c} for an input with "
            f"C={num_channels} channels; pass coords=2 or coords=3 (e.g. coords=2 for 2D + score)"
        )
    return c


def frame_count(
    dims: int, reflections: bool = False, mode: str = "average", up: bool = False
) -> int:
    """Number of frames per clip: 4 (SO(3)), 8 (O(3)), 2 (SO(2)), 4 (O(2)); 1 when canonical.

    With ``up`` (first axis fixed by the body, sign included) half as many: 2, 4, 1, 2.
    """
    if mode == "canonical":
        return 1
    full = 2**dims if reflections else 2 ** (dims - 1)
    return full // 2 if up else full


def _sign_group(dims: int, reflections: bool, up: bool = False) -> Tensor:
    """Sign patterns (F, dims) for the axes, identity first; det +1 only unless reflections.

    ``up``: the first axis has a sign of its own (the body's up), so it is never flipped.
    """
    patterns = list(itertools.product((1.0, -1.0), repeat=dims))
    if up:
        patterns = [s for s in patterns if s[0] > 0]
    if not reflections:
        patterns = [s for s in patterns if math.prod(s) > 0]
    return torch.tensor(patterns, dtype=torch.float64)


def valid_mask(x: Tensor, coords: int | None = None) -> Tensor:
    """Boolean (N, T, V, M): a joint is valid unless all its coordinates are exactly zero."""
    c = _resolve_coords(x, coords)
    return (x[:, :c] != 0).any(dim=1)


def _unit(v: Tensor) -> Tensor:
    """Rows of ``v`` (..., c) scaled to unit length; zero rows stay zero."""
    return v / v.norm(dim=-1, keepdim=True).clamp_min(_TINY)


def _first_usable(cands: Tensor, remove: list[Tensor], thresh: Tensor) -> tuple[Tensor, Tensor]:
    """First candidate (N, K, c) whose part orthogonal to the unit axes ``remove`` is > thresh.

    Returns the chosen direction (N, c) as a unit vector and whether one was found (N,).
    """
    proj = cands
    for a in remove:
        proj = proj - (proj * a[:, None, :]).sum(-1, keepdim=True) * a[:, None, :]
    usable = proj.norm(dim=-1) > thresh[:, None]
    # argmax returns the first maximal index, i.e. the first usable candidate
    idx = usable.to(torch.int8).argmax(dim=1)
    chosen = proj[torch.arange(proj.shape[0], device=proj.device), idx]
    return _unit(chosen), usable.any(dim=1)


def _orthogonal_to(a: Tensor, basis: Tensor) -> Tensor:
    """Unit vector orthogonal to unit ``a`` (N, c): the basis column least parallel to it."""
    cols = basis.transpose(1, 2)  # (N, c, c): rows are the columns of basis
    proj = cols - (cols * a[:, None, :]).sum(-1, keepdim=True) * a[:, None, :]
    idx = proj.norm(dim=-1).argmax(dim=1)
    return _unit(proj[torch.arange(proj.shape[0], device=proj.device), idx])


def _cross2(a: Tensor) -> Tensor:
    """The 2D vector rotated +90 degrees, so [a, J a] has determinant +1."""
    return torch.stack([-a[:, 1], a[:, 0]], dim=-1)


def _where(mask: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Row-wise select between (N, c) tensors by an (N,) mask."""
    return torch.where(mask[:, None], a, b)


def _candidates(y: Tensor, w: Tensor, safe: Tensor, l1s: Tensor) -> Tensor:
    """Rotation-equivariant, translation-free vectors of each cloud (N, 4 + P, c), in length units.

    The third-moment vector, rank-weighted means (time/joint order is not rotated), and last the
    centred points themselves in rank order. Points are labelled, so unless the cloud is (nearly)
    a line some point always fixes an axis that the eigenvectors leave free.
    """
    rank = torch.cumsum(w, 1) * w / safe[:, None]
    moments = [(w * (y * y).sum(-1))[..., None].mul(y).sum(1) / (safe * l1s)[:, None]]
    moments += [((rank**k)[..., None] * y).sum(1) / safe[:, None] for k in (1, 2, 3)]
    return torch.cat([torch.stack(moments, dim=1), y], dim=1)


def _resolve_ties_3d(
    lam: Tensor, vec: Tensor, cand: Tensor, thr: Tensor, tie12: Tensor, tie23: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """First two axes (N, 3) with tied eigenvector subspaces fixed by ``cand``; also ``reduced``."""
    u1, u2, u3 = vec.unbind(-1)
    l1 = lam[:, 0]
    only12, only23, both = tie12 & ~tie23, ~tie12 & tie23, tie12 & tie23
    # (1,2) tied: the plane is defined by u3; fix its first axis by an equivariant vector.
    b1, okb = _first_usable(cand, [u3], thr)
    b2 = _unit(torch.linalg.cross(u3, b1))
    # (2,3) tied: u1 is fine; fix the second axis in the plane orthogonal to it.
    c2, okc = _first_usable(cand, [u1], thr)
    # All tied (isotropic cloud): both axes from equivariant vectors.
    d1, okd1 = _first_usable(cand, [], thr)
    d1 = _where(okd1, d1, u1)
    d2, okd2 = _first_usable(cand, [d1], thr)
    d2 = _where(okd2, d2, _orthogonal_to(d1, vec))
    a1 = _where(only12 & okb, b1, _where(both, d1, u1))
    a2 = _where(only12 & okb, b2, _where(only23 & okc, c2, _where(both, d2, u2)))
    # Only a fallback on an axis that carries variance changes the canonical input.
    reduced = (only12 & ~okb) | (both & ~(okd1 & okd2))
    reduced |= only23 & ~okc & (lam[:, 1] > _FLAT_TOL * l1)
    return a1, a2, reduced


def _up_basis(
    xc: Tensor,
    valid: Tensor,
    up: tuple[Any, Any],
    y: Tensor,
    w: Tensor,
    safe: Tensor,
    l1s: Tensor,
    cov: Tensor,
    vec: Tensor,
    thr: Tensor,
    eps: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Basis (N, c, c) with the clip-mean up vector first (see :func:`frames`), reduced, tied.

    The up vector averages lower->upper over the (frame, person) slots where every joint it
    uses is present; a clip without one falls back to the principal axis and counts as reduced
    (its sign is then arbitrary). Near-equal spreads in the orthogonal plane are fixed by the
    equivariant candidate vectors, as for plain PCA frames.
    """
    c = xc.shape[1]
    used = torch.as_tensor((np.asarray(up[0]) != 0) | (np.asarray(up[1]) != 0), device=xc.device)
    ok = valid[:, :, used].all(dim=2)  # (N, T, M)
    pair = _axis(xc, (np.asarray(up[0]), np.asarray(up[1]))) * ok[:, None]
    u = pair.sum((2, 3)) / ok.sum((1, 2)).clamp_min(1)[:, None]
    has_up = u.norm(dim=-1) > thr
    a1 = _where(has_up, _unit(u), vec[..., 0])
    reduced = ~has_up
    if c == 2:
        return torch.stack([a1, _cross2(a1)], dim=-1), reduced, torch.zeros_like(reduced)
    proj = torch.eye(c, dtype=xc.dtype, device=xc.device) - a1[:, :, None] * a1[:, None, :]
    lam_h, vec_h = torch.linalg.eigh(proj @ cov @ proj)
    a2 = vec_h[..., -1]
    tie = (lam_h[:, -1] - lam_h[:, -2]) <= eps * l1s
    if bool(tie.any()):
        b2, okb = _first_usable(_candidates(y, w, safe, l1s), [a1], thr)
        a2 = _where(tie & okb, b2, a2)
        reduced = reduced | (tie & ~okb & (lam_h[:, -1] > _FLAT_TOL * l1s))
    a2 = _unit(a2 - (a2 * a1).sum(-1, keepdim=True) * a1)
    basis = torch.stack([a1, a2, torch.linalg.cross(a1, a2)], dim=-1)
    return basis, reduced, tie


def frames(
    x: Tensor,
    coords: int | None = None,
    *,
    reflections: bool = False,
    mode: str = "average",
    eps: float = DEFAULT_EPS,
    center: bool = True,
    up: tuple[Any, Any] | None = None,
) -> Frames:
    """Frame set of each clip of ``x`` (N, C, T, V, M): F = frame_count(c, reflections, mode, up).

    ``center=False`` keeps the origin (centre 0, PCA of the second moments about it): for
    translation-free streams (bones, motion) whose zero vector means something.
    ``up`` (a layout's ``up``: joint weights of the lower and the upper point) makes the first
    axis the clip's mean lower->upper vector (the body's up, sign included) and the second the
    principal axis of the points in the plane orthogonal to it, so every clip's canonical
    frame stands the body upright, whichever way its points spread.
    """
    if mode not in MODES:
        raise ConfigError(f"invariance_mode must be one of {list(MODES)}, got {mode!r}")
    c = _resolve_coords(x, coords)
    with torch.no_grad():
        xc = x[:, :c].detach().to(torch.float64)
        n = xc.shape[0]
        valid = (xc != 0).any(dim=1)  # (N, T, V, M)
        # Points in (t, m, v) order; ranks (in _candidates) count valid points only, so padded
        # frames or persons anywhere leave the frame unchanged.
        p = xc.permute(0, 2, 4, 3, 1).reshape(n, -1, c)
        w = valid.permute(0, 1, 3, 2).reshape(n, -1).to(torch.float64)
        safe = w.sum(1).clamp_min(1.0)
        centre = (w[..., None] * p).sum(1) / safe[:, None]
        if not center:
            centre = torch.zeros_like(centre)
        y = (p - centre[:, None]) * w[..., None]
        cov = torch.einsum("npi,npj->nij", y, y) / safe[:, None, None]
        lam, vec = torch.linalg.eigh(cov)
        lam, vec = lam.flip(-1).clamp_min(0.0), vec.flip(-1)
        l1 = lam[:, 0]
        msq = (w * (p * p).sum(-1)).sum(1) / safe
        point = l1 <= _POINT_TOL * msq  # also true for an empty clip (0 <= 0)
        l1s = torch.where(point, torch.ones_like(l1), l1)
        thr = eps * l1s.sqrt()

        tie12 = (lam[:, 0] - lam[:, 1]) <= eps * l1
        tie23 = (lam[:, 1] - lam[:, 2]) <= eps * l1 if c == 3 else torch.zeros_like(tie12)
        tied = (tie12 | tie23) & ~point
        reduced = torch.zeros(n, dtype=torch.bool, device=xc.device)
        u1, u2 = vec[..., 0], vec[..., 1]
        # The common case needs no tie handling: skip building the (N, P, c) candidates.
        cand = _candidates(y, w, safe, l1s) if bool(tied.any()) else None
        if up is not None:
            basis, reduced, tied = _up_basis(xc, valid, up, y, w, safe, l1s, cov, vec, thr, eps)
            tied = tied & ~point  # only ties in the plane orthogonal to up matter here
        elif c == 3:
            a1, a2 = u1, u2
            if cand is not None:
                a1, a2, reduced = _resolve_ties_3d(lam, vec, cand, thr, tie12, tie23)
            basis = torch.stack([a1, a2, torch.linalg.cross(a1, a2)], dim=-1)
        else:
            a1 = u1
            if cand is not None:
                d1, okd = _first_usable(cand, [], thr)
                a1 = _where(tie12 & okd, d1, u1)
                reduced = tie12 & ~okd
            basis = torch.stack([a1, _cross2(a1)], dim=-1)
        eye = torch.eye(c, dtype=torch.float64, device=xc.device).expand(n, c, c)
        basis = torch.where(point[:, None, None], eye, basis)
        reduced = reduced & ~point

        if mode == "canonical":
            signs, unsure = _canonical_signs(
                y, w, safe, l1s, basis, cand, thr, reflections, eps, fixed_first=up is not None
            )
            reduced |= unsure & ~point
            rotations = (basis * signs[:, None, :])[:, None]
        else:
            group = _sign_group(c, reflections, up is not None).to(xc.device)
            rotations = basis[:, None] * group[None, :, None, :]
    return Frames(centre, rotations, valid, lam, tied, point, reduced)


def _canonical_signs(
    y: Tensor,
    w: Tensor,
    safe: Tensor,
    l1s: Tensor,
    basis: Tensor,
    cand: Tensor | None,
    thr: Tensor,
    reflections: bool,
    eps: float,
    fixed_first: bool = False,
) -> tuple[Tensor, Tensor]:
    """One sign per axis (N, c): sign of the third moment along it, ties broken by ``cand``.

    Without reflections only the first c-1 signs are free; the last makes the determinant +1.
    ``fixed_first``: the first axis keeps its sign (+1). Also returns which clips needed the
    last-resort +1 on a free axis that carries variance.
    """
    c = basis.shape[-1]
    free = c if reflections else c - 1
    start = 1 if fixed_first else 0
    z = torch.einsum("npi,nij->npj", y, basis)  # projections on the axes
    skew = (w[..., None] * z**3).sum(1) / safe[:, None] / l1s[:, None] ** 1.5
    var = (w[..., None] * z**2).sum(1) / safe[:, None]
    by_skew = skew.abs() > eps
    signs = torch.where(by_skew, torch.sign(skew), 1.0)
    resolved = by_skew
    if not bool(by_skew[:, :free].all()):
        cand = _candidates(y, w, safe, l1s) if cand is None else cand
        along = torch.einsum("nki,nij->nkj", cand, basis)  # (N, K, c)
        usable = along.abs() > thr[:, None, None]
        first = usable.to(torch.int8).argmax(dim=1, keepdim=True)  # first usable per axis
        tiebreak = torch.sign(torch.gather(along, 1, first)[:, 0])
        resolved = by_skew | usable.any(dim=1)
        signs = torch.where(by_skew, signs, torch.where(resolved, tiebreak, 1.0))
    unsure = (~resolved & (var > _FLAT_TOL * l1s[:, None]))[:, start:free].any(dim=1)
    if fixed_first:
        signs = torch.cat([torch.ones_like(signs[:, :1]), signs[:, 1:]], dim=1)
    if not reflections:
        signs = torch.cat([signs[:, :free], signs[:, :free].prod(1, keepdim=True)], dim=1)
    return signs, unsure


def canonicalize(x: Tensor, fr: Frames) -> Tensor:
    """Inputs ``R^T (x - centre)`` for every frame: (N, F, C, T, V, M), missing joints stay zero.

    Gradients flow to ``x`` through this linear map; the frame itself is treated as a constant.
    """
    c = fr.centre.shape[1]
    y = x[:, :c].to(torch.float64) - fr.centre[:, :, None, None, None]
    y = y * fr.valid[:, None]
    z = torch.einsum("nfij,nitvm->nfjtvm", fr.rotations, y).to(x.dtype)
    num_frames = fr.rotations.shape[1]
    rest = x[:, None, c:].expand(-1, num_frames, -1, -1, -1, -1)
    return torch.cat([z, rest], dim=2)


class FrameAveraging(nn.Module):
    """Wrap a model on (N, C, T, V, M) so its output is invariant to rotating/translating the clip.

    ``mode="average"`` runs the model on all F frames of each clip in one batch of N*F and
    averages the outputs (exact invariance); ``mode="canonical"`` runs it once on a single
    deterministic frame (invariant except at measure-zero ties of the third moments).
    ``reflections=True`` adds mirror images to the invariance group; ``center=False`` drops the
    translation part (for bone and motion streams, which are translation-free).
    ``train_sample=True`` makes a training-mode forward (``mode="average"`` only) run each clip in
    just one of its frames, drawn uniformly from torch's global generator: an unbiased one-sample
    estimate of the average at the cost of the unwrapped model, while evaluation still averages
    over all frames and stays exactly invariant. ``box=True`` applies the per-axis box
    normalisation (:func:`protoskel.data.transforms.box_normalize`) to each canonical copy, where
    it no longer depends on the camera (in the camera's frame it would). After each forward,
    ``last_stats`` counts the clips that were tied / single points / of reduced invariance, and
    ``warning`` is a message when some clip had reduced invariance (else ``None``).
    """

    def __init__(
        self,
        model: nn.Module,
        mode: str = "average",
        reflections: bool = False,
        coords: int | None = None,
        eps: float = DEFAULT_EPS,
        center: bool = True,
        train_sample: bool = False,
        box: bool = False,
        up: tuple[Any, Any] | None = None,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ConfigError(f"invariance_mode must be one of {list(MODES)}, got {mode!r}")
        if coords not in (None, 2, 3):
            raise ConfigError(f"coords must be 2, 3 or None (= min(C, 3)), got {coords!r}")
        if not 0.0 < eps < 1.0:
            raise ConfigError(
                f"eps (relative eigenvalue gap tolerance) must be in (0, 1), got {eps}"
            )
        self.model = model
        self.mode = mode
        self.reflections = reflections
        self.coords = coords
        self.eps = eps
        self.center = center
        self.train_sample = train_sample
        self.box = box
        # Plain arrays, not buffers: the layout rebuilds them, so checkpoints stay unchanged.
        self.up = None if up is None else tuple(np.asarray(a, dtype=np.float64) for a in up)
        self.warning: str | None = None
        self.last_stats: dict[str, int] = {}

    def extra_repr(self) -> str:
        """Settings shown by print(module)."""
        return (
            f"mode={self.mode!r}, reflections={self.reflections}, coords={self.coords}, "
            f"center={self.center}, train_sample={self.train_sample}, box={self.box}, "
            f"axes={'up' if self.up is not None else 'pca'!r}"
        )

    def frames(self, x: Tensor) -> Frames:
        """Frame set of each clip of ``x`` with this wrapper's settings."""
        return frames(
            x,
            self.coords,
            reflections=self.reflections,
            mode=self.mode,
            eps=self.eps,
            center=self.center,
            up=self.up,
        )

    def canonicalize(self, x: Tensor) -> Tensor:
        """Canonicalised inputs (N, F, C, T, V, M) the wrapped model sees."""
        return self._inputs(x, self.frames(x))

    def _inputs(self, x: Tensor, fr: Frames) -> Tensor:
        """Canonical copies of ``x`` in the frames ``fr``, box-normalised when ``box``."""
        z = canonicalize(x, fr)
        if self.box:
            z = box_normalize(z.flatten(0, 1)).reshape(z.shape)
        return z

    def _run(self, x: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
        """Apply ``fn`` to all canonicalised inputs in one batch and average over frames."""
        fr = self.frames(x)
        self._record(fr)
        z = self._inputs(x, fr)
        n, f = z.shape[:2]
        if self.training and self.train_sample and f > 1:
            pick = torch.randint(f, (n,), device=z.device)
            return fn(z[torch.arange(n, device=z.device), pick])
        out = fn(z.reshape(n * f, *z.shape[2:]))
        return out.reshape(n, f, *out.shape[1:]).mean(dim=1)

    def forward(self, x: Tensor) -> Tensor:
        """Invariant output: mean over frames of ``model(R^T (x - c))``, shape as the model's."""
        return self._run(x, self.model)

    def features(self, x: Tensor) -> Tensor:
        """Frame-averaged ``model.features`` (for classifiers that expose backbone features)."""
        feats = getattr(self.model, "features", None)
        if feats is None:
            raise AttributeError(f"{type(self.model).__name__} has no features() method")
        return self._run(x, feats)

    def _record(self, fr: Frames) -> None:
        """Keep counts of degenerate clips of the last batch and a warning if invariance dropped."""
        self.last_stats = {
            "clips": int(fr.centre.shape[0]),
            "tied": int(fr.tied.sum()),
            "point": int(fr.point.sum()),
            "reduced": int(fr.reduced.sum()),
        }
        k = self.last_stats["reduced"]
        self.warning = (
            None
            if k == 0
            else f"{k} of {self.last_stats['clips']} clips are nearly collinear point clouds "
            "(or, canonical mode with reflections, nearly planar) whose frame is not fully "
            "defined; their outputs are deterministic but only approximately invariant "
            "(error up to about eps times the clip size)"
        )


def wrap_invariance(
    model: nn.Module,
    invariance: str | None,
    mode: str = "average",
    *,
    reflections: bool = False,
    coords: int | None = None,
    center: bool = True,
    train: str = "all",
    box: bool = False,
    up: tuple[Any, Any] | None = None,
) -> nn.Module:
    """Apply the config keys ``invariance``, ``invariance_mode``, ``invariance_train`` (and axes).

    ``invariance`` is none or frame_averaging; ``train`` is ``"all"`` (every frame in training
    too) or ``"sample"`` (one random frame per clip while training, see :class:`FrameAveraging`).

    Pass ``center=False`` for translation-free streams (bone, joint_motion, bone_motion) and
    ``box=True`` to box-normalise in the canonical frame (see :class:`FrameAveraging`); ``up``
    (the layout's ``up``, for ``invariance_axes: up``) stands each canonical frame upright.
    """
    if invariance in (None, "", "none"):
        return model
    if invariance != "frame_averaging":
        raise ConfigError(
            f"config key 'invariance': unknown value {invariance!r}; use 'none' or "
            "'frame_averaging'"
        )
    if mode not in MODES:
        raise ConfigError(
            f"config key 'invariance_mode': unknown value {mode!r}; use one of {list(MODES)}"
        )
    if train not in ("all", "sample"):
        raise ConfigError(
            f"config key 'invariance_train': unknown value {train!r}; use 'all' or 'sample'"
        )
    return FrameAveraging(
        model,
        mode=mode,
        reflections=reflections,
        coords=coords,
        center=center,
        train_sample=train == "sample",
        box=box,
        up=up,
    )


def random_rotation(
    n: int,
    dims: int = 3,
    generator: torch.Generator | None = None,
    *,
    reflections: bool = False,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Uniformly random rotations (n, dims, dims); with ``reflections`` half are improper."""
    a = torch.randn(n, dims, dims, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    # Fixing the signs of R's diagonal makes Q Haar-distributed.
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]
    det = torch.linalg.det(q)
    if reflections:
        flip = torch.rand(n, generator=generator, dtype=torch.float64) < 0.5
        det = torch.where(flip, -det, det)
    q[:, :, 0] = q[:, :, 0] * det[:, None]
    return q.to(dtype)


def rotate(x: Tensor, rotation: Tensor, translation: Tensor | None = None) -> Tensor:
    """Apply ``R x + t`` to the first dims channels of x (N, C, T, V, M); missing joints stay zero.

    ``rotation`` is (dims, dims) or (N, dims, dims); ``translation`` is (dims,) or (N, dims).
    """
    c = rotation.shape[-1]
    rot = rotation.to(x.dtype).expand(x.shape[0], c, c)
    y = torch.einsum("nij,njtvm->nitvm", rot, x[:, :c])
    if translation is not None:
        valid = (x[:, :c] != 0).any(dim=1, keepdim=True)
        t = translation.to(x.dtype).expand(x.shape[0], c)
        y = y + t[:, :, None, None, None] * valid
    return torch.cat([y, x[:, c:]], dim=1)
