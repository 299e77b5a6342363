"""Alertmanager's alerts through the incident service: a critical alert opens an incident at once, repeats add
nothing, its resolution resolves what it opened unless gpuops' own findings or another alert keep it open; a
warning opens a warning incident, an info alert only joins one; a recurrence reopens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from detectors.findings import Finding
from gpuops.incidents.alerts import AlertmanagerWebhook, AlertsOutcome, receive_alerts
from gpuops.incidents.service import ingest_findings
from gpuops.store.models import FindingRecord, Incident
from gpuops.wiring import Container

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def alert(fingerprint: str, status: str = "firing", *, starts: datetime = NOW, **labels: str) -> dict[str, Any]:
    return {"status": status, "labels": {"Hostname": "gpu-node-002", **labels}, "annotations": {},
            "startsAt": starts.isoformat(), "fingerprint": fingerprint,
            "endsAt": (starts + timedelta(minutes=5)).isoformat() if status == "resolved" else "0001-01-01T00:00:00Z"}


def send(container: Container, *alerts: dict[str, Any], at: timedelta = timedelta()) -> AlertsOutcome:
    webhook = AlertmanagerWebhook.model_validate({"version": "4", "receiver": "gpuops", "status": "firing",
                                                  "alerts": list(alerts)})
    with container.uow() as uow:
        outcome = receive_alerts(uow.session, webhook, now=NOW + at)
        uow.commit()
    return outcome


def incidents(container: Container) -> list[tuple[int, str, str, str]]:
    with container.uow() as uow:
        return [(i.id, i.family, i.severity, i.status)
                for i in uow.session.scalars(select(Incident).order_by(Incident.id))]


DBE = {"alertname": "GPUDoubleBitError", "gpu": "3", "severity": "critical"}


def test_a_critical_alert_opens_once_and_its_resolution_resolves_it(container: Container) -> None:
    first = send(container, alert("f1", **DBE))
    (incident_id, family, severity, status), = incidents(container)
    assert first.opened == [incident_id] and (family, severity, status) == ("ecc", "critical", "open")
    again = send(container, alert("f1", **DBE), at=timedelta(seconds=30))
    assert again.duplicates == 1 and again.opened == [] and len(incidents(container)) == 1
    with container.uow() as uow:
        assert uow.session.scalar(select(FindingRecord.detector)) == "alertmanager"
    done = send(container, alert("f1", "resolved", **DBE), at=timedelta(minutes=5))
    assert done.resolved == [incident_id] and incidents(container)[0][3] == "resolved"
    back = send(container, alert("f1", starts=NOW + timedelta(minutes=10), **DBE), at=timedelta(minutes=10))
    assert back.opened == [incident_id] and incidents(container)[0][3] == "open"


def test_gpuops_own_evidence_keeps_the_incident_open(container: Container) -> None:
    send(container, alert("f2", **DBE))
    with container.uow() as uow:
        ingest_findings(uow.session, [Finding(ts=NOW.timestamp() + 60, hostname="gpu-node-002", gpu=3, uuid=None,
                                              kind="ecc", severity="critical", score=1.0,  # type: ignore[arg-type]
                                              detector="rules", evidence={"dbe": 2})],  # type: ignore[arg-type]
                        fleet_nodes=8, now=NOW + timedelta(minutes=1))
        uow.commit()
    outcome = send(container, alert("f2", "resolved", **DBE), at=timedelta(minutes=5))
    (incident_id, _, _, status), = incidents(container)
    assert outcome.kept_open == [incident_id] and status == "open"


def test_another_alert_still_firing_keeps_it_open(container: Container) -> None:
    send(container, alert("f3", **DBE), alert("f4", alertname="GPUXidError", gpu="3", severity="critical"))
    (incident_id, _, _, _), = incidents(container)
    outcome = send(container, alert("f3", "resolved", **DBE), at=timedelta(minutes=5))
    assert outcome.kept_open == [incident_id]
    outcome = send(container, alert("f4", "resolved", alertname="GPUXidError", gpu="3"), at=timedelta(minutes=6))
    assert outcome.resolved == [incident_id]


def test_a_warning_opens_a_warning_incident_and_info_only_joins(container: Container) -> None:
    info = send(container, alert("f5", alertname="GpuPowerHigh", severity="info"))
    assert info.pending == 1 and incidents(container) == []
    warning = send(container, alert("f6", alertname="GPUTemperatureHigh", gpu="1", severity="warning"))
    (_, family, severity, _), = incidents(container)
    assert warning.opened and (family, severity) == ("thermal", "warning")
    joined = send(container, alert("f7", alertname="GpuPowerHigh", gpu="1", severity="info"),
                  at=timedelta(minutes=1))
    assert joined.merged == warning.opened and len(incidents(container)) == 1


def test_an_alert_naming_no_node_is_reported_not_ingested(container: Container) -> None:
    outcome = send(container, {**alert("f8", alertname="GPUXidError"), "labels": {"alertname": "GPUXidError"}})
    assert outcome.ignored and "no node label" in outcome.ignored[0]["reason"] and incidents(container) == []
