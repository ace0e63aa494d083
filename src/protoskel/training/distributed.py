"""Distributed training through ``torch.distributed`` (torchrun; gloo on CPU, nccl on GPU).

Each process sees ``batch_size / world_size`` clips of every global batch (the loader shards the
epoch's permutation with a stride, so the union over ranks is exactly the single-process batch),
gradients are averaged by DDP, and batch-norm statistics are reduced across processes so that
training matches one process with the same global batch up to float rounding.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistInfo", "cleanup", "convert_sync_batchnorm", "init_distributed"]


@dataclass(frozen=True)
class DistInfo:
    """Rank, world size and whether a process group is active."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True when running under a process group of more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints and logs."""
        return self.rank == 0


def init_distributed() -> DistInfo:
    """Join the process group torchrun describes in the environment (no-op for one process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def cleanup(wait: bool = True) -> None:
    """Leave the process group if one is active; with ``wait``, all processes leave together.

    A process that exits with its group alive can abort (SIGABRT) in gloo's threads while the
    interpreter shuts down, failing a finished torchrun job. The barrier keeps one process from
    tearing down while another still talks to it; after an error it is skipped, since the other
    processes may never reach it.
    """
    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


class _AllReduceSum(torch.autograd.Function):
    """Sum a tensor over processes; the gradient of a sum is the sum of the gradients."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
        """All-reduce a copy of ``x``."""
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        """All-reduce the incoming gradient."""
        g = grad.contiguous().clone()
        dist.all_reduce(g)
        return g


class _ReducedBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose batch statistics are summed over all processes (works on CPU/gloo).

    torch's SyncBatchNorm only runs on accelerators; this reduces the statistics with a
    differentiable all-reduce so gradients flow through the shared statistics as well.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input, got {input.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise with global batch statistics in training, running ones in eval."""
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        c = x.shape[1]
        count = torch.tensor([x.numel() / c], dtype=torch.float64)
        xd = x.double()
        stats = torch.cat([xd.sum(dims), (xd * xd).sum(dims), count])
        stats = _AllReduceSum.apply(stats)
        n = stats[-1]
        mean = stats[:c] / n
        var = stats[c : 2 * c] / n - mean * mean
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 0.1
                unbiased = var * n / torch.clamp(n - 1, min=1)
                self.running_mean.mul_(1 - m).add_(m * mean.to(self.running_mean.dtype))
                self.running_var.mul_(1 - m).add_(m * unbiased.to(self.running_var.dtype))
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (xd - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
        y = y.to(x.dtype)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every batch-norm layer by one that reduces statistics across processes."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, _ReducedBatchNorm
    ):
        new = _ReducedBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
        )
        new.load_state_dict(module.state_dict())
        return new
    for name, child in module.named_children():
        setattr(module, name, convert_sync_batchnorm(child))
    return module
