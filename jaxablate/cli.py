"""Command line front end: ``jaxablate demo | sweep | show``. Thin: all work lives in the library.

Each subcommand's module provides ``add_arguments(parser)`` and ``run(args) -> int``.
"""

import argparse
import importlib
import sys
from collections.abc import Sequence

#: subcommand -> (module, one-line help)
SUBCOMMANDS = {
    "demo": ("jaxablate.demo", "run the full study on a shipped toy model and write a report"),
    "sweep": ("jaxablate.sweep_cli", "evaluate every (or chosen) subset of components, resumably"),
    "show": ("jaxablate.sweep_cli", "summarise a finished sweep directory"),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(prog="jaxablate", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=help_text)
        getattr(module, f"add_{name}_arguments")(p)
        p.set_defaults(_run=getattr(module, f"run_{name}"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jaxablate`` command."""
    args = build_parser().parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
