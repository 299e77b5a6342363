"""Live updates: `/events` is a server-sent event stream that says `change` whenever incidents, actions or the audit
trail change. The server polls the store's fingerprint once a second (whichever process wrote it); the page's
script then reloads its live fragments. A stream ends after a while and the browser reconnects on its own, so a
server that stops never waits on open streams. Each user may hold GPUOPS_EVENT_STREAMS_PER_USER streams open at
once; one more is answered 429."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable

from anyio import to_thread
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from entrypoints.web.auth import PageUser
from entrypoints.web.throttle import StreamSlots
from entrypoints.web.views import store_version
from gpuops.wiring import Container

router = APIRouter(include_in_schema=False)
STREAM_LIFETIME_S = 60.0
HEARTBEAT_S = 15.0


def _version(container: Container) -> str:
    with container.session_factory() as session:
        return store_version(session)


async def change_events(request: Request, container: Container, poll_s: float) -> AsyncIterator[str]:
    yield "retry: 1000\n\n"
    last = await to_thread.run_sync(_version, container)
    yield f"event: hello\ndata: {json.dumps({'version': last})}\n\n"
    started = beat = time.monotonic()
    while time.monotonic() - started < STREAM_LIFETIME_S:
        await asyncio.sleep(poll_s)
        if await request.is_disconnected():
            return
        current = await to_thread.run_sync(_version, container)
        if current != last:
            last = current
            yield f"event: change\ndata: {json.dumps({'version': current})}\n\n"
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


@router.get("/events")
def events(request: Request, user: PageUser) -> StreamingResponse:
    poll_s: float = request.app.state.sse_poll_s
    slots: StreamSlots = request.app.state.event_streams
    slots.take(user.name)
    return HeldStream(change_events(request, request.app.state.container, poll_s),
                      release=lambda: slots.give_back(user.name), media_type="text/event-stream",
                      headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
