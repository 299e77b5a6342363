"""The daemon's faults, with real processes: a private redis-server, the shared PostgreSQL (a fresh database
per test), `gpuops worker` processes, and the twin's Kubernetes API in its own process."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import select

from entrypoints.worker import create_app, tasks
from entrypoints.worker.runtime import DEAD_LETTER_LIST
from gpuops.config import Settings
from gpuops.execution.approvals import Approver, decide
from gpuops.execution.service import Proposal, deps_from, propose
from gpuops.store import migrate
from gpuops.store.models import Action, AuditEvent, DeadLetter, DetectorState, Incident
from gpuops.wiring import Container, bootstrap
from runbooks import Plan, Target
from tests.waiting import wait_for
from tests.worker_procs import (
    UNAVAILABLE,
    PostgresServer,
    RedisServer,
    gpuops_proc,
    settings_env,
    twin_process,
    worker,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
NODE = "gpu-node-001"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    try:
        yield server
    finally:
        server.stop()


def approved_drain(container: Container, node: str) -> int:
    now = datetime.now(tz=UTC)
    with container.uow() as uow:
        incident = Incident(dedup_key=f"{node}//ecc", scope="node", family="ecc", hostname=node,
                            severity="critical", title="DBE storm", status="investigating", opened_at=now,
                            updated_at=now)
        uow.session.add(incident)
        uow.commit()
    plan = Plan("drain_node", {}, (Target.for_node(node),))
    with container.uow() as uow:
        outcome = propose(uow, proposal=Proposal(incident.id, plan, "DBE count rose", "rules"),
                          deps=deps_from(container))
        uow.commit()
    assert outcome.action_id is not None and outcome.status == "awaiting_approval", outcome
    for approver in ("alice", "bob")[:outcome.approvals_required]:
        with container.uow() as uow:
            action = uow.session.get(Action, outcome.action_id)
            assert action is not None
            decision = decide(uow.session, action_id=action.id, approver=Approver(approver, "dashboard", True),
                              decision="approve", plan_hash=action.plan_hash, reason="ok", now=now, ttl_s=3600)
            uow.commit()
    assert decision.status == "approved", decision
    return outcome.action_id


def audit(container: Container, action_id: int) -> list[tuple[str, dict[str, Any]]]:
    with container.uow() as uow:
        rows = uow.session.scalars(select(AuditEvent).where(AuditEvent.action_id == action_id)
                                   .order_by(AuditEvent.seq))
        return [(r.kind, r.data) for r in rows]


def action_status(container: Container, action_id: int) -> str:
    with container.uow() as uow:
        action = uow.session.get(Action, action_id)
        assert action is not None
        return action.status


def queues_drained(url: str) -> bool:
    client = redis.Redis.from_url(url)
    try:
        pending = sum(int(client.llen(q)) for q in tasks.QUEUES) + int(client.hlen("unacked"))
        return pending == 0
    finally:
        client.close()


def small_fleet_policy(tmp_path: Path) -> str:
    """Budgets that let one of the twin's two nodes out."""
    path = tmp_path / "policy.yaml"
    path.write_text("max_nodes_out: 1\nmax_nodes_out_fraction: 0.5\nmin_healthy_gpu_fraction: 0.5\n")
    return str(path)


def test_a_worker_killed_mid_drain_leaves_a_drain_completed_exactly_once(
        postgres_url: str, broker: RedisServer, tmp_path: Path) -> None:
    migrate.upgrade(postgres_url)
    with twin_process(tmp_path) as twin_url:
        settings = Settings(database_url=postgres_url, broker_url=broker.url, kube_api_url=twin_url, dry_run=False,
                            policy_file=small_fleet_policy(tmp_path),
                            claim_ttl_seconds=8, task_time_limit_seconds=6, cycle_seconds=1.5,
                            visibility_timeout_seconds=14, worker_wiring="tests.worker_wiring:quick_runbooks")
        container = bootstrap(settings)
        app = create_app(settings)
        first = second = None
        try:
            action_id = approved_drain(container, NODE)
            first = worker("w1", settings_env(settings), tmp_path)
            app.send_task(tasks.EXECUTE, kwargs={"action_id": action_id}, queue=tasks.ACTIONS_QUEUE)
            # the cordon is done and the drain waits for the training job's checkpoint (4 s): kill it now
            wait_for(lambda: any(k == "action.step" and "cordon" in d["step"] for k, d in audit(container, action_id)),
                     timeout=30, message="the drain was not under way")
            first.kill(signal.SIGKILL)
            assert action_status(container, action_id) == "executing"
            assert httpx.get(f"{twin_url}/_twin/stopped").json() == []  # nothing evicted yet

            second = worker("w2", settings_env(settings), tmp_path)
            wait_for(lambda: action_status(container, action_id) == "succeeded", timeout=60,
                     message="the redelivered drain did not finish")
            app.send_task(tasks.EXECUTE, kwargs={"action_id": action_id}, queue=tasks.ACTIONS_QUEUE)  # a duplicate
            wait_for(lambda: queues_drained(broker.url), timeout=30, message="the queues did not drain")

            kinds = [k for k, _ in audit(container, action_id)]
            assert kinds.count("action.succeeded") == 1 and kinds.count("action.claimed") == 2
            claims = [d for k, d in audit(container, action_id) if k == "action.claimed"]
            assert [c["resumed"] for c in claims] == [False, True] and claims[0]["worker"] != claims[1]["worker"]
            stopped = httpx.get(f"{twin_url}/_twin/stopped").json()
            assert [(s["node"], s["pod"].startswith("train-")) for s in stopped] == [(NODE, True)]  # evicted once
            node = container.cluster.get_node(NODE)
            assert node.unschedulable
        finally:
            for proc in (first, second):
                if proc is not None:
                    proc.stop()
            container.close()


