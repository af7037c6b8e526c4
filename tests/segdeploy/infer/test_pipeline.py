"""The overlapped pipeline: a bounded number of inputs in flight, and with a memory budget bounded by their bytes
too; a large input waits for the others, one larger than the budget runs alone, nothing deadlocks."""

from __future__ import annotations

import random
import threading
import time

import pytest

from segdeploy.infer.pipeline import Failure, MemoryBudget, prefetch, run_pipeline


class Ledger:
    """What the fake stages hold: bytes reserved and not yet finished, and the most ever held at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.held, self.peak, self.alone, self.groups = 0, 0, [], []

    def take(self, cost: int, capacity: int) -> None:
        with self.lock:
            if cost > capacity:
                self.alone.append(self.held == 0)
            self.held += min(cost, capacity)
            self.peak = max(self.peak, self.held)

    def give(self, cost: int, capacity: int) -> None:
        with self.lock:
            self.held -= min(cost, capacity)


def run_fake(costs: list[int], capacity: int, batch_size: int, workers: int, seed: int = 0) -> tuple[list, Ledger]:
    """run_pipeline over items that cost `costs` bytes, with random stage times; fails the test on a deadlock."""
    ledger, budget, rng = Ledger(), MemoryBudget(capacity), random.Random(seed)
    delays = [(rng.random() / 500, rng.random() / 500) for _ in costs]

    def load(i: int, reserve) -> tuple[int, int] | Failure:
        if costs[i] < 0:
            return Failure(str(i), "unreadable")  # fails before its header: never reserves
        reserve(costs[i])
        ledger.take(costs[i], capacity)
        time.sleep(delays[i][0])
        return i

    def infer(group: list[int]) -> list[int]:
        ledger.groups.append(len(group))
        return group

    def finish(i: int) -> int:
        time.sleep(delays[i][1])
        ledger.give(costs[i], capacity)
        return i

    out: list = []
    worker = threading.Thread(target=lambda: out.extend(run_pipeline(range(len(costs)), load, infer, finish,
                                                                     batch_size, workers, budget)), daemon=True)
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), "the pipeline deadlocked"
    return out, ledger


@pytest.mark.parametrize("seed", range(4))
def test_bytes_in_flight_never_exceed_the_budget_and_order_is_kept(seed: int) -> None:
    rng = random.Random(seed)
    costs = [rng.choice([1, 2, 3, 5, 8, 9, 10, 25, -1]) for _ in range(60)]  # 25 > the budget, -1 unreadable
    out, ledger = run_fake(costs, capacity=10, batch_size=4, workers=3, seed=seed)
    assert [r for r in out if isinstance(r, int)] == [i for i, c in enumerate(costs) if c >= 0]  # in input order
    assert sorted(int(r.input) for r in out if isinstance(r, Failure)) == [i for i, c in enumerate(costs) if c < 0]
    assert ledger.peak <= 10 and ledger.held == 0
    assert ledger.alone and all(ledger.alone)  # every image larger than the budget ran with nothing else in flight


def test_a_partial_group_goes_to_the_model_when_the_next_image_waits_for_room() -> None:
    # Room for two images, groups of four: without sending partial groups on, the third image would wait
    # for room that the first two hold while they wait for the third.
    out, ledger = run_fake([5] * 9, capacity=10, batch_size=4, workers=2)
    assert out == list(range(9)) and max(ledger.groups) <= 2 and ledger.peak <= 10


def test_stopping_while_an_image_waits_for_room_ends_every_thread() -> None:
    """The model fails (as Ctrl-C would stop it) while the next image waits for room: no thread is left waiting."""
    budget = MemoryBudget(10)

    def load(i: int, reserve) -> int:
        reserve(2 if i == 0 else 8)
        return i

    def infer(group: list[int]) -> list[int]:
        deadline = time.monotonic() + 10
        while group == [1] and budget._starving != 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # image 2 waits for the room image 1 holds
        if group == [1]:
            raise RuntimeError("the model failed")
        return group

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="the model failed"):
        list(run_pipeline(range(5), load, infer, lambda i: i, 1, 1, budget))
    assert time.monotonic() - started < 10
    deadline = time.monotonic() + 10
    while any(t.name.startswith(("decode", "finish")) for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [t.name for t in threading.enumerate() if t.name.startswith(("decode", "finish"))]


def test_prefetch_keeps_a_bounded_number_of_items_in_flight() -> None:
    from concurrent.futures import ThreadPoolExecutor

    pulled = []

    def source():
        for i in range(100):
            pulled.append(i)
            yield i

    with ThreadPoolExecutor(2) as pool:
        results = prefetch(pool, lambda x: x * 2, source(), depth=5)
        assert [next(results) for _ in range(3)] == [0, 2, 4]
        assert len(pulled) <= 3 + 5
        assert list(results) == [2 * i for i in range(3, 100)]
