"""Entry point of the `lictor` command: builds the parser from each command group.

Every command group module exposes ``register(subparsers)``, which adds its
parsers and sets ``func`` on each to a callable taking the parsed namespace and
returning the exit code. Errors from Lictor (`LictorError`) and from the
operating system are printed to stderr as ``lictor: <code>: <message>`` with
exit code 1; bad usage exits 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from lictor import __version__
from lictor.errors import LictorError

TYPE_CHECKING = False  # `typing` costs `lictor run` 3 ms before its command starts
if TYPE_CHECKING:
    from typing import Any

# command -> the module registering it (``lictor.cli.<module>``), in the order of `--help`
COMMANDS = {
    "serve": "serve",
    "demo": "demo",
    "run": "run",
    "policy": "policy",
    "entity": "entity",
    "exec": "executions",
    "replay": "replay",
    "runtime": "runtime",
    "principal": "principal",
    "log": "log",
    "credential": "credential",
    "db": "db",
    "mcp": "mcp",
}


class Formatter(argparse.HelpFormatter):
    """argparse's help formatter, given the terminal's width: left to find it, it
    imports `shutil` (and with it `bz2` and `lzma`) as the first option is added,
    about 2 ms of every command's start."""

    def __init__(self, prog: str, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("width", columns() - 2)  # as argparse leaves a margin
        super().__init__(prog, *args, **kwargs)


def columns() -> int:
    """The terminal's width as `shutil.get_terminal_size` reads it: ``COLUMNS``, else
    the standard output's terminal, else 80."""
    try:
        if (given := int(os.environ["COLUMNS"])) > 0:
            return given
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return 80


class Parser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` with `Formatter`; its subcommands' parsers are too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", Formatter)
        super().__init__(*args, **kwargs)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser for ``argv``: with only the named command's group when it names one
    (a command imports what it needs, not what every other command needs: `lictor
    run` does not load the server), with none for ``--version`` alone, else with every
    group (for help and errors)."""
    parser = Parser(prog="lictor", description="Lictor: execution governance.")
    parser.add_argument("--version", action="version", version=f"lictor {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    named = next((a for a in argv or () if not a.startswith("-")), None)
    if named in COMMANDS:
        modules = [COMMANDS[named]]
    elif named is None and "--version" in (argv or ()):
        modules = []  # answered before any command is looked at
    else:
        modules = list(COMMANDS.values())
    for module in modules:
        name = f"lictor.cli.{module}"
        __import__(name)  # not `importlib`, which would load `warnings` too: 1 ms of start
        sys.modules[name].register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    try:
        code: int = args.func(args)
    except LictorError as e:
        print(f"lictor: {e.code}: {e.message}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader went away (`| head`): nothing left to say
        return 0
    except OSError as e:
        print(f"lictor: io_error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