CYCLE_RESULT = re.compile(r"'shard': '(\d+/\d+)', 'ran': (True|False), 'end': ([\d.]+)")


def cycle_results(logs: str) -> list[tuple[str, bool, float]]:
    """(shard, ran, end) of every detection task the workers finished, from their logged return values."""
    lines = [line.split(" [data=")[0] for line in logs.splitlines() if "succeeded in" in line]
    return [(shard, ran == "True", float(end)) for line in lines for shard, ran, end in CYCLE_RESULT.findall(line)]


def test_two_beats_by_mistake_run_each_cycle_once(postgres_url: str, broker: RedisServer, tmp_path: Path) -> None:
    migrate.upgrade(postgres_url)
    settings = Settings(database_url=postgres_url, broker_url=broker.url, cycle_seconds=1, shards=2,
                        task_time_limit_seconds=10, worker_wiring="tests.worker_wiring:synthetic")
    env = settings_env(settings)
    procs = [worker("w1", env, tmp_path), worker("w2", env, tmp_path)]
    container = bootstrap(settings)
    try:
        wait_for(lambda: all("ready." in p.output() for p in procs), timeout=60, interval=0.2,
                 message="the workers were not both ready")
        beats = [gpuops_proc(f"beat{i}", ["beat"], env, tmp_path) for i in (1, 2)]
        procs += beats
        wait_for(lambda: len({e for _, ran, e in cycle_results(procs[0].output() + procs[1].output()) if ran}) >= 6,
                 timeout=60, interval=0.2, message="the two beats did not run six cycles")
        for beat in beats:
            beat.stop()
        wait_for(lambda: queues_drained(broker.url), timeout=30, message="the queues did not drain")
        results = cycle_results(procs[0].output() + procs[1].output())
        ran = [(shard, end) for shard, did, end in results if did]
        assert len(ran) == len(set(ran))  # no (shard, end) ran twice
        assert any(not did for _, did, _ in results)  # the second beat's duplicates did arrive, as no-ops
        with container.uow() as uow:
            states = {s.shard: s.cycles for s in uow.session.scalars(select(DetectorState))}
        assert states == {shard: sum(1 for s, _ in ran if s == shard) for shard in ("0/2", "1/2")}
    finally:
        for proc in procs:
            proc.stop()
        container.close()


def test_poison_messages_are_dead_lettered_and_the_queue_moves_on(
        postgres_url: str, broker: RedisServer, tmp_path: Path) -> None:
    migrate.upgrade(postgres_url)
    settings = Settings(database_url=postgres_url, broker_url=broker.url, cycle_seconds=1,
                        task_time_limit_seconds=10, worker_wiring="tests.worker_wiring:synthetic")
    app = create_app(settings)
    container = bootstrap(settings)
    client = redis.Redis.from_url(broker.url)
    proc = None
    try:
        # queued before the worker starts, ahead of good work, on the same queues
        client.lpush(tasks.CYCLES_QUEUE, b"\x00not json, not a message")
        app.send_task(tasks.DETECT, kwargs={"shard": "0; drop table", "shards": 1, "end": 1.0},
                      queue=tasks.CYCLES_QUEUE)
        app.send_task(tasks.DETECT, args=[0, 1], queue=tasks.CYCLES_QUEUE)
        app.send_task(tasks.VERIFY, kwargs={"action_id": 999}, queue=tasks.ACTIONS_QUEUE)  # fails, not transient
        end = float(int(time.time()))
        app.send_task(tasks.DETECT, kwargs={"shard": 0, "shards": 1, "end": end}, queue=tasks.CYCLES_QUEUE)
        proc = worker("w1", settings_env(settings), tmp_path)

        def cycle_ran() -> bool:
            with container.uow() as uow:
                state = uow.session.get(DetectorState, "0/1")
                return state is not None and state.last_ts == end

        wait_for(cycle_ran, timeout=60, message="the good cycle behind the poison did not run")
        wait_for(lambda: queues_drained(broker.url), timeout=30, message="the queues did not drain")
        with container.uow() as uow:
            letters = [(d.task, d.reason) for d in uow.session.scalars(select(DeadLetter).order_by(DeadLetter.id))]
        assert sorted(letters) == sorted([(tasks.DETECT, "invalid_payload"), (tasks.DETECT, "invalid_payload"),
                                          (tasks.VERIFY, "failed")])
        assert proc.popen.poll() is None  # the undecodable message did not take the worker down
        (kept,) = [json.loads(item) for item in client.lrange(DEAD_LETTER_LIST, 0, -1)]
        assert kept["reason"] == "undecodable" and "not json" in kept["payload"]
    finally:
        client.close()
        if proc is not None:
            proc.stop()
        container.close()


