"""Registered backbones: ``stgcn`` (ST-GCN baseline), ``atgcn`` (adaptive topology, the
default) and ``sagcn`` (per-frame attention topology).

All take ``(N, C, T, V, M)`` clips, fold the M persons into the batch, and return features
``(N, M, C_out, T', V)``. Everything layout-specific (the graph) comes from the layout.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from protoskel.errors import ConfigError
from protoskel.layouts import Layout
from protoskel.models.blocks import (
    AdaptiveGraphConv,
    AttentionGraphConv,
    DataNorm,
    GraphConv,
    MultiScaleTemporalConv,
    STUnit,
    TemporalConv,
)
from protoskel.models.graph import hop_distance, spatial_partitions
from protoskel.models.registry import register_backbone

__all__ = ["ATGCN", "SAGCN", "STGCN", "stage_plan"]


def stage_plan(width: int, depth: int, late: bool = True) -> tuple[list[int], list[int]]:
    """Channels and strides for ``depth`` units in three stages of width w, 2w, 4w.

    Stages 2 and 3 start with a temporal stride of 2. With ``late`` the extra units go to the
    later stages (depth 8 -> 2-3-3): on CPU a unit at full frame rate costs about as much as
    two at half rate, so depth is cheapest where frames are fewer. ``late=False`` gives the
    field's plan (depth 10 -> 4-3-3, as in ST-GCN and CTR-GCN).
    """
    if depth < 3:
        raise ConfigError(f"depth must be at least 3 (one unit per stage), got {depth}")
    extra = [i >= 3 - depth % 3 for i in range(3)] if late else [i < depth % 3 for i in range(3)]
    sizes = [depth // 3 + e for e in extra]
    channels: list[int] = []
    strides: list[int] = []
    for s, n in enumerate(sizes):
        channels += [width * 2**s] * n
        strides += [2 if s > 0 else 1] + [1] * (n - 1)
    return channels, strides


def _check_plan(
    name: str,
    channels: Sequence[int] | None,
    strides: Sequence[int] | None,
    width: int,
    depth: int,
    late: bool = True,
) -> tuple[list[int], list[int]]:
    """Validate or derive the per-unit channels and strides."""
    if not isinstance(width, int) or width < 1:
        raise ConfigError(f"{name}: width must be a positive integer, got {width!r}")
    if channels is None:
        plan_c, plan_s = stage_plan(width, depth, late)
        return plan_c, list(strides) if strides is not None else plan_s
    channels = list(channels)
    strides = list(strides) if strides is not None else [1] * len(channels)
    if not channels or len(channels) != len(strides):
        raise ConfigError(
            f"{name}: channels ({len(channels)} values) and strides ({len(strides)} values) "
            "must be non-empty lists of the same length"
        )
    if any(not isinstance(c, int) or c < 1 for c in channels) or any(
        s not in (1, 2, 3) for s in strides
    ):
        raise ConfigError(
            f"{name}: channels must be positive integers and strides 1, 2 or 3; "
            f"got channels={channels}, strides={strides}"
        )
    return channels, strides


class _SkeletonBackbone(nn.Module):
    """Shared input/output handling: fold persons into the batch, unfold at the end."""

    out_channels: int

    def __init__(self, layout: Layout, in_channels: int, num_persons: int | None) -> None:
        super().__init__()
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ConfigError(f"in_channels must be a positive integer, got {in_channels!r}")
        self.layout_name = layout.name
        self.num_joints = layout.num_joints
        self.in_channels = in_channels
        self.data_norm = DataNorm(in_channels, layout.num_joints, num_persons)
        self.units = nn.Sequential()

    def _stack_units(
        self,
        name: str,
        chans: Sequence[int],
        strd: Sequence[int],
        make_gcn: Callable[[int, int], nn.Module],
        widen: str,
        kernel_size: int,
        dilations: Sequence[int],
        dropout: float,
    ) -> None:
        """Append graph-conv + multi-scale temporal-conv units; set ``out_channels``."""
        if widen not in ("tcn", "gcn"):
            raise ConfigError(f"{name}: widen must be 'tcn' or 'gcn', got {widen!r}")
        c_prev = self.in_channels
        for i, (c, s) in enumerate(zip(chans, strd, strict=True)):
            # With widen="tcn" a transition unit's graph conv keeps the old width at full frame
            # rate and the temporal conv widens (~20% faster per step than widening in the
            # graph conv, as CTR-GCN does); the first unit always lifts coordinates to width.
            c_mid = c if i == 0 or widen == "gcn" else c_prev
            # The graph conv is built before the temporal conv: the seeded init order is part of
            # a recipe (shipped checkpoints are reproduced from it).
            gcn = make_gcn(c_prev, c_mid)
            tcn = MultiScaleTemporalConv(c_mid, c, s, kernel_size, tuple(dilations))
            unit = STUnit(
                gcn, tcn, c_prev, c, s, residual=i > 0, dropout=dropout, mid_channels=c_mid
            )
            self.units.append(unit)
            c_prev = c
        self.out_channels = c_prev

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, T, V, M) -> features (N, M, C_out, T', V)."""
        # Skipped under tracing (export), where shapes are fixed and the check only warns.
        if not torch.jit.is_tracing() and (
            x.dim() != 5 or x.shape[1] != self.in_channels or x.shape[3] != self.num_joints
        ):
            raise ConfigError(
                f"backbone expects input (N, C={self.in_channels}, T, V={self.num_joints}, M) "
                f"for layout {self.layout_name!r}, got shape {tuple(x.shape)}"
            )
        n, m = x.shape[0], x.shape[4]
        y = self.units(self.data_norm(x))
        return y.view(n, m, *y.shape[1:])


