"""The CLI's layout (fmnist.cli): every command's parser sits right above its handler and is
bound to it; options several commands share are declared once, with one help text; adding a
command is one register function in a list; the entry points still work."""

from __future__ import annotations

import argparse
import inspect
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from fmnist import __version__, cli
from fmnist.cli.options import SHARED

ROOT = Path(__file__).resolve().parents[1]


def leaf_parsers(parser: argparse.ArgumentParser, prefix: str = "") -> dict:
    """``{"data info": parser, "train": parser, ...}``: every parser that runs a command."""
    found: dict[str, argparse.ArgumentParser] = {}
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return {prefix.strip(): parser}
    for name, child in subs[0].choices.items():
        found.update(leaf_parsers(child, f"{prefix} {name}"))
    return found


COMMANDS = leaf_parsers(cli.build_parser())


def test_every_command_is_listed_and_bound_to_a_handler():
    assert {"data info", "data show", "models", "recipes", "train", "evaluate", "report",
            "runs", "predict", "export", "serve", "similar", "tune",
            "calibrate"} <= set(COMMANDS)
    for name, parser in COMMANDS.items():
        handler = parser.get_default("handler")
        assert handler is not None, f"{name} has no handler"
        assert handler.__name__ == "cmd_" + name.replace(" ", "_"), name


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_parser_sits_right_above_its_handler(name):
    handler = COMMANDS[name].get_default("handler")
    module = sys.modules[handler.__module__]
    register = getattr(module, "register_" + name.replace(" ", "_"))
    lines, start = inspect.getsourcelines(register)
    handler_start = inspect.getsourcelines(handler)[1]
    assert 0 < handler_start - (start + len(lines)) <= 2, (
        f"{module.__name__}: cmd_{name} should follow register_{name} directly")


def test_shared_options_have_one_help_text_everywhere():
    seen: dict[str, set[str]] = {}
    for name, parser in COMMANDS.items():
        for action in parser._actions:
            for flag in set(action.option_strings) & set(SHARED):
                seen.setdefault(flag, set()).add(action.help)
                assert action.help, f"{name} {flag} has no help"
    assert set(seen) == set(SHARED)  # every shared option is in use...
    for flag, helps in seen.items():
        assert len(helps) == 1, f"{flag} has {len(helps)} help texts: {helps}"
    counts = {flag: sum(flag in p._option_string_actions for p in COMMANDS.values())
              for flag in SHARED}
    assert min(counts.values()) >= 2, counts  # ...by more than one command


def test_a_changed_default_keeps_the_shared_help():
    similar, predict = COMMANDS["similar"], COMMANDS["predict"]
    assert similar.get_default("device") == "cpu" and predict.get_default("device") == "auto"
    assert "(default cpu)" in similar.format_help().replace("\n", " ").replace("  ", " ")
    helps = {p._option_string_actions["--device"].help for p in (similar, predict)}
    assert len(helps) == 1


def test_adding_a_command_is_one_register_function(monkeypatch, capsys):
    calls = []

    def register(sub):
        p = sub.add_parser("hello", help="say hello")
        p.add_argument("--name", default="world")
        p.set_defaults(handler=lambda args: calls.append(args.name) or 0)

    monkeypatch.setattr(cli, "REGISTER", (*cli.REGISTER, register))
    assert cli.main(["hello", "--name", "fmnist"]) == 0
    assert calls == ["fmnist"]
    assert cli.main(["train", "--nproc", "0"]) == 2  # the others are untouched
    assert capsys.readouterr().err.startswith("fmnist: error: --nproc 0")


@pytest.mark.parametrize(("gpus", "nproc", "fix"), [
    (1, 2, "drop --nproc to train on its GPU"),
    (2, 4, "use --nproc 2 or fewer"),
    (0, 2, None),  # CUDA asked for and no GPU at all: select_device refuses first
])
def test_more_cuda_processes_than_gpus_is_refused_before_any_starts(
        monkeypatch, capsys, tmp_path, gpus, nproc, fix):
    import torch

    from fmnist import distributed

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    launched = []
    monkeypatch.setattr(distributed, "launch", lambda *a: launched.append(a) or 0)
    out = tmp_path / "run"
    code = cli.main(["train", "--device", "cuda", "--nproc", str(nproc), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and not launched and not out.exists()
    assert len(err.strip().splitlines()) == 1
    if gpus:
        assert err.startswith(f"fmnist: error: --nproc {nproc} on CUDA needs one GPU per "
                              f"process, and this machine has {gpus}: {fix}, or add "
                              f"--device cpu for {nproc} CPU processes.")
    else:
        assert "CUDA is not available" in err and "--device cpu" in err


def test_a_torchrun_rank_without_its_gpu_says_what_this_machine_has(monkeypatch):
    import torch

    from fmnist.distributed import setup
    from fmnist.errors import ConfigError

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(ConfigError, match=r"rank 1 \(LOCAL_RANK 1\) needs GPU 1, and this "
                                          r"machine has 1: start at most 1 per machine"):
        setup(torch.device("cuda"))


def test_usage_errors_are_one_line_naming_the_subcommand(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["evaluate"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fmnist: error: ")
    assert "`fmnist evaluate --help`" in err


def test_entry_points_run():
    script = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, attr = script["fmnist"].partition(":")
    assert getattr(__import__(module, fromlist=[attr]), attr) is cli.main
    done = subprocess.run([sys.executable, "-m", "fmnist", "--version"], capture_output=True,
                          text=True, timeout=120, check=True)
    assert done.stdout.strip() == f"fmnist {__version__}"
