"""Who is running a command that decides: an API token (GPUOPS_API_TOKEN or --token-file) or a dashboard user's
name and password (--user, with the password from GPUOPS_PASSWORD or a prompt), checked against the same users
and tokens as the web service. Naming someone is not proving it: `--as` must be the authenticated user."""

from __future__ import annotations

import getpass
import os
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from gpuops.people import Person, hash_password, password_person, token_id_of, token_person
from gpuops.store.audit import append_event
from gpuops.wiring import Container

TOKEN_ENV = "GPUOPS_API_TOKEN"
PASSWORD_ENV = "GPUOPS_PASSWORD"
HOW = (f"set {TOKEN_ENV} to an API token (`gpuops users token create NAME`), pass --token-file, or pass "
       f"--user NAME with the password in {PASSWORD_ENV} or at the prompt")


def credential_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--token-file, --user and --as, for commands that decide."""
    for option in reversed([
        click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help=f"A file holding an API token (instead of {TOKEN_ENV})."),
        click.option("--user", "user_name", default=None,
                     help=f"Decide as this dashboard user; the password comes from {PASSWORD_ENV} or a prompt."),
        click.option("--as", "identity", default=None,
                     help="Optional check: the authenticated user must be this one, or nothing is done."),
    ]):
        fn = option(fn)
    return fn


def authenticate(container: Container, *, token_file: Path | None, user_name: str | None,
                 identity: str | None) -> Person:
    """The person proven by the credentials given, or a ClickException naming what to set. A failed proof is
    audited (`auth.failed`, via `cli`)."""
    token = _token(token_file)
    if user_name is not None:
        password = os.environ.get(PASSWORD_ENV)
        if password is None:
            password = click.prompt(f"Password for {user_name}", hide_input=True, err=True)
        person = password_person(container.settings.users, user_name, password,
                                 dummy_hash=hash_password(secrets.token_hex(8)))
        shown = user_name[:128]
    elif token is not None:
        with container.uow() as uow:
            person = token_person(uow.session, container.settings, token, now=datetime.now(tz=UTC))
        shown = f"token:{token_id_of(token) or 'malformed'}"
    else:
        raise click.ClickException(f"deciding from the CLI takes an authenticated dashboard user: {HOW}")
    if person is None:
        _audit_failure(container, shown)
        what = "password" if user_name is not None else "API token (unknown, revoked or expired)"
        raise click.ClickException(f"wrong {what} for {shown}; nothing was changed. To authenticate: {HOW}")
    if identity is not None and identity != person.name:
        raise click.ClickException(f"--as {identity} does not match the authenticated user {person.name}; "
                                   "nobody decides in someone else's name. Drop --as or sign in as "
                                   f"{identity}: {HOW}")
    return person


def _token(token_file: Path | None) -> str | None:
    if token_file is not None:
        try:
            return token_file.read_text().strip()
        except OSError as exc:
            raise click.BadParameter(f"cannot read {token_file}: {exc.strerror}", param_hint="--token-file") from exc
    return os.environ.get(TOKEN_ENV) or None


def _audit_failure(container: Container, name: str) -> None:
    login = getpass.getuser()
    with container.uow() as uow:
        append_event(uow.session, actor=f"cli:{login}", kind="auth.failed",
                     data={"user": name, "client": f"cli:{login}", "via": "cli"})
        uow.commit()
