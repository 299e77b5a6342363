"""Untrusted text (an LLM rationale, a reject reason, labels from the cluster, an incident title, hostnames)
reaches Slack only escaped: no mention, channel ping or disguised link can be smuggled into an approval prompt."""

from __future__ import annotations

import json
import re
from typing import Any

from connectors.slack import blocks
from connectors.slack.blocks import approval_blocks, progress_text, status_line, summary_text
from connectors.slack.models import ApprovalPrompt, Decision
from domain import ActionStatus

HOSTILE = "<!channel> <https://evil.example/x|Security notice: re-login here>"
ESCAPED = "&lt;!channel&gt; &lt;https://evil.example/x|Security notice: re-login here&gt;"
# What Slack turns into a ping, a mention or a link: any <...> control sequence.
CONTROL = re.compile(r"<(!|@|#|https?:|mailto:)")


def prompt(**overrides: Any) -> ApprovalPrompt:
    fields: dict[str, Any] = dict(
        action_id=7, plan_hash="f" * 64, incident_id=3, title=f"XID 79 {HOSTILE}", severity="critical",
        summary=f"GPU fell off the bus {HOSTILE}", location=f"gpu-node-003 {HOSTILE} GPU 2",
        evidence=[(f"pod {HOSTILE}", f"ns {HOSTILE}")], runbook=f"drain_node {HOSTILE}",
        targets=[f"node/gpu-node-003 {HOSTILE}"], params={"note": HOSTILE}, risk=f"high {HOSTILE}",
        rationale=HOSTILE, pods_evicted=2, gpus_affected=8, gpu_hours_at_risk=12.5,
        budget=[(f"Nodes {HOSTILE}", f"1/2 {HOSTILE}")], status=ActionStatus.AWAITING_APPROVAL,
        approvals_required=1, decisions=[], dashboard_url="http://gpuops.example/incidents/3")
    fields.update(overrides)
    return ApprovalPrompt(**fields)


def _texts(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [t for v in node.values() for t in _texts(v)]
    if isinstance(node, list):
        return [t for v in node for t in _texts(v)]
    return [node] if isinstance(node, str) else []


def _mrkdwn_texts(blocks: list[dict[str, Any]]) -> list[str]:
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn":
                found.append(node["text"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(blocks)
    return found


def test_the_escape_follows_slacks_rules() -> None:
    assert blocks.mrkdwn_escape(HOSTILE) == ESCAPED
    assert blocks.mrkdwn_escape("a & b <@U123> <#C1|x>") == "a &amp; b &lt;@U123&gt; &lt;#C1|x&gt;"
    assert blocks.mrkdwn_escape("&lt;") == "&amp;lt;"  # an already escaped sequence is shown as typed, not decoded


def test_no_untrusted_field_can_ping_mention_or_link() -> None:
    blocks = approval_blocks(prompt())
    mrkdwn = _mrkdwn_texts(blocks)
    assert mrkdwn
    ours = "<http://gpuops.example/incidents/3|Open incident 3 in the dashboard>"
    for text in mrkdwn:
        assert not CONTROL.search(text.replace(ours, "")), text
    shown = json.dumps(blocks)
    assert any(t.endswith("Why: " + ESCAPED) for t in mrkdwn)
    assert ours in shown  # the dashboard link (from our own settings) stays a link
    summary = summary_text(prompt())
    assert not CONTROL.search(summary) and ESCAPED in summary


def test_decisions_and_progress_are_escaped() -> None:
    rejected = prompt(status=ActionStatus.REJECTED, decisions=[
        Decision(who=f"mallory {HOSTILE}", decision="reject", at="2026-01-01T00:00:00Z", channel="dashboard",
                 reason=HOSTILE)])
    line = status_line(rejected)
    assert not CONTROL.search(line) and line.endswith(": " + ESCAPED)
    approved = prompt(status=ActionStatus.APPROVED, decisions=[
        Decision(who="U123", decision="approve", at="2026-01-01T00:00:00Z", channel="slack"),
        Decision(who="<!here>", decision="approve", at="2026-01-01T00:00:00Z", channel="slack")])
    line = status_line(approved)
    assert "<@U123>" in line  # a real Slack user id is still a mention of that person
    assert "<!here>" not in line and "<@<" not in line
    text = progress_text("failed", HOSTILE)
    assert not CONTROL.search(text) and text.endswith(ESCAPED)


def test_private_replies_to_a_click_are_escaped() -> None:
    from connectors.slack.interactivity import _tell
    from connectors.slack.models import ButtonClick

    said: list[str] = []

    class Port:
        def respond(self, url: str, *, text: str) -> None:
            said.append(text)

    click = ButtonClick(user_id="U1", user_name="u", decision="approve", action_id=1, plan_hash="ab",
                        channel="C1", message_ts="1.0", response_url="http://127.0.0.1:9/r")
    _tell(Port(), click, ":no_entry: refused: <!channel> <https://evil.example|re-login> & more")  # type: ignore[arg-type]
    assert said == [":no_entry: refused: &lt;!channel&gt; &lt;https://evil.example|re-login&gt; &amp; more"]
