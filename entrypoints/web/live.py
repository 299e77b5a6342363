"""Live updates: `/events` is a server-sent event stream that says `change` whenever incidents, actions or the audit
trail change. The server polls the store's fingerprint once a second (whichever process wrote it); the page's
script then reloads its live fragments. A stream ends after a while and the browser reconnects on its own, so a
server that stops never waits on open streams. Nothing is missed in between: a page names the fingerprint it was
rendered at (`?since=`), each event carries the fingerprint as its id, and a reconnecting browser sends the last
one back (Last-Event-ID); a stream whose baseline is already stale says `change` at once. Each user may hold
GPUOPS_EVENT_STREAMS_PER_USER streams open at once; one more is answered 429."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from entrypoints.web.auth import PageUser
from entrypoints.web.throttle import StreamSlots
from entrypoints.web.views import store_version
from gpuops.store.audit import read_only_session
from gpuops.wiring import Container

router = APIRouter(include_in_schema=False)
STREAM_LIFETIME_S = 60.0
HEARTBEAT_S = 15.0


def _version(container: Container) -> str:
    """Read without the SQLite write lock: a stream polls every second and must never hold writers up."""
    with read_only_session(container.session_factory) as session:
        return store_version(session)


def _event(kind: str, version: str) -> str:
    return f"id: {version}\nevent: {kind}\ndata: {json.dumps({'version': version})}\n\n"


async def change_events(request: Request, container: Container, poll_s: float,
                        since: str | None = None) -> AsyncIterator[str]:
    """`since`: the fingerprint the client last saw; when the store has moved on from it, the stream's first word
    after `hello` is `change`."""
    yield "retry: 1000\n\n"
    current = await to_thread.run_sync(_version, container)
    yield _event("hello", current)
    if since is not None and since != current:
        yield _event("change", current)
    last = current
    started = beat = time.monotonic()
    while time.monotonic() - started < STREAM_LIFETIME_S:
        await asyncio.sleep(poll_s)
        if await request.is_disconnected():
            return
        current = await to_thread.run_sync(_version, container)
        if current != last:
            last = current
            yield _event("change", current)
        elif time.monotonic() - beat > HEARTBEAT_S:
            beat = time.monotonic()
            yield ": keep-alive\n\n"


class HeldStream(StreamingResponse):
    """A stream that gives its slot back when it ends, however it ends (finished, client gone, server stopping)."""

    def __init__(self, content: AsyncIterator[str], *, release: Callable[[], None], media_type: str,
                 headers: dict[str, str]) -> None:
        super().__init__(content, media_type=media_type, headers=headers)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


def live_version(request: Request) -> str:
    """The fingerprint a page is rendered at, read before the page reads its data (a change in between only
    costs the page one more refresh)."""
    version: str = _version(request.app.state.container)
    return version


@router.get("/events")
def events(request: Request, user: PageUser, since: Annotated[str | None, Query(max_length=200)] = None,
           last_event_id: Annotated[str | None, Header(max_length=200)] = None) -> StreamingResponse:
    poll_s: float = request.app.state.sse_poll_s
    slots: StreamSlots = request.app.state.event_streams
    slots.take(user.name)
    baseline = last_event_id or since
    return HeldStream(change_events(request, request.app.state.container, poll_s, baseline),
                      release=lambda: slots.give_back(user.name), media_type="text/event-stream",
                      headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
