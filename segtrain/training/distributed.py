"""Process-group handling for `torchrun` (DistributedDataParallel), and its single-process twin.

Under torchrun (RANK/WORLD_SIZE/LOCAL_RANK in the environment) a process group is started with
nccl on CUDA and gloo on CPU; a process group the caller started already is used as it is (and
left for the caller to end). Otherwise everything here is a no-op, so the training loop has one
code path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler

from segtrain.common.errors import ToolError
from segtrain.common.limits import MAX_WORLD_SIZE
from segtrain.common.outside_text import OutsideTextError, env_value
from segtrain.common.settings import between

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this code started the process group, so it ends it

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, values: np.ndarray) -> np.ndarray:
        """Element-wise sum over ranks (float64 or int64 arrays)."""
        if not self.enabled:
            return values
        t = torch.from_numpy(np.ascontiguousarray(values))
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.cpu().numpy()

    def all_true(self, flag: bool) -> bool:
        """True only when `flag` holds on every rank (one tiny collective per call)."""
        if not self.enabled:
            return flag
        return bool(self.all_reduce_sum(np.array([0 if flag else 1], dtype=np.int64))[0] == 0)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def decide(self, choose: Callable[[], T]) -> T:
        """`choose()` on the main process only; its result, or the ToolError it raised, on every process.

        For decisions that must agree across processes (which folder to write to) and errors that
        must stop all of them rather than leave the others waiting in a collective.
        """
        if not self.enabled:
            return choose()
        outcome: list = [None]
        if self.is_main:
            try:
                outcome[0] = (True, choose())
            except ToolError as e:
                outcome[0] = (False, e)
        dist.broadcast_object_list(outcome, src=0)
        ok, value = outcome[0]
        if not ok:
            raise value
        return value

    def broadcast_buffers(self, model: nn.Module) -> None:
        """Every process takes the main process's buffers (BatchNorm statistics), so all score its model."""
        if self.enabled:
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)


def torchrun_environment(environ: Mapping[str, str] | None = None) -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's variables, each checked (segtrain.common.outside_text):
    WORLD_SIZE from 1 to MAX_WORLD_SIZE, RANK below it (required when it is above 1), LOCAL_RANK at least 0."""
    world = env_value("WORLD_SIZE", int, between(1, MAX_WORLD_SIZE), 1, environ)
    rank = env_value("RANK", int, between(0, world - 1), None, environ)
    local = env_value("LOCAL_RANK", int, between(0, MAX_WORLD_SIZE - 1), 0, environ)
    if world > 1 and rank is None:
        raise OutsideTextError(f"$WORLD_SIZE={world} but $RANK is not set; start the processes with torchrun")
    return rank or 0, world, local


def init_distributed(device_name: str) -> DistContext:
    """Join the torchrun process group when launched by torchrun; else a single-process context."""
    rank, world, local = torchrun_environment()
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), local)
    if world <= 1:
        return DistContext()
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistContext(rank, world, local, owns_group=True)


def shutdown_distributed(ctx: DistContext) -> None:
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


class ShardSampler(Sampler[int]):
    """Every rank takes indices rank, rank+W, ...: no padding, so reduced metrics equal one process's."""

    def __init__(self, length: int, ctx: DistContext) -> None:
        self.indices = list(range(ctx.rank, length, ctx.world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
