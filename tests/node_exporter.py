"""Run the real node exporter (Debian's prometheus-node-exporter) for tests, with only its infiniband collector,
over a sysfs tree the twin wrote, on a free loopback port:

    with running_node_exporter(sysfs_dir, tmp_path) as exporter:
        exporter.address  # 127.0.0.1:PORT; exporter.url + "/metrics"
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.prometheus_server import free_port, served_binary


def node_exporter_binary() -> str:
    """The node exporter's path. `make test` installs Debian's package, so its absence fails the test."""
    path = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
    if path is None:
        pytest.fail("Debian's prometheus-node-exporter package is not installed: run `make test` "
                    "(scripts/ensure-services.sh installs it)")
    return path


@dataclass
class NodeExporter:
    url: str
    address: str
    process: subprocess.Popen[bytes]
    log: Path


@contextmanager
def running_node_exporter(sysfs: Path, workdir: Path, ready_timeout_s: float = 30.0) -> Iterator[NodeExporter]:
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"node-exporter-{port}.log"
    argv = [node_exporter_binary(), f"--path.sysfs={sysfs}", "--collector.disable-defaults", "--collector.infiniband",
            f"--web.listen-address=127.0.0.1:{port}"]
    url = f"http://127.0.0.1:{port}"
    with served_binary("the node exporter", argv, log_path, f"{url}/metrics", ready_timeout_s) as process:
        yield NodeExporter(url, f"127.0.0.1:{port}", process, log_path)
