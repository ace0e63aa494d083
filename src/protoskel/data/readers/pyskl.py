"""PYSKL annotation pickles -> SkeletonSequences, read with a restricted unpickler.

A PYSKL file is a pickle of ``{"split": {name: [frame_dir, ...]}, "annotations": [ann, ...]}``
(or a bare list of annotations), where each ``ann`` is a dict with ``frame_dir`` (str),
``label`` (int), ``keypoint`` (M, T, V, C) floats, optional ``keypoint_score`` (M, T, V),
``total_frames`` and ``img_shape``.

Pickles can run arbitrary code when loaded, so the unpickler here resolves only the globals
numpy arrays and scalars need plus plain Python containers; any other global (``os.system``, a
custom class, ...) is refused before anything is called. numpy arrays, scalars and dtypes are
not built while the pickle runs but described, and built afterwards only if they are plain
numeric or text arrays whose bytes are all in the file; calls that allocate what the file does
not hold (``bytes(n)``, ``numpy.ndarray(shape)``, ``str`` of a container) are refused. So a file
costs memory in proportion to its size. Not bounded: CPU time, e.g. hashing deeply shared
tuples used as dict keys, which the C unpickler does without calling any global.
"""

from __future__ import annotations

import collections
import io
import math
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


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` restricted to what protocol-2 pickles use for raw bytes."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refused _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _bytes(*args: Any) -> bytes:
    """``bytes(...)`` without ``bytes(n)``, which would allocate n bytes the file never held."""
    if args and isinstance(args[0], int):
        raise pickle.UnpicklingError("refused bytes(n): it allocates memory the file does not hold")
    return bytes(*args)


def _str(*args: Any) -> str:
    """``str(...)`` of text only: the repr of a container can be exponentially larger."""
    if args and not isinstance(args[0], str | bytes):
        raise pickle.UnpicklingError(f"refused str() of a {type(args[0]).__name__}")
    return str(*args)


# numpy objects are not built while the pickle runs: the pickle could call __setstate__
# (BUILD) on any real array or dtype it holds, and numpy trusts that state (an object array
# whose data is a short list crashes the process; a forged shape allocates without bound).
# The unpickler builds these inert descriptions instead; each is checked and turned into a
# numpy object only after loading, when the pickle can no longer reach it.
#: dtype kinds a data pickle may hold: bool, integers, floats, complex, bytes and text.
_KINDS = "biufcSU"
_MAX_ITEMSIZE = 1 << 20


class _Refused(ValueError):
    """A numpy object in the pickle that the reader will not build."""


class _NdarrayType:
    """Stands for ``numpy.ndarray`` as ``_reconstruct``'s first argument; calling it is refused."""

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        raise pickle.UnpicklingError(
            "refused numpy.ndarray(...): it allocates memory the file does not hold"
        )


_NDARRAY = _NdarrayType()


class _Dtype:
    """``numpy.dtype(spec, align, copy)`` and its state, as the pickle gives them."""

    __slots__ = ("resolved", "spec", "state")

    def __init__(self, spec: Any, align: Any = False, copy: Any = True) -> None:
        self.spec: Any = spec
        self.state: Any = None
        self.resolved: np.dtype | None = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def resolve(self) -> np.dtype:
        """The plain numeric or text dtype this describes; anything else is refused."""
        # The pickle memoises a dtype shared by many arrays: check it once.
        if self.resolved is None:
            self.resolved = self._check()
        return self.resolved

    def _check(self) -> np.dtype:
        if not isinstance(self.spec, str):
            raise _Refused(f"dtype {self.spec!r} is not a type code")
        try:
            dt = np.dtype(self.spec)
        except TypeError:
            raise _Refused(f"dtype {self.spec!r} is not a numpy type code") from None
        if dt.kind not in _KINDS or dt.fields is not None or dt.subdtype is not None:
            raise _Refused(f"dtype {dt} is not a plain number or text type")
        if self.state is not None:
            order = self.state[1] if isinstance(self.state, tuple) and self.state[1:] else None
            if order in ("<", ">") and dt.byteorder != "|":
                dt = dt.newbyteorder(order)
            # Only the state numpy itself writes for this dtype: a forged one (object flags,
            # fields, sizes) would make numpy misread the array's bytes.
            if self.state != dt.__reduce__()[2]:
                raise _Refused(f"dtype {dt} comes with a state numpy never writes for it")
        if dt.itemsize > _MAX_ITEMSIZE:
            raise _Refused(f"dtype {dt} has items of {dt.itemsize} bytes")
        return dt


def _array(raw: Any, dtype: Any, shape: Any, fortran: Any, native: bool = False) -> np.ndarray:
    """A checked array from raw bytes: the bytes must be exactly what the shape needs."""
    if not isinstance(dtype, _Dtype):
        raise _Refused(f"array dtype is a {type(dtype).__name__}, not a dtype")
    dt = dtype.resolve()
    if not isinstance(shape, tuple) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
    ):
        raise _Refused(f"array shape {shape!r} is not a tuple of sizes")
    if not isinstance(fortran, bool):
        raise _Refused(f"array order flag {fortran!r} is not a bool")
    if isinstance(raw, pickle.PickleBuffer):
        raw = bytes(raw.raw())
    if not isinstance(raw, bytes | bytearray):
        raise _Refused(f"array data is a {type(raw).__name__}, not raw bytes")
    need = math.prod(shape) * dt.itemsize
    if need != len(raw):
        raise _Refused(f"shape {shape} of {dt} needs {need} bytes but the data has {len(raw)}")
    out = np.frombuffer(raw, dt).reshape(shape, order="F" if fortran else "C")
    # ndarray.__setstate__ gives native byte order (protocol 5's buffers keep the file's).
    return out.astype(dt.newbyteorder("=")) if native and not dt.isnative else out.copy()


class _Array:
    """``_reconstruct(ndarray, ...)`` followed by the array's state (shape, dtype, bytes)."""

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def resolve(self) -> np.ndarray:
        """The array, if the state is one numpy writes for a plain numeric or text array."""
        st = self.state
        if isinstance(st, tuple) and len(st) == 5:
            st = st[1:]  # (version, shape, dtype, is_fortran, data)
        if not isinstance(st, tuple) or len(st) != 4:
            raise _Refused("an array without a (shape, dtype, order, data) state")
        shape, dtype, fortran, raw = st
        return _array(raw, dtype, shape, fortran, native=True)


class _Call:
    """A numpy call the pickle asked for, kept as its arguments until the pickle is loaded."""

    __slots__ = ("args",)
    what = "numpy object"

    def __init__(self, *args: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        raise pickle.UnpicklingError(f"refused state for a {self.what}")


class _Buffer(_Call):
    """Protocol 5's ``_frombuffer(buffer, dtype, shape, order)``."""

    __slots__ = ()
    what = "numpy buffer array"

    def resolve(self) -> np.ndarray:
        """The array, if buffer, dtype, shape and order agree."""
        if len(self.args) != 4 or self.args[3] not in ("C", "F"):
            raise _Refused("a buffer array needs (buffer, dtype, shape, order C or F)")
        raw, dtype, shape, order = self.args
        return _array(raw, dtype, shape, order == "F")


class _Scalar(_Call):
    """``numpy scalar(dtype, bytes)``."""

    __slots__ = ()
    what = "numpy scalar"

    def resolve(self) -> Any:
        """The numpy scalar, if its bytes fit its dtype."""
        if len(self.args) != 2:
            raise _Refused("a numpy scalar needs (dtype, bytes)")
        return _array(self.args[1], self.args[0], (), False)[()]


def _reconstruct(subtype: Any, shape: Any = None, dtype: Any = None) -> _Array:
    """numpy's ``_reconstruct`` for plain ndarrays only; the real array is built after loading."""
    if subtype is not _NDARRAY:
        raise pickle.UnpicklingError("refused _reconstruct of anything but numpy.ndarray")
    return _Array()


_DEFERRED = (_Array, _Buffer, _Scalar, _Dtype)


@cache
def _allowed_globals() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): _NDARRAY,
        ("numpy", "dtype"): _Dtype,
        ("_codecs", "encode"): _latin1_encode,
        ("collections", "OrderedDict"): collections.OrderedDict,
    }
    for mod in ("numpy._core.multiarray", "numpy.core.multiarray"):
        allowed[(mod, "_reconstruct")] = _reconstruct
        allowed[(mod, "scalar")] = _Scalar
    for mod in ("numpy._core.numeric", "numpy.core.numeric"):
        allowed[(mod, "_frombuffer")] = _Buffer
    safe_builtins = (dict, list, set, frozenset, tuple, int, float, complex, bool)
    for obj in safe_builtins:
        allowed[("builtins", obj.__name__)] = obj
    allowed[("builtins", "bytes")] = _bytes
    allowed[("builtins", "str")] = _str
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that only resolves numpy array/scalar globals and builtin containers."""

    def __init__(self, file: io.BufferedIOBase, path: Path) -> None:
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        """Resolve a global only if it is on the allow-list; otherwise refuse the whole file."""
        if module == "__builtin__":  # protocol <= 2 pickles use the Python 2 names
            module, name = "builtins", {"unicode": "str", "long": "int"}.get(name, name)
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

    def load(self) -> Any:
        """Unpickle, then build the numpy objects the pickle described, each one checked."""
        return _materialise(super().load())


class _RefusedAt(Exception):
    """A refused numpy object and where it sits in the loaded tree (e.g. ``[0]['keypoint']``)."""

    def __init__(self, where: str, what: str) -> None:
        super().__init__(f"{where}: {what}")
        self.where, self.what = where, what


def _step_text(step: Any) -> str:
    """One step of a path into the loaded tree, short whatever the key (``[3]``, ``['kp']``)."""
    if isinstance(step, bool | float) or (isinstance(step, int) and step.bit_length() < 64):
        return f"[{step!r}]"
    if isinstance(step, str | bytes):
        return f"[{step[:60]!r}]"
    # Never repr an arbitrary key: a tuple built from shared parts can be exponentially long.
    return f"[<{type(step).__name__} key>]"


def _path_text(path: tuple[Any, ...] | None) -> str:
    """A path kept as nested (parent, step) pairs, rendered only when something is refused."""
    steps = []
    while path is not None:
        path, step = path
        steps.append(_step_text(step))
    return "".join(reversed(steps)) or "the top-level object"


def _materialise(obj: Any) -> Any:
    """Replace the deferred numpy descriptions in a loaded tree by checked numpy objects."""
    done: dict[int, Any] = {}
    open_tuples: set[int] = set()

    def walk(o: Any, path: tuple[Any, ...] | None) -> Any:
        key, kind = id(o), type(o)
        if key in done:
            return done[key]
        if kind in _DEFERRED:
            try:
                out = o.resolve()
            except _Refused as e:
                raise _RefusedAt(_path_text(path), str(e)) from None
        elif kind is list:
            done[key] = o  # registered first: a list may contain itself
            o[:] = [walk(x, (path, i)) for i, x in enumerate(o)]
            out = o
        elif kind is dict or kind is collections.OrderedDict:
            out = kind()
            done[key] = out
            for k, v in o.items():
                out[walk(k, (path, "<key>"))] = walk(v, (path, k))
        elif kind is tuple or kind is set or kind is frozenset:
            if key in open_tuples:
                raise _RefusedAt(_path_text(path), "a tuple that contains itself")
            open_tuples.add(key)
            out = kind(walk(x, (path, i)) for i, x in enumerate(o))
            open_tuples.discard(key)
        else:
            return o
        done[key] = out
        return out

    return walk(obj, None)


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
    except _RefusedAt as e:
        raise DataFormatError(
            path,
            e.where,
            f"refused: {e.what} (a data pickle may only hold plain numeric or text arrays whose "
            "bytes are all in the file)",
        ) from None
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
