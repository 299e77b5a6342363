"""Start and stop a real Prometheus (Debian's binary) for tests, on a free loopback port.

    with running_prometheus(tmp_path, targets=["127.0.0.1:8000"]) as prom:
        prom.url  # http://127.0.0.1:PORT, ready

Pass `storage` to serve an existing TSDB directory (e.g. blocks from promtool) instead.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from tests.waiting import wait_for


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prometheus_binary() -> str:
    """The prometheus binary's path. `make test` installs Debian's package, so its absence fails the test."""
    path = shutil.which("prometheus")
    if path is None:
        pytest.fail("Debian's prometheus package is not installed: run `make test` (scripts/ensure-services.sh "
                    "installs it)")
    return path


@contextmanager
def served_binary(name: str, argv: Sequence[str], log_path: Path, ready_url: str,
                  ready_timeout_s: float = 30.0) -> Iterator[subprocess.Popen[bytes]]:
    """Run `argv` (one of the monitoring binaries) with its output in `log_path`, wait until `ready_url` answers
    200 (failing at once, with the log's tail, if it exits), and stop it afterwards."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT)
    try:
        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"{name} exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            return httpx.get(ready_url, timeout=1.0).status_code == 200

        wait_for(ready, timeout=ready_timeout_s, interval=0.1, message=f"{name} is not answering at {ready_url}",
                 ignoring=(httpx.HTTPError,))
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@dataclass
class PrometheusServer:
    url: str
    process: subprocess.Popen[bytes]
    storage: Path
    log: Path


@contextmanager
def running_prometheus(
    workdir: Path,
    targets: Sequence[str] = (),
    scrape_interval: str = "1s",
    metrics_params: dict[str, list[str]] | None = None,
    storage: Path | None = None,
    extra_args: Sequence[str] = (),
    ready_timeout_s: float = 30.0,
    rules: Sequence[dict[str, object]] = (),
    alertmanagers: Sequence[str] = (),
    evaluation_interval: str = "1s",
    extra_jobs: Sequence[dict[str, object]] = (),
) -> Iterator[PrometheusServer]:
    """`rules` are alerting or recording rule groups (as in a rule file's `groups:`), evaluated every
    `evaluation_interval`; `alertmanagers` are host:port targets their alerts go to; `extra_jobs` are more
    scrape configs (e.g. node exporters with a `node` label each)."""
    binary = prometheus_binary()
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    job: dict[str, object] = {
        "job_name": "twin",
        "scrape_interval": scrape_interval,
        "scrape_timeout": scrape_interval,
        "static_configs": [{"targets": list(targets)}],
    }
    if metrics_params:
        job["params"] = metrics_params
    config: dict[str, object] = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": evaluation_interval},
        "scrape_configs": ([job] if targets else []) + list(extra_jobs)}
    if rules:
        rules_path = workdir / "rules.yml"
        rules_path.write_text(yaml.safe_dump({"groups": list(rules)}))
        config["rule_files"] = [str(rules_path)]
    if alertmanagers:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": list(alertmanagers)}]}]}
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    data = storage or workdir / "data"
    log_path = workdir / "prometheus.log"
    argv = [binary, f"--config.file={config_path}", f"--storage.tsdb.path={data}",
            f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=3650d", *extra_args]
    url = f"http://127.0.0.1:{port}"
    with served_binary("prometheus", argv, log_path, f"{url}/-/ready", ready_timeout_s) as process:
        yield PrometheusServer(url, process, data, log_path)
