"""Benchmark of the agent's planners.

- Rules planner, incident to plan: fault classification, the investigation tools on an in-memory cluster, the
  rules table and validation in code against the real runbook catalogue: median and p99 per incident, over
  every fault kind of the rules table. Also the whole graph on SQLite (triage → investigate → plan → policy
  → rehearsal → waiting for approval), median and p99.
- LLM planner against a local server speaking the Chat Completions protocol (the tests' scripted server):
  Chat Completions calls and tokens per incident when the model answers correctly, and when its first answer
  is malformed (one corrective retry). Tokens are the server's estimate, four characters of request per
  token, so they follow what the planner really sends (system prompt, fenced evidence, runbook tools).
  Goal: ≤ 4 calls and ≤ 8,000 tokens per incident.

Run: `python -m bench agent` (writes bench/results/agent.json).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from agent.llm import LLMLimits, LLMPlanner
from agent.planning import PlanRequest
from agent.rules import RulesPlanner, fault_of
from agent.runner import start
from agent.tools import ToolResult, agenda_for, run_tool
from agent.validation import check_action
from gpuops.config import Settings
from gpuops.store import migrate
from gpuops.wiring import bootstrap
from tests.agent.helpers import graph_on, open_incident
from tests.agent.llm_server import Reply, scripted_llm
from tests.agent.world import build_context
from tests.unit.test_agent_rules import TABLE

RULES_RUNS = 50
GRAPH_RUNS = 20


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _request(ctx: Any, incident: dict[str, Any]) -> PlanRequest:
    evidence = [run_tool(ctx, incident, name) for name in agenda_for(incident) if name != "incident_history"]
    return PlanRequest(incident=incident, fault=fault_of(incident), evidence=evidence, specs=ctx.runbooks.specs(),
                       check=lambda a: check_action(ctx, incident, a),
                       run_tool=lambda n, a: ToolResult(n, "no_data", "not in the benchmark"))


def rules_latency(tmp: Path) -> dict[str, Any]:
    ctx = build_context(SimpleNamespace(uow=None), tmp / "journal")  # type: ignore[arg-type]
    planner = RulesPlanner()
    timings: list[float] = []
    for _ in range(RULES_RUNS):
        for _, incident, _, _ in TABLE:
            began = time.perf_counter()
            result = planner.plan(_request(ctx, incident))
            timings.append((time.perf_counter() - began) * 1000)
            assert result.ok
    return {"incidents": len(timings), "median_ms": round(statistics.median(timings), 3),
            "p99_ms": round(_pct(timings, 0.99), 3)}


def graph_latency(tmp: Path) -> dict[str, Any]:
    url = f"sqlite:///{tmp / 'bench.db'}"
    migrate.upgrade(url)
    container = bootstrap(Settings(database_url=url))
    timings: list[float] = []
    try:
        with graph_on(container) as graph:
            for i in range(GRAPH_RUNS + 1):  # the first run warms up (imports, prepared statements) and is dropped
                node = f"gpu-node-{1 + i % 8:03d}"
                incident_id = open_incident(container, "xid", node=node, gpu=i % 8, evidence={"xid": 79})
                ctx = build_context(container, tmp / f"journal-{i}")
                began = time.perf_counter()
                report = start(graph, ctx, incident_id)
                if i:
                    timings.append((time.perf_counter() - began) * 1000)
                assert report.waiting_for is not None or report.outcome, report
    finally:
        container.close()
    return {"incidents": len(timings), "median_ms": round(statistics.median(timings), 1),
            "p99_ms": round(_pct(timings, 0.99), 1), "database": "sqlite"}


def _answer(actions: list[Any]) -> Reply:
    calls = [(a.runbook, json.dumps({"targets": list(a.targets), "params": a.params})) for a in actions]
    return Reply(tool_calls=calls, content="Evidence: node_conditions and pods_on_node as fenced above; the "
                                           "fault's standard remedy.")


def llm_usage(tmp: Path, *, malformed_first: bool) -> dict[str, Any]:
    ctx = build_context(SimpleNamespace(uow=None), tmp / "journal")  # type: ignore[arg-type]
    calls, tokens, ok = [], [], 0
    for _, incident, _, _ in TABLE:
        request = _request(ctx, incident)
        expected = RulesPlanner().plan(request).actions
        script = ([Reply(tool_calls=[(expected[0].runbook, '{"targets": [')])] if malformed_first else [])
        with scripted_llm([*script, _answer(expected)]) as llm:
            settings = Settings.model_validate({"database_url": "sqlite://", "OPENAI_BASE_URL": llm.base_url,
                                                "OPENAI_API_KEY": "bench", "llm_model": "scripted"})
            planner = LLMPlanner.from_settings(settings, LLMLimits(timeout_s=10, max_retries=0))
            assert planner is not None
            result = planner.plan(request)
        ok += int(result.ok and [a.runbook for a in result.actions] == [a.runbook for a in expected])
        calls.append(result.usage.calls)
        tokens.append(result.usage.total_tokens)
    return {"incidents": len(calls), "valid_plans": ok, "calls_mean": round(statistics.mean(calls), 2),
            "calls_max": max(calls), "tokens_mean": round(statistics.mean(tokens)), "tokens_max": max(tokens),
            "goal": {"calls_max": 4, "tokens_max": 8000},
            "meets_goal": max(calls) <= 4 and max(tokens) <= 8000}


def run(results_dir: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        figures = {
            "rules_planner_incident_to_plan": rules_latency(tmp),
            "graph_incident_to_awaiting_approval": graph_latency(tmp),
            "llm_planner_correct_answer": llm_usage(tmp, malformed_first=False),
            "llm_planner_one_corrective_retry": llm_usage(tmp, malformed_first=True),
        }
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "agent.json").write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    print(json.dumps(run(Path(__file__).parent / "results"), indent=2))
    sys.exit(0)
