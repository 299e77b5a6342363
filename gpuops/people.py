"""People who decide: a person is a dashboard user (GPUOPS_USERS, or a name in GPUOPS_PROXY_ROLES), whatever the
channel they decide through. They prove who they are with their password or an API token; a Slack id counts as
them only when GPUOPS_SLACK_USERS links it. API tokens are stored as a SHA-256 digest of their secret (the secret
is 256 random bits, so a slow hash adds nothing); the token itself is shown once, when it is created."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from gpuops.config import DashboardUser, Settings
from gpuops.errors import GpuopsError, NotFound
from gpuops.store.audit import append_event
from gpuops.store.models import ApiToken

DECIDING_ROLES = frozenset({"approver", "admin"})
TOKEN_PREFIX = "gpo"
_TOKEN = re.compile(rf"^{TOKEN_PREFIX}_([0-9a-f]{{12}})_([A-Za-z0-9_-]{{43}})$")


@dataclass(frozen=True)
class Person:
    """Someone who proved who they are: their dashboard user name, their role, and how they proved it
    (`password`, or `token:<id>`)."""

    name: str
    role: str
    via: str

    @property
    def may_decide(self) -> bool:
        return may_decide(self.role)


def may_decide(role: str | None) -> bool:
    """Whether a role may approve or reject plans and reset the circuit breaker."""
    return role in DECIDING_ROLES


def hash_password(password: str) -> str:
    """An argon2id hash (with its parameters and salt) to put in GPUOPS_USERS."""
    return PasswordHasher().hash(password)


def verify_password(digest: str, password: str) -> bool:
    try:
        return PasswordHasher().verify(digest, password)
    except (VerificationError, InvalidHashError):
        return False


def password_person(users: tuple[DashboardUser, ...], name: str, password: str, *, dummy_hash: str) -> Person | None:
    """The user if the password is right. An unknown name is checked against `dummy_hash`, so it costs the same."""
    user = next((u for u in users if u.name == name), None)
    if user is None:
        verify_password(dummy_hash, password)
        return None
    return Person(user.name, user.role, "password") if verify_password(user.password_hash, password) else None


def token_id_of(token: str) -> str | None:
    """The id part of something shaped like a gpuops token (safe to log and audit), else None."""
    found = _TOKEN.match(token.strip())
    return found.group(1) if found else None


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def token_person(session: Session, settings: Settings, token: str, *, now: datetime) -> Person | None:
    """The person a token acts as, with their current role; None when the token is malformed, unknown, wrong,
    revoked, expired, or its user is no longer configured."""
    found = _TOKEN.match(token.strip())
    if found is None:
        return None
    token_id, secret = found.groups()
    row = session.get(ApiToken, token_id)
    if row is None or not hmac.compare_digest(row.secret_sha256, _digest(secret)):
        return None
    if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
        return None
    role = settings.person_role(row.user_name)
    return Person(row.user_name, role, f"token:{row.id}") if role is not None else None


def create_token(session: Session, settings: Settings, *, user: str, created_by: str, expires_at: datetime | None,
                 label: str, now: datetime) -> tuple[ApiToken, str]:
    """A new token for `user`, audited; returns the row and the token, which is never stored and cannot be shown
    again. Runs in the caller's transaction."""
    if settings.person_role(user) is None:
        raise NotFound(f"{user!r} is not a dashboard user; add them to GPUOPS_USERS first")
    if expires_at is not None and expires_at <= now:
        raise GpuopsError("the expiry is in the past; give a later one")
    token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    row = ApiToken(id=token_id, user_name=user, secret_sha256=_digest(secret), label=label, created_at=now,
                   created_by=created_by, expires_at=expires_at)
    session.add(row)
    session.flush()
    append_event(session, actor=created_by, kind="auth.token_created",
                 data={"token_id": token_id, "user": user, "label": label,
                       "expires_at": expires_at.isoformat() if expires_at else None}, ts=now)
    return row, f"{TOKEN_PREFIX}_{token_id}_{secret}"


def list_tokens(session: Session, *, user: str | None = None) -> list[ApiToken]:
    stmt = select(ApiToken).order_by(ApiToken.created_at, ApiToken.id)
    if user is not None:
        stmt = stmt.where(ApiToken.user_name == user)
    return list(session.scalars(stmt))


def revoke_token(session: Session, *, token_id: str, revoked_by: str, now: datetime) -> ApiToken:
    """Revoke a token for good, audited (revoking one already revoked changes nothing and records nothing)."""
    row = session.get(ApiToken, token_id_of(token_id) or token_id)
    if row is None:
        raise NotFound(f"no API token with id {token_id!r}; `gpuops users token list` shows them")
    if row.revoked_at is None:
        row.revoked_at, row.revoked_by = now, revoked_by
        append_event(session, actor=revoked_by, kind="auth.token_revoked",
                     data={"token_id": row.id, "user": row.user_name}, ts=now)
    return row


def token_status(row: ApiToken, now: datetime) -> str:
    if row.revoked_at is not None:
        return "revoked"
    if row.expires_at is not None and row.expires_at <= now:
        return "expired"
    return "active"
