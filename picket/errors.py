"""The picket package's own errors: one base, `CliError`, whose subclasses say which exit
code a command ends with — `CliInputError` 2 (we refuse the input: an argument, a file, a
configuration), `CliFailure` 1 (the work failed: a disk that refused a write).

The CLI is the top of the floor plan, where refusals from the packages below (each on its
side of the contract's remote/local split) are worded again for a person, naming the file or
flag at fault. So these errors sit under `PicketError` directly, beside the split rather than
on one side of it: nothing below picket raises or catches one, and each ends as an exit code
and one `picket: error: …` line on stderr, printed by `cli_handler` or by `picket.cli.main`.
A command group keeps its own subclass (`gps.GpsInputError`, `bridgecmd.BridgeInputError`,
`provisionsteps.Refused`) so its messages can be traced to it; every one is caught as these.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from typing import ClassVar

from contract.errors import PicketError

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILED",
    "EXIT_OK",
    "CliError",
    "CliFailure",
    "CliInputError",
    "Handler",
    "cli_handler",
]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2

Handler = Callable[[argparse.Namespace], int]


class CliError(PicketError):
    """Base of every error the picket package raises on purpose; `exit_code` is the command's."""

    exit_code: ClassVar[int] = EXIT_FAILED


class CliInputError(CliError):
    """Input refused (arguments, files, configuration): exit code 2."""

    exit_code: ClassVar[int] = EXIT_BAD_INPUT


class CliFailure(CliError):
    """The work failed (a peer, the disk): exit code 1."""

    exit_code: ClassVar[int] = EXIT_FAILED


def cli_handler(fn: Handler) -> Handler:
    """A command handler that prints a `CliError` raised inside `fn` as `picket: error: …` on
    stderr and returns its exit code, so the handler can be called without picket.cli."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except CliError as exc:
            print(f"picket: error: {exc}", file=sys.stderr)
            return exc.exit_code

    return run
