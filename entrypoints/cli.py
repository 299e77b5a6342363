"""The `gpuops` command line. Each area's commands live in `entrypoints.commands.<area>`, imported only when
one of its commands runs, so `gpuops --help` and light commands start without the detectors' libraries."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from entrypoints.commands import COMMANDS


class LazyGroup(click.Group):
    """The top-level group: commands come from `COMMANDS`, each module imported when its command is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands or cmd_name not in COMMANDS:
            return self.commands.get(cmd_name)
        scratch = click.Group()
        importlib.import_module(f"entrypoints.commands.{COMMANDS[cmd_name].module}").register(scratch)
        self.commands.update(scratch.commands)
        return self.commands.get(cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            problem = unreachable_database(exc)
            if problem is None:
                raise
            raise click.ClickException(problem) from exc

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name].help if name in COMMANDS else (self.commands[name].get_short_help_str()))
                for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def unreachable_database(exc: BaseException) -> str | None:
    """One line for a database that cannot be reached (refused, unknown host, wrong password, no such database),
    so the command says so instead of a traceback; None for any other error (an error while a statement ran
    keeps its traceback)."""
    errors = sys.modules.get("sqlalchemy.exc")
    if errors is None or not isinstance(exc, errors.OperationalError) or exc.statement is not None:
        return None
    lines = str(exc.orig or exc).strip().splitlines()
    first = lines[0] if lines else type(exc).__name__
    return f"cannot reach the database: {first}; check GPUOPS_DATABASE_URL and that the database is running"


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--log-format", type=click.Choice(["text", "json"]), default=None,
              help="Log format (default: GPUOPS_LOG_FORMAT or text).")
@click.option("--log-level", default=None, help="Log level (default: GPUOPS_LOG_LEVEL or INFO).")
@click.pass_context
def cli(ctx: click.Context, log_format: str | None, log_level: str | None) -> None:
    """gpuops: autonomous operations for GPU clusters."""
    ctx.ensure_object(dict)
    ctx.obj["log_format"] = log_format
    ctx.obj["log_level"] = log_level


def main() -> None:
    cli(prog_name="gpuops")
