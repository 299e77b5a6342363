"""The `gpuops` command line. Each area's commands live in `entrypoints.commands.<area>`."""

from __future__ import annotations

import importlib

import click

from entrypoints.commands import COMMAND_MODULES


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--log-format", type=click.Choice(["text", "json"]), default=None,
              help="Log format (default: GPUOPS_LOG_FORMAT or text).")
@click.option("--log-level", default=None, help="Log level (default: GPUOPS_LOG_LEVEL or INFO).")
@click.pass_context
def cli(ctx: click.Context, log_format: str | None, log_level: str | None) -> None:
    """gpuops: autonomous operations for GPU clusters."""
    ctx.ensure_object(dict)
    ctx.obj["log_format"] = log_format
    ctx.obj["log_level"] = log_level


for _module in COMMAND_MODULES:
    importlib.import_module(f"entrypoints.commands.{_module}").register(cli)


def main() -> None:
    cli(prog_name="gpuops")
