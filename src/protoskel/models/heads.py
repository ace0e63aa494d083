"""Classification heads: map backbone features (N, M, C, T', V) to logits (N, K)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LinearHead"]


class LinearHead(nn.Module):
    """Global average pooling over persons, frames and joints, dropout, then a linear layer."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """(N, M, C, T', V) -> logits (N, K)."""
        pooled = feats.mean(dim=(1, 3, 4))
        return self.fc(self.drop(pooled))
