"""Who is asking: dashboard users and roles from the settings (argon2-hashed passwords), a trusted reverse-proxy
header, the signed session cookie, HTTP Basic or an API token (`Authorization: Bearer gpo_…`) for API clients;
and the CSRF token that every form and every cookie-authenticated API POST must carry."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBasic, HTTPBasicCredentials, HTTPBearer

from domain import clock
from entrypoints.web.throttle import Busy, Lockout, SignInThrottle, TooManyRequests
from gpuops.config import DashboardUser, Settings
from gpuops.errors import GpuopsError
from gpuops.people import hash_password as hash_password
from gpuops.people import token_id_of, token_person
from gpuops.people import verify_password as verify_password
from gpuops.store.audit import append_event, read_only_session
from gpuops.wiring import Container

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
SESSION_ID = "sid"
PASSWORD_CHECK_WAIT_S = 0.5  # how long an attempt waits for a free password check before it is told to retry
DEMO_ADMIN = "admin"
DEMO_SECOND_APPROVER = "oncall"  # a high-risk step needs two different people: the demo's story needs a second one

basic_scheme = HTTPBasic(auto_error=False, description="A dashboard user's name and password.")
bearer_scheme = HTTPBearer(auto_error=False, description="An API token from `gpuops users token create NAME`; it "
                                                         "acts as that user with that user's role.")


class NotAuthenticated(GpuopsError):
    """No valid sign-in came with the request: pages redirect to /login, the API answers 401."""


class Forbidden(GpuopsError):
    """Signed in, but the role does not allow this, or the CSRF token is missing or wrong."""


@dataclass(frozen=True)
class SignedIn:
    """The person behind a request and how they proved it."""

    name: str
    role: str
    via: Literal["session", "proxy", "basic", "token"]

    def can(self, permission: str) -> bool:
        return permission in PERMISSIONS.get(self.role, frozenset())


class UserDirectory:
    """The configured users. Verifying a password costs tens of milliseconds and 64 MiB on purpose, so at most
    `password_checks_max` run at once (`slots`; beyond them an attempt is refused as Busy), and a successful HTTP
    Basic check is remembered (as a keyed digest, never the password) for the life of the process."""

    def __init__(self, settings: Settings, key: bytes) -> None:
        self._users: dict[str, DashboardUser] = {u.name: u for u in settings.users}
        self._key = key
        self._verified: set[bytes] = set()
        self._dummy = hash_password(secrets.token_hex(8))  # unknown names cost the same as known ones
        self.slots = threading.BoundedSemaphore(settings.password_checks_max)

    def role_of(self, name: str) -> str | None:
        user = self._users.get(name)
        return user.role if user else None

    def authenticate(self, name: str, password: str) -> DashboardUser | None:
        if not self.slots.acquire(timeout=PASSWORD_CHECK_WAIT_S):
            raise Busy("too many sign-ins are being checked at once; retry in a second")
        try:
            user = self._users.get(name)
            if user is None:
                verify_password(self._dummy, password)
                return None
            return user if verify_password(user.password_hash, password) else None
        finally:
            self.slots.release()

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


class SignedOutSessions:
    """Sessions ended by logout, remembered until their cookie would have expired anyway, so that a copy of the
    cookie taken before logout is refused. Held by this process: a restart forgets them."""

    def __init__(self, max_age_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._max_age_s = max_age_s
        self._clock = clock
        self._ended: dict[str, float] = {}
        self._lock = threading.Lock()

    def end(self, session_id: str) -> None:
        with self._lock:
            now = self._clock()
            self._ended = {sid: until for sid, until in self._ended.items() if until > now}
            self._ended[session_id] = now + self._max_age_s

    def ended(self, session_id: str) -> bool:
        with self._lock:
            return self._ended.get(session_id, float("-inf")) > self._clock()


def _refuse_if_locked(request: Request, name: str) -> str:
    """The client's address, unless the user name or the client has too many recent failures (TooManyRequests)."""
    throttle: SignInThrottle = request.app.state.sign_in_throttle
    client = request.client.host if request.client else "unknown"
    lockout = throttle.locked(name, client)
    if lockout is not None:
        log.info("sign-in refused: %s %r locked out for %ss", lockout.scope,
                 name[:128] if lockout.scope == "user" else client, lockout.retry_after_s)
        raise TooManyRequests(f"too many failed sign-ins; retry in {lockout.retry_after_s} s",
                              retry_after_s=lockout.retry_after_s)
    return client


def check_password(request: Request, name: str, password: str, *,
                   via: Literal["form", "basic"]) -> DashboardUser | None:
    """The user if the password is right. A user name or client address with too many recent failures is refused
    (TooManyRequests) before any check; every failure, and the lockout it may start, is logged and audited."""
    throttle: SignInThrottle = request.app.state.sign_in_throttle
    directory: UserDirectory = request.app.state.directory
    client = _refuse_if_locked(request, name)
    user = directory.authenticate_cached(name, password) if via == "basic" else directory.authenticate(name, password)
    if user is not None:
        throttle.succeeded(name)
        return user
    started = throttle.failed(name, client)
    _audit_failure(request.app.state.container, name=name[:128], client=client, via=via, started=started)
    return None


