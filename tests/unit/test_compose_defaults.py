"""Compose's defaults are safe on a shared host: every published port binds to 127.0.0.1 unless the operator
says otherwise, and the PostgreSQL password comes from a generated `.env`, never from the file itself."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO_ROOT

GENERATE = REPO_ROOT / "deploy/compose/generate-env.sh"


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    return data


def interpolate_defaults(value: str) -> str:
    """What Compose makes of `${VAR:-default}` with the variable unset."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_published_ports_bind_to_loopback_by_default() -> None:
    published = [(name, str(p)) for name, s in compose()["services"].items() for p in s.get("ports", [])]
    assert published
    for name, port in published:
        host = interpolate_defaults(port).rsplit(":", 2)
        assert len(host) == 3 and host[0] == "127.0.0.1", (name, port)


def test_no_password_is_written_in_the_compose_file() -> None:
    text = (REPO_ROOT / "docker-compose.yml").read_text()
    assert "gpuops:gpuops@" not in text and "POSTGRES_PASSWORD: gpuops" not in text
    services = compose()["services"]
    assert re.fullmatch(r"\$\{POSTGRES_PASSWORD:\?[^}]+\}", services["postgres"]["environment"]["POSTGRES_PASSWORD"])
    assert "${POSTGRES_PASSWORD:?" in services["api"]["environment"]["GPUOPS_DATABASE_URL"]


def test_the_env_file_is_generated_private_random_and_kept(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    subprocess.run(["bash", str(GENERATE), str(env)], check=True, timeout=30, capture_output=True)
    first = dict(line.split("=", 1) for line in env.read_text().splitlines() if line and not line.startswith("#"))
    assert re.fullmatch(r"[0-9a-f]{64}", first["POSTGRES_PASSWORD"])
    assert re.fullmatch(r"[0-9a-f]{64}", first["GPUOPS_AUDIT_KEY"])
    assert stat.S_IMODE(os.stat(env).st_mode) == 0o600
    subprocess.run(["bash", str(GENERATE), str(env)], check=True, timeout=30, capture_output=True)
    again = dict(line.split("=", 1) for line in env.read_text().splitlines() if line and not line.startswith("#"))
    assert again == first  # running it again never changes the password of an existing database
    other = tmp_path / "other.env"
    subprocess.run(["bash", str(GENERATE), str(other)], check=True, timeout=30, capture_output=True)
    assert other.read_text() != env.read_text()
    assert ".env" in (REPO_ROOT / ".gitignore").read_text().splitlines()
