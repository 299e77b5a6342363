"""`gpuops` as a real process: bad settings exit non-zero naming the variable; `gpuops api` serves
/healthz, /metrics and the dashboard over real HTTP."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from entrypoints.web.auth import hash_password
from gpuops.config import Settings
from gpuops.store import migrate
from gpuops.store.models import Incident
from gpuops.wiring import bootstrap
from tests.conftest import GPUOPS, free_port, gpuops_env, wait_http

PASSWORD = "ops-password"
AUTH = ("ops", PASSWORD)


def _seed(url: str) -> None:
    migrate.upgrade(url)
    container = bootstrap(Settings(database_url=url))
    with container.uow() as uow:
        uow.session.add_all([
            Incident(dedup_key="gpu-node-002/5/xid", scope="gpu", family="xid", hostname="gpu-node-002", gpu=5,
                     severity="critical", title="XID 79: GPU fell off the bus", status="open"),
            Incident(dedup_key="gpu-node-007//thermal", scope="node", family="thermal", hostname="gpu-node-007",
                     severity="warning", title="Temperature climbing", status="resolved"),
        ])
        uow.commit()
    container.close()


def _run(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GPUOPS, *args], env=gpuops_env(GPUOPS_DATABASE_URL=url), capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("command", [["incidents", "list"], ["api"], ["db", "upgrade"]])
def test_bad_setting_exits_non_zero_naming_the_variable(command: list[str]) -> None:
    result = _run(*command, url="nonsense")
    assert result.returncode != 0
    assert "GPUOPS_DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", [["incidents", "list"], ["api"], ["db", "upgrade"]])
def test_a_database_that_cannot_be_reached_is_one_line_naming_the_variable(command: list[str]) -> None:
    """Nothing listens on the port: the command says it cannot reach the database, not a traceback."""
    result = _run(*command, url=f"postgresql+psycopg://gpuops@127.0.0.1:{free_port()}/gpuops")
    assert result.returncode != 0
    assert "cannot reach the database" in result.stderr and "GPUOPS_DATABASE_URL" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_db_upgrade_then_incidents_list_and_show(db_url: str) -> None:
    result = _run("db", "upgrade", url=db_url)
    assert result.returncode == 0, result.stderr
    assert migrate.is_up_to_date(db_url)
    _seed(db_url)
    listed = _run("incidents", "list", "--json", url=db_url)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert {r["title"] for r in rows} == {"XID 79: GPU fell off the bus", "Temperature climbing"}
    only_open = json.loads(_run("incidents", "list", "--status", "open", "--json", url=db_url).stdout)
    assert [r["hostname"] for r in only_open] == ["gpu-node-002"]
    table = _run("incidents", "list", url=db_url)
    assert "gpu-node-007" in table.stdout and "SEVERITY" in table.stdout
    shown = json.loads(_run("incidents", "show", str(only_open[0]["id"]), "--json", url=db_url).stdout)
    assert shown["gpu"] == 5 and shown["timeline"] == [] and shown["actions"] == []
    missing = _run("incidents", "show", "9999", url=db_url)
    assert missing.returncode != 0 and "does not exist" in missing.stderr


@pytest.fixture
def api_server(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'api.db'}"
    _seed(url)
    port = free_port()
    proc = subprocess.Popen([GPUOPS, "api", "--host", "127.0.0.1", "--port", str(port)],
                            env=gpuops_env(GPUOPS_DATABASE_URL=url,
                                           GPUOPS_USERS=f"ops:viewer:{hash_password(PASSWORD)}"),
                            stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/healthz", proc=proc)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        if proc.stdout:
            proc.stdout.close()


def test_api_serves_healthz_metrics_and_dashboard(api_server: str) -> None:
    health = httpx.get(f"{api_server}/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok", "database": "ok"}

    assert httpx.get(f"{api_server}/").status_code == 303  # to /login
    assert httpx.get(f"{api_server}/api/incidents").status_code == 401
    page = httpx.get(f"{api_server}/", auth=AUTH)
    assert page.status_code == 303  # pages take a session; HTTP Basic is for the API
    page = _signed_in_page(api_server)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "XID 79: GPU fell off the bus" in page.text and "Temperature climbing" in page.text
    filtered = _signed_in_page(api_server, {"status": "resolved"})
    assert "Temperature climbing" in filtered.text and "XID 79" not in filtered.text

    metrics = httpx.get(f"{api_server}/metrics")
    assert metrics.status_code == 200
    assert 'gpuops_incidents{severity="critical",status="open"} 1.0' in metrics.text
    assert "gpuops_store_up 1.0" in metrics.text
    assert 'gpuops_http_requests_total{method="GET",route="/",status="200"} 2.0' in metrics.text

    assert httpx.get(f"{api_server}/api/incidents/424242", auth=AUTH).status_code == 404
    assert len(httpx.get(f"{api_server}/api/incidents", auth=AUTH).json()) == 2


def _signed_in_page(base: str, params: dict[str, str] | None = None) -> httpx.Response:
    with httpx.Client(base_url=base) as client:
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
        assert token is not None
        client.post("/login", data={"csrf_token": token.group(1), "username": "ops", "password": PASSWORD})
        return client.get("/", params=params)


def test_api_refuses_to_start_on_an_unmigrated_database(tmp_path: Path) -> None:
    result = _run("api", "--port", str(free_port()), url=f"sqlite:///{tmp_path / 'empty.db'}")
    assert result.returncode != 0 and "gpuops db upgrade" in result.stderr