def check_token(request: Request, token: str) -> SignedIn | None:
    """The token's user with their current role, if the token is valid. Failures count against the client (and
    the token id, as a user name would) exactly as failed sign-ins do: throttled, logged and audited."""
    throttle: SignInThrottle = request.app.state.sign_in_throttle
    container: Container = request.app.state.container
    token_id = token_id_of(token)
    name = f"token:{token_id}" if token_id else "token:malformed"
    client = _refuse_if_locked(request, name)
    with read_only_session(container.session_factory) as session:
        person = token_person(session, container.settings, token, now=clock.now())
    if person is not None:
        throttle.succeeded(name)
        return SignedIn(person.name, person.role, "token")
    started = throttle.failed(name, client)
    _audit_failure(container, name=name, client=client, via="token", started=started)
    return None


def _audit_failure(container: Container, *, name: str, client: str, via: str, started: Lockout | None) -> None:
    log.warning("sign-in failed: user %r from %s via %s", name, client, via)
    with container.uow() as uow:
        append_event(uow.session, actor=f"client:{client}", kind="auth.failed",
                     data={"user": name, "client": client, "via": via})
        if started is not None:
            log.warning("sign-in locked out: %s %r for %ss", started.scope, name if started.scope == "user" else client,
                        started.retry_after_s)
            append_event(uow.session, actor=f"client:{client}", kind="auth.locked_out",
                         data={"scope": started.scope, "user": name, "client": client,
                               "retry_after_s": started.retry_after_s})
        uow.commit()


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


def demo_second_approver(settings: Settings) -> tuple[Settings, str]:
    """Settings with an `oncall` approver whose password is random, and that password: with the demo's admin, the
    two different people a high-risk step (the reboot) needs."""
    password = secrets.token_urlsafe(12)
    second = DashboardUser(name=DEMO_SECOND_APPROVER, role="approver", password_hash=hash_password(password))
    users = (*[u for u in settings.users if u.name != DEMO_SECOND_APPROVER], second)
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
    request.session[SESSION_ID] = secrets.token_urlsafe(24)
    csrf_token(request)


def sign_out(request: Request) -> None:
    """End the session here and for any copy of its cookie."""
    session_id = request.session.get(SESSION_ID)
    if isinstance(session_id, str):
        signed_out: SignedOutSessions = request.app.state.signed_out
        signed_out.end(session_id)
    request.session.clear()


def identify(request: Request, credentials: HTTPBasicCredentials | None = None,
             bearer: HTTPAuthorizationCredentials | None = None) -> SignedIn | None:
    """The trusted proxy's header first, then the session cookie, then HTTP Basic credentials or an API token."""
    settings: Settings = request.app.state.container.settings
    directory: UserDirectory = request.app.state.directory
    signed_out: SignedOutSessions = request.app.state.signed_out
    if settings.trusted_proxy_header:
        name = request.headers.get(settings.trusted_proxy_header, "").strip()
        if name:
            role = settings.proxy_role(name)
            return SignedIn(name, role, "proxy") if role else None
    session_user = request.session.get(SESSION_USER)
    if isinstance(session_user, str):
        role = directory.role_of(session_user)
        session_id = request.session.get(SESSION_ID)
        if role is not None and isinstance(session_id, str) and not signed_out.ended(session_id):
            return SignedIn(session_user, role, "session")
        request.session.pop(SESSION_USER, None)  # signed out, or removed from the configuration since signing in
    if credentials is not None:
        user = check_password(request, credentials.username, credentials.password, via="basic")
        if user is not None:
            return SignedIn(user.name, user.role, "basic")
    if bearer is not None:
        return check_token(request, bearer.credentials)
    return None


def api_user(request: Request,
             credentials: Annotated[HTTPBasicCredentials | None, Depends(basic_scheme)],
             bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]) -> SignedIn:
    user = identify(request, credentials, bearer)
    if user is None:
        raise NotAuthenticated("sign in: send an API token (Authorization: Bearer, from `gpuops users token "
                               "create`) or HTTP Basic credentials of a dashboard user, or use a signed-in session")
    return user


def page_user(request: Request) -> SignedIn:
    user = identify(request)
    if user is None:
        raise NotAuthenticated("sign in to see this page")
    return user


def api_writer(request: Request, user: Annotated[SignedIn, Depends(api_user)]) -> SignedIn:
    """An API caller allowed to POST: HTTP Basic and API tokens need no CSRF token (browsers never attach them on
    their own here: the API takes JSON bodies only); a cookie or proxy sign-in must send the session's token
    header."""
    if user.via not in ("basic", "token"):
        check_csrf(request, request.headers.get(CSRF_HEADER))
    return user


ApiUser = Annotated[SignedIn, Depends(api_user)]
ApiWriter = Annotated[SignedIn, Depends(api_writer)]
PageUser = Annotated[SignedIn, Depends(page_user)]
