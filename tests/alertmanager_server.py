"""Start and stop a real Alertmanager (Debian's prometheus-alertmanager) for tests, on a free loopback port,
with clustering off and one webhook receiver:

    with running_alertmanager(tmp_path, webhook_url="http://127.0.0.1:8080/api/alertmanager", token=T) as am:
        am.address  # 127.0.0.1:PORT, for Prometheus' alerting config

Grouping waits are tiny so a test sees notifications within seconds."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.prometheus_server import free_port, served_binary


def alertmanager_binary() -> str:
    """The alertmanager binary's path. `make test` installs Debian's package, so its absence fails the test."""
    path = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if path is None:
        pytest.fail("Debian's prometheus-alertmanager package is not installed: run `make test` "
                    "(scripts/ensure-services.sh installs it)")
    return path


@dataclass
class AlertmanagerServer:
    url: str
    address: str
    process: subprocess.Popen[bytes]
    log: Path


def receiver_config(webhook_url: str, token: str | None, *, group_wait: str = "1s", group_interval: str = "1s",
                    repeat_interval: str = "1h") -> dict[str, object]:
    """An alertmanager.yml routing every alert to gpuops' webhook, with `token` as its bearer credentials."""
    webhook: dict[str, object] = {"url": webhook_url, "send_resolved": True, "max_alerts": 0}
    if token is not None:
        webhook["http_config"] = {"authorization": {"type": "Bearer", "credentials": token}}
    return {"global": {"resolve_timeout": "10s"},
            "route": {"receiver": "gpuops", "group_by": ["alertname", "Hostname", "gpu"],
                      "group_wait": group_wait, "group_interval": group_interval,
                      "repeat_interval": repeat_interval},
            "receivers": [{"name": "gpuops", "webhook_configs": [webhook]}]}


@contextmanager
def running_alertmanager(workdir: Path, *, webhook_url: str, token: str | None,
                         ready_timeout_s: float = 30.0) -> Iterator[AlertmanagerServer]:
    binary = alertmanager_binary()
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "alertmanager.yml"
    config_path.write_text(yaml.safe_dump(receiver_config(webhook_url, token)))
    log_path = workdir / "alertmanager.log"
    argv = [binary, f"--config.file={config_path}", f"--storage.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=debug"]
    url = f"http://127.0.0.1:{port}"
    with served_binary("alertmanager", argv, log_path, f"{url}/-/ready", ready_timeout_s) as process:
        yield AlertmanagerServer(url, f"127.0.0.1:{port}", process, log_path)
