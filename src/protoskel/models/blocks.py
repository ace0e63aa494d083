"""Building blocks: input normalisation, graph convolutions, temporal convolutions, units.

Inside a backbone, clips are ``(N, C, T, V)`` tensors (persons folded into the batch).
Graph aggregation follows :mod:`protoskel.models.graph`: ``y_u = sum_v A[u, v] x_v``.

The blocks are written for CPU speed: one 1x1 convolution where the usual formulation has one
per subset or per branch, graph aggregation as a single batched matmul, no Python loop over
subsets, and few BatchNorms (they are memory-bound and cost as much as a small conv on CPU).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from protoskel.errors import ConfigError

__all__ = [
    "AdaptiveGraphConv",
    "AttentionGraphConv",
    "DataNorm",
    "GraphConv",
    "MultiScaleTemporalConv",
    "STUnit",
    "TemporalConv",
    "bn_init",
    "subsample",
    "temporal_max_pool",
]


def bn_init(bn: nn.BatchNorm2d | nn.BatchNorm1d, scale: float = 1.0) -> nn.Module:
    """Set a BatchNorm's affine scale (zero-ish scale makes a residual branch start as identity)."""
    nn.init.constant_(bn.weight, scale)
    nn.init.zeros_(bn.bias)
    return bn


def _conv_init(m: nn.Module) -> None:
    """Kaiming (fan-out) init for every conv in ``m``, zero biases."""
    for mod in m.modules():
        if isinstance(mod, nn.Conv2d):
            nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
            if mod.bias is not None:
                nn.init.zeros_(mod.bias)


