"""Real processes for the daemon's reliability tests: a private redis-server, `gpuops worker` and
`gpuops beat`, each in its own session so a test can SIGKILL one with all its children; and waits with
deadlines instead of sleeps."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import redis
from sqlalchemy.exc import SQLAlchemyError

from gpuops.config import Settings
from tests.conftest import GPUOPS, REPO_ROOT, free_port, gpuops_env
from tests.waiting import wait_for

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
UNAVAILABLE: tuple[type[Exception], ...] = (redis.RedisError, SQLAlchemyError, httpx.TransportError, OSError)
"""What a probe raises while a service a test starts or restarts is not answering yet."""


class Proc:
    """A child process in its own session, output to a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log = log_dir / f"{name}.log"
        self._out = self.log.open("ab")
        self.popen = subprocess.Popen(argv, env=env, cwd=REPO_ROOT, stdout=self._out, stderr=subprocess.STDOUT,
                                      start_new_session=True)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.popen.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)
        self.popen.wait(timeout=15)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.kill(signal.SIGTERM)
        # the group's children (prefork pool) go with the leader's session
        with suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self._out.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


class RedisServer:
    """A private redis-server on a free port that a test may stop and start again."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log_dir = log_dir
        self.proc: Proc | None = None
        self.start()

    def start(self) -> None:
        argv = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.log_dir)]
        self.proc = Proc(f"redis-{self.port}-{time.monotonic_ns()}", argv, dict(os.environ), self.log_dir)
        client = redis.Redis.from_url(self.url)
        try:
            wait_for(client.ping, timeout=10, message="redis did not answer", ignoring=UNAVAILABLE)
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.stop()
            self.proc = None


def gpuops_proc(name: str, args: list[str], env: dict[str, str], log_dir: Path) -> Proc:
    # the repository root on the path, so `--wiring tests.worker_wiring:...` imports
    return Proc(name, [GPUOPS, *args], gpuops_env(PYTHONPATH=str(REPO_ROOT), **env), log_dir)


def worker(name: str, env: dict[str, str], log_dir: Path, *extra: str) -> Proc:
    argv = ["worker", "--pool", "prefork", "--concurrency", "1", "--hostname", f"{name}@%h", *extra]
    return gpuops_proc(name, argv, env, log_dir)


def settings_env(settings: Settings) -> dict[str, str]:
    """The GPUOPS_ variables that give a child process the settings the test set explicitly."""
    env = {}
    for name in settings.model_fields_set:
        value = getattr(settings, name)
        if value is not None:
            env[f"GPUOPS_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


@contextmanager
def twin_process(log_dir: Path) -> Iterator[str]:
    """The twin's Kubernetes API in its own process (tests.kube_twin_process); yields its URL."""
    port = free_port()
    proc = Proc("twin", [sys.executable, "-m", "tests.kube_twin_process", str(port)], dict(os.environ), log_dir)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(url + "/version", timeout=1).status_code == 200, timeout=20,
                 message="the twin did not serve", ignoring=UNAVAILABLE)
        yield url
    finally:
        proc.stop()


PG_BIN = Path("/usr/lib/postgresql/15/bin")


class PostgresServer:
    """A private PostgreSQL cluster (initdb in a temporary folder, run as the postgres user) that a test may
    stop and start again without touching the shared server."""

    def __init__(self) -> None:
        import pwd
        import tempfile

        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="gpuops-pg-"))
        user = pwd.getpwnam("postgres")
        os.chown(self.dir, user.pw_uid, user.pw_gid)
        self.data = self.dir / "data"
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self.start()

    def _run(self, *argv: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "-t", "30",
                  "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def stop(self) -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def destroy(self) -> None:
        with suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
