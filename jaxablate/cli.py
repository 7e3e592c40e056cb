"""Command line front end: ``jaxablate demo | sweep | show | ...``. Thin: all work lives in the
library.

Each subcommand is one entry of :data:`SUBCOMMANDS`: the module that implements it, the names of
its ``add_arguments(parser)`` and ``run(args) -> int`` functions, a one-line help and what
rerunning it after an interruption does. Only the chosen subcommand's module is imported, so
``jaxablate``, ``jaxablate --help`` and ``jaxablate --version`` answer without importing jax.

Errors a user can cause become one ``jaxablate CMD: error: ...`` line on stderr with exit code 2
(a bad argument, a full disk, a missing file); Ctrl-C becomes one line saying so, with exit code
130. Anything else is a bug and keeps its traceback.
"""

import argparse
import errno
import importlib
import sys
from collections.abc import Sequence
from typing import NamedTuple


class Subcommand(NamedTuple):
    """One ``jaxablate`` subcommand, imported only when it runs.

    Attributes:
        module: The module that implements it.
        add: Name of its ``add(parser)`` function, which registers the options.
        run: Name of its ``run(args) -> int`` function.
        help: One line for ``jaxablate --help``.
        rerun: What to do after an interruption or a full disk (ends a one-line message).
    """

    module: str
    add: str
    run: str
    help: str
    rerun: str = "rerun the same command to start again"


SUBCOMMANDS: dict[str, Subcommand] = {
    "demo": Subcommand(
        "jaxablate.demo",
        "add_demo_arguments",
        "run_demo",
        "run the whole study on a shipped toy model and write an HTML report",
    ),
    "sweep": Subcommand(
        "jaxablate.sweep_cli",
        "add_sweep_arguments",
        "run_sweep",
        "evaluate every subset of chosen components, resumably, into a directory",
        rerun="rerun the same command to resume from the chunks already on disk",
    ),
    "show": Subcommand(
        "jaxablate.sweep_cli",
        "add_show_arguments",
        "run_show",
        "summarise a finished sweep directory (Shapley values, pairs, spectrum)",
    ),
    "estimate": Subcommand(
        "jaxablate.estimate_cli",
        "add_estimate_arguments",
        "run_estimate",
        "estimate Shapley/Banzhaf values or pair interactions under a budget of evaluations",
        rerun="rerun the same command (same --seed and --out) to resume from the evaluations "
        "on disk",
    ),
}
"""The subcommands by name; adding one is one entry here."""

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


def _version() -> str:
    from jaxablate import __version__

    return __version__


def top_parser() -> argparse.ArgumentParser:
    """The parser of ``jaxablate`` itself: lists the subcommands, imports none of them."""
    parser = argparse.ArgumentParser(
        prog="jaxablate",
        description="Ablation studies of transformers at scale, in JAX.",
        epilog="Run 'jaxablate COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"jaxablate {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, sub in SUBCOMMANDS.items():
        commands.add_parser(name, help=sub.help, add_help=False)
    return parser


def build_parser(command: str) -> argparse.ArgumentParser:
    """The argument parser of one subcommand (imports its module).

    Raises:
        KeyError: ``command`` is not in :data:`SUBCOMMANDS`.
    """
    sub = SUBCOMMANDS[command]
    module = importlib.import_module(sub.module)
    parser = argparse.ArgumentParser(prog=f"jaxablate {command}", description=sub.help)
    getattr(module, sub.add)(parser)
    parser.set_defaults(_run=getattr(module, sub.run))
    return parser


def _command(argv: list[str]) -> str | None:
    """The subcommand named by ``argv[0]``; ``None`` when there is none (help printed).

    ``--help`` and ``--version`` print and exit (``SystemExit(0)``); an unknown command exits
    with argparse's usage error (``SystemExit(2)``).
    """
    parser = top_parser()
    if not argv:
        parser.print_help()
        return None
    if argv[0] not in SUBCOMMANDS:
        parser.parse_args(argv[:1])  # --help, --version, or an error naming the choices
        parser.error(f"unknown command {argv[0]!r}; choose from {', '.join(SUBCOMMANDS)}")
    return argv[0]


def error_line(command: str, message: str) -> str:
    """The one-line error of a subcommand: ``jaxablate CMD: error: MESSAGE``."""
    return f"jaxablate {command}: error: {message}"


def _os_error(err: OSError, sub: Subcommand) -> str:
    """What a failed read or write means for the user, in one line."""
    where = f" ({err.filename})" if err.filename else ""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the device{where}: free some space, then {sub.rerun}"
    if err.strerror and err.filename:
        return f"{err.strerror}: {err.filename}"
    return str(err) or type(err).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jaxablate`` command.

    Args:
        argv: The arguments after ``jaxablate`` (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0, 2 after an error, 130 after Ctrl-C.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command(argv)
    if command is None:
        return EXIT_ERROR
    sub = SUBCOMMANDS[command]
    try:
        args = build_parser(command).parse_args(argv[1:])
        args.command_line = ["jaxablate", *argv]
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print(f"jaxablate {command}: interrupted (Ctrl-C); {sub.rerun}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as err:
        print(error_line(command, _os_error(err, sub)), file=sys.stderr)
        return EXIT_ERROR
    except ValueError as err:
        print(error_line(command, str(err)), file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
