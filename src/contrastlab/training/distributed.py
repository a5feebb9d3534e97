"""Data-parallel training with torch.distributed: process info from the environment, a gather
that carries gradients, and the batch indices each process reads.

``torchrun --nproc-per-node N -m contrastlab train CONFIG`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`detect` reads them. Across machines, run the same command on each with
``--nnodes M --node-rank R --master-addr HOST --master-port PORT``.

Every process embeds its share of the global batch; the contrastive objectives then see the whole
global batch through :func:`all_gather_with_grad`, so negatives span all processes and the loss
equals the loss of one process holding the whole batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank, the number of processes, its device index on the node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def detect() -> DistInfo:
    """Read ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (set by torchrun); one process when unset.

    Raises:
        ValueError: values that are not integers or a rank outside ``[0, WORLD_SIZE)``.

    Example:
        >>> detect().world_size >= 1
        True
    """
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ValueError(
            f"RANK, WORLD_SIZE and LOCAL_RANK must be integers, got RANK={os.environ.get('RANK')!r} "
            f"WORLD_SIZE={os.environ.get('WORLD_SIZE')!r} LOCAL_RANK={os.environ.get('LOCAL_RANK')!r}"
        ) from None
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK must be in [0, WORLD_SIZE), got RANK={rank} WORLD_SIZE={world}")
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def init(info: DistInfo, device: torch.device) -> None:
    """Join the process group (NCCL on CUDA, gloo on CPU) unless there is one process or it is joined."""
    if info.enabled and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=info.rank, world_size=info.world_size)


def shutdown(*, together: bool = False) -> None:
    """Leave the process group if this process joined one; ``together``: after a barrier, so that no process
    tears its group down while another still talks to it (gloo's threads can abort then). Only on a clean
    finish: after an error the other processes may never reach the barrier."""
    if dist.is_available() and dist.is_initialized():
        try:
            if together:
                dist.barrier()
        finally:
            dist.destroy_process_group()


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the current process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _AllGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        rank, size = world()
        ctx.rank, ctx.rows = rank, x.shape[0]
        parts = [torch.empty_like(x) for _ in range(size)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def all_gather_with_grad(x: Tensor) -> Tensor:
    r"""Concatenate every process's ``x`` along dimension 0, with gradients flowing back to each.

    Process :math:`r` holds rows :math:`[rB, (r+1)B)` of the result. Every process computes the same
    loss :math:`L` on the gathered tensor; the backward pass sums the incoming gradients over
    processes and returns this process's rows,

    .. math:: \frac{\partial}{\partial x_r} = \sum_{q} \frac{\partial L^{(q)}}{\partial X}\Big|_{\text{rows of } r}
              = W \frac{\partial L}{\partial x_r},

    which DistributedDataParallel's averaging over :math:`W` processes turns back into
    :math:`\partial L / \partial \theta`: the same update as one process holding the whole batch.
    Without a process group it returns ``x`` unchanged.

    Args:
        x: this process's rows ``(B, ...)``; every process must pass the same shape.

    Returns:
        The gathered tensor ``(W B, ...)``.

    References:
        Chen et al., "A simple framework for contrastive learning of visual representations", ICML
        2020 (global batch negatives); Radford et al., "Learning transferable visual models from
        natural language supervision", ICML 2021.

    Example:
        >>> all_gather_with_grad(torch.ones(2, 3)).shape  # one process: unchanged
        torch.Size([2, 3])
    """
    if world()[1] == 1:
        return x
    return _AllGather.apply(x)


def all_gather_no_grad(x: Tensor) -> Tensor:
    """Concatenate every process's ``x`` along dimension 0 (labels, indices); ``x`` without a group."""
    size = world()[1]
    if size == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def all_reduce_mean(value: float | Tensor) -> float:
    """The mean of a number over processes (for logging); the number itself without a group."""
    size = world()[1]
    t = torch.as_tensor(value, dtype=torch.float64).detach().clone().cpu()
    if size > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= size
    return float(t)


def local_batch_size(batch_size: int, world_size: int) -> int:
    """The rows each process reads; the global batch must split evenly.

    Raises:
        ValueError: when ``world_size`` does not divide ``batch_size``.

    Example:
        >>> local_batch_size(256, 4)
        64
    """
    if batch_size % world_size:
        raise ValueError(
            f"batch_size {batch_size} does not split evenly over {world_size} processes; "
            f"use a multiple of {world_size}"
        )
    return batch_size // world_size
