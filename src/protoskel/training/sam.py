"""Sharpness-aware minimisation (Foret et al., ICLR 2021) for the training loop.

With ``train.sam_rho > 0`` each step takes two gradients: one at the weights, then one at the
weights moved by ``rho`` along the normalised first gradient (the worst nearby point, to
first order); the optimiser steps from the original weights with the second gradient. Flat
minima of this kind generalise better across domains in the domain-generalisation literature
(SWAD, GSAM), and cross-view action recognition is such a shift between cameras. A step costs
two forwards and two backwards.

The second forward must not move batch-norm running statistics a second time (they would be
estimated on perturbed weights), so :func:`kept_batchnorm_stats` restores them afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

__all__ = ["kept_batchnorm_stats", "sam_ascend", "sam_return"]


@torch.no_grad()
def sam_ascend(model: nn.Module, rho: float) -> list[tuple[nn.Parameter, Tensor]]:
    """Move the parameters by ``rho`` along their normalised gradient; return the moves made."""
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return []
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
    scale = rho / (float(norm) + 1e-12)
    moves = []
    for p in params:
        e = p.grad * scale
        p.add_(e)
        moves.append((p, e))
    return moves


@torch.no_grad()
def sam_return(moves: list[tuple[nn.Parameter, Tensor]]) -> None:
    """Undo :func:`sam_ascend`'s moves (the gradients now held are those of the moved point)."""
    for p, e in moves:
        p.sub_(e)


@contextlib.contextmanager
def kept_batchnorm_stats(model: nn.Module) -> Iterator[None]:
    """Run a block in training mode without changing any batch norm's running statistics."""
    saved = [
        (m, {k: v.clone() for k, v in m.named_buffers(recurse=False)})
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, buffers in saved:
                for k, v in buffers.items():
                    getattr(m, k).copy_(v)
