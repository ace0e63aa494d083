"""Every command's and option's help text reaches `--help` output word for word."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from protoskel.cli import app


def _commands(cmd: Any, path: list[str]) -> Iterator[tuple[list[str], Any]]:
    """(argv path, command) for every leaf command under ``cmd``."""
    if hasattr(cmd, "commands"):
        for name, sub in cmd.commands.items():
            yield from _commands(sub, [*path, name])
    else:
        yield path, cmd


_LEAVES = list(_commands(typer.main.get_command(app), []))


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_walk_finds_the_commands() -> None:
    paths = {" ".join(p) for p, _ in _LEAVES}
    assert {"train", "eval", "ensemble", "datasets prepare", "layouts show"} <= paths


@pytest.mark.parametrize(("path", "cmd"), _LEAVES, ids=[" ".join(p) for p, _ in _LEAVES])
def test_help_is_shown_verbatim(path: list[str], cmd: Any) -> None:
    # Examples in help texts such as "[ax, ay, az]" once vanished: rich read them as markup.
    res = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "100"})
    assert res.exit_code == 0, res.output
    shown = _flat(res.output)
    texts = [p.help for p in cmd.params if getattr(p, "help", None)]
    if cmd.help:
        texts.append(cmd.help.split("\n\n")[0])
    assert texts, f"{path}: no help texts to check"
    for text in texts:
        assert _flat(text) in shown, f"{path}: help {text!r} not shown as written"


@pytest.mark.parametrize("command", ["eval", "ensemble"])
def test_clips_below_one_is_a_usage_error_before_any_work(command: str) -> None:
    # Rejected by the option itself, so no checkpoint or data is read (neither exists here).
    argv = [command, "missing.pt", "--data", "missing", "--clips", "0"]
    res = CliRunner().invoke(app, argv, env={"COLUMNS": "100"})
    assert res.exit_code == 2
    assert "--clips" in res.output and "greater than or equal to 1" in res.output


def test_version_and_short_help() -> None:
    from protoskel import __version__

    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"protoskel {__version__}"
    short, long = (
        CliRunner().invoke(app, ["eval", "-h"]),
        CliRunner().invoke(app, ["eval", "--help"]),
    )
    assert short.exit_code == 0 and short.output == long.output and "--split" in short.output
