"""The incident page's text for people: times, durations, key=value pairs, escaped unicode, parameters, and a
timeline whose repeats fold into one line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from entrypoints.web.humanize import (
    ago,
    clock_time,
    collapse,
    data_text,
    drop_echoes,
    duration,
    humane,
    mapping_text,
    when,
)

NOW = datetime(2026, 12, 4, 14, 7, 0, tzinfo=UTC)


@pytest.mark.parametrize(("seconds", "text"), [(45, "45 s"), (120, "2 min"), (900, "15 min"), (3600, "1 h"),
                                               (5400, "1 h 30 min"), (3 * 86400, "3 days")])
def test_durations_read_as_words(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_times_say_when_and_how_long_ago_with_the_date_only_on_another_day() -> None:
    assert when(NOW - timedelta(minutes=5), NOW) == "14:02 UTC (5 min ago)"
    assert when((NOW - timedelta(minutes=5)).isoformat(), NOW) == "14:02 UTC (5 min ago)"
    assert clock_time(NOW - timedelta(days=1), NOW) == "3 Dec 14:07 UTC"
    assert ago(NOW + timedelta(minutes=3), NOW) == "in 3 min" and ago(NOW, NOW) == "just now"
    assert when(None, NOW) == ""


def test_machine_text_becomes_words() -> None:
    epoch = (NOW - timedelta(minutes=5)).timestamp()
    text = humane(f"gpu absent: last_seen={epoch}, row_in_frame=True; drain_node \\u2192 reboot_node", NOW)
    assert text == "gpu absent: last seen: 14:02 UTC (5 min ago), row in frame: yes; drain_node → reboot_node"
    assert humane("opened at 2026-12-04T14:02:10.123+00:00") == "opened at 2026-12-04 14:02:10 UTC"
    assert humane("within nodes_out_limit") == "within nodes out limit"
    assert humane("a count=3 stays 3") == "a count: 3 stays 3"


def test_parameters_and_stored_json_read_as_sentences() -> None:
    assert mapping_text({"reason": "XID 79", "grace_period_s": 120, "force": False, "gpu": None}) == \
        "reason: XID 79; grace period: 2 min; force: no"
    assert data_text('{"status": "awaiting_approval", "why": "a \\u2192 b"}') == \
        "status: awaiting_approval; why: a → b"
    assert data_text("plain text") == "plain text"


def entry(minute: int, message: str, source: str = "finding", kind: str = "gpu_lost") -> dict[str, str]:
    return {"ts": (NOW - timedelta(minutes=60 - minute)).isoformat(), "source": source, "kind": kind,
            "message": message, "actor": ""}


def test_a_repeated_finding_folds_into_one_line_with_its_count_and_last_time() -> None:
    lines = [entry(0, "critical on gpu-node-003 gpu 2")]
    lines += [entry(1, "opened", "incident", "incident.opened")]
    lines += [entry(m, "critical on gpu-node-003 gpu 2") for m in range(2, 38)]
    lines += [entry(40, "cordon_node awaits approval", "incident", "status"),
              entry(41, "cordon_node awaits approval", "incident", "status"),
              entry(42, "approved", "approval", "approval.approve"),
              entry(43, "cordon_node awaits approval", "incident", "status")]
    folded = collapse(lines, NOW)
    assert [(e["source"], e["count"]) for e in folded] == [
        ("finding", 37), ("incident", 1), ("incident", 2), ("approval", 1), ("incident", 1)]
    assert folded[0]["repeat"] == "×37, last 13:44 UTC"
    assert folded[0]["when"] == "13:07:00 UTC" and folded[1]["repeat"] == ""
    stamps = [e["ts"] for e in folded]
    assert stamps == sorted(stamps)  # still in time order


def test_the_audit_trails_echo_of_a_step_already_on_the_timeline_is_left_to_the_audit_page() -> None:
    lines = [{**entry(1, "agent investigating", "incident", "status.investigating"), "actor": "agent"},
             {**entry(1, "reason: agent investigating", "audit", "incident.transition"), "actor": "agent"},
             {**entry(2, "", "audit", "agent.plan"), "actor": "agent"},
             {**entry(2, "classified as xid79", "incident", "agent.plan"), "actor": ""},
             {**entry(3, "runbook: cordon_node", "audit", "agent.held"), "actor": "policy"},
             {**entry(4, "checked", "audit", "approval.approve"), "actor": "admin"}]
    kept = drop_echoes(lines)
    assert [(e["source"], e["kind"]) for e in kept] == [
        ("incident", "status.investigating"), ("incident", "agent.plan"), ("audit", "agent.held"),
        ("audit", "approval.approve")]
