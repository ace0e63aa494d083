"""Export a checkpoint to ONNX or TorchScript for deployment without protoskel.

The exported graph takes the *prepared* model input ``x`` float32 ``(N, C, T, V, M)`` (clip
sampled to ``num_frames``, normalised and turned into the checkpoint's stream, exactly what
:meth:`protoskel.inference.Predictor.prepare` returns) and returns ``logits`` float32 ``(N, K)``.
The batch axis ``N`` is dynamic, and so is the person axis ``M`` unless the model was built for a
fixed person count; ``T`` and ``V`` are fixed (``num_frames`` and the layout's joint count).

Frame-averaged models (:class:`~protoskel.models.invariance.FrameAveraging`) export *whole*: the
wrapper computes each clip's frames with ``torch.linalg.eigh`` and Python branches, neither of
which ONNX or tracing can carry, so for export it is replaced by
:class:`TraceableFrameAveraging`, the same algorithm written with traceable tensor operations
(a fixed number of cyclic Jacobi sweeps for the symmetric 3x3/2x2 eigenproblem, and the
degenerate-clip handling always computed and selected with ``where`` instead of skipped). In
``average`` mode the frame set does not depend on the eigenvectors' signs, and in ``canonical``
mode the third-moment signs absorb them, so the exported model gives the PyTorch model's output
up to float rounding, invariance included, with nothing to compute outside the graph.

ONNX files carry the facts a user needs in their metadata (``protoskel.*`` keys, see
:func:`export_metadata`); TorchScript and ``torch.export`` files carry the same dictionary as
the extra file ``protoskel.json``. Read any of them back with :func:`read_export_metadata`.

ONNX is the recommended format (onnxruntime, no PyTorch needed). ``pt2`` is PyTorch's own
``torch.export`` program (``torch.export.load(path).module()``), the successor of TorchScript,
with the batch axis (and the person axis, unless the model fixes it) dynamic. TorchScript
(``torch.jit``) is deprecated upstream in favour of ``torch.export`` and warns on save/load; it
is offered for libtorch (C++) deployments, which still load it. Prototype models export too,
but their ProtoPNet similarity ``log((d + 1) / (d + eps))`` amplifies float32 rounding near
``d = 0``, so onnxruntime's logits can differ from PyTorch's by ~1e-5 relative (see
``tests/test_export.py``).
"""

from __future__ import annotations

import copy
import io
import itertools
import json
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from protoskel.data.transforms import box_normalize, stream_channels
from protoskel.errors import CheckpointError, ConfigError
from protoskel.models.invariance import (
    _FLAT_TOL,
    _POINT_TOL,
    _TINY,
    FrameAveraging,
    Frames,
    canonicalize,
)

__all__ = [
    "FORMATS",
    "TraceableFrameAveraging",
    "example_input",
    "export_checkpoint",
    "export_metadata",
    "exportable_model",
    "read_export_metadata",
    "symmetric_eig",
    "traceable_frames",
]

FORMATS = ("onnx", "pt2", "torchscript")
_FORMAT_SUFFIX = {"onnx": ".onnx", "pt2": ".pt2", "torchscript": ".pt"}
_SUFFIX_FORMAT = {".onnx": "onnx", ".pt2": "pt2", ".pt": "torchscript", ".ts": "torchscript"}
INPUT_NAME, OUTPUT_NAME = "x", "logits"
TORCHSCRIPT_META = "protoskel.json"
DEFAULT_OPSET = 17
# Cyclic Jacobi on a symmetric 3x3 converges quadratically: 4 sweeps reached float64 round-off
# on 20000 random and 20000 nearly tied/singular matrices; 5 leaves a margin.
JACOBI_SWEEPS = 5


