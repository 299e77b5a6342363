"""The daemon at scale: 10,000 simulated GPUs (1,250 nodes of 8), detection sharded four ways, a 15 s scrape
interval and 30 s cycles, 30 minutes of data time replayed at SPEED times real time through real Redis,
PostgreSQL and `gpuops worker` processes (4, then 1). Figures: cycle time p50/p99 (from the workers), the lag of
each cycle behind its schedule (p50/p99/max, and first third against last third: a growing backlog shows as a
growing lag), and a burst of every cycle at once to measure throughput, whose ratio shows how it scales."""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from entrypoints.worker import create_app, tasks
from gpuops.config import Settings
from gpuops.store import migrate
from gpuops.store.models import DetectorState
from gpuops.wiring import bootstrap
from tests.waiting import wait_for
from tests.worker_procs import RedisServer, settings_env, worker

NODES = int(os.environ.get("GPUOPS_BENCH_NODES", "1250"))
SHARDS = 4
STEP_S, CYCLE_S, WINDOW_S, RUN_S = 15.0, 30.0, 900.0, 1800.0
SPEED = float(os.environ.get("GPUOPS_BENCH_SPEED", "8"))  # 8x: above real time, within 2 cores
ADMIN_URL = os.environ.get("GPUOPS_BENCH_POSTGRES_ADMIN_URL",
                           "postgresql+psycopg://postgres:postgres@127.0.0.1:5432/postgres")
RUN_START = 1_767_225_600.0  # data time of the run's first cycle (a multiple of the cycle)
SUCCEEDED = re.compile(r"succeeded in ([\d.]+)s: \{'shard': '(\d+/\d+)', 'ran': (True|False)")


def _pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 3) if values else float("nan")


