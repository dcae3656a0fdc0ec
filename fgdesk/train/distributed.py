"""torch.distributed glue for runs started by torchrun (gloo on CPU, nccl on GPU)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init_from_env(device_type: str) -> DistContext:
    """Join the process group that torchrun describes in the environment; a no-op otherwise."""
    if not launched_by_torchrun():
        return DistContext()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def shutdown(context: DistContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(context: DistContext) -> None:
    if context.enabled:
        dist.barrier()


@torch.no_grad()
def all_gather_cat(tensor: torch.Tensor, context: DistContext) -> torch.Tensor:
    """Concatenate a tensor of the same shape from every rank (no gradient flows back)."""
    if not context.enabled:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(context.world_size)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


@torch.no_grad()
def all_gather_rows(rows: torch.Tensor, ids: torch.Tensor, most: int, context: DistContext) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather (rows, ids) from every rank when ranks hold different numbers of rows, up to `most`.

    A rank whose batch lost unreadable images has fewer rows, and all_gather needs equal
    shapes: each rank pads to `most` with id -1, and the padding is dropped after gathering.
    """
    if not context.enabled:
        return rows, ids
    missing = most - len(ids)
    if missing > 0:
        rows = torch.cat([rows, rows.new_zeros((missing, *rows.shape[1:]))])
        ids = torch.cat([ids, ids.new_full((missing,), -1)])
    rows, ids = all_gather_cat(rows, context), all_gather_cat(ids, context)
    kept = ids >= 0
    return rows[kept], ids[kept]


def all_reduce_min(value: int, context: DistContext, device: torch.device) -> int:
    if not context.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return int(tensor.item())


def broadcast_object(value: Any, context: DistContext) -> Any:
    if not context.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_mean(values: list[float], context: DistContext, device: torch.device) -> list[float]:
    """The mean of each value over every rank, in one collective; the same result on every rank."""
    if not context.enabled:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return [float(v) / context.world_size for v in tensor.tolist()]