# ----------------------------------------------------------------------------- eigenproblem
def symmetric_eig(a: Tensor, sweeps: int = JACOBI_SWEEPS) -> tuple[Tensor, Tensor]:
    """Eigenvalues (N, c) descending and eigenvectors (N, c, c) as columns of symmetric ``a``.

    Cyclic Jacobi rotations with a fixed number of sweeps: only matmuls and elementwise ops, so
    it traces and exports where ``torch.linalg.eigh`` cannot. Use float64 for eigh's accuracy.
    """
    n, c = a.shape[0], a.shape[-1]
    eye = torch.eye(c, dtype=a.dtype, device=a.device)
    v = eye.expand(n, c, c)
    for _ in range(sweeps if c > 2 else 1):  # one rotation diagonalises a 2x2 exactly
        for p, q in itertools.combinations(range(c), 2):
            app, aqq, apq = a[:, p, p], a[:, q, q], a[:, p, q]
            off = apq == 0
            theta = (aqq - app) / (2.0 * torch.where(off, 1.0, apq))
            # The smaller root of t^2 + 2 t theta - 1 = 0 (Numerical Recipes' stable form).
            t = torch.where(theta >= 0, 1.0, -1.0) / (theta.abs() + torch.sqrt(theta * theta + 1.0))
            t = torch.where(off, 0.0, t)
            cos = 1.0 / torch.sqrt(t * t + 1.0)
            sin = t * cos
            # Constant patterns (built from Python lists, so a trace keeps them as constants).
            diag = [[float(i == j and i in (p, q)) for j in range(c)] for i in range(c)]
            skew = [[float((i, j) == (p, q)) - float((i, j) == (q, p)) for j in range(c)]
                    for i in range(c)]  # fmt: skip
            e_diag = torch.tensor(diag, dtype=a.dtype, device=a.device)
            e_skew = torch.tensor(skew, dtype=a.dtype, device=a.device)
            rot = eye + (cos - 1.0)[:, None, None] * e_diag + sin[:, None, None] * e_skew
            a = rot.transpose(1, 2) @ a @ rot
            v = v @ rot
    # (a * I).sum rather than torch.diagonal: the ONNX exporter turns diagonal into an If node
    # whose branch types disagree in float64.
    lam = (a * eye).sum(-1)
    lam, order = torch.sort(lam, dim=-1, descending=True)
    vec = torch.gather(v, 2, order[:, None, :].expand(n, c, c))
    return lam, vec


# --------------------------------------------------------------- traceable frame averaging
def _norm(v: Tensor) -> Tensor:
    return torch.sqrt((v * v).sum(-1))


def _unit(v: Tensor) -> Tensor:
    return v / _norm(v)[..., None].clamp_min(_TINY)


def _where(mask: Tensor, a: Tensor, b: Tensor) -> Tensor:
    return torch.where(mask[:, None], a, b)


def _cross(a: Tensor, b: Tensor) -> Tensor:
    a0, a1, a2 = a.unbind(-1)
    b0, b1, b2 = b.unbind(-1)
    return torch.stack([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], dim=-1)


def _first_index(mask: Tensor) -> Tensor:
    """Index of the first True along dim 1 of a bool (N, K) mask (0 when none is)."""
    return mask.to(torch.float64).argmax(dim=1)


def _take(v: Tensor, idx: Tensor) -> Tensor:
    """Rows ``v[n, idx[n]]`` of (N, K, c) as (N, c)."""
    return torch.gather(v, 1, idx[:, None, None].expand(-1, 1, v.shape[-1]))[:, 0]


def _first_usable(cands: Tensor, remove: list[Tensor], thresh: Tensor) -> tuple[Tensor, Tensor]:
    proj = cands
    for a in remove:
        proj = proj - (proj * a[:, None, :]).sum(-1, keepdim=True) * a[:, None, :]
    usable = _norm(proj) > thresh[:, None]
    return _unit(_take(proj, _first_index(usable))), usable.any(dim=1)


def _orthogonal_to(a: Tensor, basis: Tensor) -> Tensor:
    cols = basis.transpose(1, 2)
    proj = cols - (cols * a[:, None, :]).sum(-1, keepdim=True) * a[:, None, :]
    return _unit(_take(proj, _norm(proj).argmax(dim=1)))


