"""CLI conventions: every option explains itself with its default, a bare `comet-dse` lists the
subcommands, shared options take the same values everywhere, and --gpus-per-node overrides
the hardware profile's node size."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from comet_dse import choices
from comet_dse.cli import COMMANDS, build_parser, main


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def options(name: str) -> list[argparse.Action]:
    return [a for a in subparsers()[name]._actions if a.option_strings and a.help != argparse.SUPPRESS
            and not isinstance(a, argparse._HelpAction)]


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_has_help_that_states_its_default(name):
    parser = subparsers()[name]
    formatter = parser._get_formatter()
    for action in options(name):
        assert action.help and action.help.strip(), f"{name} {action.option_strings[0]} has no help"
        shown = formatter._get_help_string(action) % {"default": action.default}
        if action.default is not None and action.default is not False:
            assert "default" in shown, f"{name} {action.option_strings[0]}: {shown!r} does not state its default"
        assert shown.count("(default") <= 1, shown  # never said twice


def test_the_rendered_help_shows_defaults_and_units():
    text = subparsers()["simulate"].format_help()
    assert "(default 4096)" in text and "tokens per GPU" in text
    assert "--gpus-per-node" in subparsers()["validate"].format_help()


def test_top_level_help_is_for_users():
    text = build_parser().format_help()
    assert "lazily" not in text and "UserError" not in text  # not the module's developer note
    for name, (_, help_text) in COMMANDS.items():
        assert name in text
    assert "MoE" in text


def test_bare_comet_dse_prints_the_help_with_the_subcommands(capsys):
    code = main([])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith("usage: comet-dse") and "the following arguments are required" not in err
    for name in COMMANDS:
        assert f"    {name} " in err  # each with its one-line help


def test_bare_console_script_exits_2_with_only_the_help():
    out = subprocess.run([sys.executable, "-m", "comet_dse.cli"], capture_output=True, text=True)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith("usage:") and "Traceback" not in out.stderr and "simulate" in out.stderr


# ---- the same choices everywhere ------------------------------------------------------------


def choices_of(command: str, option: str):
    return next(a.choices for a in options(command) if option in a.option_strings)


def test_shared_options_offer_the_same_choices():
    assert tuple(choices_of("simulate", "--row-order")) == tuple(choices_of("bench", "--row-order")) == choices.ROW_ORDERS
    for command in ("simulate", "place"):
        assert tuple(choices_of(command, "--schedule")) == (*choices.SCHEDULE_NAMES, "all")
    assert tuple(choices_of("bench", "--dtype")) == choices.DTYPES
    for command in ("simulate", "tune", "place"):
        assert choices.ROUTING_FORMS in next(a.help for a in options(command) if "--routing" in a.option_strings)


def test_the_cli_choices_agree_with_the_simulator():
    from comet_dse.sim import SCHEDULES, Chunked, Comet
    from comet_dse.sim.layout import ROW_ORDERS

    assert ROW_ORDERS == choices.ROW_ORDERS
    assert tuple(SCHEDULES) == choices.SCHEDULE_NAMES
    simulate_help = {a.option_strings[0]: a.help for a in options("simulate")}
    assert f"(default {Comet.comm_blocks0})" in simulate_help["--comm-blocks"] and Comet.comm_blocks0 == Comet.comm_blocks1
    assert f"(default {Chunked.chunks})" in simulate_help["--chunks"]


def test_the_cli_choices_agree_with_the_kernels():
    pytest.importorskip("torch")
    from comet_dse.kernels.fused_plan import ROW_ORDERS

    assert ROW_ORDERS == choices.ROW_ORDERS


@pytest.mark.parametrize("command", ["simulate", "bench"])
def test_a_bad_row_order_is_refused_alike(command, capsys):
    code = main([command, "--row-order", "backwards"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err == ("comet-dse: error: --row-order: invalid choice: 'backwards' "
                   "(choose from 'local-first', 'source-order')\n")


# ---- --gpus-per-node ------------------------------------------------------------------------

DEEPSEEK_EP16 = ["--model", "deepseek-v3", "--ep", "16", "--tokens", "256"]


def simulate_json(capsys, *args: str) -> dict:
    assert main(["simulate", *DEEPSEEK_EP16, "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_gpus_per_node_changes_what_crosses_nodes(capsys):
    default = simulate_json(capsys)
    eight = simulate_json(capsys, "--gpus-per-node", "8")
    one_node = simulate_json(capsys, "--gpus-per-node", "16")
    assert default["hardware"]["gpus_per_node"] == eight["hardware"]["gpus_per_node"] == 8
    assert one_node["hardware"]["gpus_per_node"] == 16
    assert one_node["hardware"]["sources"]["gpus_per_node"] == "--gpus-per-node"
    assert default["results"] == eight["results"]
    for schedule in ("sequential", "comet"):  # all 16 on NVLink: no NIC in the way
        assert one_node["results"][schedule]["latency_us"] < eight["results"][schedule]["latency_us"]


@pytest.mark.parametrize("command", ["simulate", "tune", "place", "validate"])
@pytest.mark.parametrize("value", ["0", "-2"])
def test_gpus_per_node_below_one_is_one_line(command, value, capsys, tmp_path):
    extra = ["--measurements", str(tmp_path)] if command == "validate" else []
    code = main([command, *extra, "--gpus-per-node", value])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err == f"comet-dse: error: --gpus-per-node: must be an integer >= 1, got {value}\n"


@pytest.mark.parametrize("command", ["simulate", "tune", "place"])
def test_ranks_must_fill_whole_nodes(command, capsys, tmp_path):
    code = main([command, *DEEPSEEK_EP16, "--gpus-per-node", "6", "--storage", f"sqlite:///{tmp_path}/s.db"]
                if command == "tune" else [command, *DEEPSEEK_EP16, "--gpus-per-node", "6"])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert err.startswith("comet-dse: error: --gpus-per-node: 16 GPUs (EP x TP) must fit in one node or fill whole nodes")
    assert list(tmp_path.iterdir()) == []  # refused before any study exists


def test_gpus_per_node_that_is_not_an_integer_names_the_option(capsys):
    assert main(["simulate", "--gpus-per-node", "eight"]) == 2
    assert capsys.readouterr().err == "comet-dse: error: --gpus-per-node: invalid int value: 'eight'\n"


def test_a_changed_gpus_per_node_starts_a_new_study():
    from comet_dse.commands.simulate import resolve_workload
    from comet_dse.search.study import TuneSpec

    def identity(*extra: str):
        args = build_parser().parse_args(["tune", *DEEPSEEK_EP16, *extra])
        name, hardware, workload = resolve_workload(args, 256)
        return TuneSpec(name, hardware, workload, 10, 0, ("latency",), "sqlite:///:memory:").identity(256)

    default, eight, sixteen = identity(), identity("--gpus-per-node", "8"), identity("--gpus-per-node", "16")
    assert default.digest == eight.digest  # the profile's own value: the same study
    assert sixteen.digest != eight.digest and sixteen.inputs["hardware"]["gpus_per_node"] == 16
