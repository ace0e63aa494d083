"""Property tests: mutated NTU / PYSKL / NPZ / CSV files either read cleanly or raise
DataFormatError, never any other exception.

Valid fixtures are written once per module; each example mutates their bytes (truncation,
byte flips, a token replaced with garbage, deleted lines) or, for the binary formats, builds
random structured content.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from protoskel.data.readers import (
    read_generic,
    read_ntu,
    read_pyskl,
    write_generic_csv,
    write_generic_npz,
)
from protoskel.data.sequence import SkeletonSequence
from protoskel.errors import DataFormatError
from test_readers_formats import (
    coco_annotation,
    make_seq,
    ntu_body,
    ntu_text,
    tracked,
)

# Derandomized, as tests/test_reader_fuzz.py: CI runs the same examples every time, so a
# failure reproduces from the commit alone (session 18 saw one unexplained out-of-memory kill
# of a CI run, not reproduced in five reruns; fixed examples keep CI from depending on luck).
FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

GARBAGE = ["nan", "inf", "-inf", "", "x", "1e40", "-1", "99999999", "0", "2", "3", "1.5", "1,2"]


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def valid(fuzz_dir: Path) -> dict[str, bytes]:
    """Bytes of one valid file per format."""
    frames = [
        [("11", ntu_body(0), tracked())],
        [("11", ntu_body(1), tracked()), ("12", ntu_body(2), np.array([2, 1, 0] * 8 + [1]))],
        [("12", ntu_body(3), tracked())],
    ]
    seq = make_seq(m=2, t=3, layout="coco-17", c=2)
    write_generic_npz(seq, fuzz_dir / "v.npz")
    write_generic_csv(seq, fuzz_dir / "v.csv")
    anns = [coco_annotation("a", 1, m=1, t=3), coco_annotation("b", 0, m=2, t=2, seed=5)]
    return {
        "ntu": ntu_text(frames).encode("ascii"),
        "pyskl": pickle.dumps({"split": {"train": ["a"]}, "annotations": anns}, protocol=4),
        "pyskl2": pickle.dumps(anns, protocol=2),
        "npz": (fuzz_dir / "v.npz").read_bytes(),
        "csv": (fuzz_dir / "v.csv").read_bytes(),
    }


READERS: dict[str, tuple[str, Callable[[Path], Any]]] = {
    "ntu": ("clip.skeleton", read_ntu),
    "pyskl": ("ann.pkl", lambda p: read_pyskl(p)[0]),
    "pyskl2": ("ann2.pkl", lambda p: read_pyskl(p)[0]),
    "npz": ("clip.npz", read_generic),
    "csv": ("clip.csv", read_generic),
}


def read_or_refuse(kind: str, data: bytes, folder: Path) -> None:
    """The property: a clean result that validates, or a DataFormatError; nothing else."""
    name, reader = READERS[kind]
    path = folder / name
    path.write_bytes(data)
    try:
        out = reader(path)
    except DataFormatError as e:
        assert str(e), "a DataFormatError must say what is wrong"
        return
    seqs = out if isinstance(out, list) else [out]
    assert seqs
    for seq in seqs:
        assert isinstance(seq, SkeletonSequence)
        seq.validate()
        assert seq.keypoints.dtype == np.float32
        if seq.scores is not None:
            assert seq.scores.dtype == np.float32


# ---------------------------------------------------------------- byte-level mutations
@st.composite
def truncated(draw: st.DrawFn, data: bytes) -> bytes:
    return data[: draw(st.integers(0, len(data)))]


@st.composite
def flipped(draw: st.DrawFn, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(buf) - 1))
        buf[i] ^= draw(st.integers(1, 255))
    return bytes(buf)


_TOKEN = re.compile(rb"[^\s,]+")


@st.composite
def token_replaced(draw: st.DrawFn, data: bytes) -> bytes:
    spans = [m.span() for m in _TOKEN.finditer(data)]
    a, b = spans[draw(st.integers(0, len(spans) - 1))]
    junk = draw(st.one_of(st.sampled_from(GARBAGE), st.text(max_size=4)))
    return data[:a] + junk.encode("utf-8") + data[b:]


@st.composite
def lines_deleted(draw: st.DrawFn, data: bytes) -> bytes:
    lines = data.split(b"\n")
    drop = draw(st.sets(st.integers(0, len(lines) - 1), min_size=1, max_size=3))
    return b"\n".join(ln for i, ln in enumerate(lines) if i not in drop)


def text_mutation(data: bytes) -> st.SearchStrategy[bytes]:
    return st.one_of(truncated(data), flipped(data), token_replaced(data), lines_deleted(data))


def binary_mutation(data: bytes) -> st.SearchStrategy[bytes]:
    return st.one_of(truncated(data), flipped(data))


@pytest.mark.parametrize("kind", ["ntu", "csv"])
@FUZZ
@given(data=st.data())
def test_mutated_text_files(kind: str, valid: dict, fuzz_dir: Path, data: st.DataObject) -> None:
    mutated = data.draw(text_mutation(valid[kind]))
    read_or_refuse(kind, mutated, fuzz_dir)


@pytest.mark.parametrize("kind", ["pyskl", "pyskl2", "npz"])
@FUZZ
@given(data=st.data())
def test_mutated_binary_files(kind: str, valid: dict, fuzz_dir: Path, data: st.DataObject) -> None:
    mutated = data.draw(binary_mutation(valid[kind]))
    read_or_refuse(kind, mutated, fuzz_dir)


def test_unmutated_fixtures_read(valid: dict, fuzz_dir: Path) -> None:
    """The fuzz starts from files the readers accept, so refusals come from the mutations."""
    for kind in READERS:
        name, reader = READERS[kind]
        (fuzz_dir / name).write_bytes(valid[kind])
        out = reader(fuzz_dir / name)
        assert (out if isinstance(out, list) else [out])[0].num_frames >= 2


# ---------------------------------------------------------------- structured content
_DTYPES = st.sampled_from(["<f4", "<f8", "<f2", "<i4", "|u1", "|b1", "<U3"])


def any_array(max_dims: int = 5) -> st.SearchStrategy[np.ndarray]:
    return _DTYPES.flatmap(
        lambda dt: hnp.arrays(
            np.dtype(dt),
            hnp.array_shapes(min_dims=0, max_dims=max_dims, min_side=0, max_side=4),
        )
    )


def keypoint_arrays() -> st.SearchStrategy[np.ndarray]:
    """Mostly plausible (M, T, V, C) float arrays with NaN/inf/huge values, some odd ones."""
    plausible = st.tuples(
        st.integers(0, 2), st.integers(0, 3), st.sampled_from([17, 18, 20, 25]), st.integers(1, 4)
    ).flatmap(
        lambda shape: hnp.arrays(
            np.float64,
            shape,
            elements=st.floats(allow_nan=True, allow_infinity=True, width=64),
        )
    )
    return st.one_of(plausible, any_array())


@FUZZ
@given(
    keypoints=keypoint_arrays(),
    scores=st.one_of(st.none(), any_array(4)),
    label=st.one_of(st.none(), st.integers(-3, 2**40), st.text(max_size=3), st.floats()),
    file_layout=st.sampled_from([None, "coco-17", "ntu-25", "msr-20", "bogus", ""]),
    arg_layout=st.sampled_from([None, "coco-17", "ntu-25"]),
    fps=st.one_of(st.none(), st.floats(), st.text(max_size=2)),
)
def test_structured_npz(
    fuzz_dir: Path,
    keypoints: np.ndarray,
    scores: np.ndarray | None,
    label: Any,
    file_layout: str | None,
    arg_layout: str | None,
    fps: Any,
) -> None:
    arrays: dict[str, Any] = {"keypoints": keypoints}
    for key, value in (("scores", scores), ("label", label), ("layout", file_layout), ("fps", fps)):
        if value is not None:
            arrays[key] = value
    path = fuzz_dir / "structured.npz"
    with path.open("wb") as f:
        np.savez(f, **arrays)
    try:
        seq = read_generic(path, layout=arg_layout)
    except DataFormatError:
        return
    seq.validate()


@FUZZ
@given(
    anns=st.lists(
        st.fixed_dictionaries(
            {"frame_dir": st.one_of(st.text(max_size=5), st.integers())},
            optional={
                "keypoint": keypoint_arrays(),
                "keypoint_score": st.one_of(st.none(), any_array(4)),
                "label": st.one_of(st.none(), st.integers(-2, 5), st.text(max_size=2)),
                "total_frames": st.one_of(st.integers(-1, 4), st.floats()),
                "img_shape": st.one_of(st.tuples(st.integers(), st.integers()), st.text()),
            },
        ),
        max_size=3,
    ),
    wrap=st.booleans(),
    split=st.one_of(st.none(), st.dictionaries(st.text(max_size=3), st.lists(st.text()))),
)
def test_structured_pyskl(fuzz_dir: Path, anns: list, wrap: bool, split: Any) -> None:
    obj: Any = {"annotations": anns, "split": split} if wrap else anns
    path = fuzz_dir / "structured.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=4))
    try:
        seqs, _ = read_pyskl(path)
    except DataFormatError:
        return
    assert len(seqs) == len(anns)
    for seq in seqs:
        seq.validate()