def _candidates(y: Tensor, w: Tensor, safe: Tensor, l1s: Tensor) -> Tensor:
    rank = torch.cumsum(w, 1) * w / safe[:, None]
    moments = [(w * (y * y).sum(-1))[..., None].mul(y).sum(1) / (safe * l1s)[:, None]]
    moments += [((rank**k)[..., None] * y).sum(1) / safe[:, None] for k in (1, 2, 3)]
    return torch.cat([torch.stack(moments, dim=1), y], dim=1)


def traceable_frames(
    x: Tensor,
    coords: int,
    *,
    reflections: bool = False,
    mode: str = "average",
    eps: float = 1e-3,
    center: bool = True,
    up: tuple[Any, Any] | None = None,
) -> Frames:
    """:func:`protoskel.models.invariance.frames` with traceable operations only (same result).

    Mirrors that function step by step; the tie and sign fallbacks are always computed and
    selected per clip, so a traced graph handles degenerate clips as eager PyTorch does.
    """
    c = coords
    xc = x[:, :c].to(torch.float64)
    n = xc.shape[0]
    valid = (xc != 0).any(dim=1)
    p = xc.permute(0, 2, 4, 3, 1).reshape(n, -1, c)
    w = valid.permute(0, 1, 3, 2).reshape(n, -1).to(torch.float64)
    safe = w.sum(1).clamp_min(1.0)
    centre = (w[..., None] * p).sum(1) / safe[:, None]
    if not center:
        centre = torch.zeros_like(centre)
    y = (p - centre[:, None]) * w[..., None]
    cov = (y.transpose(1, 2) @ y) / safe[:, None, None]
    lam, vec = symmetric_eig(cov)
    lam = lam.clamp_min(0.0)
    l1 = lam[:, 0]
    msq = (w * (p * p).sum(-1)).sum(1) / safe
    point = l1 <= _POINT_TOL * msq
    l1s = torch.where(point, torch.ones_like(l1), l1)
    thr = eps * l1s.sqrt()
    tie12 = (lam[:, 0] - lam[:, 1]) <= eps * l1
    tie23 = (lam[:, 1] - lam[:, 2]) <= eps * l1 if c == 3 else torch.zeros_like(tie12)
    tied = (tie12 | tie23) & ~point
    u1, u2 = vec[..., 0], vec[..., 1]
    cand = _candidates(y, w, safe, l1s)
    if up is not None:
        basis, reduced, tied = _up_basis(xc, valid, up, y, cov, vec, cand, thr, eps, l1s)
        tied = tied & ~point
    elif c == 3:
        u3 = vec[..., 2]
        only12, only23, both = tie12 & ~tie23, ~tie12 & tie23, tie12 & tie23
        b1, okb = _first_usable(cand, [u3], thr)
        b2 = _unit(_cross(u3, b1))
        c2, okc = _first_usable(cand, [u1], thr)
        d1, okd1 = _first_usable(cand, [], thr)
        d1 = _where(okd1, d1, u1)
        d2, okd2 = _first_usable(cand, [d1], thr)
        d2 = _where(okd2, d2, _orthogonal_to(d1, vec))
        a1 = _where(only12 & okb, b1, _where(both, d1, u1))
        a2 = _where(only12 & okb, b2, _where(only23 & okc, c2, _where(both, d2, u2)))
        reduced = (only12 & ~okb) | (both & ~(okd1 & okd2))
        reduced = reduced | (only23 & ~okc & (lam[:, 1] > _FLAT_TOL * l1))
        basis = torch.stack([a1, a2, _cross(a1, a2)], dim=-1)
    else:
        d1, okd = _first_usable(cand, [], thr)
        a1 = _where(tie12 & okd, d1, u1)
        reduced = tie12 & ~okd
        basis = torch.stack([a1, torch.stack([-a1[:, 1], a1[:, 0]], dim=-1)], dim=-1)
    eye = torch.eye(c, dtype=torch.float64, device=x.device).expand(n, c, c)
    basis = torch.where(point[:, None, None], eye, basis)
    reduced = reduced & ~point
    if mode == "canonical":
        signs, unsure = _canonical_signs(
            y, w, safe, l1s, basis, cand, thr, reflections, eps, fixed_first=up is not None
        )
        reduced = reduced | (unsure & ~point)
        rotations = (basis * signs[:, None, :])[:, None]
    else:
        pats = [s for s in itertools.product((1.0, -1.0), repeat=c) if reflections or _prod(s) > 0]
        pats = [s for s in pats if up is None or s[0] > 0]
        group = torch.tensor(pats, dtype=torch.float64, device=x.device)
        rotations = basis[:, None] * group[None, :, None, :]
    return Frames(centre, rotations, valid, lam, tied, point, reduced)