@register_backbone("stgcn")
class STGCN(_SkeletonBackbone):
    """ST-GCN (Yan et al., AAAI 2018): static spatial-partition graph conv + (9, 1) temporal conv.

    Defaults are the original 10 units 64x4-128x3-256x3; ``width``/``depth`` or explicit
    ``channels``/``strides`` change it. ``dropout`` is applied after each temporal conv.
    """

    def __init__(
        self,
        layout: Layout,
        in_channels: int = 3,
        *,
        width: int = 64,
        depth: int = 10,
        channels: Sequence[int] | None = None,
        strides: Sequence[int] | None = None,
        kernel_size: int = 9,
        dropout: float = 0.0,
        edge_importance: bool = True,
        num_persons: int | None = None,
    ) -> None:
        super().__init__(layout, in_channels, num_persons)
        chans, strd = _check_plan("stgcn", channels, strides, width, depth, late=False)
        a = torch.from_numpy(spatial_partitions(layout))
        c_prev = in_channels
        for i, (c, s) in enumerate(zip(chans, strd, strict=True)):
            gcn = GraphConv(c_prev, c, a, edge_importance)
            tcn = TemporalConv(c, kernel_size, s)
            self.units.append(
                STUnit(
                    gcn, tcn, c_prev, c, s, residual=i > 0, dropout=dropout, inner_residual=False
                )
            )
            c_prev = c
        self.out_channels = c_prev


@register_backbone("atgcn")
class ATGCN(_SkeletonBackbone):
    """Adaptive-topology GCN, protoskel's default: CTR-GCN's ideas at a fraction of the cost.

    Units: :class:`AdaptiveGraphConv` (``groups`` channel-group topologies initialised from the
    layout's spatial partition, refined per sample by a cheap data-dependent correlation)
    -> BN -> ReLU -> :class:`MultiScaleTemporalConv` (kernel ``kernel_size``, ``dilations``,
    max-pool and 1x1 branches), with an inner graph-conv shortcut and a unit residual.
    Default plan: depth 8 as 2-3-3 units of width 64-128-256, temporal stride 2 at stage starts
    (``width``/``depth`` rescale it, ``channels``/``strides`` replace it); a unit that widens
    does so in its temporal conv (``widen="tcn"``) or, as in CTR-GCN, in its graph conv
    (``widen="gcn"``). ``dropout`` acts after each temporal conv. Defaults: 0.68M parameters
    and 0.46 GFLOPs per NW-UCLA clip (CTR-GCN: 1.43M, 1.13).
    """

    def __init__(
        self,
        layout: Layout,
        in_channels: int = 3,
        *,
        width: int = 64,
        depth: int = 8,
        channels: Sequence[int] | None = None,
        strides: Sequence[int] | None = None,
        groups: int = 16,
        rel_channels: int = 8,
        kernel_size: int = 5,
        dilations: Sequence[int] = (1, 2),
        adaptive: bool = True,
        widen: str = "tcn",
        dropout: float = 0.0,
        num_persons: int | None = None,
    ) -> None:
        super().__init__(layout, in_channels, num_persons)
        chans, strd = _check_plan("atgcn", channels, strides, width, depth)
        a = torch.from_numpy(spatial_partitions(layout))

        def make_gcn(c_in: int, c_out: int) -> nn.Module:
            # Narrow models (e.g. width 8 in tests and demos) get as many groups as divide
            # their width; the default widths are multiples of 16, so defaults are unchanged.
            g = math.gcd(groups, c_out)
            return AdaptiveGraphConv(c_in, c_out, a, g, rel_channels, adaptive)

        self._stack_units("atgcn", chans, strd, make_gcn, widen, kernel_size, dilations, dropout)


@register_backbone("sagcn")
class SAGCN(_SkeletonBackbone):
    """Self-attention GCN: atgcn's units with a per-frame attention topology in each graph conv.

    Units: :class:`AttentionGraphConv` (``heads`` attention heads of ``qk_channels`` over the
    joints of every frame, biased by hop distance along the layout's bones and added to a
    learnable topology initialised from the layout's partitions) -> BN -> ReLU ->
    :class:`MultiScaleTemporalConv`, with atgcn's plan, shortcuts and options. It is a second
    model family for ensembles: atgcn refines one topology per clip, sagcn one per frame.
    Defaults: 0.69M parameters; 4 heads, because attention over many heads of a few channels
    is a batch of tiny matmuls, slow on CPU (8 heads cost 2x the graph conv time of 4).
    """

    def __init__(
        self,
        layout: Layout,
        in_channels: int = 3,
        *,
        width: int = 64,
        depth: int = 8,
        channels: Sequence[int] | None = None,
        strides: Sequence[int] | None = None,
        heads: int = 4,
        qk_channels: int = 8,
        max_hop: int = 4,
        kernel_size: int = 5,
        dilations: Sequence[int] = (1, 2),
        widen: str = "tcn",
        dropout: float = 0.0,
        num_persons: int | None = None,
    ) -> None:
        super().__init__(layout, in_channels, num_persons)
        chans, strd = _check_plan("sagcn", channels, strides, width, depth)
        a = torch.from_numpy(spatial_partitions(layout))
        hops = torch.from_numpy(hop_distance(layout))

        def make_gcn(c_in: int, c_out: int) -> nn.Module:
            # No silent fallback to fewer heads (atgcn's groups have one): a head count is a
            # modelling choice, so a width it does not divide is an error naming both.
            return AttentionGraphConv(c_in, c_out, a, hops, heads, qk_channels, max_hop)

        self._stack_units("sagcn", chans, strd, make_gcn, widen, kernel_size, dilations, dropout)
