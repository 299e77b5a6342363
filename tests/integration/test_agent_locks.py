"""Runs of one incident's graph are serialised across processes and connections; other incidents are not."""

from __future__ import annotations

import threading

import pytest

from agent.locks import incident_lock


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_second_run_of_the_same_incident_waits(backend: str, request: pytest.FixtureRequest) -> None:
    url: str = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "postgres_url")
    got = threading.Event()

    def second() -> None:
        with incident_lock(url, 7):
            got.set()

    with incident_lock(url, 7):
        with incident_lock(url, 8):  # another incident is not blocked
            pass
        waiter = threading.Thread(target=second)
        waiter.start()
        assert not got.wait(0.5)  # still held by the first run
    assert got.wait(10)
    waiter.join(10)
