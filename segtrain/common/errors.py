"""One error hierarchy for both command lines, and the exit codes in one table (torch-free).

Every error a user can fix by changing an argument or a file derives from `InputError` (exit 2);
failures of the work itself derive from `RunError` (exit 1). Each CLI catches `ToolError` once
(`segtrain.common.commandline.ToolGroup`) and prints its message as one line (`printable`: whatever a
file name holds, the message stays one line). `--help` and the README
show `EXIT_CODES`; a test keeps the README's table equal to it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

EXIT_OK, EXIT_FAILURE, EXIT_INPUT, EXIT_SOME_INPUTS_FAILED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, what schedulers expect of a preempted job

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success",
    EXIT_FAILURE: "other failures (for example a non-finite training loss or an export that fails verification)",
    EXIT_INPUT: "usage or input errors (bad flags, a missing or unusable file, folder, dataset, checkpoint or model)",
    EXIT_SOME_INPUTS_FAILED: "`segdeploy batch` or `merge-summary` finished, but some inputs were skipped: "
                             "unreadable, or their outputs could not be written (each is named with the reason "
                             "in the output and in summary.json)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C; for `segdeploy batch` also SIGTERM); finished outputs are kept, "
                      "and `segtrain fit` says how to continue",
    EXIT_TERMINATED: "`segtrain fit` stopped by SIGTERM (preemption): the last finished epoch's checkpoints are "
                     "whole; the message names the --resume command",
}


class ToolError(Exception):
    """An error the command line reports in one line; `exit_code` says how the process ends."""

    exit_code = EXIT_FAILURE


class InputError(ToolError):
    """Bad input: a flag, file, folder or value the user can fix. Exit code 2."""

    exit_code = EXIT_INPUT


class RunError(ToolError):
    """The work itself failed (non-finite loss, failed verification, a backend crash). Exit code 1."""

    exit_code = EXIT_FAILURE


class Interrupted(ToolError):
    """Ctrl-C: the command stopped; finished outputs are kept. Exit code 130."""

    exit_code = EXIT_INTERRUPTED


# A file-name byte that is not UTF-8 reaches Python as a lone surrogate U+DC80..U+DCFF (PEP 383).
_SURROGATE = re.compile("[\ud800-\udfff]")


def _shown_surrogate(match: re.Match) -> str:
    code = ord(match[0])
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def undecodable_escaped(text: str) -> str:
    """`text` with each file-name byte that is not UTF-8 written as the four characters ``\\xNN``.

    File names are bytes on Linux; Python carries the bytes that are not UTF-8 as lone surrogates
    (b"\\xff.jpg" is "\\udcff.jpg"), which no UTF-8 file (summary.json) or strict terminal can hold.
    Summaries and messages show them this way (b"\\xff.jpg" as ``\\xff.jpg``); other text is unchanged.
    """
    return text if text.isascii() else _SURROGATE.sub(_shown_surrogate, text)


def printable(text: object) -> str:
    """`text` with control and other unprintable characters escaped (a newline becomes \\n), so a message
    naming a file called "a\\nb.jpg" stays one line; file-name bytes that are not UTF-8 become ``\\xNN``."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in undecodable_escaped(str(text)))


def whole_message(error: BaseException, limit: int = 4000) -> str:
    """An exception's whole message as one terminal-safe line: its lines joined by " | " (a runtime's reason is
    often on the lines after "Exception from src/...:"), at most `limit` characters; its type when empty."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = printable(" | ".join(lines)) if lines else type(error).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def exit_code_lines(codes: Iterable[int] = tuple(EXIT_CODES)) -> list[str]:
    """`EXIT_CODES` entries as "N  meaning" lines (the --help epilog and the README table)."""
    return [f"{code:>3}  {EXIT_CODES[code]}" for code in codes]
