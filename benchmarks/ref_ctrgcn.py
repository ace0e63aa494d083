"""Reference CTR-GCN, re-implemented from the paper for speed comparison only.

Chen et al., "Channel-wise Topology Refinement Graph Convolution for Skeleton-Based Action
Recognition", ICCV 2021. Written from the paper's description (no code copied):

- CTR-GC: shared topology A_k (learnable, initialised from the spatial partition), a
  data-dependent channel-wise correlation Q = xi(tanh(phi(x)_i - psi(x)_j)) computed on
  temporally pooled features with C' = C_in / 8 reduced channels, refined topology
  R = A_k + alpha * Q, aggregation of rho(x) channel by channel. Three subsets, summed, BN,
  residual (1x1 conv + BN when channels change), ReLU.
- Multi-scale temporal conv: four branches of C_out / 4 channels (kernel 5 with dilations 1
  and 2, a 3-frame max-pool branch, a 1x1 branch), concatenated.
- Ten units 64-64-64-64-128-128-128-256-256-256, stride 2 at units 5 and 8, input BatchNorm
  over M*V*C, global average pooling, mean over persons, linear classifier.

This is deliberately the straightforward formulation (one module per subset, per branch),
as the paper describes it, so the comparison is against the model as usually run.
"""

from __future__ import annotations

import torch
from torch import nn

from protoskel.layouts import Layout
from protoskel.models.graph import spatial_partitions

__all__ = ["CTRGCN"]


def _bn(c: int, scale: float = 1.0) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(c)
    nn.init.constant_(bn.weight, scale)
    nn.init.zeros_(bn.bias)
    return bn


class CTRGC(nn.Module):
    """One channel-wise topology refinement graph convolution for one subset."""

    def __init__(self, c_in: int, c_out: int, rel_reduction: int = 8) -> None:
        super().__init__()
        rel = 8 if c_in <= 16 else c_in // rel_reduction
        self.phi = nn.Conv2d(c_in, rel, 1)
        self.psi = nn.Conv2d(c_in, rel, 1)
        self.rho = nn.Conv2d(c_in, c_out, 1)
        self.xi = nn.Conv2d(rel, c_out, 1)

    def forward(self, x: torch.Tensor, a: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """x (N, C_in, T, V), a (V, V) -> (N, C_out, T, V)."""
        pooled = x.mean(-2)  # (N, C, V)
        x1 = self.phi(pooled.unsqueeze(-1)).squeeze(-1)
        x2 = self.psi(pooled.unsqueeze(-1)).squeeze(-1)
        q = torch.tanh(x1.unsqueeze(-1) - x2.unsqueeze(-2))  # (N, C', V, V)
        r = self.xi(q) * alpha + a  # (N, C_out, V, V)
        return torch.einsum("ncuv,nctv->nctu", r, self.rho(x))


class UnitGCN(nn.Module):
    """Three CTR-GCs (one per partition subset), summed, BN, residual, ReLU."""

    def __init__(self, c_in: int, c_out: int, a: torch.Tensor) -> None:
        super().__init__()
        self.a = nn.Parameter(a.clone())
        self.alpha = nn.Parameter(torch.zeros(1))
        self.convs = nn.ModuleList(CTRGC(c_in, c_out) for _ in range(a.shape[0]))
        self.bn = _bn(c_out, 1e-6)
        self.down = (
            nn.Identity() if c_in == c_out else nn.Sequential(nn.Conv2d(c_in, c_out, 1), _bn(c_out))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, T, V) -> (N, C_out, T, V)."""
        y = sum(conv(x, self.a[k], self.alpha) for k, conv in enumerate(self.convs))
        return torch.relu(self.bn(y) + self.down(x))


class MultiScaleTCN(nn.Module):
    """Four temporal branches (dilated k=5 convs, max-pool, 1x1) of C_out/4 channels each."""

    def __init__(
        self, c_in: int, c_out: int, stride: int = 1, kernel: int = 5, dilations=(1, 2)
    ) -> None:
        super().__init__()
        nb = len(dilations) + 2
        bc = c_out // nb
        self.branches = nn.ModuleList()
        for d in dilations:
            pad = (kernel + (kernel - 1) * (d - 1) - 1) // 2
            self.branches.append(
                nn.Sequential(
                    nn.Conv2d(c_in, bc, 1),
                    _bn(bc),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(bc, bc, (kernel, 1), (stride, 1), (pad, 0), (d, 1)),
                    _bn(bc),
                )
            )
        self.branches.append(
            nn.Sequential(
                nn.Conv2d(c_in, bc, 1),
                _bn(bc),
                nn.ReLU(inplace=True),
                nn.MaxPool2d((3, 1), (stride, 1), (1, 0)),
                _bn(bc),
            )
        )
        self.branches.append(
            nn.Sequential(
                nn.Conv2d(c_in, c_out - bc * (nb - 1), 1, (stride, 1)), _bn(c_out - bc * (nb - 1))
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, T, V) -> (N, C_out, T/stride, V)."""
        return torch.cat([b(x) for b in self.branches], dim=1)


class Unit(nn.Module):
    """CTR-GCN unit: GCN then multi-scale TCN, with a block residual."""

    def __init__(
        self, c_in: int, c_out: int, a: torch.Tensor, stride: int = 1, residual: bool = True
    ) -> None:
        super().__init__()
        self.gcn = UnitGCN(c_in, c_out, a)
        self.tcn = MultiScaleTCN(c_out, c_out, stride)
        if not residual:
            self.res = None
        elif c_in == c_out and stride == 1:
            self.res = nn.Identity()
        else:
            self.res = nn.Sequential(nn.Conv2d(c_in, c_out, 1, (stride, 1)), _bn(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, T, V) -> (N, C_out, T/stride, V)."""
        y = self.tcn(self.gcn(x))
        return torch.relu(y if self.res is None else y + self.res(x))


class CTRGCN(nn.Module):
    """CTR-GCN classifier: (N, C, T, V, M) -> logits (N, K)."""

    def __init__(
        self,
        layout: Layout,
        num_classes: int,
        in_channels: int = 3,
        num_persons: int = 2,
        base: int = 64,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        v = layout.num_joints
        a = torch.from_numpy(spatial_partitions(layout))
        self.data_bn = nn.BatchNorm1d(num_persons * v * in_channels)
        chans = [base] * 4 + [2 * base] * 3 + [4 * base] * 3
        strides = [1] * 4 + [2, 1, 1, 2, 1, 1]
        units = []
        c_prev = in_channels
        for i, (c, s) in enumerate(zip(chans, strides, strict=True)):
            units.append(Unit(c_prev, c, a, s, residual=i > 0))
            c_prev = c
        self.units = nn.Sequential(*units)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(c_prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, T, V, M) -> logits (N, K)."""
        n, c, t, v, m = x.shape
        x = x.permute(0, 4, 3, 1, 2).reshape(n, m * v * c, t)
        x = self.data_bn(x).view(n, m, v, c, t).permute(0, 1, 3, 4, 2).reshape(n * m, c, t, v)
        y = self.units(x)
        y = y.view(n, m, y.shape[1], -1).mean(dim=(1, 3))
        return self.fc(self.drop(y))