def _prod(values: tuple[float, ...]) -> float:
    out = 1.0
    for v in values:
        out *= v
    return out


def _canonical_signs(
    y: Tensor,
    w: Tensor,
    safe: Tensor,
    l1s: Tensor,
    basis: Tensor,
    cand: Tensor,
    thr: Tensor,
    reflections: bool,
    eps: float,
    fixed_first: bool = False,
) -> tuple[Tensor, Tensor]:
    """One sign per axis from the third moments, ties broken by the first usable candidate."""
    c = basis.shape[-1]
    free = c if reflections else c - 1
    start = 1 if fixed_first else 0
    z = y @ basis
    skew = (w[..., None] * z**3).sum(1) / safe[:, None] / l1s[:, None] ** 1.5
    var = (w[..., None] * z**2).sum(1) / safe[:, None]
    by_skew = skew.abs() > eps
    along = cand @ basis  # (N, K, c)
    usable = along.abs() > thr[:, None, None]
    first = usable.to(torch.float64).argmax(dim=1, keepdim=True)
    tiebreak = torch.sign(torch.gather(along, 1, first)[:, 0])
    resolved = by_skew | usable.any(dim=1)
    one = torch.ones_like(skew)
    signs = torch.where(by_skew, torch.sign(skew), torch.where(resolved, tiebreak, one))
    unsure = (~resolved & (var > _FLAT_TOL * l1s[:, None]))[:, start:free].any(dim=1)
    if fixed_first:
        signs = torch.cat([torch.ones_like(signs[:, :1]), signs[:, 1:]], dim=1)
    if not reflections:
        signs = torch.cat([signs[:, :free], signs[:, :free].prod(1, keepdim=True)], dim=1)
    return signs, unsure


