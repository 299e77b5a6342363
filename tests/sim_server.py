"""Serve an ASGI app (the twin's) with uvicorn on a free loopback port in a background thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.types import ASGIApp

from tests.prometheus_server import free_port
from tests.waiting import wait_for


@contextmanager
def serving(app: ASGIApp) -> Iterator[str]:
    """Yields the base URL (http://127.0.0.1:PORT) while `app` is served."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout=15.0, interval=0.02, message="uvicorn did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