class DataNorm(nn.Module):
    """BatchNorm of the raw input per coordinate and joint (and person, with ``num_persons``).

    The field normalises over M*V*C channels; that ties a model to a fixed person count, so by
    default persons share statistics (V*C channels), which lets one model see M=1 and M=2 clips.
    Input ``(N, C, T, V, M)``, output ``(N*M, C, T, V)``.
    """

    def __init__(self, in_channels: int, num_joints: int, num_persons: int | None = None) -> None:
        super().__init__()
        self.num_persons = num_persons
        self.bn = nn.BatchNorm1d((num_persons or 1) * num_joints * in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, T, V, M) -> (N*M, C, T, V)."""
        n, c, t, v, m = x.shape
        if self.num_persons is None:
            y = x.permute(0, 4, 3, 1, 2).reshape(n * m, v * c, t)
        else:
            if m != self.num_persons:
                raise ConfigError(
                    f"model input has M={m} persons but the model was built with "
                    f"num_persons={self.num_persons}; pad/trim persons or rebuild the model"
                )
            y = x.permute(0, 4, 3, 1, 2).reshape(n, m * v * c, t)
        y = self.bn(y)
        return y.view(n * m, v, c, t).permute(0, 2, 3, 1).contiguous()


class GraphConv(nn.Module):
    """Static ST-GCN graph convolution: ``y = sum_k (A_k * E_k) x W_k``.

    ``adjacency`` is (K, V, V) (e.g. the spatial partition); ``E`` is ST-GCN's learnable edge
    importance (initialised to ones). One conv produces all K subsets, one einsum aggregates them.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        adjacency: torch.Tensor,
        edge_importance: bool = True,
    ) -> None:
        super().__init__()
        self.k = adjacency.shape[0]
        self.out_channels = out_channels
        self.register_buffer("adjacency", adjacency.clone().float())
        self.importance = nn.Parameter(torch.ones_like(adjacency)) if edge_importance else None
        self.conv = nn.Conv2d(in_channels, self.k * out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, T, V) -> (N, C_out, T, V)."""
        a = self.adjacency if self.importance is None else self.adjacency * self.importance
        n, _, t, v = x.shape
        h = self.conv(x).view(n, self.k, self.out_channels, t, v)
        return torch.einsum("nkctv,kuv->nctu", h, a)


class AdaptiveGraphConv(nn.Module):
    """Adaptive-topology graph convolution with per-channel-group topologies.

    ``y_g = R_g(x) · (x W)_g`` for channel groups g = 1..G, where
    ``R_g(x) = P_g + alpha_g * Q_g(x)``:

    - ``P`` (G, V, V) is a learnable shared topology initialised from the layout's partitions
      (group g starts from partition ``g mod K``), so the groups start as ST-GCN's directions;
    - ``Q(x)`` is a data-dependent correlation in CTR-GCN's spirit, computed from temporally
      pooled features: ``Q_g[u, v] = sum_r B[g, r] tanh(phi_r(x_u) - psi_r(x_v))`` with a small
      rank ``r`` shared by the groups through the mixing ``B``, so refinement costs
      O(N V^2 r G): independent of T and of the width, negligible next to the convs;
    - ``alpha`` (G,) starts at zero so training begins from the static graph.

    One 1x1 conv (instead of one per subset) does the feature transform, and a single batched
    matmul aggregates every group: roughly K times cheaper than a K-subset CTR-GC.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        partitions: torch.Tensor,
        groups: int = 8,
        rel_channels: int = 8,
        adaptive: bool = True,
    ) -> None:
        super().__init__()
        if out_channels % groups:
            raise ConfigError(
                f"graph conv: out_channels={out_channels} is not divisible by groups={groups}; "
                "pick a width that is a multiple of the number of topology groups"
            )
        k = partitions.shape[0]
        self.groups = groups
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        init = partitions[torch.arange(groups) % k].clone().float()
        self.topology = nn.Parameter(init)
        self.adaptive = adaptive
        if adaptive:
            self.phi = nn.Linear(in_channels, rel_channels)
            self.psi = nn.Linear(in_channels, rel_channels)
            self.mix = nn.Linear(rel_channels, groups, bias=False)
            self.alpha = nn.Parameter(torch.zeros(groups))

    def topologies(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample refined topologies (N, G, V, V) for input x (N, C_in, T, V)."""
        if not self.adaptive:
            return self.topology.unsqueeze(0).expand(x.shape[0], -1, -1, -1)
        pooled = x.mean(dim=2).transpose(1, 2)  # (N, V, C_in)
        a, b = self.phi(pooled), self.psi(pooled)  # (N, V, r)
        corr = torch.tanh(a.unsqueeze(2) - b.unsqueeze(1))  # (N, U, V, r)
        q = self.mix(corr).permute(0, 3, 1, 2)  # (N, G, U, V)
        return self.topology + self.alpha.view(1, -1, 1, 1) * q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, T, V) -> (N, C_out, T, V)."""
        r = self.topologies(x)
        h = self.conv(x)
        n, c, t, v = h.shape
        h = h.reshape(n, self.groups, (c // self.groups) * t, v)
        return torch.matmul(h, r.transpose(-1, -2)).view(n, c, t, v)


class AttentionGraphConv(nn.Module):
    """Graph convolution whose topology is self-attention over the joints of each frame.

    For head h = 1..H and frame t: ``y_h(t) = R_h(t) · (x(t) W)_h`` with
    ``R_h(t) = P_h + softmax_v(q_u(t) · k_v(t) / sqrt(d) + b_h[hop(u, v)])``:

    - the attention is computed per frame (AdaptiveGraphConv pools the clip over time first),
      so which joints a joint listens to can change while the action unfolds;
    - ``b`` (H, max_hop + 1) is a learned bias per head and hop distance along the layout's
      bones (pairs further apart than ``max_hop`` share the last bucket); it starts at
      ``-hop`` so attention begins local, and it is what makes the operator layout-aware
      without a fixed adjacency;
    - ``P`` (H, V, V) is a learnable shared topology initialised from the layout's partitions
      (head h from partition ``h mod K``), as in AdaptiveGraphConv.

    Queries and keys come from one 1x1 conv; aggregation is one batched matmul over all heads
    and frames. Cost per unit: O(N T V^2 H d) for the attention, small beside the 1x1 convs
    at skeleton sizes (V <= 33).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        partitions: torch.Tensor,
        hops: torch.Tensor,
        heads: int = 8,
        qk_channels: int = 8,
        max_hop: int = 4,
    ) -> None:
        super().__init__()
        if not isinstance(heads, int) or heads < 1 or out_channels % heads:
            raise ConfigError(
                f"attention graph conv: out_channels={out_channels} is not divisible by "
                f"heads={heads}; pick a width that is a multiple of the number of heads"
            )
        if qk_channels < 1 or max_hop < 1:
            raise ConfigError(
                f"attention graph conv: qk_channels and max_hop must be >= 1, got "
                f"{qk_channels} and {max_hop}"
            )
        k = partitions.shape[0]
        self.heads = heads
        self.qk_channels = qk_channels
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.qk = nn.Conv2d(in_channels, 2 * heads * qk_channels, 1)
        self.topology = nn.Parameter(partitions[torch.arange(heads) % k].clone().float())
        self.register_buffer("hops", hops.clamp(max=max_hop).long().clone())
        bias = -torch.arange(max_hop + 1, dtype=torch.float32)
        self.hop_bias = nn.Parameter(bias.repeat(heads, 1))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Per-frame attention maps (N, H, T, V, V) for input x (N, C_in, T, V)."""
        n, _, t, v = x.shape
        h, d = self.heads, self.qk_channels
        qk = self.qk(x).view(n, 2, h, d, t, v).permute(1, 0, 2, 4, 5, 3)  # (2, N, H, T, V, d)
        logits = torch.matmul(qk[0], qk[1].transpose(-1, -2)) * d**-0.5
        logits = logits + self.hop_bias[:, self.hops].unsqueeze(1)  # (H, 1, V, V) bias
        return torch.softmax(logits, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, T, V) -> (N, C_out, T, V)."""
        r = self.attention(x) + self.topology.unsqueeze(1)  # (N, H, T, V, V)
        y = self.conv(x)
        n, c, t, v = y.shape
        y = y.view(n, self.heads, c // self.heads, t, v).permute(0, 1, 3, 4, 2)
        out = torch.matmul(r, y)  # (N, H, T, V, C/H)
        return out.permute(0, 1, 4, 2, 3).reshape(n, c, t, v)


class TemporalConv(nn.Module):
    """ST-GCN temporal conv: a (k, 1) conv with stride, then BN (the unit supplies BN+ReLU)."""

    def __init__(self, channels: int, kernel: int = 9, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            channels, channels, (kernel, 1), (stride, 1), ((kernel - 1) // 2, 0), bias=False
        )
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, T, V) -> (N, C, T/stride, V)."""
        return self.bn(self.conv(x))


def subsample(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Every ``stride``-th frame of (N, C, T, V).

    Followed by a 1x1 conv this equals a strided 1x1 conv, whose backward is ~1.5x slower
    on CPU (oneDNN) than slicing first.
    """
    return x[:, :, ::stride] if stride > 1 else x


def temporal_max_pool(x: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """Max over 3 neighbouring frames with stride: MaxPool2d((3, 1), (stride, 1), (1, 0)).

    On CPU a (3, 1) max_pool2d over NCHW is slow (~15x a 1-D pool); pooling along a
    contiguous frame axis costs one transpose copy and is much faster forward and backward.
    """
    n, c, t, v = x.shape
    y = nn.functional.max_pool1d(x.transpose(2, 3).reshape(n * c, v, t), 3, stride, 1)
    return y.view(n, c, v, -1).transpose(2, 3)


class MultiScaleTemporalConv(nn.Module):
    """Multi-scale temporal conv (MS-TCN): dilated (k, 1) convs, a max-pool and a 1x1 branch.

    The branches' 1x1 reductions are fused into one conv + one BN; the outputs are concatenated
    and normalised by one BN. Output channels: ``len(dilations) + 2`` branches of
    ``out_channels // branches`` (the 1x1 branch takes the remainder).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        kernel: int = 5,
        dilations: Sequence[int] = (1, 2),
    ) -> None:
        super().__init__()
        nb = len(dilations) + 2
        bc = out_channels // nb
        if bc < 1:
            raise ConfigError(
                f"temporal conv: out_channels={out_channels} is too small for {nb} branches"
            )
        self.split = [bc] * (nb - 1) + [out_channels - bc * (nb - 1)]
        self.stride = stride
        self.reduce = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn_reduce = nn.BatchNorm2d(out_channels)
        self.convs = nn.ModuleList(
            nn.Conv2d(
                bc, bc, (kernel, 1), (stride, 1), ((kernel - 1) * d // 2, 0), (d, 1), bias=False
            )
            for d in dilations
        )
        self.bn_out = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, T, V) -> (N, C_out, ceil(T/stride), V)."""
        # torch.split, not slicing: a slice's backward zero-fills a full-size gradient.
        *parts, point = torch.split(self.bn_reduce(self.reduce(x)), self.split, dim=1)
        parts = [torch.relu(p) for p in parts]
        outs = [conv(p) for conv, p in zip(self.convs, parts, strict=False)]
        outs.append(temporal_max_pool(parts[-1], self.stride))
        outs.append(subsample(point, self.stride))
        return self.bn_out(torch.cat(outs, dim=1))


class STUnit(nn.Module):
    """Spatial-temporal unit: graph conv -> BN -> ReLU -> temporal conv, plus a residual.

    ``gcn`` maps C_in -> C_mid at full frame rate (C_mid = ``mid_channels``, default C_out);
    ``tcn`` maps C_mid -> C_out with the stride.
    With ``inner_residual`` the graph conv gets an identity shortcut when widths match (cheap,
    helps the deep stack train, as in CTR-GCN); the unit's shortcut is identity, a strided
    1x1 conv + BN, or absent.
    """

    def __init__(
        self,
        gcn: nn.Module,
        tcn: nn.Module,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        residual: bool = True,
        dropout: float = 0.0,
        inner_residual: bool = True,
        mid_channels: int | None = None,
    ) -> None:
        super().__init__()
        mid = out_channels if mid_channels is None else mid_channels
        self.gcn = gcn
        self.bn = bn_init(nn.BatchNorm2d(mid))
        self.inner = inner_residual and in_channels == mid
        self.tcn = tcn
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        if not residual:
            self.res: nn.Module | None = None
        elif in_channels == out_channels and stride == 1:
            self.res = nn.Identity()
        else:
            self.res = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
            )
        self.stride = stride
        _conv_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, T, V) -> (N, C_out, T/stride, V)."""
        h = self.bn(self.gcn(x))
        h = torch.relu(h + x if self.inner else h)
        h = self.drop(self.tcn(h))
        if self.res is not None:
            h = h + self.res(subsample(x, self.stride))
        return torch.relu(h)