class Progress:
    """Polls the shards' state rows and notes the wall time at which each shard first reached each cycle."""

    def __init__(self, settings: Settings) -> None:
        self.container = bootstrap(settings)
        self.reached: dict[tuple[str, float], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        ends = [RUN_START + CYCLE_S * k for k in range(int(RUN_S / CYCLE_S) + 1)]
        while not self._stop.is_set():
            now = time.time()
            with self.container.uow() as uow:
                states = {s.shard: s.last_ts for s in uow.session.scalars(select(DetectorState))}
            for shard, last in states.items():
                for end in ends:
                    if end <= last:
                        self.reached.setdefault((shard, end), now)
            self._stop.wait(0.05)

    def __enter__(self) -> Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.container.close()

    def done(self, end: float) -> bool:
        return all((f"{s}/{SHARDS}", end) in self.reached for s in range(SHARDS))


def _fresh_database() -> str:
    name = f"gpuops_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def _drop_database(url: str) -> None:
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    admin.dispose()


def _send_cycle(app: Any, end: float) -> None:
    for shard in range(SHARDS):
        app.send_task(tasks.DETECT, kwargs={"shard": shard, "shards": SHARDS, "end": end}, queue=tasks.CYCLES_QUEUE)


def run_once(workers: int, log_dir: Path) -> dict[str, Any]:
    """One accelerated run and one burst with `workers` worker processes."""
    url = _fresh_database()
    broker = RedisServer(log_dir)
    procs = []
    try:
        migrate.upgrade(url)
        settings = Settings(database_url=url, broker_url=broker.url, step_seconds=STEP_S, cycle_seconds=CYCLE_S,
                            window_seconds=WINDOW_S, shards=SHARDS, worker_wiring="bench._daemon_wiring:fleet")
        env = settings_env(settings) | {"GPUOPS_BENCH_NODES": str(NODES), "GPUOPS_BENCH_START": str(RUN_START),
                                        "GPUOPS_LOG_LEVEL": "INFO"}
        procs = [worker(f"bench{workers}-{i}", env, log_dir) for i in range(workers)]
        wait_for(lambda: all("ready." in p.output() for p in procs), timeout=120, message="the workers did not start")
        app = create_app(settings)
        with Progress(settings) as progress:
            # warm-up: the first cycle reads a whole window and builds every detector's state
            _send_cycle(app, RUN_START)
            wait_for(lambda: progress.done(RUN_START), timeout=600, message="the warm-up cycle did not finish")
            cycles = int(RUN_S / CYCLE_S)
            t0 = time.time()
            due: dict[float, float] = {}
            for k in range(1, cycles + 1):
                at = t0 + k * CYCLE_S / SPEED
                time.sleep(max(0.0, at - time.time()))
                end = RUN_START + k * CYCLE_S
                due[end] = time.time()
                _send_cycle(app, end)
            last = RUN_START + cycles * CYCLE_S
            wait_for(lambda: progress.done(last), timeout=1200, message="the run's last cycle did not finish")
            lags = {end: [progress.reached[(f"{s}/{SHARDS}", end)] - t for s in range(SHARDS)]
                    for end, t in due.items()}
            ordered = [max(v) for _, v in sorted(lags.items())]
            third = max(1, len(ordered) // 3)
            all_lags = [x for v in lags.values() for x in v]
            # the burst: another 30 minutes of cycles sent at once; throughput while the backlog lasts
            burst_ends = [last + k * CYCLE_S for k in range(1, cycles + 1)]
            burst_start = time.time()
            for end in burst_ends:
                _send_cycle(app, end)
        burst = _burst_time(settings, burst_ends[-1], burst_start)
        durations = [float(d) for p in procs for d, _shard, ran in SUCCEEDED.findall(p.output()) if ran == "True"]
        return {
            "workers": workers,
            "cycles_scheduled": cycles * SHARDS,
            "cycle_time_s": {"p50": _pct(durations, 50), "p99": _pct(durations, 99), "n": len(durations)},
            "lag_s": {"p50": _pct(all_lags, 50), "p99": _pct(all_lags, 99), "max": round(max(all_lags), 3),
                      "first_third_mean": round(float(np.mean(ordered[:third])), 3),
                      "last_third_mean": round(float(np.mean(ordered[-third:])), 3)},
            "schedule_interval_s": CYCLE_S / SPEED,
            "burst": {"cycles": len(burst_ends) * SHARDS, "wall_s": round(burst, 3),
                      "cycles_per_s": round(len(burst_ends) * SHARDS / burst, 2)},
        }
    finally:
        for proc in procs:
            proc.stop()
        broker.stop()
        _drop_database(url)


def _burst_time(settings: Settings, last: float, started: float) -> float:
    container = bootstrap(settings)
    try:
        def finished() -> float | None:
            with container.uow() as uow:
                states = list(uow.session.scalars(select(DetectorState)))
            if len(states) == SHARDS and all(s.last_ts >= last for s in states):
                return time.time() - started
            return None

        return wait_for(finished, timeout=1200, interval=0.05, message="the burst did not finish")
    finally:
        container.close()


def run(results_dir: Path) -> dict[str, Any]:
    log_dir = results_dir / "daemon-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    many = run_once(4, log_dir)
    one = run_once(1, log_dir)
    figures = {
        "fleet": {"gpus": NODES * 8, "nodes": NODES, "shards": SHARDS, "step_s": STEP_S, "cycle_s": CYCLE_S,
                  "window_s": WINDOW_S, "data_time_s": RUN_S, "speed": SPEED, "cpus": os.cpu_count()},
        "four_workers": many,
        "one_worker": one,
        "throughput_ratio_4_to_1": round(many["burst"]["cycles_per_s"] / one["burst"]["cycles_per_s"], 2),
        "cycle_time_p50_ratio_1_to_4": round(one["cycle_time_s"]["p50"] / many["cycle_time_s"]["p50"], 2),
    }
    (results_dir / "daemon.json").write_text(json.dumps(figures, indent=2))
    return figures
