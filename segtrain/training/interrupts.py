"""Ctrl-C and SIGTERM during `segtrain fit`: the run stops at once, never while an epoch's files are written.

Ctrl-C (SIGINT) raises KeyboardInterrupt and SIGTERM (a cluster's preemption, `kill PID`) raises `Terminated`
wherever training is, except inside `files_being_written()`: there the signal waits until the epoch's
checkpoints, metrics and plots are all written, so `last.pth` on disk is always a whole finished epoch.
`stop_error` turns either into the one-line message the command prints (what was kept, the command that
continues) and its exit code: 130 for Ctrl-C, 143 for SIGTERM (segtrain.common.errors.EXIT_CODES).
Signal handlers can only be set in the main thread; elsewhere the default handling stays.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from segtrain.common.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, ToolError
from segtrain.training.runs import LAST


class Terminated(BaseException):
    """SIGTERM arrived; a BaseException, like KeyboardInterrupt, so `except Exception` does not swallow it."""


class Stopped(ToolError):
    """Training was stopped by a signal; the message says what was kept and how to continue."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


_SIGNALS = {signal.SIGINT: KeyboardInterrupt, signal.SIGTERM: Terminated}
_deferring = 0  # depth of files_being_written()
_pending: list[int] = []  # a signal that arrived while deferring


def _handler(signum: int, frame: object) -> None:
    if _deferring:
        _pending[:] = [signum]
        return
    raise _SIGNALS[signum]()


@contextmanager
def signals_stop_training() -> Iterator[None]:
    """Within this block SIGINT and SIGTERM raise (KeyboardInterrupt, Terminated) unless deferred."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _handler) for sig in _SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def files_being_written() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends, then raise the one that arrived (if any)."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
    if not _deferring and _pending:
        raise _SIGNALS[_pending.pop()]()


def stop_error(stop: BaseException, model: str, folder: Path | None, finished_epochs: int) -> Stopped:
    """The message and exit code for a run stopped by `stop` (KeyboardInterrupt or Terminated)."""
    what, code = ("SIGTERM", EXIT_TERMINATED) if isinstance(stop, Terminated) else ("Ctrl-C", EXIT_INTERRUPTED)
    if folder is None:
        return Stopped(f"stopped by {what} before training started; nothing was written", code)
    if finished_epochs < 1:
        return Stopped(f"stopped by {what} before epoch 1 finished, so there is nothing to resume; run the same "
                       f"command again ({folder} holds no finished epoch, so it is not protected as a run)", code)
    last = folder / LAST
    return Stopped(f"stopped by {what} during epoch {finished_epochs + 1}; {last} holds epoch {finished_epochs} "
                   f"whole: continue with `segtrain fit {model} --resume {last}`", code)
