"""PYSKL annotation pickles -> SkeletonSequences, read with a restricted unpickler.

A PYSKL file is a pickle of ``{"split": {name: [frame_dir, ...]}, "annotations": [ann, ...]}``
(or a bare list of annotations), where each ``ann`` is a dict with ``frame_dir`` (str),
``label`` (int), ``keypoint`` (M, T, V, C) floats, optional ``keypoint_score`` (M, T, V),
``total_frames`` and ``img_shape``.

Pickles can run arbitrary code when loaded, so the unpickler here resolves only the globals
numpy arrays and scalars need plus plain Python containers; any other global (``os.system``, a
custom class, ...) is refused before anything is called. This blocks code execution; it does
not bound the memory a hostile file may ask for.
"""

from __future__ import annotations

import collections
import importlib
import io
import pickle
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from protoskel.data.readers.ntu import parse_ntu_name
from protoskel.data.sequence import SkeletonSequence
from protoskel.errors import DataFormatError
from protoskel.layouts import Layout, get_layout, list_layouts

__all__ = ["PYSKL_LAYOUTS", "RestrictedUnpickler", "load_restricted_pickle", "read_pyskl"]

# The joint counts PYSKL's own annotation files use, and the layout each one means.
PYSKL_LAYOUTS = {17: "coco-17", 18: "openpose-18", 25: "ntu-25"}


