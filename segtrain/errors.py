"""One error hierarchy for both command lines, and the exit codes in one table (torch-free).

Every error a user can fix by changing an argument or a file derives from `InputError` (exit 2);
failures of the work itself derive from `RunError` (exit 1). Each CLI catches `ToolError` once
(`segtrain.cli_support.ToolGroup`) and prints its message as one line (`printable`: whatever a
file name holds, the message stays one line). `--help` and the README
show `EXIT_CODES`; a test keeps the README's table equal to it.
"""

from __future__ import annotations

from collections.abc import Iterable

EXIT_OK, EXIT_FAILURE, EXIT_INPUT, EXIT_SOME_INPUTS_FAILED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success",
    EXIT_FAILURE: "other failures (for example a non-finite training loss or an export that fails verification)",
    EXIT_INPUT: "usage or input errors (bad flags, a missing or unusable file, folder, dataset, checkpoint or model)",
    EXIT_SOME_INPUTS_FAILED: "`segdeploy batch` or `merge-summary` finished, but some inputs could not be read "
                             "(each is named in the output and in summary.json)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C or SIGTERM); finished outputs are kept",
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


def printable(text: object) -> str:
    """`text` with control and other unprintable characters escaped (a newline becomes \\n), so a message
    naming a file called "a\\nb.jpg" stays one line."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in str(text))


def exit_code_lines(codes: Iterable[int] = tuple(EXIT_CODES)) -> list[str]:
    """`EXIT_CODES` entries as "N  meaning" lines (the --help epilog and the README table)."""
    return [f"{code:>3}  {EXIT_CODES[code]}" for code in codes]
