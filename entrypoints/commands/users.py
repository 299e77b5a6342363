"""`gpuops users …`: dashboard users and their API tokens. Passwords are never stored (GPUOPS_USERS holds their
argon2 hashes) and neither are tokens (the store keeps a digest; the token is printed once)."""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from entrypoints.commands.context import echo_json, store_container
from entrypoints.commands.credentials import authenticate
from gpuops.config import ROLES
from gpuops.errors import GpuopsError
from gpuops.people import Person, create_token, list_tokens, revoke_token, token_id_of, token_status
from gpuops.store.models import ApiToken

_DURATION = re.compile(r"^(\d+)([hdw])$")
_UNIT_S = {"h": 3600, "d": 86400, "w": 7 * 86400}


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


@users.group("token")
def token() -> None:
    """API tokens for scripts: each acts as one dashboard user, with that user's role."""


def expiry(value: str, now: datetime) -> datetime | None:
    """`90d`, `12h`, `2w`, an ISO date or time (UTC unless it says otherwise), or `never`."""
    if value == "never":
        return None
    found = _DURATION.match(value.strip())
    if found:
        return now + timedelta(seconds=int(found.group(1)) * _UNIT_S[found.group(2)])
    try:
        when = datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"expected a duration such as 90d, 12h or 2w, an ISO date, or never; got "
                                 f"{value!r}", param_hint="--expires") from exc
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@token.command("create")
@click.argument("name")
@click.option("--expires", default="90d", show_default=True,
              help="When the token stops working: a duration (90d, 12h, 2w), an ISO date, or never.")
@click.option("--label", default="", help="What the token is for (shown by `token list`).")
@click.option("--user", "user_name", default=None,
              help="Who creates it (default: NAME): NAME themselves, or an admin. The password comes from "
                   "GPUOPS_PASSWORD or a prompt.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def token_create(ctx: click.Context, /, name: str, expires: str, label: str, user_name: str | None,
                 as_json: bool) -> None:
    """Create an API token for user NAME and print it once (only a digest is stored)."""
    now = datetime.now(tz=UTC)
    expires_at = expiry(expires, now)
    container = store_container(ctx)
    creator = authenticate(container, token_file=None, user_name=user_name or name, identity=None)
    _may_manage(creator, name)
    try:
        with container.uow() as uow:
            row, secret = create_token(uow.session, container.settings, user=name, created_by=creator.name,
                                       expires_at=expires_at, label=label, now=now)
            uow.commit()
    except GpuopsError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        echo_json({**_token_json(row, now), "token": secret})
        return
    until = row.expires_at.isoformat() if row.expires_at else "never"
    click.echo(f"API token {row.id} for {name} (expires {until}); it is shown only now:")
    click.echo(secret)


@token.command("list")
@click.option("--user", "user_name", default=None, help="Only this user's tokens.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def token_list(ctx: click.Context, /, user_name: str | None, as_json: bool) -> None:
    """The API tokens (ids, users, expiry, status; never the secrets)."""
    now = datetime.now(tz=UTC)
    container = store_container(ctx)
    with container.uow() as uow:
        rows = [_token_json(row, now) for row in list_tokens(uow.session, user=user_name)]
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        click.echo(f"{row['id']}  {row['user']:<16} {row['status']:<8} created {row['created_at']} by "
                   f"{row['created_by']}  expires {row['expires_at'] or 'never'}  {row['label']}".rstrip())


@token.command("revoke")
@click.argument("token_id")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Authenticate with the API token in this file (instead of GPUOPS_API_TOKEN).")
@click.option("--user", "user_name", default=None,
              help="Authenticate as this dashboard user (the password from GPUOPS_PASSWORD or a prompt).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def token_revoke(ctx: click.Context, /, token_id: str, token_file: Path | None, user_name: str | None,
                 as_json: bool) -> None:
    """Revoke API token TOKEN_ID (its owner or an admin may); it stops working at once."""
    now = datetime.now(tz=UTC)
    container = store_container(ctx)
    revoker = authenticate(container, token_file=token_file, user_name=user_name, identity=None)
    try:
        with container.uow() as uow:
            found = uow.session.get(ApiToken, token_id_of(token_id) or token_id)
            if found is not None:
                _may_manage(revoker, found.user_name)
            row = revoke_token(uow.session, token_id=token_id, revoked_by=revoker.name, now=now)
            shown = _token_json(row, now)
            uow.commit()
    except GpuopsError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        echo_json(shown)
    else:
        click.echo(f"API token {shown['id']} of {shown['user']} is revoked")


def _may_manage(person: Person, owner: str) -> None:
    if person.name != owner and person.role != "admin":
        raise click.ClickException(f"{person.name} may manage only their own API tokens; an admin manages "
                                   f"{owner}'s")


def _token_json(row: ApiToken, now: datetime) -> dict[str, str | None]:
    return {"id": row.id, "user": row.user_name, "label": row.label, "status": token_status(row, now),
            "created_at": row.created_at.isoformat(), "created_by": row.created_by,
            "expires_at": row.expires_at.isoformat() if row.expires_at else None,
            "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None}


def register(group: click.Group) -> None:
    group.add_command(users)
