"""Progress within an epoch: a bar on a terminal, a log line every ~30 s elsewhere (SLURM, nohup, CI).

`--progress auto` is `bar` when stdout and stderr are terminals and `log` otherwise; `off` prints
nothing between the per-epoch summaries. Only the main process reports.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

LOG_INTERVAL_S = 30.0

Log = Callable[[str], None]


def resolve_mode(mode: str, is_main: bool = True) -> str:
    """bar, log or off for this process (auto decided by whether the output is a terminal)."""
    if not is_main:
        return "off"
    if mode == "auto":
        return "bar" if sys.stdout.isatty() and sys.stderr.isatty() else "log"
    return mode


def format_seconds(seconds: float) -> str:
    seconds = max(0, round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class Progress:
    """Steps of one loop (an epoch's training or validation).

    `update(images, loss)` after every step. In `log` mode a line with the step, images/s, the
    running mean loss and the time left goes to `log` when `interval` seconds have passed since
    the last one; `run_left` (seconds the epochs after this one will take, when known) adds the
    time left of the whole run.
    """

    def __init__(self, mode: str, total: int, desc: str, log: Log = print, interval: float = LOG_INTERVAL_S,
                 run_left: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.mode, self.total, self.desc, self.log, self.interval = mode, total, desc, log, interval
        self.run_left, self.clock = run_left, clock
        self.steps = self.images = 0
        self.loss_sum = 0.0
        self.start = self.last = clock()
        self.bar = None
        if mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="batch", leave=False)

    @property
    def mean_loss(self) -> float | None:
        return self.loss_sum / self.images if self.images and self.loss_sum == self.loss_sum else None

    def update(self, images: int, loss: float | None = None) -> None:
        self.steps += 1
        self.images += images
        if loss is not None:
            self.loss_sum += loss * images
        now = self.clock()
        rate = self.images / max(now - self.start, 1e-9)
        if self.bar is not None:
            post = {"img_s": f"{rate:.1f}"}
            if loss is not None:
                post["loss"] = f"{self.mean_loss:.4f}"
            self.bar.set_postfix(post)
            self.bar.update(1)
        elif self.mode == "log" and now - self.last >= self.interval and self.steps < self.total:
            self.last = now
            self.log(self.line(now, rate, loss is not None))

    def line(self, now: float, rate: float, with_loss: bool) -> str:
        per_step = (now - self.start) / self.steps
        left = per_step * (self.total - self.steps)
        eta = f"ETA {format_seconds(left)}"
        if self.run_left is not None:
            eta += f" (run: {format_seconds(left + self.run_left)})"
        loss = f", loss {self.mean_loss:.4f}" if with_loss and self.mean_loss is not None else ""
        return (f"{self.desc}: step {self.steps}/{self.total} ({100 * self.steps / max(self.total, 1):.0f}%), "
                f"{rate:.1f} img/s{loss}, {eta}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
