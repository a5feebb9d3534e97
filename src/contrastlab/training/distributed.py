"""Data-parallel training with torch.distributed: process info from the environment, collectives on
the device their backend needs, a gather that carries gradients, and the batch indices each process reads.

``torchrun --nproc-per-node N -m contrastlab train CONFIG`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`detect` reads them. Across machines, run the same command on each with
``--nnodes M --node-rank R --master-addr HOST --master-port PORT``.

Every process embeds its share of the global batch; the contrastive objectives then see the whole
global batch through :func:`all_gather_with_grad`, so negatives span all processes and the loss
equals the loss of one process holding the whole batch.

**Devices.** The process group is NCCL on CUDA and gloo on CPU (:func:`init`). NCCL reduces and
gathers CUDA tensors only, so every collective here first moves its tensors to
:func:`collective_device` (this process's CUDA device under NCCL, the tensor's own device under
gloo) and hands its result back on the device the caller's tensor came from: a loss summed on the
GPU and a count held in a Python float are reduced alike.

**A process group of one.** With one process nothing is gathered or reduced, so a collective that
only fails under its backend would hide on a single GPU. ``CONTRASTLAB_DDP=1`` forces the group on
whenever ``WORLD_SIZE`` is set, ``WORLD_SIZE=1`` included: ``CONTRASTLAB_DDP=1 torchrun
--nproc-per-node 1 -m contrastlab train CONFIG`` then runs every collective of a real run (gloo on
CPU, NCCL on a GPU) and gives the losses of a plain one-process run. Without ``WORLD_SIZE`` (a plain
``contrastlab train``) the variable changes nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

FORCE_VARIABLE = "CONTRASTLAB_DDP"


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank, the number of processes, its device index on the node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    forced: bool = False  #: ``CONTRASTLAB_DDP=1`` under torchrun: a process group even of one process

    @property
    def enabled(self) -> bool:
        """Whether this process joins a process group: several processes, or one when forced."""
        return self.world_size > 1 or self.forced

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _forced() -> bool:
    value = os.environ.get(FORCE_VARIABLE, "").strip()
    if value not in ("", "0", "1"):
        raise ValueError(f"{FORCE_VARIABLE} must be 0 or 1, got {FORCE_VARIABLE}={value!r}")
    return value == "1"


def detect() -> DistInfo:
    """Read ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (set by torchrun); one process when unset.

    ``CONTRASTLAB_DDP=1`` with ``WORLD_SIZE`` set marks the process group as wanted even for one
    process (:attr:`DistInfo.forced`); without ``WORLD_SIZE`` it is ignored.

    Raises:
        ValueError: values that are not integers, a rank outside ``[0, WORLD_SIZE)``, or a
            ``CONTRASTLAB_DDP`` other than 0 or 1.

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
    forced = "WORLD_SIZE" in os.environ and _forced()
    return DistInfo(rank=rank, world_size=world, local_rank=local, forced=forced)


def init(info: DistInfo, device: torch.device) -> None:
    """Join the process group (NCCL on CUDA, gloo on CPU) when ``info.enabled`` and not joined yet.

    On CUDA the process's current device becomes ``device`` first: NCCL, :func:`collective_device`
    and :func:`barrier` then all use the GPU this process trains on.
    """
    if not info.enabled or dist.is_initialized():
        return
    if device.type == "cuda":
        if device.index is not None:
            torch.cuda.set_device(device)
        dist.init_process_group("nccl", rank=info.rank, world_size=info.world_size)
    else:
        dist.init_process_group("gloo", rank=info.rank, world_size=info.world_size)


def active() -> bool:
    """Whether this process is in a process group: the collectives run then, even in a group of one."""
    return dist.is_available() and dist.is_initialized()


def collective_device(tensor: Tensor | None = None) -> torch.device:
    """The device on which the process group's backend takes ``tensor`` (a new tensor when ``None``).

    NCCL works on CUDA tensors only: a CUDA tensor stays where it is, anything else goes to this
    process's current CUDA device (:func:`init` sets it to the training device; whoever forms an NCCL
    group another way sets it with ``torch.cuda.set_device``). Other backends (gloo) and no process
    group: the tensor's own device, the CPU for a new tensor.

    Example:
        >>> collective_device(torch.zeros(2))  # no process group
        device(type='cpu')
    """
    here = torch.device("cpu") if tensor is None else tensor.device
    if here.type != "cuda" and active() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return here


def barrier() -> None:
    """Wait until every process of the group gets here; nothing without a group. Under NCCL the
    barrier runs on this process's GPU (NCCL would otherwise guess one from the rank)."""
    if not active():
        return
    device = collective_device()
    dist.barrier(device_ids=[device.index] if device.type == "cuda" else None)


def shutdown(*, together: bool = False) -> None:
    """Leave the process group if this process joined one; ``together``: after a barrier, so that no process
    tears its group down while another still talks to it (gloo's threads can abort then). Only on a clean
    finish: after an error the other processes may never reach the barrier."""
    if active():
        try:
            if together:
                barrier()
        finally:
            dist.destroy_process_group()


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the current process group, ``(0, 1)`` without one."""
    if active():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _gather(x: Tensor) -> Tensor:
    """Every process's ``x`` concatenated along dimension 0, gathered on :func:`collective_device`,
    returned on ``x``'s device."""
    local = x.detach().to(collective_device(x), memory_format=torch.contiguous_format)
    parts = [torch.empty_like(local) for _ in range(world()[1])]
    dist.all_gather(parts, local)
    return torch.cat(parts, dim=0).to(x.device)


class _AllGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.rank, ctx.rows, ctx.device = world()[0], x.shape[0], x.device
        return _gather(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        # a contiguous copy: the reduction is in place, and ``grad`` may be shared with other nodes
        total = grad.to(collective_device(grad), memory_format=torch.contiguous_format, copy=True)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows].to(ctx.device)


def all_gather_with_grad(x: Tensor) -> Tensor:
    r"""Concatenate every process's ``x`` along dimension 0, with gradients flowing back to each.

    Process :math:`r` holds rows :math:`[rB, (r+1)B)` of the result. Every process computes the same
    loss :math:`L` on the gathered tensor; the backward pass sums the incoming gradients over
    processes and returns this process's rows,

    .. math:: \frac{\partial}{\partial x_r} = \sum_{q} \frac{\partial L^{(q)}}{\partial X}\Big|_{\text{rows of } r}
              = W \frac{\partial L}{\partial x_r},

    which DistributedDataParallel's averaging over :math:`W` processes turns back into
    :math:`\partial L / \partial \theta`: the same update as one process holding the whole batch.
    Gathered on :func:`collective_device`, returned on ``x``'s device; without a process group it
    returns ``x`` unchanged.

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
    if not active():
        return x
    return _AllGather.apply(x)


def all_gather_no_grad(x: Tensor) -> Tensor:
    """Concatenate every process's ``x`` along dimension 0 (labels, indices, random states), on
    ``x``'s device; ``x`` itself without a process group."""
    if not active():
        return x
    return _gather(x)


def all_reduce_mean(value: float | Tensor) -> float:
    """The mean of a number over processes (for logging); the number itself without a process group.

    Args:
        value: a Python number or a one-element tensor on any device.

    Example:
        >>> all_reduce_mean(torch.tensor(2.5))  # no process group
        2.5
    """
    t = torch.as_tensor(value, dtype=torch.float64).detach()
    if not active():
        return float(t)
    t = t.to(collective_device(t), copy=True)  # a copy: the reduction is in place
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t) / world()[1]


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