def _numpy_attr(modules: tuple[str, ...], name: str) -> Any:
    """A numpy internal that moved between numpy 1 (``numpy.core``) and 2 (``numpy._core``)."""
    for mod in modules:
        try:
            return getattr(importlib.import_module(mod), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"numpy has no {name} in {modules}")


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` restricted to what protocol-2 pickles use for raw bytes."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refused _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


@cache
def _allowed_globals() -> dict[tuple[str, str], Any]:
    core = ("numpy._core.multiarray", "numpy.core.multiarray")
    numeric = ("numpy._core.numeric", "numpy.core.numeric")
    reconstruct = _numpy_attr(core, "_reconstruct")
    scalar = _numpy_attr(core, "scalar")
    frombuffer = _numpy_attr(numeric, "_frombuffer")
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
        ("collections", "OrderedDict"): collections.OrderedDict,
    }
    for mod in ("numpy._core.multiarray", "numpy.core.multiarray"):
        allowed[(mod, "_reconstruct")] = reconstruct
        allowed[(mod, "scalar")] = scalar
    for mod in ("numpy._core.numeric", "numpy.core.numeric"):
        allowed[(mod, "_frombuffer")] = frombuffer
    safe_builtins = (dict, list, set, frozenset, tuple, str, bytes, int, float, complex, bool)
    for obj in safe_builtins:
        allowed[("builtins", obj.__name__)] = obj
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that only resolves numpy array/scalar globals and builtin containers."""

    def __init__(self, file: io.BufferedIOBase, path: Path) -> None:
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        """Resolve a global only if it is on the allow-list; otherwise refuse the whole file."""
        if module == "__builtin__":  # protocol <= 2 pickles use the Python 2 name
            module = "builtins"
        obj = _allowed_globals().get((module, name))
        if obj is None:
            raise DataFormatError(
                self.path,
                f"global {module}.{name}",
                f"the pickle references the forbidden global {module}.{name}; refused to load "
                "the file, and the global was never called (a data pickle may only hold numpy "
                "arrays and plain Python containers)",
            )
        return obj

    def persistent_load(self, pid: Any) -> Any:
        """Persistent ids would hand objects to outside code; refuse them."""
        raise DataFormatError(self.path, "persistent id", "the pickle uses persistent ids; refused")


def load_restricted_pickle(path: str | Path) -> Any:
    """Unpickle a data file with :class:`RestrictedUnpickler`; any failure is a DataFormatError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataFormatError(path, None, "no such file") from None
    except OSError as e:
        raise DataFormatError(path, None, f"cannot read the file ({e.strerror})") from None
    try:
        # From memory, so a corrupt length field cannot make the reader allocate a huge buffer.
        return RestrictedUnpickler(io.BytesIO(data), path).load()
    except DataFormatError:
        raise
    except RecursionError:
        raise DataFormatError(path, None, "the pickle is nested too deeply") from None
    except Exception as e:
        # Corrupt pickles surface as many exception types; all mean the same to the caller.
        raise DataFormatError(
            path, None, f"not a readable pickle ({type(e).__name__}: {e})"
        ) from None


def _infer_layout(num_joints: int, path: Path, where: str) -> Layout:
    if num_joints in PYSKL_LAYOUTS:
        return get_layout(PYSKL_LAYOUTS[num_joints])
    same = [n for n in list_layouts() if get_layout(n).num_joints == num_joints]
    hint = f" (built-in layouts with {num_joints} joints: {', '.join(same)})" if same else ""
    raise DataFormatError(
        path,
        where,
        f"cannot tell the layout from V = {num_joints} joints: PYSKL files use 17 (coco-17), "
        f"18 (openpose-18) or 25 (ntu-25); pass the layout explicitly{hint}",
    )


def _numeric_array(value: Any, path: Path, where: str, ndim: int) -> np.ndarray:
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "fiu":
        kind = value.dtype if isinstance(value, np.ndarray) else type(value).__name__
        raise DataFormatError(path, where, f"expected a numeric numpy array, found {kind}")
    if value.ndim != ndim:
        raise DataFormatError(path, where, f"expected {ndim} dimensions, got shape {value.shape}")
    with np.errstate(over="ignore", invalid="ignore"):
        return value.astype(np.float32)


def _int_field(value: Any, path: Path, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise DataFormatError(path, where, f"expected an integer, found {value!r}")
    return int(value)


def _annotation(
    ann: Any, i: int, path: Path, layout: Layout | None
) -> tuple[SkeletonSequence, Layout]:
    """One annotation dict -> SkeletonSequence, in ``layout`` or the layout its V implies."""
    where = f"annotations[{i}]"
    if not isinstance(ann, dict):
        raise DataFormatError(path, where, f"expected a dict, found {type(ann).__name__}")
    frame_dir = ann.get("frame_dir")
    if not isinstance(frame_dir, str):
        raise DataFormatError(path, f"{where}.frame_dir", f"expected a string, found {frame_dir!r}")
    where = f"{where} ({frame_dir})"
    if "keypoint" not in ann:
        raise DataFormatError(path, where, "has no 'keypoint' array")
    kp = _numeric_array(ann["keypoint"], path, f"{where}.keypoint", 4)
    num_persons, num_frames, num_joints, _ = kp.shape
    if layout is None:
        layout = _infer_layout(num_joints, path, f"{where}.keypoint")
    elif num_joints != layout.num_joints:
        raise DataFormatError(
            path,
            f"{where}.keypoint",
            f"{num_joints} joints per frame, but layout {layout.name!r} has {layout.num_joints}",
        )

    scores = None
    if ann.get("keypoint_score") is not None:
        scores = _numeric_array(ann["keypoint_score"], path, f"{where}.keypoint_score", 3)
        if scores.shape != kp.shape[:3]:
            raise DataFormatError(
                path,
                f"{where}.keypoint_score",
                f"shape {scores.shape} does not match keypoint (M, T, V) = {kp.shape[:3]}",
            )
        if not np.isfinite(scores).all():
            raise DataFormatError(path, f"{where}.keypoint_score", "non-finite score")
        # Heatmap maxima can overshoot 1 a little; the library's scores are in [0, 1].
        scores = np.clip(scores, 0.0, 1.0)
    if "total_frames" in ann:
        total = _int_field(ann["total_frames"], path, f"{where}.total_frames")
        if total != num_frames:
            raise DataFormatError(
                path,
                f"{where}.total_frames",
                f"says {total} frames but keypoint has {num_frames}",
            )
    if num_persons == 0:
        # PYSKL keeps clips where no one was detected; by convention that is one absent person.
        kp = np.zeros((1, *kp.shape[1:]), np.float32)
        scores = np.zeros(kp.shape[:3], np.float32)

    label = None
    if ann.get("label") is not None:
        label = _int_field(ann["label"], path, f"{where}.label")
        if label < 0:
            raise DataFormatError(path, f"{where}.label", f"class index {label} is negative")
    meta: dict[str, Any] = {}
    for key in ("img_shape", "original_shape"):
        shape = ann.get(key)
        if isinstance(shape, tuple | list) and all(isinstance(s, int | np.integer) for s in shape):
            meta[key] = tuple(int(s) for s in shape)
    info = parse_ntu_name(frame_dir)
    if info is not None:
        meta.update(info)
    seq = SkeletonSequence(
        keypoints=kp,
        layout=layout.name,
        scores=scores,
        label=label,
        id=frame_dir,
        subject=None if info is None else info["performer"],
        view=None if info is None else info["camera"],
        meta=meta,
    )
    try:
        seq.validate(path, layout)
    except DataFormatError as e:
        raise DataFormatError(path, f"{where}: {e.where}", e.what) from None
    return seq, layout


def _split(value: Any, path: Path) -> dict[str, list[str]]:
    if not isinstance(value, dict):
        raise DataFormatError(path, "split", f"expected a dict, found {type(value).__name__}")
    out: dict[str, list[str]] = {}
    for name, ids in value.items():
        if not isinstance(name, str) or not isinstance(ids, list | tuple):
            raise DataFormatError(path, f"split[{name!r}]", "expected a name -> list of frame_dir")
        if not all(isinstance(x, str) for x in ids):
            raise DataFormatError(path, f"split[{name!r}]", "frame_dir entries must be strings")
        out[name] = list(ids)
    return out


def read_pyskl(
    path: str | Path, layout: str | Path | Layout | None = None
) -> tuple[list[SkeletonSequence], dict[str, list[str]]]:
    """Read a PYSKL pickle: (clips in file order, split name -> frame_dirs; {} if absent)."""
    path = Path(path)
    lay = None if layout is None else get_layout(layout)
    obj = load_restricted_pickle(path)
    split: dict[str, list[str]] = {}
    if isinstance(obj, dict):
        if "annotations" not in obj:
            raise DataFormatError(
                path,
                "annotations",
                f"missing; the top-level dict has keys {sorted(map(str, obj))}",
            )
        annotations = obj["annotations"]
        if obj.get("split") is not None:
            split = _split(obj["split"], path)
    else:
        annotations = obj
    if not isinstance(annotations, list):
        raise DataFormatError(
            path,
            "annotations",
            f"expected a list of annotation dicts, found {type(annotations).__name__}",
        )
    if not annotations:
        raise DataFormatError(path, "annotations", "the list is empty; there is no clip to read")
    seqs = []
    for i, ann in enumerate(annotations):
        seq, lay = _annotation(ann, i, path, lay)
        seqs.append(seq)
    return seqs, split
