"""Layouts: built-ins are valid trees with covering parts; YAML errors name the joint."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from protoskel.errors import LayoutError
from protoskel.layouts import get_joint_map, get_layout, layout_from_dict, list_layouts

BUILTINS = ["kinect-v1-20", "msr-20", "ntu-25", "coco-17", "penn-13", "mediapipe-33", "openpose-18"]
SIZES = {
    "kinect-v1-20": 20,
    "msr-20": 20,
    "ntu-25": 25,
    "coco-17": 17,
    "penn-13": 13,
    "mediapipe-33": 33,
    "openpose-18": 18,
}


def test_all_builtins_present() -> None:
    assert sorted(BUILTINS) == list_layouts()


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_is_tree_with_covering_parts(name: str) -> None:
    lay = get_layout(name)
    assert lay.num_joints == SIZES[name]
    assert sum(p < 0 for p in lay.parents) == 1
    assert len(lay.bones) == lay.num_joints - 1
    covered = sorted(i for idx in lay.parts.values() for i in idx)
    assert covered == list(range(lay.num_joints))
    assert set(lay.part_names) == {"torso", "left_arm", "right_arm", "left_leg", "right_leg"}
    assert np.isclose(lay.center.sum(), 1.0)
    # Round trip through the YAML form gives the same layout.
    again = layout_from_dict(yaml.safe_load(yaml.safe_dump(lay.to_dict())))
    assert again.joints == lay.joints and again.parents == lay.parents
    assert again.parts == lay.parts


def test_flip_permutation_swaps_sides() -> None:
    lay = get_layout("kinect-v1-20")
    perm = lay.flip_permutation()
    assert lay.joints[perm[lay.index("left_hand")]] == "right_hand"
    assert perm[lay.index("head")] == lay.index("head")
    assert sorted(perm) == list(range(20))


def _tiny(**over: object) -> dict:
    d = {
        "name": "tiny",
        "dims": 3,
        "center": "a",
        "up": ["a", "b"],
        "across": ["b", "c"],
        "joints": [{"a": None}, {"b": "a"}, {"c": "a"}],
        "parts": {"torso": ["a"], "left_arm": ["b"], "right_arm": ["c"]},
    }
    d.update(over)
    return d


def test_valid_user_layout() -> None:
    lay = layout_from_dict(_tiny(), source="tiny.yaml")
    assert lay.joints == ("a", "b", "c") and lay.parents == (-1, 0, 0)


@pytest.mark.parametrize(
    ("over", "needle"),
    [
        ({"joints": [{"a": None}, {"b": "c"}, {"c": "b"}]}, "cycle"),
        ({"joints": [{"a": None}, {"b": "a"}, {"c": "zz"}]}, "unknown parent 'zz'"),
        ({"joints": [{"a": None}, {"a": "a"}, {"c": "a"}]}, "'a' is listed twice"),
        ({"joints": [{"a": None}, {"b": None}, {"c": "a"}]}, "exactly one root"),
        ({"parts": {"torso": ["a"], "left_arm": ["b"]}}, "'c' is in no part"),
        ({"parts": {"torso": ["a", "b"], "left_arm": ["b", "c"]}}, "already in part"),
        ({"center": "nope"}, "unknown joint 'nope'"),
        ({"dims": 4}, "dims"),
        ({"colour": "red"}, "unknown field"),
    ],
)
def test_invalid_user_layout_names_problem(over: dict, needle: str) -> None:
    with pytest.raises(LayoutError, match=r"tiny\.yaml") as e:
        layout_from_dict(_tiny(**over), source="tiny.yaml")
    assert needle in str(e.value)


def test_cycle_in_yaml_file(tmp_path) -> None:
    p = tmp_path / "cyc.yaml"
    p.write_text(yaml.safe_dump(_tiny(joints=[{"a": None}, {"b": "c"}, {"c": "b"}])))
    with pytest.raises(LayoutError, match=r"cyc\.yaml.*'b' is on a parent cycle"):
        get_layout(str(p))


def test_unknown_layout_lists_builtins() -> None:
    with pytest.raises(LayoutError, match="kinect-v1-20"):
        get_layout("kinect-v9")


def test_msr_to_kinect_is_permutation_by_name() -> None:
    msr, kin = get_layout("msr-20"), get_layout("kinect-v1-20")
    jm = get_joint_map(msr, kin)
    x = np.random.default_rng(0).normal(size=(2, 5, 20, 3)).astype(np.float32)
    y = jm.apply(x)
    for j in kin.joints:
        np.testing.assert_array_equal(y[..., kin.index(j), :], x[..., msr.index(j), :])


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        ("mediapipe-33", "kinect-v1-20"),
        ("mediapipe-33", "coco-17"),
        ("ntu-25", "kinect-v1-20"),
        ("coco-17", "penn-13"),
        ("mediapipe-33", "openpose-18"),
        ("kinect-v1-20", "ntu-25"),
    ],
)
def test_joint_maps_are_convex(src: str, dst: str) -> None:
    jm = get_joint_map(src, dst)
    assert jm.weights.shape == (get_layout(dst).num_joints, get_layout(src).num_joints)
    np.testing.assert_allclose(jm.weights.sum(1), 1.0, rtol=1e-6)
    assert (jm.weights >= 0).all()
    # A translated clip maps to the translated mapped clip (weights are convex).
    x = np.random.default_rng(1).normal(size=(3, get_layout(src).num_joints, 3))
    np.testing.assert_allclose(jm.apply(x + 5.0), jm.apply(x) + 5.0, rtol=1e-5)


def test_missing_joint_map_is_clear() -> None:
    with pytest.raises(LayoutError, match="no joint map from 'penn-13' to 'ntu-25'"):
        get_joint_map("penn-13", "ntu-25")


@pytest.mark.parametrize(
    ("src", "dst", "via"),
    [
        ("openpose-18", "penn-13", ("coco-17",)),
        ("mediapipe-33", "msr-20", ("kinect-v1-20",)),
        ("ntu-25", "msr-20", ("kinect-v1-20",)),
    ],
)
def test_joint_maps_chain_through_other_layouts_when_no_direct_map_exists(
    src: str, dst: str, via: tuple[str, ...]
) -> None:
    jm = get_joint_map(src, dst)
    assert jm.via == via
    x = np.random.default_rng(2).normal(size=(4, get_layout(src).num_joints, 3))
    step = x
    for a, b in zip((src, *via), (*via, dst), strict=True):
        step = get_joint_map(a, b).apply(step)  # the maps one after the other
    np.testing.assert_allclose(jm.apply(x), step, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jm.weights.sum(1), 1.0, rtol=1e-6)
    assert get_joint_map("coco-17", "penn-13").via == ()  # a direct map is used as it is
