"""`hybridgate`'s parser: every subcommand module is registered, and one that cannot be
imported stops the command with its error instead of vanishing from `--help`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from proxy import cli
from proxy.cli import SUBCOMMANDS, build_parser

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_every_subcommand_is_registered() -> None:
    parser = build_parser()
    choices = next(a.choices for a in parser._actions if a.dest == "command")
    assert list(choices) == list(SUBCOMMANDS)


def test_a_subcommand_module_that_fails_to_import_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cli, "SUBCOMMANDS", (*SUBCOMMANDS, "no_such_subcommand"))
    with pytest.raises(ModuleNotFoundError, match=r"proxy\.cli\.no_such_subcommand"):
        cli.build_parser()


def test_help_lists_every_subcommand() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "proxy", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env={**os.environ, "COLUMNS": "120"},
        check=False,
    )
    assert out.returncode == 0, out.stderr
    for name in SUBCOMMANDS:
        assert f"\n    {name} " in out.stdout
