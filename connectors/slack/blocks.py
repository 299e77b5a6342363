"""Block Kit for approval prompts, built from plain data: what happened, the evidence as numbers, the plan, its
predicted impact and budgets, a dashboard link, and Approve / Reject buttons carrying the action id and the plan
hash (so a click approves exactly the plan that was shown). Once decided or expired, the buttons go away and
the message says who decided what, and when.

Every string that did not come from us (an LLM rationale, a reject reason, pod and namespace labels, an incident
title, hostnames, parameters) goes through `mrkdwn_escape` before it is put into mrkdwn, so it cannot ping a
channel, mention someone or disguise a link beside the Approve button."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from connectors.slack.models import ApprovalPrompt, Decision
from domain import ActionStatus, ExecutionStatus

APPROVE, REJECT = "gpuops_approve", "gpuops_reject"
BUTTON_ACTIONS = {APPROVE: "approve", REJECT: "reject"}
TEXT_LIMIT = 2900  # Slack's section text limit is 3000 characters
_SLACK_USER_ID = re.compile(r"[UW][A-Z0-9]{2,}")


def mrkdwn_escape(text: object) -> str:
    """`text` as Slack shows it literally: `&`, `<` and `>` escaped (Slack's "escaping text" rules), so no
    `<!channel>`, `<@U123>` or `<https://…|disguise>` in it becomes a ping, a mention or a link."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _escaped_list(items: Iterable[object], quote: str = "") -> str:
    return ", ".join(f"{quote}{mrkdwn_escape(i)}{quote}" for i in items)


def button_value(action_id: int, plan_hash: str) -> str:
    return f"{action_id}:{plan_hash}"


def parse_button_value(value: str) -> tuple[int, str]:
    """(action id, plan hash) from a button's value; ValueError when it is not ours."""
    action, _, plan_hash = value.partition(":")
    if not action.isdigit() or not plan_hash:
        raise ValueError(f"not a gpuops button value: {value!r}")
    return int(action), plan_hash


def _mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text[:TEXT_LIMIT]}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": _mrkdwn(text)}


def _person(d: Decision) -> str:
    if d.channel == "slack" and _SLACK_USER_ID.fullmatch(d.who):
        return f"<@{d.who}>"
    return f"{mrkdwn_escape(d.who)} ({mrkdwn_escape(d.channel)})"


def status_line(p: ApprovalPrompt) -> str:
    approvals = [d for d in p.decisions if d.decision == "approve"]
    rejections = [d for d in p.decisions if d.decision == "reject"]
    if p.status == ActionStatus.EXPIRED:
        return (f":hourglass: *Expired* at {mrkdwn_escape(p.expired_at or 'the deadline')} without enough "
                f"approvals ({len(approvals)}/{p.approvals_required}); incident {p.incident_id} escalated to a human.")
    if rejections:
        d = rejections[-1]
        why = f": {mrkdwn_escape(d.reason)}" if d.reason else ""
        return f":x: *Rejected* by {_person(d)} at {mrkdwn_escape(d.at)}{why}"
    who = ", ".join(f"{_person(d)} at {mrkdwn_escape(d.at)}" for d in approvals)
    if p.status == ActionStatus.AWAITING_APPROVAL:
        if approvals:
            return (f":hourglass_flowing_sand: *Approvals {len(approvals)}/{p.approvals_required}*: {who}; "
                    "waiting for another approver.")
        needed = "two distinct approvers" if p.approvals_required > 1 else "one approver"
        return f":raising_hand: *Waiting for approval* (0/{p.approvals_required}, needs {needed})."
    if approvals:
        return (f":white_check_mark: *Approved* ({len(approvals)}/{p.approvals_required}) by {who}. "
                f"Status: {mrkdwn_escape(p.status)}.")
    return f"Status: *{mrkdwn_escape(p.status)}*."


