"""Skeleton layouts as data: joint names, bones, body parts, centre and axes, joint maps.

A layout is read from YAML (built-ins live in ``layouts/builtin/``). Models and transforms take
every layout-specific fact from a :class:`Layout`, never from constants of their own.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from protoskel.errors import LayoutError

__all__ = [
    "JointMap",
    "Layout",
    "get_joint_map",
    "get_layout",
    "layout_from_dict",
    "list_layouts",
    "load_layout",
]

# A joint reference in YAML: one joint name, or a list of names whose mean is meant.
JointRef = str | list[str]


@dataclass(frozen=True)
class Layout:
    """A skeleton layout: ordered joints, parent of each joint, body parts, centre and axes.

    ``parents[v]`` is the index of joint ``v``'s parent, ``-1`` for the root. ``parts`` maps a
    part name to the sorted joint indices it covers; every joint is in exactly one part.
    ``center``, ``up`` and ``across`` are weight vectors over joints (length V, summing to 1), so
    a reference to a pair of joints means their mean.
    """

    name: str
    joints: tuple[str, ...]
    parents: tuple[int, ...]
    parts: dict[str, tuple[int, ...]]
    dims: int
    center: np.ndarray
    up: tuple[np.ndarray, np.ndarray]
    across: tuple[np.ndarray, np.ndarray]
    description: str = ""
    source: str = field(default="", compare=False)

    @property
    def num_joints(self) -> int:
        """Number of joints V."""
        return len(self.joints)

    @property
    def root(self) -> int:
        """Index of the root joint (the one without a parent)."""
        return self.parents.index(-1)

    def index(self, joint: str) -> int:
        """Index of a joint by name, with an error that lists the valid names."""
        try:
            return self.joints.index(joint)
        except ValueError:
            raise LayoutError(
                f"layout {self.name!r} has no joint {joint!r}; joints are: {', '.join(self.joints)}"
            ) from None

    @property
    def bones(self) -> list[tuple[int, int]]:
        """(child, parent) index pairs, one per non-root joint."""
        return [(v, p) for v, p in enumerate(self.parents) if p >= 0]

    @property
    def part_names(self) -> list[str]:
        """Body part names in layout order."""
        return list(self.parts)

    def part_of_joint(self) -> np.ndarray:
        """Array (V,) giving the index (into ``part_names``) of each joint's part."""
        out = np.empty(self.num_joints, dtype=np.int64)
        for i, idx in enumerate(self.parts.values()):
            out[list(idx)] = i
        return out

    def flip_permutation(self) -> np.ndarray:
        """Joint permutation that swaps left_* and right_* joints (mirror augmentation)."""
        perm = np.arange(self.num_joints)
        for v, name in enumerate(self.joints):
            for a, b in (("left", "right"), ("right", "left")):
                if a in name.split("_"):
                    other = "_".join(b if t == a else t for t in name.split("_"))
                    if other in self.joints:
                        perm[v] = self.joints.index(other)
        return perm

    def to_dict(self) -> dict[str, Any]:
        """YAML-ready description (names, not indices); inverse of ``layout_from_dict``."""

        def ref(w: np.ndarray) -> JointRef:
            names = [self.joints[i] for i in np.flatnonzero(w)]
            return names[0] if len(names) == 1 else names

        return {
            "name": self.name,
            "description": self.description,
            "dims": self.dims,
            "center": ref(self.center),
            "up": [ref(self.up[0]), ref(self.up[1])],
            "across": [ref(self.across[0]), ref(self.across[1])],
            "joints": [
                {j: (self.joints[p] if p >= 0 else None)}
                for j, p in zip(self.joints, self.parents, strict=True)
            ],
            "parts": {k: [self.joints[i] for i in v] for k, v in self.parts.items()},
        }

    def __hash__(self) -> int:
        return hash((self.name, self.joints, self.parents))


