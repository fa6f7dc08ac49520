"""torchrun / DDP plumbing: the same training code on one process or many.

``torchrun`` (or any launcher) sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`setup` then initialises the process group from
those variables (NCCL on GPUs, gloo on the CPU), so a script needs no change to run on
8 GPUs or several nodes. Without those variables it is a plain single process.

Why plain DDP settings work for the harmonizer's double back-propagation: DDP's
gradient hooks sit on the parameters' gradient accumulators. The inner
``torch.autograd.grad(logit, images, create_graph=True)`` only asks for the gradient with
respect to the *images*, so autograd never runs those accumulators and no all-reduce
fires early; the outer ``loss.backward()`` then reaches each accumulator once with the
sum of the first- and second-order contributions, and DDP all-reduces it as usual. This
must not use ``static_graph=True``: that mode queues its delayed all-reduce from the first
backward pass it sees, which would be the inner ``autograd.grad``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn as nn


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: rank, world size, local rank (GPU index on its node)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_distributed() -> bool:
    """True when a launcher such as torchrun asked for more than one process.

    Example:
        >>> import os; os.environ.pop("WORLD_SIZE", None); launched_distributed()
        False
    """
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device_type: str, timeout_minutes: float = 60.0) -> DistInfo:
    """Join the process group described by the environment (or use one already set up).

    ``device_type`` picks the backend: "cuda" -> NCCL (and this process's GPU becomes
    ``cuda:LOCAL_RANK``), anything else -> gloo. The timeout is generous because rank 0
    evaluates alone while the others wait at a barrier.

    Example:
        >>> setup("cpu").world_size  # no torchrun variables: a single process
        1
    """
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), False)
    if not launched_distributed():
        return DistInfo()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend, init_method="env://", timeout=timedelta(minutes=timeout_minutes))
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, True)


def teardown(info: DistInfo) -> None:
    """Destroy the process group if :func:`setup` created it."""
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def local_device(info: DistInfo, device: torch.device) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` for multi-process CUDA, else ``device``.

    Example:
        >>> local_device(DistInfo(rank=1, world_size=2, local_rank=1), torch.device("cuda"))
        device(type='cuda', index=1)
    """
    if info.distributed and device.type == "cuda":
        return torch.device("cuda", info.local_rank)
    return device


def wrap(model: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """``DistributedDataParallel`` around ``model`` when distributed, else ``model`` itself.

    Plain DDP (no ``static_graph``, no ``find_unused_parameters``): see the module note on
    double back-propagation.

    Example:
        >>> m = nn.Linear(2, 2); wrap(m, DistInfo(), torch.device("cpu")) is m
        True
    """
    if not info.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index if device.index is not None else info.local_rank] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=True)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DDP (or the model itself).

    Example:
        >>> m = nn.Linear(2, 2); unwrap(m) is m
        True
    """
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def all_reduce_mean(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of ``t`` over all ranks (``t`` itself on one process); returns a new tensor.

    Example:
        >>> all_reduce_mean(torch.tensor([1.0, 3.0]), DistInfo())
        tensor([1., 3.])
    """
    t = t.detach().clone()
    if info.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= info.world_size
    return t


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op on one process)."""
    if info.distributed:
        dist.barrier()


def broadcast_object(obj: object, info: DistInfo, src: int = 0) -> object:
    """Rank ``src``'s ``obj`` on every rank (e.g. a decision rank 0 took after evaluating)."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
