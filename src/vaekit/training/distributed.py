"""Devices and multi-process training on PyTorch's own engine (torch.distributed, DDP).

Under ``torchrun --nproc-per-node N -m vaekit train ...`` every process trains on its shard of
each global batch: ``--batch-size`` is the global batch (split evenly over the ranks, so the
learning rate means the same as in one process), DistributedDataParallel averages the
gradients, and rank 0 alone writes checkpoints, metrics and figures.
"""

from __future__ import annotations

import gc
import os
from typing import Any

import torch
import torch.distributed as dist

from vaekit.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA, else MPS, else CPU), ``cpu``, ``cuda`` (this rank's GPU under torchrun)
    or ``mps``; a clear error when the device is not there."""
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA device is available; use --device cpu")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if name == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise ConfigError("--device mps: no MPS device is available; use --device cpu")
    return torch.device(name)


def init_from_environment(device: str = "auto") -> bool:
    """Join the process group that torchrun describes in the environment (WORLD_SIZE > 1);
    NCCL for CUDA, gloo otherwise. Returns whether this is a multi-process run."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        cuda = resolve_device(device).type == "cuda"
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group("nccl" if cuda else "gloo")
    return True


def rank_and_size() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def broadcast(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (identity in one process)."""
    if rank_and_size()[1] == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over the ranks, in place (identity in one process)."""
    if rank_and_size()[1] > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    if rank_and_size()[1] > 1:
        dist.barrier()


def finish() -> None:
    """Leave the process group (``fit`` and ``resume`` end with a barrier, so ranks that
    trained to the end leave together; a rank that failed leaves at once, so that the others'
    next collective fails instead of waiting forever)."""
    if dist.is_available() and dist.is_initialized():
        # a finished trainer can survive until the cyclic garbage collector runs (its frames
        # refer back to it), and with it DistributedDataParallel's reducer and its hold on
        # the process group: freed at interpreter exit, after the group is destroyed, gloo's
        # worker threads can abort the process ("terminate called without an active
        # exception", exit -6: the flaky two-process test, pytorch/pytorch#190489). Free it
        # while the group is alive.
        gc.collect()
        dist.destroy_process_group()
