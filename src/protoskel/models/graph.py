"""Adjacency matrices and partitions built from a layout's tree (``layout.parents``).

Convention used throughout the models: ``A[u, v]`` is the weight with which joint ``u``
*receives* the features of joint ``v``, so graph aggregation is ``y_u = sum_v A[u, v] x_v``
(``einsum("uv,...v->...u")``). Row normalisation therefore makes every receiver average over
its senders.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from protoskel.layouts import Layout

__all__ = [
    "bone_adjacency",
    "hop_distance",
    "khop_adjacency",
    "multiscale_adjacency",
    "normalize_adjacency",
    "spatial_partitions",
]


def bone_adjacency(layout: Layout) -> np.ndarray:
    """Symmetric 0/1 matrix (V, V) of the layout's bones, without self-loops."""
    v = layout.num_joints
    a = np.zeros((v, v), dtype=np.float32)
    for child, parent in layout.bones:
        a[child, parent] = a[parent, child] = 1.0
    return a


def normalize_adjacency(a: np.ndarray, mode: str = "row") -> np.ndarray:
    """Normalise (..., V, V): ``row`` = D^-1 A (rows sum to 1), ``sym`` = D^-1/2 A D^-1/2.

    Rows without any sender (a leaf in the inward partition, say) stay all-zero.
    """
    a = np.asarray(a, dtype=np.float32)
    deg = a.sum(axis=-1)
    with np.errstate(divide="ignore"):
        if mode == "row":
            inv = np.where(deg > 0, 1.0 / deg, 0.0).astype(np.float32)
            return a * inv[..., :, None]
        if mode == "sym":
            inv = np.where(deg > 0, deg**-0.5, 0.0).astype(np.float32)
            return a * inv[..., :, None] * inv[..., None, :]
    raise ValueError(f"unknown normalisation mode {mode!r}; use 'row' or 'sym'")


def spatial_partitions(layout: Layout, normalize: bool = True) -> np.ndarray:
    """ST-GCN spatial partition (3, V, V): self, inward (toward the root), outward.

    Inward: a joint receives from its children (messages flow toward the root); outward: a
    joint receives from its parent. With ``normalize`` each partition is row-normalised.
    """
    v = layout.num_joints
    self_ = np.eye(v, dtype=np.float32)
    inward = np.zeros((v, v), dtype=np.float32)
    outward = np.zeros((v, v), dtype=np.float32)
    for child, parent in layout.bones:
        inward[parent, child] = 1.0
        outward[child, parent] = 1.0
    parts = np.stack([self_, inward, outward])
    return normalize_adjacency(parts) if normalize else parts


def hop_distance(layout: Layout) -> np.ndarray:
    """Shortest-path distance in bones between every pair of joints (V, V), int64."""
    v = layout.num_joints
    nbrs: list[list[int]] = [[] for _ in range(v)]
    for child, parent in layout.bones:
        nbrs[child].append(parent)
        nbrs[parent].append(child)
    dist = np.full((v, v), -1, dtype=np.int64)
    for s in range(v):
        dist[s, s] = 0
        queue = deque([s])
        while queue:
            u = queue.popleft()
            for w in nbrs[u]:
                if dist[s, w] < 0:
                    dist[s, w] = dist[s, u] + 1
                    queue.append(w)
    return dist


def khop_adjacency(layout: Layout, k: int, normalize: bool = True) -> np.ndarray:
    """Joints exactly ``k`` bones apart (V, V); ``k = 0`` is the identity."""
    a = (hop_distance(layout) == k).astype(np.float32)
    return normalize_adjacency(a) if normalize else a


def multiscale_adjacency(layout: Layout, scales: int, normalize: bool = True) -> np.ndarray:
    """Stack (scales, V, V) of k-hop adjacencies for k = 0 .. scales-1 (MS-G3D style)."""
    return np.stack([khop_adjacency(layout, k, normalize) for k in range(scales)])
