"""The overlapped decode -> batched inference -> finish pipeline (torch-free) of `Predictor.predict_iter` and
`segdeploy batch`::

    decode pool (`workers` threads): load(item) -> a prepared input, or a Failure
    calling thread: infer(group of `batch_size` prepared inputs) -> results (a tiled image's windows too)
    finish pool (`workers` threads): finish(result) -> post-processing at the original size, writing files

At most about ``2 * batch_size + 3 * workers`` inputs are in flight, and with a `MemoryBudget` at most its bytes:
`load` calls `reserve(nbytes)` before decoding, granted in input order (a large input is never starved by smaller
ones behind it, and waiting cannot deadlock) and given back when its finish ends; an input larger than the budget
runs alone, and a partial group goes to the model when the next input waits for room. Results come out in input
order. When the consumer stops, queued work is dropped and started finishes complete: no file is half-written.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from segtrain.common.json_record import JsonRecord, required
from segtrain.common.json_shape import String
from segtrain.common.system import usable_cores

Item = TypeVar("Item")
Loaded = TypeVar("Loaded")
Inferred = TypeVar("Inferred")
Finished = TypeVar("Finished")
Reserve = Callable[[int], None]  # reserve(nbytes): wait for room in the memory budget, then take it


@dataclass(frozen=True)
class Failure(JsonRecord):
    """An input that produced no result, and why; an entry of "failures" in a batch summary."""

    input: str = required(String())
    reason: str


MAX_DEFAULT_WORKERS = 4


def default_workers() -> int:
    """Decode and finish threads per pool: the usable cores, at most MAX_DEFAULT_WORKERS."""
    return min(MAX_DEFAULT_WORKERS, usable_cores())


class BudgetClosed(Exception):
    """The pipeline stopped while an input waited for room in the memory budget."""


class MemoryBudget:
    """Bytes that the inputs in flight may hold; reservations are granted in input order (see the module docstring).

    Each input gets a ticket when it is submitted; the input holding the turn reserves (waiting for
    room) or passes, and the turn moves on.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a memory budget must be positive, got {capacity}")
        self.capacity = int(capacity)
        self._free = capacity
        self._cond = threading.Condition()
        self._tickets = itertools.count()
        self._turn = 0
        self._passed: set[int] = set()  # tickets that ended before their turn without reserving
        self._starving: int | None = None  # the ticket whose turn it is, waiting for room
        self._closed = False

    def ticket(self) -> int:
        return next(self._tickets)

    def reserve(self, ticket: int, nbytes: int) -> int:
        """Wait for `ticket`'s turn and for room, then take `nbytes` (at most the capacity); returns the bytes taken."""
        nbytes = min(max(0, int(nbytes)), self.capacity)
        with self._cond:
            while not self._closed and (self._turn != ticket or self._free < nbytes):
                if self._turn == ticket and self._starving != ticket:
                    self._starving = ticket
                    self._cond.notify_all()  # the consumer may be holding a partial group: it sends it on
                self._cond.wait()
            if self._closed:
                raise BudgetClosed
            self._starving = None
            self._free -= nbytes
            self._advance()
            return nbytes

    def pass_turn(self, ticket: int) -> None:
        """`ticket` ended without reserving (an unreadable input): the next input may go."""
        with self._cond:
            if self._turn == ticket:
                self._starving = None
                self._advance()
            else:
                self._passed.add(ticket)

    def release(self, nbytes: int) -> None:
        if nbytes:
            with self._cond:
                self._free += nbytes
                self._cond.notify_all()

    def close(self) -> None:
        """Wake every waiting input; they raise BudgetClosed (the pipeline is stopping)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def wait_for(self, future: Future, ticket: int) -> bool:
        """Wait until `future` is done or its input (`ticket`) waits for room; True in the second case."""
        future.add_done_callback(self._wake)
        with self._cond:
            self._cond.wait_for(lambda: future.done() or self._starving == ticket)
            return not future.done()

    def _wake(self, _future: Future) -> None:
        with self._cond:
            self._cond.notify_all()

    def _advance(self) -> None:
        self._turn += 1
        while self._turn in self._passed:
            self._passed.discard(self._turn)
            self._turn += 1
        self._cond.notify_all()


FLUSH = object()  # from `prefetch`: the next input waits for room, send a partial group on


def prefetch(pool: ThreadPoolExecutor, fn: Callable, items: Iterable, depth: int,
             budget: MemoryBudget | None = None) -> Iterator:
    """fn(item) for each item on `pool`, results in order, at most `depth` submitted ahead.

    With a budget, fn(item, ticket) is called and FLUSH is yielded when the next result waits for room.
    """
    pending: deque[tuple[Future, int]] = deque()

    def submit(item: object) -> None:
        if budget is None:
            pending.append((pool.submit(fn, item), -1))
        else:
            ticket = budget.ticket()
            pending.append((pool.submit(fn, item, ticket), ticket))

    def next_result() -> Iterator:
        future, ticket = pending.popleft()
        if budget is not None and budget.wait_for(future, ticket):
            yield FLUSH
        yield future.result()

    for item in items:
        submit(item)
        if len(pending) >= depth:
            yield from next_result()
    while pending:
        yield from next_result()


def batches(loaded: Iterable, size: int) -> Iterator[list]:
    """Groups of `size` loaded inputs (the last may be smaller, and a group is cut short at a FLUSH); a Failure
    rides in the group where it came, in input order, without counting towards its size."""
    batch: list = []
    filled = 0
    for item in loaded:
        if item is FLUSH:
            if filled:
                yield batch
                batch, filled = [], 0
            continue
        batch.append(item)
        filled += not isinstance(item, Failure)
        if filled == size:
            yield batch
            batch, filled = [], 0
    if batch:
        yield batch


def _done(value: object) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


def _budgeted(load: Callable, budget: MemoryBudget) -> Callable:
    """load(item, reserve) -> (loaded, bytes reserved); a Failure gives its room back at once."""
    def run(item: object, ticket: int) -> tuple[object, int]:
        taken = None

        def reserve(nbytes: int) -> None:
            nonlocal taken
            if taken is not None:
                raise RuntimeError("reserve() called twice for one input")
            taken = budget.reserve(ticket, nbytes)

        try:
            loaded = load(item, reserve)
        finally:
            if taken is None:
                budget.pass_turn(ticket)
        if isinstance(loaded, Failure):
            budget.release(taken or 0)
            return loaded
        return loaded, taken or 0

    return run


def run_pipeline(items: Iterable[Item], load: Callable[..., Loaded | Failure],
                 infer: Callable[[list[Loaded]], list[Inferred]], finish: Callable[[Inferred], Finished],
                 batch_size: int, workers: int, budget: MemoryBudget | None = None) -> Iterator[Finished | Failure]:
    """finish(infer(load(item))) for every item, overlapped as the module docstring says.

    With a `budget`, load is called as load(item, reserve) and must call reserve(nbytes) once before
    decoding (or fail without it).
    """
    def finish_and_release(result: Inferred, nbytes: int) -> Finished:
        try:
            return finish(result)
        finally:
            if budget is not None:
                budget.release(nbytes)

    with ThreadPoolExecutor(workers, thread_name_prefix="decode") as readers, \
            ThreadPoolExecutor(workers, thread_name_prefix="finish") as finishers:
        finishing: deque[Future] = deque()
        try:
            loaded = prefetch(readers, _budgeted(load, budget) if budget is not None else _unbudgeted(load),
                              items, batch_size + workers, budget)
            for group in batches(loaded, batch_size):
                good = [entry for entry in group if not isinstance(entry, Failure)]
                results = iter(zip(infer([item for item, _ in good]), [n for _, n in good], strict=True)
                               if good else ())
                for entry in group:  # a Failure keeps its place among the results (input order)
                    while len(finishing) >= 2 * workers:
                        yield finishing.popleft().result()
                    finishing.append(_done(entry) if isinstance(entry, Failure) else
                                     finishers.submit(finish_and_release, *next(results)))
            while finishing:
                yield finishing.popleft().result()
        except BaseException:
            # Queued work is dropped; finishes already started complete, so no temporary file is left.
            if budget is not None:
                budget.close()
            readers.shutdown(wait=False, cancel_futures=True)
            finishers.shutdown(wait=True, cancel_futures=True)
            raise


def _unbudgeted(load: Callable) -> Callable:
    def run(item: object) -> object:
        loaded = load(item)
        return loaded if isinstance(loaded, Failure) else (loaded, 0)

    return run
