"""The overlapped decode -> batched inference -> finish pipeline (torch-free), shared by `Predictor.predict_iter`
and `segdeploy batch`.

    decode pool (`workers` threads): load(item) -> a prepared input, or a Failure for an unreadable one
      -> bounded window of prepared inputs, in input order
    calling thread: groups `batch_size` prepared inputs, infer(group) -> results (one model call per group;
      a tiled image runs its tiles there too)
      -> bounded window of pending finishes
    finish pool (`workers` threads): finish(result): post-processing at the original size, writing files

At most about ``2 * batch_size + 3 * workers`` inputs are in flight. Results come out in input order;
a Failure comes out as soon as its input is decoded. When the consumer stops (Ctrl-C, an error, or
closing the generator) queued work is dropped and started finishes complete, so no file is left
half-written.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from segtrain.machine import usable_cores

Item = TypeVar("Item")
Loaded = TypeVar("Loaded")
Inferred = TypeVar("Inferred")
Finished = TypeVar("Finished")


@dataclass(frozen=True)
class Failure:
    """An input that produced no result, and why."""

    input: str
    reason: str


def default_workers() -> int:
    """Decode and finish threads per pool: the usable cores, at most 4."""
    return min(4, usable_cores())


def prefetch(pool: ThreadPoolExecutor, fn: Callable, items: Iterable, depth: int) -> Iterator:
    """fn(item) for each item on `pool`, results in order, at most `depth` submitted ahead."""
    pending: deque[Future] = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= depth:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def batches(loaded: Iterable[Loaded | Failure], size: int) -> Iterator[list[Loaded] | Failure]:
    """Groups of `size` loaded inputs (the last may be smaller); Failures pass through on their own."""
    batch: list[Loaded] = []
    for item in loaded:
        if isinstance(item, Failure):
            yield item
            continue
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def run_pipeline(items: Iterable[Item], load: Callable[[Item], Loaded | Failure],
                 infer: Callable[[list[Loaded]], list[Inferred]], finish: Callable[[Inferred], Finished],
                 batch_size: int, workers: int) -> Iterator[Finished | Failure]:
    """finish(infer(load(item))) for every item, overlapped as the module docstring says."""
    with ThreadPoolExecutor(workers, thread_name_prefix="decode") as readers, \
            ThreadPoolExecutor(workers, thread_name_prefix="finish") as finishers:
        finishing: deque[Future] = deque()
        try:
            for group in batches(prefetch(readers, load, items, batch_size + workers), batch_size):
                if isinstance(group, Failure):
                    yield group
                    continue
                for result in infer(group):
                    while len(finishing) >= 2 * workers:
                        yield finishing.popleft().result()
                    finishing.append(finishers.submit(finish, result))
            while finishing:
                yield finishing.popleft().result()
        except BaseException:
            # Queued work is dropped; finishes already started complete, so no temporary file is left.
            readers.shutdown(wait=False, cancel_futures=True)
            finishers.shutdown(wait=True, cancel_futures=True)
            raise
