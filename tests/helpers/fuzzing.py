"""What the fuzz suite (tests/fuzz) shares: the example budget and the check that a command ended well.

In CI each property runs a small, fixed set of examples (`budget(n)`: n examples, derandomized so a
run is reproducible, a few seconds each). A longer, random run:

    SEGTRAIN_FUZZ_EXAMPLES=2000 python -m pytest tests/fuzz

Every command must end with exit 0, 2 or 3 and, when it fails, a last line "Error: <one line>";
never a traceback, a signal or a hang.
"""

from __future__ import annotations

import os

from click.testing import Result
from hypothesis import HealthCheck, settings

FUZZ_EXAMPLES_ENV = "SEGTRAIN_FUZZ_EXAMPLES"
ALLOWED_EXIT_CODES = (0, 2, 3)


def budget(ci_examples: int) -> settings:
    """Hypothesis settings: `ci_examples` fixed examples, or $SEGTRAIN_FUZZ_EXAMPLES random ones."""
    long_run = os.environ.get(FUZZ_EXAMPLES_ENV, "").strip()
    return settings(max_examples=int(long_run) if long_run else ci_examples, derandomize=not long_run,
                    deadline=None, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large, HealthCheck.filter_too_much])


def assert_ended_well(result: Result, allowed: tuple[int, ...] = ALLOWED_EXIT_CODES) -> None:
    """The command ended with an allowed exit code, no traceback, and a failure names itself in one last line."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code in allowed, (result.exit_code, result.output[-2000:])
    assert "Traceback" not in result.output
    if result.exit_code not in (0, 3):
        last = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
        assert last.startswith("Error: "), result.output[-2000:]
