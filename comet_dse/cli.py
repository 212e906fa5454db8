"""`comet-dse`: subcommands registered in one place and imported lazily.

Lazy imports keep `comet-dse bench` usable where only torch, triton and numpy exist.
Every user mistake is a UserError: one line on stderr, exit code 2, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from comet_dse import __version__
from comet_dse.errors import UserError

# name -> (module with add_arguments(parser) and run(args) -> int, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "bench": ("comet_dse.commands.bench", "time B0, B1 and the fused layer on one node of GPUs (run once per GPU)"),
    "simulate": ("comet_dse.commands.simulate", "simulate one MoE layer on every rank under each schedule"),
    "place": ("comet_dse.commands.place", "place experts on GPUs to keep traffic inside nodes (assignment problem)"),
    "tune": ("comet_dse.commands.tune", "search the comet allocation per token bucket with Optuna; write a plan and a report"),
    "validate": ("comet_dse.commands.validate", "compare the simulator's predictions with comet-dse bench measurements"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError("arguments", message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="comet-dse", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"comet-dse {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, (module, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).add_arguments(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        module = importlib.import_module(COMMANDS[args.command][0])
        return int(module.run(args))
    except UserError as exc:
        print(f"comet-dse: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("comet-dse: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
