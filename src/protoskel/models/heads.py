"""Classification heads: map backbone features (N, M, C, T', V) to logits (N, K)."""

from __future__ import annotations

import torch
from torch import nn

from protoskel.errors import ConfigError

__all__ = ["POOLS", "LinearHead"]

#: Pooling of (N, M, C, T', V) features into one vector per clip (persons are always averaged).
POOLS = ("mean", "meanmax")


class LinearHead(nn.Module):
    """Global pooling over persons, frames and joints, dropout, then a linear layer.

    ``pool="mean"`` averages; ``"meanmax"`` concatenates the average with the maximum over
    frames and joints, so a short event (a throw, a reach to the floor) is not diluted by the
    rest of the clip.
    """

    def __init__(
        self, in_channels: int, num_classes: int, dropout: float = 0.0, pool: str = "mean"
    ) -> None:
        super().__init__()
        if pool not in POOLS:
            raise ConfigError(f"linear head: pool must be one of {', '.join(POOLS)}, got {pool!r}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.pool = pool
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_channels * (2 if pool == "meanmax" else 1), num_classes)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """(N, M, C, T', V) -> logits (N, K)."""
        if self.pool == "mean":
            pooled = feats.mean(dim=(1, 3, 4))
        else:
            per_clip = feats.mean(dim=1)
            pooled = torch.cat([per_clip.mean(dim=(2, 3)), per_clip.amax(dim=(2, 3))], dim=1)
        return self.fc(self.drop(pooled))
