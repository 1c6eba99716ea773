"""The command line a newcomer meets first: the list of commands, every command's
help, and a clear refusal of an unknown one — never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from engine.__main__ import main
from engine.cli import COMMANDS
from tests.conftest import ROOT


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_help_lists_every_command() -> None:
    result = _run("--help")
    assert result.returncode == 0, result.stderr
    for name in COMMANDS:
        assert name in result.stdout
    assert "Traceback" not in result.stderr


def test_no_command_prints_the_list() -> None:
    result = _run()
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    for name in COMMANDS:
        assert name in result.stdout


def test_unknown_command_is_refused_with_the_choices() -> None:
    result = _run("no-such-command")
    assert result.returncode == 2
    assert "invalid choice: 'no-such-command'" in result.stderr
    assert "whitelist" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main([name, "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m engine " + name)
