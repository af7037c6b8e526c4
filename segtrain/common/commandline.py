"""What both command lines share: one-line errors, the exit-code epilog, option types from the settings (torch-free).

Every numeric option has a range: `option_type` builds click's type from the setting's rule
(click.IntRange, `FiniteFloat`, a list or a choice), so the range is written once, in the settings
dataclass, and a value outside it is a one-line usage error before any work starts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import click

from segtrain.common.errors import EXIT_CODES, Interrupted, ToolError, exit_code_lines, printable
from segtrain.common.extras import missing_extra
from segtrain.common.settings import Each, OneOf, Range, default, kind_of, rule_of


class _Reported(click.ClickException):
    """A ToolError as click prints it: "Error: <message>" on stderr, then its exit code."""

    def __init__(self, error: ToolError) -> None:
        super().__init__(printable(error))
        self.exit_code = error.exit_code


_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2: help for a bare command


_UNKNOWN = re.compile(r"^No such (?:command '(?P<command>[^']+)'|option:? '?(?P<option>-[^'\s.]+)'?)")


class _OneLineUsage(click.UsageError):
    """A usage error (bad option value, unknown option or command) in one line, with where help is,
    instead of click's usage block: "Error: Invalid value for '--alpha': ... (see `segdeploy batch --help`)".
    An unknown command or option that `hints` knows (a habit from another tool) says what to use instead."""

    def __init__(self, error: click.UsageError, command_path: str, hints: Mapping[str, str] | None = None) -> None:
        where = error.ctx.command_path if error.ctx is not None else command_path
        message = printable(error.format_message()).rstrip(".")
        unknown = _UNKNOWN.match(error.format_message())
        hint = (hints or {}).get(unknown["command"] or unknown["option"]) if unknown else None
        if hint:  # click's own guess ("Did you mean '--out'?") gives way to the hint
            super().__init__(f"{printable(unknown[0]).rstrip('.')}; {hint}", error.ctx)
        else:
            super().__init__(f"{message} (see `{where} --help`)", error.ctx)

    def show(self, file: Any = None) -> None:
        click.echo(f"Error: {self.format_message()}", file=file, err=file is None)


class ToolGroup(click.Group):
    """A command group that turns every ToolError raised by a command into one line and its exit code,
    and so does an ImportError of a package that an extra which is not installed would bring, and a
    usage error (exit 2) of one of its commands. `hints`: for a command or option name this tool does not
    have but users of other tools type ("predict", "--device"), what to use instead."""

    def __init__(self, *args: Any, hints: Mapping[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hints = dict(hints or {})

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except _NO_ARGS_IS_HELP:
            raise
        except click.UsageError as e:  # an option of the group itself
            raise _OneLineUsage(e, info_name or self.name or "", self.hints) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except _NO_ARGS_IS_HELP:
            raise
        except click.UsageError as e:
            where = " ".join(filter(None, (ctx.command_path, ctx.invoked_subcommand)))
            raise _OneLineUsage(e, where, self.hints) from None
        except ToolError as e:
            raise _Reported(e) from None
        except KeyboardInterrupt:  # click would print "Aborted!" and exit 1
            raise _Reported(Interrupted("interrupted (Ctrl-C); finished outputs are kept")) from None
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

    def _describe_range(self) -> str:
        """click's range text ("0<=x<=0.75"); nothing without bounds (click would show "x<=None")."""
        return "" if self.min is None and self.max is None else super()._describe_range()


class IntList(click.ParamType):
    """Comma-separated integers from 1 to `maximum`, e.g. 1,4,8 (repeats dropped)."""

    name = "N[,N...]"

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        try:
            out = tuple(int(v) for v in str(value).split(",") if v.strip())
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of integers", param, ctx)
        if not out or min(out) < 1 or max(out) > self.maximum:
            self.fail(f"{value!r}: every value must be a positive integer, at most {self.maximum}", param, ctx)
        return tuple(dict.fromkeys(out))


class NameList(click.ParamType):
    """Comma-separated names from a fixed set (repeats dropped)."""

    name = "NAME[,NAME...]"

    def __init__(self, choices: tuple[str, ...]) -> None:
        self.choices = choices

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str, ...]:
        if isinstance(value, tuple):
            return value
        out = tuple(v.strip() for v in str(value).split(",") if v.strip())
        bad = [v for v in out if v not in self.choices]
        if bad or not out:
            unknown = printable(", ".join(bad)) or "empty list"  # a control character would break the line
            self.fail(f"unknown {unknown}; choose from {', '.join(self.choices)}", param, ctx)
        return tuple(dict.fromkeys(out))


def setting_option(cls: type, *decls: str, **kwargs: Any) -> Callable[[Callable], Callable]:
    """click.option for a setting of dataclass `cls`, named by `decls` ("--batch-size", or a Python name among
    them): its type from the setting's range or choices (unless `type` is given), its default from the
    dataclass and shown (a None default, or `default=None` given, is left to the help text)."""
    name = next((d for d in decls if d.isidentifier()), decls[0].split("/")[0].lstrip("-").replace("-", "_"))
    value = kwargs.pop("default", default(cls, name))
    if "type" not in kwargs and not kwargs.get("is_flag") and isinstance(rule_of(cls, name), (Range, OneOf, Each)):
        kwargs["type"] = option_type(cls, name)
    if value is None:
        return click.option(*decls, **kwargs)
    shown = ",".join(map(str, value)) if isinstance(value, tuple) else value  # as the flag is written
    return click.option(*decls, default=shown, show_default=True, **kwargs)


def option_type(cls: type, name: str) -> click.ParamType:
    """click's type for setting `name` of settings dataclass `cls`, from its annotation and its rule."""
    kind, _ = kind_of(cls, name)
    rule = rule_of(cls, name)
    if isinstance(rule, OneOf):
        return click.Choice(rule.choices)
    if isinstance(rule, Range) and kind in (int, float):
        return (click.IntRange if kind is int else FiniteFloat)(min=rule.low, max=rule.high)
    if isinstance(rule, Each) and kind == tuple[int, ...] and isinstance(rule.rule, Range) and rule.rule.low == 1:
        return IntList(int(rule.rule.high))
    if isinstance(rule, Each) and kind == tuple[str, ...] and isinstance(rule.rule, OneOf):
        return NameList(rule.rule.choices)
    raise TypeError(f"{cls.__name__}.{name}: no option type for {kind} with rule {rule!r}")
