"""One pipeline: a scenario whose steps run on a real Celery worker, through a real Redis broker, over
PostgreSQL, opens the same incidents and actions, with the same statuses, in the same order, as `gpuops
eval`'s run of it (steps in order in one process, over SQLite)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from celery.contrib.testing.worker import start_worker
from celery.signals import before_task_publish, task_prerun

from agent.planning import Planner
from agent.rules import RulesPlanner
from detectors.findings import Finding
from entrypoints.worker.app import create_app
from evaluation.loop import Cycles, LoopRun, SimulatedTime, run_loop
from gpuops.pipeline import QUEUES, BrokerDispatcher, Pipeline, Step
from gpuops.policy import PolicyConfig
from gpuops.wiring import Container
from simulator.scenario import Scenario, scenario_from_dict
from tests.waiting import wait_for
from tests.worker_procs import RedisServer

SCENARIO = {
    "name": "one-pipeline", "seed": 7, "fleet": {"nodes": 12, "gpus_per_node": 4, "gpu_model": "H100 80GB"},
    "duration": "40m", "step": "15s",
    "workloads": [{"type": "training", "name": "llm-pretrain", "nodes": 3, "intensity": 0.9}],
    "faults": [{"kind": "xid79", "node": "gpu-node-002", "gpu": 1, "at": "5m"},
               {"kind": "xid48_dbe", "node": "gpu-node-005", "gpu": 3, "at": "12m"}],
    "approval": "auto_approve",
}
COMPARED_STEPS = {Step.INCIDENT_CHANGED.value, Step.AGENT_STEP.value, Step.EXECUTE.value}


class StepTracker:
    """What the broker carried: every message published (those due later, the re-checks, apart), and every
    task a worker started, in order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.outstanding: set[str] = set()
        self.started: list[tuple[str, dict[str, Any]]] = []

    def published(self, sender: str | None = None, headers: dict[str, Any] | None = None, **_: Any) -> None:
        headers = headers or {}
        if str(sender).startswith("gpuops.") and not headers.get("eta"):
            with self._lock:
                self.outstanding.add(str(headers["id"]))

    def prerun(self, task_id: str | None = None, task: Any = None, kwargs: dict[str, Any] | None = None,
               **_: Any) -> None:
        with self._lock:
            self.started.append((str(task.name), dict(kwargs or {})))

    def finished(self, task_id: str) -> None:
        with self._lock:
            self.outstanding.discard(task_id)

    def idle(self) -> bool:
        with self._lock:
            return not self.outstanding


class CeleryCycles:
    """Each cycle and sweep is a message on the broker; the test waits until the worker has run it and
    everything it handed on."""

    def __init__(self, pipeline: Pipeline, tracker: StepTracker) -> None:
        self.pipeline, self.tracker = pipeline, tracker

    def _settle(self, step: Step, payload: dict[str, Any]) -> None:
        self.pipeline.dispatcher.dispatch(step, payload)
        wait_for(self.tracker.idle, timeout=120, interval=0.01,
                 message=lambda: f"the worker did not finish {sorted(self.tracker.outstanding)}")

    def run(self, end: float) -> list[Finding]:
        self._settle(Step.DETECT, {"shard": 0, "shards": 1, "end": end})
        self._settle(Step.SWEEP, {})
        return []

    def steps(self) -> list[tuple[str, dict[str, Any]]]:
        return list(self.tracker.started)


@contextmanager
def on_celery_worker(container: Container, sim: SimulatedTime, planner: Planner) -> Iterator[Cycles]:
    """A real Celery worker (solo pool, in this process so it shares the twin) on the run's broker; its
    pipeline reads the twin's clock, as the evaluation's does."""
    app = create_app(container.settings, wiring=lambda _settings: container)
    assert container.settings.broker_url is not None
    pipeline = Pipeline(container, BrokerDispatcher(container.settings.broker_url, app=app), clock=sim.clock,
                        sleep=sim.sleep, planner=planner, worker="celery")
    app.gpuops_pipeline = pipeline
    tracker = StepTracker()

    def postrun(task_id: str | None = None, **_: Any) -> None:
        tracker.finished(str(task_id))

    from celery.signals import task_postrun

    before_task_publish.connect(tracker.published, weak=False)
    task_prerun.connect(tracker.prerun, weak=False)
    task_postrun.connect(postrun, weak=False)
    try:
        with start_worker(app, pool="solo", concurrency=1, perform_ping_check=False, loglevel="WARNING",
                          queues=list(QUEUES)):
            yield CeleryCycles(pipeline, tracker)
    finally:
        before_task_publish.disconnect(tracker.published)
        task_prerun.disconnect(tracker.prerun)
        task_postrun.disconnect(postrun)


def _rules(_twin: Any) -> Any:
    return nullcontext(RulesPlanner())


def _outline(run: LoopRun) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[str, dict[str, Any]]]]:
    incidents = [(i["id"], i["family"], i["scope"], i["hostname"], i["gpu"], i["parent_id"], i["status"])
                 for i in run.incidents]
    actions = [(a["id"], a["incident_id"], a["runbook"], tuple(a["targets"]), a["status"], tuple(a["approved_by"]))
               for a in run.actions]
    return incidents, actions, [(s, p) for s, p in run.steps if s in COMPARED_STEPS]


def test_a_scenario_on_celery_workers_matches_gpuops_eval(postgres_url: str, tmp_path: Path) -> None:
    scenario: Scenario = scenario_from_dict(SCENARIO)
    policy = PolicyConfig()
    (tmp_path / "eval").mkdir()
    (tmp_path / "celery").mkdir()
    evaluated = run_loop(scenario, planner=_rules, policy=policy, workdir=tmp_path / "eval")
    broker = RedisServer(tmp_path)
    try:
        on_workers = run_loop(scenario, planner=_rules, policy=policy, workdir=tmp_path / "celery",
                              database_url=postgres_url, broker_url=broker.url, cycles=on_celery_worker)
    finally:
        broker.stop()
    incidents, actions, steps = _outline(evaluated)
    assert any(a[4] == "succeeded" for a in actions), "the scenario should make gpuops act"
    assert _outline(on_workers) == (incidents, actions, steps)
