"""What the subcommands of the `mediascan` command line are made of: arguments as data
(`Arg`), subcommands (`Command`), the output (`Output`: JSON or text), durations and counts as
arguments, lists taken up to a limit, and the exit codes."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import re
import sys
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message
from rich.console import Console

if TYPE_CHECKING:
    from mediascan.client.client import ScanClient

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_ERROR = 2
EXIT_TIMED_OUT = 3
EXIT_CANCELLED = 4
EXIT_INTERRUPTED = 130

JSON_HELP = "print JSON (lowerCamelCase field names, the proto3 JSON mapping grpcurl prints)"

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

_T = TypeVar("_T")
_M = TypeVar("_M", bound=Message)


def parse_duration(text: str) -> float:
    """`30s`, `5m`, `1h`, `7d`, `250ms` or a bare number of seconds, in seconds."""
    match = _DURATION_RE.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r}: use a number with a unit, e.g. 30s, 5m, 1h, 250ms"
        )
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]


def non_negative(text: str) -> int:
    """A whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


@dataclasses.dataclass(frozen=True)
class Arg:
    """One argument of the command line: its names and the keywords of `add_argument`."""

    names: tuple[str, ...]
    settings: dict[str, Any]


def arg(*names: str, **settings: Any) -> Arg:
    return Arg(names, settings)


def json_arg(help: str = JSON_HELP) -> Arg:
    """`--json`, given before or after the subcommand."""
    return arg("--json", action="store_true", default=argparse.SUPPRESS, help=help)


def limit_arg(what: str, default: int) -> Arg:
    return arg(
        "--limit",
        type=non_negative,
        default=default,
        metavar="N",
        help=f"at most N {what} (0: all; default {default})",
    )


class Output:
    """Where and how results are printed: JSON or rich text, with or without a live bar."""

    def __init__(self, as_json: bool) -> None:
        self.json = as_json
        #: Draws the live progress bar, on a terminal only.
        self.console = Console(highlight=False)
        self.live = self.console.is_terminal

    @property
    def width(self) -> int | None:
        """The width tables must fit: the terminal's, or None (no limit) for a file or pipe."""
        return self.console.width if self.live else None

    def line(self, text: str) -> None:
        print(text, flush=True)

    def lines(self, texts: Sequence[str]) -> None:
        """Print many lines with one write (a table of 50,000 rows among them)."""
        sys.stdout.write("".join(text + "\n" for text in texts))
        sys.stdout.flush()

    def message(self, message: Message) -> None:
        self.line(json_format.MessageToJson(message))

    def messages(self, key: str, messages: Sequence[Message]) -> None:
        document = {key: [json_format.MessageToDict(message) for message in messages]}
        self.line(json.dumps(document, indent=2))

    def json_line(self, message: Message) -> None:
        """One line of JSON Lines: the message as compact JSON."""
        self.line(json.dumps(json_format.MessageToDict(message), separators=(",", ":")))


async def take(items: AsyncGenerator[_T, None], limit: int) -> tuple[list[_T], bool]:
    """The first `limit` items (all for 0), and whether there were more."""
    taken: list[_T] = []
    async with contextlib.aclosing(items) as iterator:
        async for item in iterator:
            if limit and len(taken) == limit:
                return taken, True
            taken.append(item)
    return taken, False


def page_size(limit: int) -> int:
    """The page size to ask for to take `limit` items (and learn whether there are more)."""
    return min(limit + 1, 1000) if limit else 500


def show_list(
    out: Output,
    key: str,
    taken: tuple[list[_M], bool],
    table: Callable[[list[_M], int | None], list[str]],
    nothing: str,
) -> int:
    """Print what `take` took as JSON (`{key: [...]}`) or as a table; say so on stderr when
    there was nothing, or more than the limit."""
    items, more = taken
    if out.json:
        out.messages(key, items)
        return EXIT_OK
    if items:
        out.lines(table(items, out.width))
    else:
        print(nothing, file=sys.stderr)
    if more:
        what = "errors" if key == "fileErrors" else key
        print(f"(the first {len(items)} {what}; --limit 0 lists all)", file=sys.stderr)
    return EXIT_OK


Runner = Callable[["ScanClient", argparse.Namespace, Output], Awaitable[int]]


@dataclasses.dataclass(frozen=True)
class Command:
    """A subcommand: its name, one-line help, what runs it, its arguments, and whether it exits
    with a job's state (then its help lists the exit codes); or a group of subcommands of its
    own (`commands`, e.g. `library add`), and then no `run`."""

    name: str
    help: str
    run: Runner | None
    args: tuple[Arg, ...] = ()
    exit_codes: bool = False
    commands: tuple[Command, ...] = ()
