"""Live updates: `/events` is a server-sent event stream that says `change` whenever incidents, actions or the audit
trail change. The server polls the store's fingerprint once a second (whichever process wrote it); the page's
script then reloads its live fragments. A stream ends after a while and the browser reconnects on its own, so a
server that stops never waits on open streams."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from anyio import to_thread
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from entrypoints.web.auth import PageUser
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


@router.get("/events")
def events(request: Request, _user: PageUser) -> StreamingResponse:
    poll_s: float = request.app.state.sse_poll_s
    return StreamingResponse(change_events(request, request.app.state.container, poll_s),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
