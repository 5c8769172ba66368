"""Device choice and torch.distributed set-up: one process per device under torchrun, or a single process."""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from posecli.errors import PoseCliError


@dataclass(frozen=True)
class DistInfo:
    """Where this process runs and who its peers are."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None  # None when not distributed

    @property
    def is_main(self) -> bool:
        """True on the process that logs and writes files (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when more than one process trains together."""
        return self.world_size > 1


def resolve_device(requested: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is a user error."""
    if requested not in ("auto", "cpu", "cuda") and not requested.startswith("cuda:"):
        raise PoseCliError(f"unknown device '{requested}' (use auto, cpu or cuda)")
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise PoseCliError("--device cuda was asked for but no CUDA device is available (use --device cpu)")
    if requested.startswith("cuda:"):
        return torch.device(requested)
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def init_distributed(requested_device: str) -> DistInfo:
    """Join the process group torchrun describes in the environment (NCCL on GPUs, gloo on CPU), if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(requested_device, local_rank)
    if world_size <= 1:
        return DistInfo(0, 1, 0, device, None)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        kwargs: dict[str, Any] = {"backend": backend}
        if backend == "nccl":
            kwargs["device_id"] = device  # binds the communicator to this GPU up front
        dist.init_process_group(**kwargs)
    return DistInfo(rank, world_size, local_rank, device, backend)


def cleanup_distributed(info: DistInfo) -> None:
    """Leave the process group (safe to call when not distributed)."""
    if info.distributed and dist.is_initialized():
        # DDP's reducer holds the group and gloo work objects: free them while the group is alive, or a
        # gloo thread can be torn down at interpreter exit ("terminate called without an active exception")
        gc.collect()
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for every process (no-op in a single process)."""
    if info.distributed:
        if info.backend == "nccl":
            dist.barrier(device_ids=[info.device.index])
        else:
            dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a tensor over all processes in place and return it (identity in a single process)."""
    if info.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every process's ``obj``, in rank order (``[obj]`` in a single process)."""
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every process."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_buffers(module: torch.nn.Module, info: DistInfo) -> None:
    """Give every process rank 0's buffers (BN running statistics), as mmcv's DistEvalHook does before evaluating.

    DDP broadcasts buffers at the start of each training forward, but that forward then updates each process's
    statistics with its own batch, so after the last step they differ from rank 0's (the ones saved).
    """
    if info.distributed:
        for buf in module.buffers():
            dist.broadcast(buf, src=0)
