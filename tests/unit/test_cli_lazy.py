"""The `gpuops` group lists its commands from a table and imports a command's module only when it runs: the
table must say exactly what the modules register, and `--help` must not import the heavy libraries."""

from __future__ import annotations

import importlib
import subprocess
import sys

import click

from entrypoints.cli import cli
from entrypoints.commands import COMMAND_MODULES, COMMANDS


def test_the_table_names_exactly_the_commands_the_modules_register() -> None:
    registered: dict[str, str] = {}
    for module in COMMAND_MODULES:
        scratch = click.Group()
        importlib.import_module(f"entrypoints.commands.{module}").register(scratch)
        registered.update({name: module for name in scratch.commands})
    assert registered == {name: c.module for name, c in COMMANDS.items()}


def test_every_command_resolves_through_the_group() -> None:
    ctx = click.Context(cli)
    for name in COMMANDS:
        command = cli.get_command(ctx, name)
        assert command is not None and command.name == name
    assert cli.get_command(ctx, "no-such-command") is None


def test_help_imports_no_command_module_and_no_detector_library() -> None:
    probe = ("import sys; from entrypoints.cli import cli; from click.testing import CliRunner; "
             "out = CliRunner().invoke(cli, ['--help']); assert out.exit_code == 0, out.output; "
             "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'statsmodels', 'pandas', "
             "'sqlalchemy', 'kubernetes') or m.startswith('entrypoints.commands.')); print(heavy)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]", result.stdout
