"""`gpuops users …`: dashboard users. Passwords are never stored; GPUOPS_USERS holds their argon2 hashes."""

from __future__ import annotations

import sys

import click

from entrypoints.commands.context import echo_json
from gpuops.config import ROLES


@click.group("users")
def users() -> None:
    """Dashboard users and their roles (viewer, approver, admin)."""


@users.command("hash-password")
@click.option("--name", default=None, help="With --role: print a whole GPUOPS_USERS entry, name:role:hash.")
@click.option("--role", type=click.Choice(ROLES), default=None, help="The user's role (with --name).")
@click.option("--stdin", "from_stdin", is_flag=True, help="Read the password from the first line of stdin.")
@click.option("--json", "as_json", is_flag=True)
def hash_password_command(name: str | None, role: str | None, from_stdin: bool, as_json: bool) -> None:
    """Hash a password for GPUOPS_USERS (asked for twice, not echoed, unless --stdin)."""
    from entrypoints.web.auth import hash_password

    if (name is None) != (role is None):
        raise click.UsageError("give --name and --role together, or neither")
    if name is not None and (":" in name or ";" in name or not name.strip()):
        raise click.BadParameter("a user name cannot be empty or contain ':' or ';'", param_hint="--name")
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < 8:
        raise click.ClickException("the password is too short: use at least 8 characters")
    digest = hash_password(password)
    entry = f"{name}:{role}:{digest}" if name else digest
    if as_json:
        echo_json({"name": name, "role": role, "hash": digest, "entry": entry})
    else:
        click.echo(entry)


def register(group: click.Group) -> None:
    group.add_command(users)
