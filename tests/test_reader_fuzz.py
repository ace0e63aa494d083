"""Property tests: mutated real files give a valid clip or a DataFormatError, nothing else.

Real files are copied into a temporary folder at test time (never into the repository), then
truncated, have a token replaced by garbage or NaN, or lose lines / bytes.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import dataset_dir
from protoskel.data.readers.msr import read_msr
from protoskel.data.readers.nwucla import read_nwucla
from protoskel.data.readers.penn import read_penn
from protoskel.data.readers.utkinect import (
    parse_action_labels,
    read_utkinect_recording,
    utkinect_classes,
)
from protoskel.data.sequence import SkeletonSequence
from protoskel.errors import DataFormatError

GARBAGE = ["nan", "NaN", "inf", "-inf", "1e999", "x", "", "null", "--", "0x1f", "1.2.3", "\x00"]
GARBAGE += ["[", "]", ",", '"', "{}", "[]", "true", "１２", "é", "-0", "99999999999999999999"]
TOKEN = re.compile(rb"[^\s,\[\]{}:\"]+")

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

text_mutation = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("token"), st.integers(0, 2**31), st.sampled_from(GARBAGE)),
    st.tuples(st.just("delete_lines"), st.integers(0, 2**31), st.integers(1, 30)),
)
binary_mutation = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("overwrite"), st.integers(0, 2**31), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("delete_bytes"), st.integers(0, 2**31), st.integers(1, 64)),
)


def mutate(data: bytes, m: tuple) -> bytes:
    """Apply one mutation to a file's bytes."""
    kind = m[0]
    if kind == "truncate":
        return data[: int(m[1] * len(data))]
    if kind == "token":
        toks = list(TOKEN.finditer(data))
        tok = toks[m[1] % len(toks)]
        return data[: tok.start()] + m[2].encode() + data[tok.end() :]
    if kind == "delete_lines":
        lines = data.split(b"\n")
        i = m[1] % len(lines)
        return b"\n".join(lines[:i] + lines[i + m[2] :])
    if kind == "overwrite":
        i = m[1] % len(data)
        return data[:i] + m[2] + data[i + len(m[2]) :]
    if kind == "delete_bytes":
        i = m[1] % len(data)
        return data[:i] + data[i + m[2] :]
    raise AssertionError(kind)


def check(read: Callable[[Path], object], original: Path, mutated: bytes) -> None:
    """Write the mutated bytes under the original's name and read them: valid or DataFormatError."""
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / original.name
        f.write_bytes(mutated)
        try:
            result = read(f)
        except DataFormatError as e:
            assert str(f) in str(e)  # the error names the file
            return
    seqs = result if isinstance(result, list) else [result]
    for seq in seqs:
        assert isinstance(seq, SkeletonSequence)
        seq.validate()
        assert np.isfinite(seq.keypoints).all() and seq.num_frames >= 1


@pytest.fixture(scope="module")
def copies(tmp_path_factory) -> Callable[[str, str], Path]:
    """Copy one real file into a temp folder (skips when the dataset is absent)."""
    root = tmp_path_factory.mktemp("fuzz-src")

    def get(dataset: str, rel: str) -> Path:
        dst = root / dataset / rel
        if not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(dataset_dir(dataset) / rel, dst)
        return dst

    return get


@pytest.mark.realdata
@SETTINGS
@given(m=text_mutation)
def test_nwucla_reader_fuzz(copies, m) -> None:
    f = copies("nw-ucla", "all_sqe/a02_s01_e00_v02.json")
    check(read_nwucla, f, mutate(f.read_bytes(), m))


@pytest.mark.realdata
@SETTINGS
@given(m=text_mutation)
def test_msr_reader_fuzz(copies, m) -> None:
    f = copies("msr-action3d", "MSRAction3DSkeletonReal3D/a05_s02_e03_skeleton3D.txt")
    check(read_msr, f, mutate(f.read_bytes(), m))


@pytest.mark.realdata
@SETTINGS
@given(m=text_mutation)
def test_utkinect_recording_fuzz(copies, m) -> None:
    f = copies("utkinect-action3d", "joints/joints_s05_e02.txt")
    labels_file = copies("utkinect-action3d", "joints/actionLabel.txt")
    labels = parse_action_labels(labels_file)
    classes = utkinect_classes(labels, labels_file)

    def read(p: Path) -> list[SkeletonSequence]:
        return read_utkinect_recording(p, labels["s05_e02"], classes)[0]

    check(read, f, mutate(f.read_bytes(), m))


@pytest.mark.realdata
@SETTINGS
@given(m=text_mutation)
def test_utkinect_label_file_fuzz(copies, m) -> None:
    f = copies("utkinect-action3d", "joints/actionLabel.txt")

    def read(p: Path) -> list:
        labels = parse_action_labels(p)
        classes = utkinect_classes(labels, p)
        assert len(classes) == len(set(classes))
        return []

    check(read, f, mutate(f.read_bytes(), m))


@pytest.mark.realdata
@SETTINGS
@given(m=binary_mutation)
def test_penn_reader_fuzz(copies, m) -> None:
    f = copies("penn-action-2d", "labels/0001.mat")
    check(read_penn, f, mutate(f.read_bytes(), m))
