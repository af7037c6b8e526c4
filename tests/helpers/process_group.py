"""Run a function in N spawned processes that share a gloo process group (CPU), with a deadline.

A hang in a collective (one process waiting for another that never comes) ends in TimeoutError
after `timeout` seconds, with every process killed, instead of a test that never returns.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path


def _entry(rank: int, target: Callable, world_size: int, store: str, args: tuple) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank),
                       "OMP_NUM_THREADS": "1"})
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        target(rank, *args)
    finally:
        dist.destroy_process_group()


def run_ranks(target: Callable, args: tuple, world_size: int, workdir: Path, timeout: float) -> None:
    """target(rank, *args) on ranks 0..world_size-1; raises when one fails or the deadline passes."""
    import torch.multiprocessing as mp

    store = Path(workdir) / "pg-store"
    store.unlink(missing_ok=True)
    ctx = mp.start_processes(_entry, args=(target, world_size, str(store), args), nprocs=world_size, join=False,
                             start_method="spawn")
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=max(0.1, deadline - time.monotonic())):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            raise TimeoutError(f"{world_size} processes did not finish within {timeout:.0f} s (a hang?)")