def summary_text(p: ApprovalPrompt) -> str:
    """The notification text (shown where blocks are not)."""
    return (f"[{mrkdwn_escape(p.severity)}] {mrkdwn_escape(p.title)}: plan {mrkdwn_escape(p.runbook)} on "
            f"{_escaped_list(p.targets) or 'no target'} — {mrkdwn_escape(p.status.replace('_', ' '))} "
            f"(action {p.action_id})")


def approval_blocks(p: ApprovalPrompt) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"{p.severity.upper()}: {p.title}"[:150]}},
        _section(f"*What happened* ({mrkdwn_escape(p.location)}, incident {p.incident_id})\n"
                 f"{mrkdwn_escape(p.summary or p.title)}"),
    ]
    if p.evidence:
        fields = [_mrkdwn(f"*{mrkdwn_escape(label)}*\n{mrkdwn_escape(value)}") for label, value in p.evidence[:10]]
        blocks.append({"type": "section", "text": _mrkdwn("*Evidence*"), "fields": fields})
    params = json.dumps(p.params, sort_keys=True) if p.params else "none"
    plan = (f"*Plan* (action {p.action_id}, {mrkdwn_escape(p.risk)} risk)\n`{mrkdwn_escape(p.runbook)}` on "
            f"{_escaped_list(p.targets, quote='`')}\nParameters: `{mrkdwn_escape(params)}`")
    if p.rationale:
        plan += f"\nWhy: {mrkdwn_escape(p.rationale)}"
    blocks.append(_section(plan))
    impact = [("Pods evicted", str(p.pods_evicted)), ("GPUs affected", str(p.gpus_affected)),
              ("GPU-hours at risk", f"{p.gpu_hours_at_risk:.1f}"), *p.budget]
    blocks.append({"type": "section", "text": _mrkdwn("*Predicted impact and budget left*"),
                   "fields": [_mrkdwn(f"*{mrkdwn_escape(label)}*\n{mrkdwn_escape(value)}")
                              for label, value in impact[:10]]})
    context = [_mrkdwn(f"plan hash `{mrkdwn_escape(p.plan_hash[:12])}`")]
    if p.dashboard_url:
        context.insert(0, _mrkdwn(f"<{p.dashboard_url}|Open incident {p.incident_id} in the dashboard>"))
    blocks.append({"type": "context", "elements": context})
    blocks.append({"type": "divider"})
    blocks.append({**_section(status_line(p)), "block_id": "gpuops_status"})
    if p.status == ActionStatus.AWAITING_APPROVAL:
        value = button_value(p.action_id, p.plan_hash)
        blocks.append({"type": "actions", "block_id": f"gpuops_decide_{p.action_id}", "elements": [
            {"type": "button", "action_id": APPROVE, "style": "primary", "value": value,
             "text": {"type": "plain_text", "text": "Approve"}},
            {"type": "button", "action_id": REJECT, "style": "danger", "value": value,
             "text": {"type": "plain_text", "text": "Reject"},
             "confirm": {"title": {"type": "plain_text", "text": "Reject this plan?"},
                         "text": _mrkdwn("The incident is escalated to a human."),
                         "confirm": {"type": "plain_text", "text": "Reject"},
                         "deny": {"type": "plain_text", "text": "Cancel"}}},
        ]})
    return blocks


def progress_text(status: str, detail: str) -> str:
    icons: dict[str, str] = {
        ActionStatus.EXECUTING: ":gear:", ExecutionStatus.SUCCEEDED: ":white_check_mark:",
        "verified": ":white_check_mark:", ExecutionStatus.FAILED: ":rotating_light:",
        ExecutionStatus.ROLLED_BACK: ":leftwards_arrow_with_hook:", ActionStatus.EXPIRED: ":hourglass:",
        ExecutionStatus.REFUSED: ":no_entry:", ExecutionStatus.DRY_RUN: ":memo:"}
    icon = icons.get(status, ":information_source:")
    return f"{icon} *{mrkdwn_escape(status.replace('_', ' '))}*" + (f": {mrkdwn_escape(detail)}" if detail else "")