def incidents_of(container: Container) -> list[Incident]:
    with container.uow() as uow:
        return list(uow.session.scalars(select(Incident).order_by(Incident.id)))


def last_cycle(container: Container) -> float:
    with container.uow() as uow:
        return max((s.last_ts for s in uow.session.scalars(select(DetectorState))), default=0.0)


def test_redis_restarted_mid_run_loses_no_incident_or_approval(
        postgres_url: str, broker: RedisServer, tmp_path: Path) -> None:
    migrate.upgrade(postgres_url)
    with twin_process(tmp_path) as twin_url:
        settings = Settings(database_url=postgres_url, broker_url=broker.url, kube_api_url=twin_url, dry_run=False,
                            policy_file=small_fleet_policy(tmp_path), cycle_seconds=1, sweep_seconds=1,
                            task_time_limit_seconds=10, claim_ttl_seconds=20,
                            worker_wiring="tests.worker_wiring:synthetic")
        env = settings_env(settings)
        container = bootstrap(settings)
        procs = [worker("w1", env, tmp_path), gpuops_proc("beat", ["beat"], env, tmp_path)]
        try:
            wait_for(lambda: [i.id for i in incidents_of(container) if i.family == "gpu_lost"], timeout=60,
                     message="the lost GPU's incident was not opened")
            broker.stop()
            # while the broker is down: the store takes an approval, and nothing can be enqueued for it
            action_id = approved_drain(container, NODE)
            down_since = time.time()
            broker.start()
            wait_for(lambda: action_status(container, action_id) == "succeeded", timeout=60,
                     message="the approved drain did not run after the restart", ignoring=UNAVAILABLE)
            wait_for(lambda: last_cycle(container) > down_since + 1, timeout=30, message="cycles did not run again",
                     ignoring=UNAVAILABLE)
            assert all(p.popen.poll() is None for p in procs)  # both reconnected instead of dying
            assert [i.hostname for i in incidents_of(container) if i.family == "gpu_lost"] == ["gpu-node-002"]
            with container.uow() as uow:
                action = uow.session.get(Action, action_id)
                assert action is not None and len(action.approvals) == 2 and action.attempts == 1
            assert "Connection to broker lost" in procs[0].output()
        finally:
            for proc in procs:
                proc.stop()
            container.close()


OUTAGE_S = float(os.environ.get("GPUOPS_TEST_PG_OUTAGE_S", "30"))


def test_postgres_unavailable_cycles_fail_loudly_and_recover(broker: RedisServer, tmp_path: Path) -> None:
    pg = PostgresServer()
    try:
        migrate.upgrade(pg.url)
        settings = Settings(database_url=pg.url, broker_url=broker.url, cycle_seconds=1, shards=2,
                            task_time_limit_seconds=10, worker_wiring="tests.worker_wiring:synthetic")
        env = settings_env(settings)
        container = bootstrap(settings)
        procs = [worker("w1", env, tmp_path), gpuops_proc("beat", ["beat"], env, tmp_path)]
        try:
            wait_for(lambda: [i.id for i in incidents_of(container) if i.family == "gpu_lost"], timeout=60,
                     message="the lost GPU's incident was not opened")
            pg.stop()
            down_at = time.time()
            wait_for(lambda: "transient failure, retrying" in procs[0].output() and
                     "database is unavailable" in procs[0].output(), timeout=20,
                     message="the workers did not report the outage")
            time.sleep(max(0.0, OUTAGE_S - (time.time() - down_at)))  # the outage itself, not a wait for luck
            pg.start()
            back_at = time.time()
            wait_for(lambda: last_cycle(container) > back_at, timeout=60, message="cycles did not run again",
                     ignoring=UNAVAILABLE)
            assert all(p.popen.poll() is None for p in procs)
            incidents = incidents_of(container)
            assert [i.hostname for i in incidents if i.family == "gpu_lost"] == ["gpu-node-002"]
            with container.uow() as uow:
                for incident in incidents:  # each incident whole: its opening in the timeline, and its findings
                    uow.session.add(incident)
                    assert incident.events and incident.events[0].kind == "opened", incident.id
                    assert incident.findings or incident.scope == "fleet", incident.id
        finally:
            for proc in procs:
                proc.stop()
            container.close()
    finally:
        pg.destroy()
