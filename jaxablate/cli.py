"""Command line front end: ``jaxablate demo | sweep | show``. Thin: all work lives in the library.

Each subcommand's module provides ``add_NAME_arguments(parser)`` and ``run_NAME(args) -> int``;
only the chosen subcommand's module is imported.
"""

import argparse
import importlib
import sys
from collections.abc import Sequence

#: subcommand -> (module, one-line help)
SUBCOMMANDS = {
    "demo": ("jaxablate.demo", "run the full study on a shipped toy model and write a report"),
    "sweep": ("jaxablate.sweep_cli", "evaluate every subset of chosen components, resumably"),
    "show": ("jaxablate.sweep_cli", "summarise a finished sweep directory"),
}


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxablate",
        description="Ablation studies of transformers at scale.",
        epilog="\n".join(f"  {name:6s} {help_}" for name, (_, help_) in SUBCOMMANDS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=sorted(SUBCOMMANDS), help="what to run")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the subcommand's arguments")
    return parser


def build_parser(command: str) -> argparse.ArgumentParser:
    """The argument parser of one subcommand."""
    module_name, help_text = SUBCOMMANDS[command]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"jaxablate {command}", description=help_text)
    getattr(module, f"add_{command}_arguments")(parser)
    parser.set_defaults(_run=getattr(module, f"run_{command}"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jaxablate`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser().parse_args(argv[:1])
    args = build_parser(top.command).parse_args(argv[1:])
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