def _where(source: str, field_: str) -> str:
    return f"{source}: {field_}" if source else field_


def _ref_weights(ref: Any, joints: Sequence[str], source: str, field_: str) -> np.ndarray:
    """Turn a joint reference (name or list of names) into a weight vector over joints."""
    names = [ref] if isinstance(ref, str) else ref
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise LayoutError(
            f"{_where(source, field_)}: expected a joint name or a list of joint names, got {ref!r}"
        )
    w = np.zeros(len(joints), dtype=np.float32)
    for n in names:
        if n not in joints:
            raise LayoutError(f"{_where(source, field_)}: unknown joint {n!r}")
        w[joints.index(n)] += 1.0 / len(names)
    return w


def layout_from_dict(data: Any, source: str = "") -> Layout:
    """Build and validate a layout from its YAML structure; errors name the field and joint."""
    if not isinstance(data, dict):
        raise LayoutError(f"{source or 'layout'}: expected a mapping at the top level")
    known = {"name", "description", "dims", "center", "up", "across", "joints", "parts"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise LayoutError(
            f"{_where(source, unknown[0])}: unknown field; allowed: {', '.join(sorted(known))}"
        )
    for req in ("name", "joints", "parts", "dims"):
        if req not in data:
            raise LayoutError(f"{_where(source, req)}: required field is missing")
    name = data["name"]
    if not isinstance(name, str) or not name:
        raise LayoutError(f"{_where(source, 'name')}: must be a non-empty string")
    dims = data["dims"]
    if dims not in (2, 3):
        raise LayoutError(f"{_where(source, 'dims')}: must be 2 or 3, got {dims!r}")

    raw = data["joints"]
    if not isinstance(raw, list) or not raw:
        raise LayoutError(
            f"{_where(source, 'joints')}: must be a non-empty list of 'joint: parent'"
        )
    names: list[str] = []
    parent_names: list[str | None] = []
    for i, item in enumerate(raw):
        if not (isinstance(item, dict) and len(item) == 1):
            raise LayoutError(
                f"{_where(source, f'joints[{i}]')}: expected one 'joint: parent', got {item!r}"
            )
        ((j, p),) = item.items()
        if not isinstance(j, str) or not (p is None or isinstance(p, str)):
            raise LayoutError(f"{_where(source, f'joints[{i}]')}: names must be strings")
        if j in names:
            raise LayoutError(f"{_where(source, f'joints[{i}]')}: joint {j!r} is listed twice")
        names.append(j)
        parent_names.append(p)
    parents: list[int] = []
    for j, p in zip(names, parent_names, strict=True):
        if p is None:
            parents.append(-1)
        elif p not in names:
            raise LayoutError(f"{_where(source, 'joints')}: joint {j!r} has unknown parent {p!r}")
        elif p == j:
            raise LayoutError(f"{_where(source, 'joints')}: joint {j!r} is its own parent")
        else:
            parents.append(names.index(p))
    roots = [names[v] for v, p in enumerate(parents) if p < 0]
    if len(roots) != 1:
        raise LayoutError(
            f"{_where(source, 'joints')}: exactly one root joint (parent null) is needed, "
            f"found {len(roots)}: {roots}"
        )
    # Every joint must reach the root by following parents; anything else sits on a cycle.
    for v in range(len(names)):
        seen = {v}
        u = v
        while parents[u] >= 0:
            u = parents[u]
            if u in seen:
                raise LayoutError(
                    f"{_where(source, 'joints')}: joint {names[v]!r} is on a parent cycle "
                    f"(through {names[u]!r}); the bones must form one tree"
                )
            seen.add(u)

    raw_parts = data["parts"]
    if not isinstance(raw_parts, dict) or not raw_parts:
        raise LayoutError(f"{_where(source, 'parts')}: must map part names to joint lists")
    parts: dict[str, tuple[int, ...]] = {}
    owner: dict[str, str] = {}
    for pname, members in raw_parts.items():
        if not isinstance(members, list) or not members:
            raise LayoutError(f"{_where(source, f'parts.{pname}')}: must be a non-empty joint list")
        idx = []
        for m in members:
            if m not in names:
                raise LayoutError(f"{_where(source, f'parts.{pname}')}: unknown joint {m!r}")
            if m in owner:
                raise LayoutError(
                    f"{_where(source, f'parts.{pname}')}: joint {m!r} is already in part "
                    f"{owner[m]!r}; each joint belongs to one part"
                )
            owner[m] = pname
            idx.append(names.index(m))
        parts[str(pname)] = tuple(sorted(idx))
    missing = [n for n in names if n not in owner]
    if missing:
        raise LayoutError(
            f"{_where(source, 'parts')}: joint {missing[0]!r} is in no part "
            f"(every joint must belong to one part; uncovered: {missing})"
        )

    root_name = roots[0]
    center = _ref_weights(data.get("center", root_name), names, source, "center")

    def pair(key: str) -> tuple[np.ndarray, np.ndarray]:
        val = data.get(key)
        if val is None:
            raise LayoutError(
                f"{_where(source, key)}: required field is missing (two joint references: from, to)"
            )
        if not isinstance(val, list) or len(val) != 2:
            raise LayoutError(f"{_where(source, key)}: expected [from, to], got {val!r}")
        return (
            _ref_weights(val[0], names, source, f"{key}[0]"),
            _ref_weights(val[1], names, source, f"{key}[1]"),
        )

    return Layout(
        name=name,
        joints=tuple(names),
        parents=tuple(parents),
        parts=parts,
        dims=int(dims),
        center=center,
        up=pair("up"),
        across=pair("across"),
        description=str(data.get("description", "")),
        source=source,
    )


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise LayoutError(f"{path}: cannot read layout file ({e.strerror})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "?"
        raise LayoutError(f"{path}: {where}: invalid YAML ({getattr(e, 'problem', e)})") from None


def load_layout(path: str | Path) -> Layout:
    """Read and validate a user layout from a YAML file."""
    p = Path(path)
    return layout_from_dict(_read_yaml(p), source=str(p))


def _builtin_dir() -> Path:
    return Path(str(resources.files("protoskel.layouts") / "builtin"))


@cache
def _builtins() -> dict[str, Layout]:
    out = {}
    for f in sorted(_builtin_dir().glob("*.yaml")):
        layout = load_layout(f)
        out[layout.name] = layout
    return out


def list_layouts() -> list[str]:
    """Names of the built-in layouts."""
    return sorted(_builtins())


def get_layout(name_or_path: str | Path | Layout) -> Layout:
    """A built-in layout by name, or a user layout from a ``.yaml``/``.yml`` path."""
    if isinstance(name_or_path, Layout):
        return name_or_path
    s = str(name_or_path)
    if s.endswith((".yaml", ".yml")):
        return load_layout(s)
    try:
        return _builtins()[s]
    except KeyError:
        raise LayoutError(
            f"unknown layout {s!r}; built-in layouts: {', '.join(list_layouts())} "
            "(or give the path of a YAML layout file)"
        ) from None


@dataclass(frozen=True)
class JointMap:
    """A linear re-expression of a clip in another layout: ``x_dst = W @ x_src`` over joints."""

    src: str
    dst: str
    weights: np.ndarray  # (V_dst, V_src), rows sum to 1
    via: tuple[str, ...] = ()  # layouts in between when no direct map exists

    def apply(self, keypoints: np.ndarray, axis: int = -2) -> np.ndarray:
        """Map an array whose ``axis`` indexes source joints (default: (..., V, C))."""
        x = np.moveaxis(np.asarray(keypoints), axis, -1)
        if x.shape[-1] != self.weights.shape[1]:
            raise LayoutError(
                f"joint map {self.src}->{self.dst} expects {self.weights.shape[1]} joints, "
                f"got {x.shape[-1]}"
            )
        y = x @ self.weights.T.astype(x.dtype, copy=False)
        return np.moveaxis(y, -1, axis)

    def apply_scores(self, scores: np.ndarray) -> np.ndarray:
        """Map per-joint scores (..., V_src): a mapped joint is as sure as its least sure source."""
        s = np.asarray(scores)
        out = np.empty((*s.shape[:-1], self.weights.shape[0]), dtype=s.dtype)
        for d in range(self.weights.shape[0]):
            out[..., d] = s[..., np.flatnonzero(self.weights[d])].min(axis=-1)
        return out


@cache
def _map_specs() -> dict[str, Any]:
    path = Path(str(resources.files("protoskel.layouts") / "joint_maps.yaml"))
    return _read_yaml(path) or {}


def _map_path(src: str, dst: str, keys: list[str]) -> list[str] | None:
    """The shortest chain of layouts from ``src`` to ``dst`` through the defined maps."""
    edges: dict[str, list[str]] = {}
    for k in keys:
        a, b = k.split("->")
        edges.setdefault(a, []).append(b)
    prev: dict[str, str] = {src: src}
    frontier = [src]
    while frontier:
        nxt = []
        for a in frontier:
            for b in sorted(edges.get(a, [])):
                if b not in prev:
                    prev[b] = a
                    nxt.append(b)
        frontier = nxt
    if dst not in prev:
        return None
    path = [dst]
    while path[-1] != src:
        path.append(prev[path[-1]])
    return path[::-1]


def get_joint_map(src: str | Layout, dst: str | Layout) -> JointMap:
    """The joint map from layout ``src`` to ``dst`` (identity when they are the same).

    Without a direct map, the shortest chain of defined maps is composed (e.g. openpose-18 ->
    coco-17 -> penn-13); ``JointMap.via`` names the layouts in between.
    """
    a, b = get_layout(src), get_layout(dst)
    if a.name == b.name:
        return JointMap(a.name, b.name, np.eye(a.num_joints, dtype=np.float32))
    key = f"{a.name}->{b.name}"
    specs = _map_specs()
    if key in specs:
        return _direct_map(a, b, specs)
    path = _map_path(a.name, b.name, list(specs))
    if path is None:
        known = ", ".join(sorted(specs))
        raise LayoutError(
            f"no joint map from {a.name!r} to {b.name!r}, directly or through other layouts; "
            f"available maps: {known}"
        )
    w = np.eye(a.num_joints, dtype=np.float32)
    for x, y in itertools.pairwise(path):
        w = _direct_map(get_layout(x), get_layout(y), specs).weights @ w
    return JointMap(a.name, b.name, w, via=tuple(path[1:-1]))


def _direct_map(a: Layout, b: Layout, specs: dict[str, Any]) -> JointMap:
    """The map one joint_maps.yaml entry defines from ``a`` to ``b``."""
    key = f"{a.name}->{b.name}"
    rules = specs[key] or {}
    w = np.zeros((b.num_joints, a.num_joints), dtype=np.float32)
    for d, name in enumerate(b.joints):
        rule = rules.get(name, name)
        if isinstance(rule, dict):
            joints, weights = rule.get("joints"), rule.get("weights")
            if not joints or weights is None or len(joints) != len(weights):
                raise LayoutError(f"joint map {key}: {name}: needs joints and as many weights")
        else:
            joints = [rule] if isinstance(rule, str) else list(rule)
            weights = [1.0 / len(joints)] * len(joints)
        for j, wt in zip(joints, weights, strict=True):
            if j not in a.joints:
                raise LayoutError(
                    f"joint map {key}: target joint {name!r} needs source joint {j!r}, "
                    f"which {a.name!r} does not have"
                )
            w[d, a.joints.index(j)] += float(wt)
        w[d] /= w[d].sum()
    return JointMap(a.name, b.name, w)
