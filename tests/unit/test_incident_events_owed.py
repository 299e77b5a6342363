"""What an incident owes a channel, from its state and the channel's ledger (gpuops.incident_notifications.owed),
and the settings of the two channels."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from domain import IncidentStatus
from gpuops.config import load_settings
from gpuops.errors import ConfigError
from gpuops.incident_notifications import Change, owed
from gpuops.store.models import Incident, NotificationLedger

T0 = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)


def incident(status: str = IncidentStatus.OPEN, severity: str = "warning", acked: datetime | None = None) -> Incident:
    return Incident(id=1, status=status, severity=severity, acknowledged_at=acked)


def ledger(*, triggered: bool = True, escalated: bool = False, acked: datetime | None = None,
           resolved: bool = False) -> NotificationLedger:
    return NotificationLedger(channel="pagerduty", incident_id=1, triggered=triggered, escalated=escalated,
                              acknowledged_at=acked, resolved=resolved)


def events(changes: list[Change]) -> list[tuple[str, str]]:
    return [(c.event, c.reason) for c in changes]


@pytest.mark.parametrize(("state", "told", "expected"), [
    (incident(), None, [("trigger", "opened")]),
    (incident(severity="info"), None, []),
    (incident(IncidentStatus.ESCALATED, severity="info"), None, [("trigger", "escalated")]),
    (incident(IncidentStatus.RESOLVED), None, []),
    (incident(acked=T0), None, [("trigger", "opened"), ("acknowledge", "acknowledged")]),
    (incident(), ledger(), []),
    (incident(IncidentStatus.ESCALATED), ledger(), [("trigger", "escalated")]),
    (incident(IncidentStatus.ESCALATED), ledger(escalated=True), []),
    (incident(acked=T0), ledger(), [("acknowledge", "acknowledged")]),
    (incident(acked=T0), ledger(acked=T0), []),
    (incident(acked=T0 + timedelta(hours=1)), ledger(acked=T0), [("acknowledge", "acknowledged")]),
    (incident(IncidentStatus.RESOLVED, acked=T0), ledger(), [("resolve", "resolved")]),
    (incident(IncidentStatus.SUPPRESSED), ledger(), [("resolve", "suppressed")]),
    (incident(IncidentStatus.RESOLVED), ledger(resolved=True), []),
    (incident(IncidentStatus.OPEN, acked=T0), ledger(resolved=True, acked=T0), [("trigger", "reopened")]),
])
def test_what_is_owed(state: Incident, told: NotificationLedger | None, expected: list[tuple[str, str]]) -> None:
    assert events(owed(state, told, min_severity="warning")) == expected


def test_the_threshold_is_a_setting() -> None:
    assert events(owed(incident(severity="info"), None, min_severity="info")) == [("trigger", "opened")]
    assert owed(incident(severity="warning"), None, min_severity="critical") == []


def test_secrets_from_files_and_their_mistakes(tmp_path: Path) -> None:
    key, secret = tmp_path / "routing-key", tmp_path / "webhook-secret"
    key.write_text("R0UT1NGKEY0123456789ABCDEFGHIJKL\n")
    secret.write_text("a-webhook-secret-long-enough\n")
    settings = load_settings({"GPUOPS_PAGERDUTY_ROUTING_KEY_FILE": str(key), "GPUOPS_WEBHOOK_URL": "https://hooks/x",
                              "GPUOPS_WEBHOOK_SECRET_FILE": str(secret)})
    assert settings.pagerduty_routing_key is not None and settings.webhook_secret is not None
    assert settings.pagerduty_routing_key.get_secret_value() == "R0UT1NGKEY0123456789ABCDEFGHIJKL"
    assert settings.webhook_secret.get_secret_value() == "a-webhook-secret-long-enough"
    assert "R0UT1NG" not in repr(settings)


@pytest.mark.parametrize(("env", "message"), [
    ({"GPUOPS_WEBHOOK_URL": "https://hooks/x"}, "GPUOPS_WEBHOOK_URL is set without GPUOPS_WEBHOOK_SECRET"),
    ({"GPUOPS_WEBHOOK_SECRET": "short"}, "GPUOPS_WEBHOOK_SECRET: too short"),
    ({"GPUOPS_WEBHOOK_URL": "hooks/x", "GPUOPS_WEBHOOK_SECRET": "s" * 20}, "GPUOPS_WEBHOOK_URL"),
    ({"GPUOPS_PAGERDUTY_EVENTS_URL": "events.pagerduty.com"}, "GPUOPS_PAGERDUTY_EVENTS_URL"),
    ({"GPUOPS_PAGERDUTY_ROUTING_KEY_FILE": "/nonexistent/key"}, "GPUOPS_PAGERDUTY_ROUTING_KEY_FILE: cannot read"),
    ({"GPUOPS_INSTALLATION": "lab a"}, "GPUOPS_INSTALLATION"),
    ({"GPUOPS_NOTIFY_MIN_SEVERITY": "high"}, "GPUOPS_NOTIFY_MIN_SEVERITY"),
])
def test_bad_settings_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env)


def test_a_secret_and_its_file_disagreeing_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("one-key")
    with pytest.raises(ConfigError, match="GPUOPS_PAGERDUTY_ROUTING_KEY and GPUOPS_PAGERDUTY_ROUTING_KEY_FILE"):
        load_settings({"GPUOPS_PAGERDUTY_ROUTING_KEY": "another-key", "GPUOPS_PAGERDUTY_ROUTING_KEY_FILE": str(path)})
