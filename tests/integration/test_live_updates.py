"""Live updates miss nothing: a page names the store fingerprint it was rendered at, and a stream opened from it
says `change` at once when the store moved on before the stream began (an action executed between the page's
render and its script connecting). Each event carries the fingerprint as its id, and a reconnecting browser's
Last-Event-ID is the baseline it resumes from."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator

import httpx
import pytest

from tests.web_server import WebServer, seed_awaiting, serve_on, sign_in

pytestmark = pytest.mark.postgres


@pytest.fixture
def web(postgres_url: str) -> Iterator[WebServer]:
    with serve_on(postgres_url) as server:
        yield server


def _events(client: httpx.Client, url: str, count: int, headers: dict[str, str] | None = None) -> list[dict[str, str]]:
    """The first `count` events of a stream, each as its fields (id, event, data); waits at most the client's read
    timeout for each line, so a stream that stays silent fails the test rather than hanging it."""
    events: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    with client.stream("GET", url, headers=headers or {}, timeout=httpx.Timeout(10, read=5)) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line == "":
                if "event" in fields:
                    events.append(fields)
                    if len(events) == count:
                        return events
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value
    return events


def _stream_url(page: str) -> str:
    found = re.search(r'data-live-events="([^"]+)"', page)
    assert found, "a signed-in page names its live-update stream"
    return html.unescape(found.group(1))


def test_a_change_before_the_stream_opens_is_not_missed(web: WebServer) -> None:
    with sign_in(web.url, "vera") as client:
        url = _stream_url(client.get("/").text)
        assert "since=" in url
        seed_awaiting(web.container)  # the store moves on after the page was rendered, before its stream opens
        hello, change = _events(client, url, 2)
        assert hello["event"] == "hello" and change["event"] == "change"
        assert change["id"] == hello["id"] != url.split("since=", 1)[1]


def test_a_reconnecting_browser_resumes_from_the_last_event_it_saw(web: WebServer) -> None:
    with sign_in(web.url, "vera") as client:
        url = _stream_url(client.get("/").text)
        (hello,) = _events(client, url, 1)
        seed_awaiting(web.container)
        # the page's own baseline is current again in this reconnect, but Last-Event-ID says what the browser saw
        fresh = _stream_url(client.get("/").text)
        events = _events(client, fresh, 2, headers={"Last-Event-ID": hello["id"]})
        assert [e["event"] for e in events] == ["hello", "change"]