def _up_basis(
    xc: Tensor,
    valid: Tensor,
    up: tuple[Any, Any],
    y: Tensor,
    cov: Tensor,
    vec: Tensor,
    cand: Tensor,
    thr: Tensor,
    eps: float,
    l1s: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """The ``up``-first basis of :func:`protoskel.models.invariance.frames`, traceable."""
    c = xc.shape[1]
    lo, hi = ([float(v) for v in a] for a in up)  # Python lists: constants in a trace
    diff = torch.tensor([b - a for a, b in zip(lo, hi, strict=True)], dtype=xc.dtype).to(xc)
    unused = torch.tensor([a == 0 and b == 0 for a, b in zip(lo, hi, strict=True)])
    unused = unused.to(xc.device)
    ok = (valid | unused[None, None, :, None]).all(dim=2)  # (N, T, M)
    okf = ok.to(xc.dtype)
    u = torch.einsum("nctvm,v,ntm->nc", xc, diff, okf) / okf.sum((1, 2)).clamp_min(1.0)[:, None]
    has_up = _norm(u) > thr
    a1 = _where(has_up, _unit(u), vec[..., 0])
    reduced = ~has_up
    if c == 2:
        a2 = torch.stack([-a1[:, 1], a1[:, 0]], dim=-1)
        return torch.stack([a1, a2], dim=-1), reduced, torch.zeros_like(reduced)
    eye = torch.eye(c, dtype=xc.dtype, device=xc.device)
    proj = eye - a1[:, :, None] * a1[:, None, :]
    lam_h, vec_h = symmetric_eig(proj @ cov @ proj)
    tie = (lam_h[:, 0] - lam_h[:, 1]) <= eps * l1s
    b2, okb = _first_usable(cand, [a1], thr)
    a2 = _where(tie & okb, b2, vec_h[..., 0])
    reduced = reduced | (tie & ~okb & (lam_h[:, 0] > _FLAT_TOL * l1s))
    a2 = _unit(a2 - (a2 * a1).sum(-1, keepdim=True) * a1)
    return torch.stack([a1, a2, _cross(a1, a2)], dim=-1), reduced, tie


class TraceableFrameAveraging(nn.Module):
    """Export twin of a :class:`FrameAveraging` wrapper: same output, traceable operations."""

    def __init__(self, fa: FrameAveraging, in_channels: int) -> None:
        super().__init__()
        self.model = fa.model
        self.mode = fa.mode
        self.reflections = fa.reflections
        self.coords = int(fa.coords if fa.coords is not None else min(in_channels, 3))
        self.eps = float(fa.eps)
        self.center = bool(fa.center)
        self.box = bool(getattr(fa, "box", False))
        self.up = getattr(fa, "up", None)

    def forward(self, x: Tensor) -> Tensor:
        """Mean over the clip's frames of ``model(R^T (x - c))``: logits (N, K)."""
        fr = traceable_frames(
            x,
            self.coords,
            reflections=self.reflections,
            mode=self.mode,
            eps=self.eps,
            center=self.center,
            up=self.up,
        )
        z = canonicalize(x, fr)  # (N, F, C, T, V, M)
        f = z.shape[1]
        z = z.flatten(0, 1)
        if self.box:
            z = box_normalize(z)
        out = self.model(z)
        return out.reshape(-1, f, out.shape[-1]).mean(dim=1)


# ------------------------------------------------------------------------------- model prep
def _without_extra_state(module: nn.Module) -> None:
    """Drop a module's ``get_extra_state`` (plain Python data) so tracers see tensors only."""
    cls = type(module)
    if getattr(cls, "get_extra_state", nn.Module.get_extra_state) is nn.Module.get_extra_state:
        return
    # The legacy ONNX exporter calls .detach() on every state_dict entry; provenance records
    # (prototype heads) are dicts, and a deployed graph does not need them.
    module.__class__ = type(cls.__name__, (cls,), {"get_extra_state": nn.Module.get_extra_state})


def exportable_model(model: nn.Module, in_channels: int) -> nn.Module:
    """A copy of ``model`` (eval mode) that traces: frame averaging made traceable, no extras."""
    m = copy.deepcopy(model).eval()
    for mod in list(m.modules()):
        _without_extra_state(mod)
    if isinstance(m, FrameAveraging):
        m = TraceableFrameAveraging(m, in_channels)
    elif any(isinstance(mod, FrameAveraging) for mod in m.modules()):
        raise ConfigError(
            "export: frame averaging nested inside another module is not supported; only a "
            "model whose outermost module is FrameAveraging (as the trainer builds it) exports"
        )
    return m.eval()


def _fixed_persons(model: nn.Module) -> int | None:
    """Person count a model was built for (DataNorm ``num_persons``), or None when any works."""
    for mod in model.modules():
        m = getattr(mod, "num_persons", None)
        if isinstance(m, int) and m > 0:
            return m
    return None


def export_metadata(ck: dict[str, Any]) -> dict[str, str]:
    """What a deployed model needs to be fed and read (all values are strings, ONNX-style)."""
    from protoskel.training.checkpoint import checkpoint_layout
    from protoskel.training.config import config_from_dict

    cfg = config_from_dict(ck["config"])
    lay = checkpoint_layout(ck)
    inv = cfg.model.invariance
    meta = {
        "classes": json.dumps(list(ck["classes"])),
        "layout": lay.name,
        "layout_def": json.dumps(lay.to_dict()),
        "stream": cfg.data.stream,
        "num_frames": str(cfg.data.num_frames),
        "in_channels": str(int(ck["in_channels"])),
        # C of the input: the coordinates times the streams stacked (e.g. 6 for joint+bone).
        "input_channels": str(
            stream_channels(cfg.data.stream, int(ck["in_channels"]), lay.num_joints)
        ),
        "input": f"{INPUT_NAME}: float32 (N, C, T, V, M) prepared clip (N, M dynamic)",
        "output": f"{OUTPUT_NAME}: float32 (N, K) class logits (softmax for probabilities)",
        # What the caller applies before the graph (box moves inside with frame averaging).
        "normalize": json.dumps(cfg.loader_normalize() or {}),
        "test_clips": str(cfg.data.test_clips),
        # The caller averages with the left-right mirrored clip (protoskel.data.loader mirror).
        "test_flip": str(bool(cfg.data.test_flip)).lower(),
        # ... and over these rotations of it, applied after centring (loader ``rotations``).
        "test_rotate": json.dumps(cfg.data.test_rotate),
        "test_time": (
            "outside the graph: the recipe's figures average the softmax over test_clips x "
            "rotations x (2 with test_flip) prepared views of each clip, one row each "
            "(protoskel's Predictor.prepare(seq, mirror=test_flip, rotate=True) builds them)"
        ),
        "backbone": cfg.model.backbone,
        "head": cfg.model.head,
        "invariance": inv or "none",
        "invariance_mode": cfg.model.invariance_mode if inv else "",
        "frame_averaging": "inside the graph (traceable Jacobi frames)" if inv else "none",
        "checkpoint": Path(str(ck.get("path", ""))).name,
        "epoch": str(ck.get("epoch", "")),
    }
    from protoskel import __version__

    meta["protoskel_version"] = str(__version__)
    return {f"protoskel.{k}": v for k, v in meta.items()}


# Metadata values stored as JSON text (the rest are plain strings).
_JSON_META = ("classes", "layout_def", "normalize", "test_rotate")


def read_export_metadata(path: str | Path) -> dict[str, Any]:
    """The ``protoskel.*`` metadata of an exported ONNX, pt2 or TorchScript file (JSON decoded)."""
    p = Path(path)
    if p.suffix.lower() == ".onnx":
        import onnx

        raw = {e.key: e.value for e in onnx.load(str(p), load_external_data=False).metadata_props}
    else:
        files = {TORCHSCRIPT_META: ""}
        if p.suffix.lower() == ".pt2":
            torch.export.load(str(p), extra_files=files)
        else:
            torch.jit.load(str(p), map_location="cpu", _extra_files=files)
        raw = json.loads(files[TORCHSCRIPT_META] or "{}")
    out: dict[str, Any] = {}
    for k, v in raw.items():
        if not k.startswith("protoskel."):
            continue
        key = k[len("protoskel.") :]
        out[key] = json.loads(v) if key in _JSON_META else v
    return out


# ----------------------------------------------------------------------------------- export
def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Let ``write`` fill a temp file next to ``path``, then rename it into place."""
    from protoskel.training.checkpoint import plain_permissions

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Keep the real suffix last: torch.export.save warns about a .pt2 file not ending in .pt2.
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.tmp.", suffix=path.suffix, dir=path.parent)
    except OSError as e:
        raise ConfigError(f"{path}: cannot write the export there ({e.strerror})") from None
    os.close(fd)
    try:
        write(Path(tmp))
        plain_permissions(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def example_input(ck: dict[str, Any], batch: int = 2, persons: int = 1, seed: int = 0) -> Tensor:
    """A random prepared-shape input (N, C, T, V, M) for a checkpoint (tracing, smoke tests)."""
    from protoskel.training.checkpoint import checkpoint_layout

    g = torch.Generator().manual_seed(seed)
    v = checkpoint_layout(ck).num_joints
    c = stream_channels(ck["config"]["data"]["stream"], int(ck["in_channels"]), v)
    t = int(ck["config"]["data"]["num_frames"])
    return torch.randn(batch, c, t, v, persons, generator=g)


def _trace_quietly(fn: Callable[[], Any]) -> Any:
    # Tracing warns where shapes become constants (window positions, the time axis): these are
    # fixed by the recipe (num_frames), which is why T is a static axis of the export.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        return fn()


def export_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    fmt: str = "onnx",
    *,
    opset: int = DEFAULT_OPSET,
) -> dict[str, Any]:
    """Export a checkpoint (path or shipped name) atomically to ``out`` as ONNX, pt2 or TorchScript.

    Returns a summary: ``out``, ``format``, ``input_shape`` (with ``N``/``M`` for the dynamic
    axes), ``classes``, ``metadata`` and ``bytes``.
    """
    from protoskel.training.checkpoint import build_from_checkpoint, load_checkpoint

    if fmt not in FORMATS:
        raise ConfigError(f"export --format {fmt!r}: must be one of {', '.join(FORMATS)}")
    other = _SUFFIX_FORMAT.get(Path(out).suffix.lower())
    if other is not None and other != fmt:
        # A file named for another format would be read as that format (or replace one).
        raise ConfigError(
            f"{out}: the name says {other} but --format is {fmt}; name it "
            f"{Path(out).with_suffix(_FORMAT_SUFFIX[fmt]).name} or pass --format {other}"
        )
    ck = load_checkpoint(checkpoint)
    model = build_from_checkpoint(ck)
    in_channels = int(ck["in_channels"])
    net = exportable_model(model, in_channels)
    persons = _fixed_persons(net)
    x = example_input(ck, batch=2, persons=persons or 1)
    meta = export_metadata(ck)
    path = Path(out).expanduser()
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder; --out must be a file path (e.g. model.{fmt})")

    if fmt == "onnx":
        dynamic = {0: "N"} if persons else {0: "N", 4: "M"}

        def write(tmp: Path) -> None:
            import onnx

            buf = io.BytesIO()
            with torch.no_grad():
                _trace_quietly(
                    lambda: torch.onnx.export(
                        net,
                        (x,),
                        buf,
                        dynamo=False,
                        input_names=[INPUT_NAME],
                        output_names=[OUTPUT_NAME],
                        dynamic_axes={INPUT_NAME: dynamic, OUTPUT_NAME: {0: "N"}},
                        opset_version=opset,
                    )
                )
            proto = onnx.load_from_string(buf.getvalue())
            for k, v in meta.items():
                entry = proto.metadata_props.add()
                entry.key, entry.value = k, v
            proto.doc_string = "protoskel action classifier: x (N, C, T, V, M) -> logits (N, K)"
            onnx.checker.check_model(proto)
            tmp.write_bytes(proto.SerializeToString())

    elif fmt == "pt2":

        def write(tmp: Path) -> None:
            dims = {0: torch.export.Dim("N", min=1, max=65536)}
            example = x
            if not persons:
                dims[4] = torch.export.Dim("M", min=1, max=64)
                # torch.export specialises an axis whose example size is 1: show it two persons.
                example = example_input(ck, batch=2, persons=2)
            with torch.no_grad():
                program = torch.export.export(net, (example,), dynamic_shapes=(dims,))
            torch.export.save(program, str(tmp), extra_files={TORCHSCRIPT_META: json.dumps(meta)})

    else:

        def write(tmp: Path) -> None:
            with torch.no_grad():
                # Not frozen: freezing folds batch norms into convolutions, which changes the
                # float rounding (visible in prototype similarities, see test_export.py).
                traced = _trace_quietly(lambda: torch.jit.trace(net, (x,), check_trace=False))
            torch.jit.save(traced, str(tmp), _extra_files={TORCHSCRIPT_META: json.dumps(meta)})

    try:
        _atomic_write(path, write)
    except ConfigError:
        raise
    except Exception as e:
        raise CheckpointError(
            f"{ck['path']}: export to {fmt} failed ({type(e).__name__}: {str(e)[:300]})"
        ) from None
    shape = ["N", int(x.shape[1]), int(x.shape[2]), int(x.shape[3]), persons or "M"]
    return {
        "out": str(path),
        "format": fmt,
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
        "input_shape": shape,
        "classes": list(ck["classes"]),
        "metadata": {
            k[len("protoskel.") :]: v for k, v in meta.items() if k != "protoskel.layout_def"
        },
        "bytes": path.stat().st_size,
    }
