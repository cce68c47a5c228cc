"""Entry point of the `lictor` command: builds the parser from each command group.

Every command group module exposes ``register(subparsers)``, which adds its
parsers and sets ``func`` on each to a callable taking the parsed namespace and
returning the exit code. Errors from Lictor (`LictorError`) and from the
operating system are printed to stderr as ``lictor: <code>: <message>`` with
exit code 1; bad usage exits 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lictor import __version__
from lictor.errors import LictorError


def build_parser() -> argparse.ArgumentParser:
    from lictor.cli import (
        credential,
        db,
        demo,
        entity,
        executions,
        log,
        mcp,
        policy,
        principal,
        replay,
        run,
        runtime,
        serve,
    )

    parser = argparse.ArgumentParser(prog="lictor", description="Lictor: execution governance.")
    parser.add_argument("--version", action="version", version=f"lictor {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (
        serve,
        demo,
        run,
        policy,
        entity,
        executions,
        replay,
        runtime,
        principal,
        log,
        credential,
        db,
        mcp,
    ):
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
