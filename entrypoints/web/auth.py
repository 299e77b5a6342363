"""Who is asking: dashboard users and roles from the settings (argon2-hashed passwords), a trusted reverse-proxy
header, the signed session cookie, HTTP Basic for API clients; and the CSRF token that every form and every
cookie-authenticated API POST must carry."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from typing import Annotated, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import Depends, Request
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from gpuops.config import DashboardUser, Settings
from gpuops.errors import GpuopsError

log = logging.getLogger(__name__)

PERMISSIONS: dict[str, frozenset[str]] = {
    "viewer": frozenset({"read"}),
    "approver": frozenset({"read", "decide"}),
    "admin": frozenset({"read", "decide", "admin"}),
}
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SESSION_USER = "user"
SESSION_CSRF = "csrf"
DEMO_ADMIN = "admin"

basic_scheme = HTTPBasic(auto_error=False, description="A dashboard user's name and password.")


class NotAuthenticated(GpuopsError):
    """No valid sign-in came with the request: pages redirect to /login, the API answers 401."""


class Forbidden(GpuopsError):
    """Signed in, but the role does not allow this, or the CSRF token is missing or wrong."""


@dataclass(frozen=True)
class SignedIn:
    """The person behind a request and how they proved it."""

    name: str
    role: str
    via: Literal["session", "proxy", "basic"]

    def can(self, permission: str) -> bool:
        return permission in PERMISSIONS.get(self.role, frozenset())


def hash_password(password: str) -> str:
    """An argon2id hash (with its parameters and salt) to put in GPUOPS_USERS."""
    return PasswordHasher().hash(password)


def verify_password(digest: str, password: str) -> bool:
    try:
        return PasswordHasher().verify(digest, password)
    except (VerificationError, InvalidHashError):
        return False


class UserDirectory:
    """The configured users. Verifying a password costs tens of milliseconds on purpose, so a successful HTTP Basic
    check is remembered (as a keyed digest, never the password) for the life of the process."""

    def __init__(self, settings: Settings, key: bytes) -> None:
        self._users: dict[str, DashboardUser] = {u.name: u for u in settings.users}
        self._key = key
        self._verified: set[bytes] = set()
        self._dummy = hash_password(secrets.token_hex(8))  # unknown names cost the same as known ones

    def role_of(self, name: str) -> str | None:
        user = self._users.get(name)
        return user.role if user else None

    def authenticate(self, name: str, password: str) -> DashboardUser | None:
        user = self._users.get(name)
        if user is None:
            verify_password(self._dummy, password)
            return None
        return user if verify_password(user.password_hash, password) else None

    def authenticate_cached(self, name: str, password: str) -> DashboardUser | None:
        user = self._users.get(name)
        if user is None:
            return self.authenticate(name, password)
        token = hmac.new(self._key, f"{name}\0{user.password_hash}\0{password}".encode(), hashlib.sha256).digest()
        if token in self._verified:
            return user
        found = self.authenticate(name, password)
        if found is not None:
            self._verified.add(token)
        return found


def session_secret(settings: Settings) -> str:
    """GPUOPS_SESSION_SECRET, or a random one for this process (sessions then end when it restarts)."""
    if settings.session_secret is not None:
        return settings.session_secret.get_secret_value()
    log.warning("GPUOPS_SESSION_SECRET is not set: using a random session secret for this process; sign-ins end "
                "when it restarts and do not carry across replicas")
    return secrets.token_urlsafe(48)


def demo_admin(settings: Settings) -> tuple[Settings, str]:
    """Settings with an `admin` user whose password is random, and that password, for the demo to print once."""
    password = secrets.token_urlsafe(12)
    admin = DashboardUser(name=DEMO_ADMIN, role="admin", password_hash=hash_password(password))
    users = (*[u for u in settings.users if u.name != DEMO_ADMIN], admin)
    return settings.model_copy(update={"users": users}), password


def csrf_token(request: Request) -> str:
    """The session's CSRF token, created on first use (an anonymous session holds one for the sign-in form)."""
    token = request.session.get(SESSION_CSRF)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session[SESSION_CSRF] = token
    return token


def check_csrf(request: Request, supplied: str | None) -> None:
    expected = request.session.get(SESSION_CSRF)
    if not isinstance(expected, str) or not supplied or not hmac.compare_digest(expected, supplied):
        raise Forbidden("the form's CSRF token is missing or does not match your session; reload the page and "
                        "try again")


def sign_in(request: Request, user: DashboardUser) -> None:
    """Start a fresh session for `user` (a new CSRF token; nothing from before sign-in carries over)."""
    request.session.clear()
    request.session[SESSION_USER] = user.name
    csrf_token(request)


def identify(request: Request, credentials: HTTPBasicCredentials | None = None) -> SignedIn | None:
    """The trusted proxy's header first, then the session cookie, then HTTP Basic credentials."""
    settings: Settings = request.app.state.container.settings
    directory: UserDirectory = request.app.state.directory
    if settings.trusted_proxy_header:
        name = request.headers.get(settings.trusted_proxy_header, "").strip()
        if name:
            role = settings.proxy_role(name)
            return SignedIn(name, role, "proxy") if role else None
    session_user = request.session.get(SESSION_USER)
    if isinstance(session_user, str):
        role = directory.role_of(session_user)
        if role is not None:
            return SignedIn(session_user, role, "session")
        request.session.pop(SESSION_USER, None)  # removed from the configuration since signing in
    if credentials is not None:
        user = directory.authenticate_cached(credentials.username, credentials.password)
        if user is not None:
            return SignedIn(user.name, user.role, "basic")
    return None


def api_user(request: Request,
             credentials: Annotated[HTTPBasicCredentials | None, Depends(basic_scheme)]) -> SignedIn:
    user = identify(request, credentials)
    if user is None:
        raise NotAuthenticated("sign in: send HTTP Basic credentials of a dashboard user, or use a signed-in "
                               "session")
    return user


def page_user(request: Request) -> SignedIn:
    user = identify(request)
    if user is None:
        raise NotAuthenticated("sign in to see this page")
    return user


def api_writer(request: Request, user: Annotated[SignedIn, Depends(api_user)]) -> SignedIn:
    """An API caller allowed to POST: HTTP Basic needs no CSRF token (browsers never attach it on their own
    here: the API takes JSON bodies only); a cookie or proxy sign-in must send the session's token header."""
    if user.via != "basic":
        check_csrf(request, request.headers.get(CSRF_HEADER))
    return user


ApiUser = Annotated[SignedIn, Depends(api_user)]
ApiWriter = Annotated[SignedIn, Depends(api_writer)]
PageUser = Annotated[SignedIn, Depends(page_user)]
