"""`comet-dse`: subcommands registered in one place and imported lazily.

Lazy imports keep `comet-dse bench` usable where only torch, triton and numpy exist.
Every user mistake is a UserError: one line on stderr, exit code 2, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys

from comet_dse import __version__
from comet_dse.errors import UserError

# name -> (module with add_arguments(parser) and run(args) -> int, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "bench": ("comet_dse.commands.bench", "time B0, B1 and the fused layer on one node of GPUs (run once per GPU)"),
    "simulate": ("comet_dse.commands.simulate", "simulate one MoE layer on every rank under each schedule"),
    "place": ("comet_dse.commands.place", "place experts on GPUs to keep traffic inside nodes (assignment problem)"),
    "tune": ("comet_dse.commands.tune", "search the comet allocation per token bucket with Optuna; write a plan and a report"),
    "calibrate": ("comet_dse.commands.calibrate", "measure the GPUs at hand into a hardware profile for the simulator "
                                                  "(run once per GPU)"),
    "validate": ("comet_dse.commands.validate", "compare the simulator's predictions with comet-dse bench measurements"),
    "merge-profiles": ("comet_dse.commands.merge_profiles", "merge calibrated profiles of several machines into one "
                                                            "(each figure the median)"),
}


DESCRIPTION = """\
Explore how an MoE layer overlaps its expert GEMMs with the all-to-all traffic between GPUs
(after Comet, MLSys 2025): simulate a layer on every rank under the sequential, chunked and
comet schedules, tune comet's allocation per token bucket, place experts on nodes, time the
Triton kernels on GPUs and check the simulator against those measurements."""
EPILOG = "Run `comet-dse COMMAND --help` for a command's options; times are in µs, bandwidths in GB/s."


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # "argument --row-order: invalid choice: ..." names its option the way UserError does
        one = re.fullmatch(r"argument (\S+): (.*)", message, re.DOTALL)
        if one:
            raise UserError(one.group(1).split("/")[-1], one.group(2))
        raise UserError("arguments", message)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Appends "(default X)" to an option's help unless the help already says its default
    (in words, e.g. "default: the SM count") or there is none to show (None, a flag's False)."""

    def add_argument(self, action: argparse.Action) -> None:
        super().add_argument(action)
        if isinstance(action, argparse._SubParsersAction):
            # subcommands are printed one indent deeper than argparse measures them: without this
            # a 9-letter name (calibrate) pushes its help onto the next line
            longest = max(map(len, action.choices), default=0)
            self._action_max_length = max(self._action_max_length, longest + self._current_indent + self._indent_increment)

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        no_default = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if no_default or "default" in help_text or not action.option_strings:
            return help_text
        return f"{help_text} (default %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="comet-dse", description=DESCRIPTION, epilog=EPILOG, formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"comet-dse {__version__}")
    # not required: main() answers a bare `comet-dse` with the help, not argparse's terse line
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands", parser_class=_Parser)
    for name, (module, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text, formatter_class=_HelpFormatter)
        importlib.import_module(module).add_arguments(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            # a bare `comet-dse` ran nothing: the help (with the subcommands) on stderr and exit 2,
            # as for any other unusable command line, so a script that lost its subcommand fails
            parser.print_help(sys.stderr)
            return 2
        args.argv = list(argv) if argv is not None else sys.argv[1:]  # a command that relaunches itself needs it
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
