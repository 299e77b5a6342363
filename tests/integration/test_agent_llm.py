"""The LLM planner through the real adapter (the `openai` SDK) against the scripted model in memory
(`connectors.llm.ScriptedChat` as the HTTP transport): a correct tool call, a malformed one, an unknown runbook,
a target outside the incident, a refusal, a timeout, a transient error, text instead of a tool call, an answer
that is not Chat Completions, the call cap, and an escalation. The planner built from settings is tested over
real HTTP too: the configured base URL, and a server that never answers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from agent.llm import LLMLimits, LLMPlanner
from agent.runner import RunReport, start
from connectors.llm import Reply, ScriptedChat, call
from gpuops.config import Settings
from gpuops.store import migrate
from gpuops.store.models import AuditEvent, Incident
from gpuops.wiring import Container, bootstrap
from tests.agent.helpers import graph_on, open_incident
from tests.agent.llm_server import scripted_llm
from tests.agent.world import build_context

NODE = "gpu-node-003"
RULES_XID79 = ["cordon_node", "drain_node", "reboot_node"]
GOOD = Reply(tool_calls=[call("cordon_node", targets=[f"node/{NODE}"], params={"reason": "XID 79"}),
                         call("drain_node", targets=[f"node/{NODE}"], params={}),
                         call("reboot_node", targets=[f"node/{NODE}"], params={})],
             content="xid_catalogue: XID 79 means the GPU fell off the bus; NVIDIA recommends a node reboot.")


@pytest.fixture
def sqlite_container(sqlite_url: str) -> Iterator[Container]:
    migrate.upgrade(sqlite_url)
    container = bootstrap(Settings(database_url=sqlite_url))
    yield container
    container.close()


def planner_for(chat: ScriptedChat, **limits: Any) -> LLMPlanner:
    chosen = LLMLimits(**{"timeout_s": 5.0, "max_retries": 0, **limits})
    model = chat.chat_model("scripted-model", timeout_s=chosen.timeout_s, max_retries=chosen.max_retries)
    return LLMPlanner(model, chosen)


def configured_planner(base_url: str, **limits: Any) -> LLMPlanner:
    """The planner as the service builds it, from settings naming a server."""
    settings = Settings.model_validate({"database_url": "sqlite://", "OPENAI_BASE_URL": base_url,
                                        "OPENAI_API_KEY": "test-key", "llm_model": "scripted-model"})
    planner = LLMPlanner.from_settings(settings, LLMLimits(**{"timeout_s": 5.0, "max_retries": 0, **limits}))
    assert planner is not None
    return planner


def plan_with(container: Container, tmp_path: Path, planner: LLMPlanner) -> tuple[RunReport, int]:
    incident_id = open_incident(container, "xid", node=NODE, gpu=2, evidence={"xid": 79})
    ctx = build_context(container, tmp_path / "journal", planner=planner)
    with graph_on(container) as graph:
        return start(graph, ctx, incident_id), incident_id


def run(container: Container, tmp_path: Path, script: list[Reply],
        **limits: Any) -> tuple[RunReport, ScriptedChat, int]:
    chat = ScriptedChat(script)
    report, incident_id = plan_with(container, tmp_path, planner_for(chat, **limits))
    return report, chat, incident_id


def audit(container: Container, incident_id: int, kind: str) -> list[dict[str, Any]]:
    with container.uow() as uow:
        return [e.data for e in uow.session.scalars(
            select(AuditEvent).where(AuditEvent.incident_id == incident_id, AuditEvent.kind == kind))]


def runbooks(report: RunReport) -> list[str]:
    return [a["runbook"] for a in report.plan]


def test_a_correct_tool_call_becomes_the_plan(container: Container, tmp_path: Path) -> None:
    """On SQLite and on PostgreSQL: the plan, the tools offered, usage and cost recorded on the incident."""
    report, llm, incident_id = run(container, tmp_path, [GOOD], prompt_usd_per_mtok=2.5,
                                   completion_usd_per_mtok=10.0)
    assert report.planner == "llm" and runbooks(report) == RULES_XID79
    assert report.waiting_for is not None and report.waiting_for["runbook"] == "cordon_node"
    request = llm.requests[0]
    tools = {t["function"]["name"]: t["function"] for t in request["tools"]}
    assert {"cordon_node", "drain_node", "restart_pod", "scale_deployment", "escalate_to_human"} <= set(tools)
    scale_params = tools["scale_deployment"]["parameters"]["properties"]["params"]
    assert scale_params["properties"]["replicas"]["type"] == "integer"
    assert request["model"] == "scripted-model"
    with container.uow() as uow:
        usage = uow.session.get(Incident, incident_id).details["llm_usage"]  # type: ignore[union-attr]
    assert usage["calls"] == 1 and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    assert usage["cost_usd"] == pytest.approx(
        (usage["prompt_tokens"] * 2.5 + usage["completion_tokens"] * 10.0) / 1e6, abs=1e-6)
    plan = audit(container, incident_id, "agent.plan")[0]
    assert plan["planner"] == "llm" and "XID 79 means the GPU fell off the bus" in plan["message"]
    assert "node_conditions:" in plan["message"]  # the rationale cites the evidence gathered


def test_a_malformed_tool_call_gets_one_corrective_retry(sqlite_container: Container, tmp_path: Path) -> None:
    script = [Reply(tool_calls=[("cordon_node", '{"targets": ["node/gpu-node-003"], "params": {')]), GOOD]
    report, llm, incident_id = run(sqlite_container, tmp_path, script)
    assert report.planner == "llm" and runbooks(report) == RULES_XID79
    assert len(llm.requests) == 2
    correction = [m for m in llm.requests[1]["messages"] if m["role"] == "tool"]
    assert correction and "not valid JSON" in correction[0]["content"]
    rejected = audit(sqlite_container, incident_id, "agent.plan_rejected")
    assert len(rejected) == 1 and "not valid JSON" in rejected[0]["problems"]


def test_an_unknown_runbook_twice_falls_back_to_the_rules(sqlite_container: Container, tmp_path: Path) -> None:
    bad = Reply(tool_calls=[call("wipe_disks", targets=[f"node/{NODE}"], params={})])
    report, llm, incident_id = run(sqlite_container, tmp_path, [bad, bad])
    assert report.planner == "rules" and runbooks(report) == RULES_XID79
    assert len(llm.requests) == 2
    assert any("llm planner failed; rules planner used" in n for n in report.notes)
    rejected = audit(sqlite_container, incident_id, "agent.plan_rejected")
    assert len(rejected) == 2 and all("wipe_disks: no such runbook" in r["problems"] for r in rejected)


def test_a_target_outside_the_incident_is_rejected(sqlite_container: Container, tmp_path: Path) -> None:
    outside = Reply(tool_calls=[call("drain_node", targets=["node/gpu-node-007"], params={})])
    report, _, incident_id = run(sqlite_container, tmp_path, [outside, outside])
    assert report.planner == "rules" and runbooks(report) == RULES_XID79
    rejected = audit(sqlite_container, incident_id, "agent.plan_rejected")
    assert rejected and all("gpu-node-007" in r["problems"] and NODE in r["problems"] for r in rejected)


def test_invalid_parameters_are_rejected(sqlite_container: Container, tmp_path: Path) -> None:
    bad = Reply(tool_calls=[call("cordon_node", targets=[f"node/{NODE}"], params={"force_everything": True})])
    report, _, incident_id = run(sqlite_container, tmp_path, [bad, bad])
    assert report.planner == "rules"
    assert "invalid parameters" in audit(sqlite_container, incident_id, "agent.plan_rejected")[0]["problems"]


def test_a_refusal_falls_back_to_the_rules(sqlite_container: Container, tmp_path: Path) -> None:
    report, llm, _ = run(sqlite_container, tmp_path, [Reply(refusal="I can't help with that.")])
    assert report.planner == "rules" and runbooks(report) == RULES_XID79
    assert len(llm.requests) == 1 and any("LLM refused" in n for n in report.notes)


def test_a_timeout_falls_back_to_the_rules(sqlite_container: Container, tmp_path: Path) -> None:
    report, llm, _ = run(sqlite_container, tmp_path, [Reply(timeout=True)])
    assert report.planner == "rules" and runbooks(report) == RULES_XID79
    assert any("timed out" in n for n in report.notes) and len(llm.requests) == 1


def test_the_configured_model_plans_over_http(sqlite_container: Container, tmp_path: Path) -> None:
    with scripted_llm([GOOD]) as llm:
        report, _ = plan_with(sqlite_container, tmp_path, configured_planner(llm.base_url))
    assert report.planner == "llm" and runbooks(report) == RULES_XID79
    assert llm.requests[0]["model"] == "scripted-model" and llm.requests[0]["tool_choice"] == "auto"


def test_a_server_that_never_answers_times_out(sqlite_container: Container, tmp_path: Path) -> None:
    with scripted_llm([Reply(timeout=True)]) as llm:
        report, _ = plan_with(sqlite_container, tmp_path, configured_planner(llm.base_url, timeout_s=0.5))
    assert report.planner == "rules" and runbooks(report) == RULES_XID79
    assert any("timed out after 0.5s" in n for n in report.notes) and len(llm.requests) == 1


def test_a_transient_error_is_retried(sqlite_container: Container, tmp_path: Path) -> None:
    report, llm, incident_id = run(sqlite_container, tmp_path, [Reply(status=503), GOOD], max_retries=1)
    assert report.planner == "llm" and len(llm.requests) == 2
    with sqlite_container.uow() as uow:
        assert uow.session.get(Incident, incident_id).details["llm_usage"]["calls"] == 1  # type: ignore[union-attr]


def test_text_instead_of_a_tool_call_is_nonsense_and_falls_back(sqlite_container: Container, tmp_path: Path) -> None:
    chatter = Reply(content="Have you tried turning it off and on again? 🙂")
    report, llm, _ = run(sqlite_container, tmp_path, [chatter, chatter])
    assert report.planner == "rules" and len(llm.requests) == 2
    assert llm.requests[1]["messages"][-1]["content"].startswith("Answer by calling runbook tools")


def test_the_call_cap_holds(sqlite_container: Container, tmp_path: Path) -> None:
    bad = Reply(tool_calls=[call("wipe_disks", targets=[], params={})])
    report, llm, _ = run(sqlite_container, tmp_path, [bad, GOOD], max_calls=1)
    assert report.planner == "rules" and len(llm.requests) == 1
    assert any("call cap of 1" in n for n in report.notes)


def test_the_llm_may_investigate_then_escalate(sqlite_container: Container, tmp_path: Path) -> None:
    script = [Reply(tool_calls=[call("investigate_incident_history")]),
              Reply(tool_calls=[call("escalate_to_human", reason="third XID 79 on this node this month")])]
    report, llm, incident_id = run(sqlite_container, tmp_path, script)
    assert report.outcome == "escalated" and "third XID 79" in report.reason and report.plan == []
    tool_reply = next(m for m in llm.requests[1]["messages"] if m["role"] == "tool")["content"]
    assert tool_reply.startswith('<tool_data tool="incident_history"')
    with sqlite_container.uow() as uow:
        assert uow.session.get(Incident, incident_id).status == "escalated"  # type: ignore[union-attr]
    assert json.loads(tool_reply.splitlines()[1])["status"] == "no_data"


def test_an_answer_of_an_unexpected_shape_falls_back(sqlite_container: Container, tmp_path: Path) -> None:
    custom = Reply(raw_tool_calls=[{"id": "call_x", "type": "custom",
                                    "custom": {"name": "drain_node", "input": "node/gpu-node-003"}}])
    report, _, _ = run(sqlite_container, tmp_path, [custom])
    assert report.planner == "rules" and runbooks(report) == RULES_XID79
    assert any("tool call of type 'custom'" in n for n in report.notes), report.notes


def test_an_answer_that_is_not_json_falls_back(sqlite_container: Container, tmp_path: Path) -> None:
    report, llm, _ = run(sqlite_container, tmp_path, [Reply(body=b"<html>502 Bad Gateway</html>")])
    assert report.planner == "rules" and runbooks(report) == RULES_XID79 and len(llm.requests) == 1
    assert any("not JSON" in n for n in report.notes), report.notes


def test_tokens_of_an_unusable_answer_are_still_counted(sqlite_container: Container, tmp_path: Path) -> None:
    empty = Reply(body=json.dumps({"choices": [], "usage": {"prompt_tokens": 700, "completion_tokens": 3}}).encode())
    report, _, incident_id = run(sqlite_container, tmp_path, [empty])
    assert report.planner == "rules" and any("no choices" in n for n in report.notes)
    with sqlite_container.uow() as uow:
        usage = uow.session.get(Incident, incident_id).details["llm_usage"]  # type: ignore[union-attr]
    assert usage["calls"] == 1 and usage["prompt_tokens"] == 700 and usage["completion_tokens"] == 3
