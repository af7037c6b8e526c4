"""What both command lines share: error handling, the exit-code epilog, numeric ranges.

Every numeric option of both command lines has a range: click.IntRange for integers, `FiniteFloat`
(a click.FloatRange that also refuses NaN and infinities) for real numbers. A value outside it is
a usage error (exit 2, one line) before any work starts.

Torch-free: `segdeploy`'s inference commands use it on machines without PyTorch. A command that
needs an extra which is not installed (PyTorch for training and export, OpenVINO) fails with one
line naming the extra to install (segtrain.common.extras), never a traceback.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import click

from segtrain.common.errors import EXIT_CODES, ToolError, exit_code_lines, printable
from segtrain.common.extras import missing_extra


class _Reported(click.ClickException):
    """A ToolError as click prints it: "Error: <message>" on stderr, then its exit code."""

    def __init__(self, error: ToolError) -> None:
        super().__init__(printable(error))
        self.exit_code = error.exit_code


_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2: help for a bare command


class _OneLineUsage(click.UsageError):
    """A usage error (bad option value, unknown option or command) in one line, with where help is,
    instead of click's usage block: "Error: Invalid value for '--alpha': ... (see `segdeploy batch --help`)"."""

    def __init__(self, error: click.UsageError, command_path: str) -> None:
        where = error.ctx.command_path if error.ctx is not None else command_path
        super().__init__(f"{printable(error.format_message()).rstrip('.')} (see `{where} --help`)", error.ctx)

    def show(self, file: Any = None) -> None:
        click.echo(f"Error: {self.format_message()}", file=file, err=file is None)


class ToolGroup(click.Group):
    """A command group that turns every ToolError raised by a command into one line and its exit code,
    and so does an ImportError of a package that an extra which is not installed would bring, and a
    usage error (exit 2) of one of its commands."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except _NO_ARGS_IS_HELP:
            raise
        except click.UsageError as e:  # an option of the group itself
            raise _OneLineUsage(e, info_name or self.name or "") from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except _NO_ARGS_IS_HELP:
            raise
        except click.UsageError as e:
            raise _OneLineUsage(e, " ".join(filter(None, (ctx.command_path, ctx.invoked_subcommand)))) from None
        except ToolError as e:
            raise _Reported(e) from None
        except ImportError as e:
            command = " ".join(filter(None, (ctx.command_path, ctx.invoked_subcommand)))
            missing = missing_extra(e, f"`{command}`")
            if missing is None:
                raise
            raise _Reported(missing) from None


def exit_codes_epilog(codes: Iterable[int] = tuple(EXIT_CODES)) -> str:
    """The exit-code table for a command's --help (click keeps lines after a \\b as they are)."""
    return "\b\nExit codes:\n" + "\n".join(exit_code_lines(codes))


class FiniteFloat(click.FloatRange):
    """A float range that refuses NaN and infinities.

    click.FloatRange lets NaN through (every comparison with it is false) and, without a maximum,
    infinity: `--max-diff nan` would be a bar nothing fails.
    """

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number
