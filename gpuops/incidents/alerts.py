"""Alertmanager as a source of incidents: each alert of a webhook (payload version 4) becomes a finding mapped
by its labels and goes through the same incident service as gpuops' own findings; repeats of a firing alert
(same fingerprint, same start) add nothing; a resolved alert resolves the incident it opened unless something
else still keeps that incident open.

Hard or soft: an alert is a signal a person's rule raised, and the rule's `for:` already asked the condition
to persist, so every alert counts as corroborated and as persistent (it opens an incident when it first fires,
without the flap control's repeated findings). Its `severity` label decides hard or soft: `critical` (or
`page`) says the rule's author treats it as a fact, so it is hard (it names the incident it joins, and a job's
stalls fold into it); `warning` stays a suspicion that opens a warning incident; `info` is evidence: it joins an
incident open on the node, and opens one only as gpuops' own soft findings do (repeated)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from detectors.findings import Finding
from domain import ActionStatus, FindingKind, IncidentStatus, Severity
from gpuops.incidents.lifecycle import add_timeline, can_transition, transition
from gpuops.incidents.service import IncidentConfig, ingest_findings
from gpuops.store.models import Action, AlertState, FindingRecord, Incident

DETECTOR = "alertmanager"
HOST_LABELS = ("Hostname", "hostname", "node", "kubernetes_node", "nodename", "instance")
KIND_LABEL = "gpuops_kind"  # a rule may name the kind itself
_Label = Field(max_length=4096)

# Alert names as dcgm-exporter's example rules, kube-prometheus and common GPU rule sets spell them, matched on the
# name lower-cased without separators; the first keyword found decides. Anything else is an `anomaly`.
KIND_KEYWORDS: tuple[tuple[str, FindingKind], ...] = (
    ("xid", FindingKind.XID),
    ("infiniband", FindingKind.FABRIC),
    ("ibport", FindingKind.FABRIC),
    ("iblink", FindingKind.FABRIC),
    ("rdma", FindingKind.FABRIC),
    ("fabric", FindingKind.FABRIC),
    ("rowremap", FindingKind.ROW_REMAP),
    ("remappedrows", FindingKind.ROW_REMAP),
    ("doublebit", FindingKind.ECC),
    ("dbe", FindingKind.ECC),
    ("ecc", FindingKind.ECC),
    ("singlebit", FindingKind.ECC),
    ("nvlink", FindingKind.NVLINK),
    ("pcie", FindingKind.PCIE),
    ("fallenoff", FindingKind.GPU_LOST),
    ("gpulost", FindingKind.GPU_LOST),
    ("gpumissing", FindingKind.GPU_LOST),
    ("offbus", FindingKind.GPU_LOST),
    ("notready", FindingKind.NODE_NOT_READY),
    ("nodedown", FindingKind.NODE_NOT_READY),
    ("temp", FindingKind.THERMAL),
    ("thermal", FindingKind.THERMAL),
    ("overheat", FindingKind.THERMAL),
    ("power", FindingKind.POWER),
    ("straggl", FindingKind.STRAGGLER),
    ("hung", FindingKind.HUNG_JOB),
    ("memoryleak", FindingKind.MEMORY_LEAK),
    ("saturat", FindingKind.OVERLOAD),
    ("overload", FindingKind.OVERLOAD),
)
SEVERITIES: dict[str, Severity] = {
    "critical": Severity.CRITICAL, "page": Severity.CRITICAL, "error": Severity.CRITICAL, "high": Severity.CRITICAL,
    "warning": Severity.WARNING, "warn": Severity.WARNING, "medium": Severity.WARNING,
    "info": Severity.INFO, "low": Severity.INFO, "none": Severity.INFO,
}
SCORES = {Severity.CRITICAL: 1.0, Severity.WARNING: 0.7, Severity.INFO: 0.3}


class WebhookAlert(BaseModel):
    """One alert as Alertmanager's webhook sends it."""

    model_config = ConfigDict(extra="ignore")

    status: Literal["firing", "resolved"]
    labels: dict[str, str] = Field(max_length=200)
    annotations: dict[str, str] = Field(default_factory=dict, max_length=200)
    startsAt: datetime  # Alertmanager's field names
    endsAt: datetime | None = None
    fingerprint: str = Field(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z]+$")
    generatorURL: str = Field(default="", max_length=4096)


class AlertmanagerWebhook(BaseModel):
    """Alertmanager's webhook payload, version 4 (the only one it has sent since 0.8)."""

    model_config = ConfigDict(extra="ignore")

    version: Literal["4"]
    receiver: str = Field(max_length=253)
    status: Literal["firing", "resolved"]
    alerts: list[WebhookAlert] = Field(max_length=5000)
    groupKey: str = Field(default="", max_length=4096)
    externalURL: str = Field(default="", max_length=4096)


def _squash(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def kind_of(labels: dict[str, str]) -> FindingKind:
    """The finding kind for an alert: its `gpuops_kind` label when that names a kind, else by its alertname."""
    named = labels.get(KIND_LABEL, "")
    if named in FindingKind.__members__.values():
        return FindingKind(named)
    name = _squash(labels.get("alertname", ""))
    return next((kind for word, kind in KIND_KEYWORDS if word in name), FindingKind.ANOMALY)


def severity_of(labels: dict[str, str]) -> Severity:
    """The alert's `severity` label as gpuops' severity; without one, a warning."""
    return SEVERITIES.get(labels.get("severity", "").strip().lower(), Severity.WARNING)


def hostname_of(labels: dict[str, str]) -> str | None:
    """The node an alert is about: `Hostname` (dcgm-exporter), `hostname`, `node`, … or `instance` less its port."""
    for label in HOST_LABELS:
        value = labels.get(label, "").strip()
        if value:
            port = re.fullmatch(r"\[?([^\]]+?)\]?:\d+", value) if label == "instance" else None
            if port is not None and (value.startswith("[") or ":" not in port.group(1)):
                value = port.group(1)  # host:port, or [v6]:port; a bare IPv6 address stays whole
            return value[:253] if re.fullmatch(r"[A-Za-z0-9._:-]+", value) else None
    return None


def gpu_of(labels: dict[str, str]) -> int | str | None:
    """The GPU index from the `gpu` label; None for a node-level alert; a reason when the label is not an index."""
    value = labels.get("gpu")
    if value is None or value == "":
        return None
    return int(value) if value.isdigit() and int(value) < 4096 else f"label gpu={value[:40]!r} is not a GPU index"


def finding_of(alert: WebhookAlert) -> Finding | str:
    """The finding an alert states, or why it cannot be one (no node named, a malformed `gpu` label)."""
    labels = alert.labels
    hostname = hostname_of(labels)
    if hostname is None:
        return "no node label (Hostname, hostname, node or instance) names a node"
    gpu = gpu_of(labels)
    if isinstance(gpu, str):
        return gpu
    severity = severity_of(labels)
    evidence: dict[str, object] = {
        "source": DETECTOR, "alertname": labels.get("alertname", "")[:253], "fingerprint": alert.fingerprint,
        "labels": {k: v[:253] for k, v in sorted(labels.items())[:40]},
        "persistent": True,  # the rule's `for:` asked the condition to hold; see the module's docstring
    }
    for name in ("summary", "description"):
        if alert.annotations.get(name):
            evidence[name] = alert.annotations[name][:1000]
    if alert.generatorURL:
        evidence["generator_url"] = alert.generatorURL[:1000]
    return Finding(ts=alert.startsAt.timestamp(), hostname=hostname, gpu=gpu, uuid=labels.get("UUID") or None,
                   kind=kind_of(labels), severity=severity, score=SCORES[severity], detector=DETECTOR,
                   evidence=evidence)


@dataclass
class AlertsOutcome:
    """What one webhook call did."""

    opened: list[int] = field(default_factory=list)     # incidents opened or reopened by an alert
    merged: list[int] = field(default_factory=list)     # incidents an alert joined
    resolved: list[int] = field(default_factory=list)   # incidents resolved with their alert
    kept_open: list[int] = field(default_factory=list)  # incidents whose alert resolved, kept open
    duplicates: int = 0                                  # repeats of an alert already firing
    pending: int = 0                                     # alerts recorded as evidence only (info)
    ignored: list[dict[str, str]] = field(default_factory=list)  # alerts that could not be mapped, and why

    def as_dict(self) -> dict[str, object]:
        return {"opened": self.opened, "merged": self.merged, "resolved": self.resolved,
                "kept_open": self.kept_open, "duplicates": self.duplicates, "pending": self.pending,
                "ignored": self.ignored}


def known_nodes(session: Session, now: datetime) -> int:
    """How many nodes gpuops heard of in the last day: the fleet size the fleet-wide correlation compares with."""
    since = now - timedelta(days=1)
    return int(session.scalar(select(func.count(func.distinct(FindingRecord.hostname)))
                              .where(FindingRecord.ts >= since)) or 0)


def receive_alerts(session: Session, webhook: AlertmanagerWebhook, *, now: datetime,
                   config: IncidentConfig | None = None) -> AlertsOutcome:
    """Ingest a webhook's alerts in the caller's transaction (see the module's docstring)."""
    outcome = AlertsOutcome()
    for alert in webhook.alerts:
        state = session.get(AlertState, alert.fingerprint)
        if alert.status == "firing":
            _firing(session, alert, state, now=now, config=config, outcome=outcome)
        elif state is not None and state.status == "firing":
            _resolved(session, alert, state, now=now, outcome=outcome)
    return outcome


def _firing(session: Session, alert: WebhookAlert, state: AlertState | None, *, now: datetime,
            config: IncidentConfig | None, outcome: AlertsOutcome) -> None:
    starts = alert.startsAt.astimezone(UTC)
    if state is not None and state.status == "firing" and state.starts_at == starts:
        state.updated_at = now
        outcome.duplicates += 1
        return
    finding = finding_of(alert)
    if isinstance(finding, str):
        outcome.ignored.append({"fingerprint": alert.fingerprint,
                                "alertname": alert.labels.get("alertname", "")[:253], "reason": finding})
        return
    fleet_nodes = max(known_nodes(session, now), 1)
    result = ingest_findings(session, [finding], fleet_nodes=fleet_nodes, config=config, now=now)
    opened = result.opened + result.reopened + result.suppressed
    joined = result.merged + result.fleet
    outcome.opened.extend(i for i in opened if i not in outcome.opened)
    outcome.merged.extend(i for i in joined if i not in outcome.merged and i not in opened)
    if not opened and not joined:
        outcome.pending += 1
    if state is None:
        state = AlertState(fingerprint=alert.fingerprint)
        session.add(state)
    state.alertname = alert.labels.get("alertname", "")[:253]
    state.status, state.starts_at, state.updated_at = "firing", starts, now
    state.hostname, state.gpu, state.kind = finding.hostname, finding.gpu, str(finding.kind)
    state.incident_id = (opened + joined)[0] if opened or joined else None
    state.opened = bool(opened)


def _resolved(session: Session, alert: WebhookAlert, state: AlertState, *, now: datetime,
              outcome: AlertsOutcome) -> None:
    state.status, state.updated_at = "resolved", now
    incident = session.get(Incident, state.incident_id) if state.incident_id is not None else None
    if incident is None or incident.status in IncidentStatus.CLOSED:
        return
    name = state.alertname or "alert"
    keeps = _what_keeps_open(session, incident, state)
    if keeps is None:
        transition(session, incident, IncidentStatus.RESOLVED, actor=DETECTOR, now=now,
                   reason=f"alert {name} ({state.fingerprint}) resolved in Alertmanager; nothing else keeps it open")
        outcome.resolved.append(incident.id)
        return
    add_timeline(session, incident, kind="alert_resolved", now=now,
                 message=f"alert {name} ({state.fingerprint}) resolved in Alertmanager; the incident stays open: "
                         f"{keeps}", data={"fingerprint": state.fingerprint})
    outcome.kept_open.append(incident.id)


def _what_keeps_open(session: Session, incident: Incident, state: AlertState) -> str | None:
    """Why an incident must outlive its alert, or None when nothing does: only an incident made of alerts alone
    (one gpuops opened itself has its own findings) follows its alerts."""
    own = sorted(set(session.scalars(select(FindingRecord.kind).where(
        FindingRecord.incident_id == incident.id, FindingRecord.detector != DETECTOR))))
    if own:
        return f"gpuops' own detectors reported {', '.join(own)} on it"
    firing = sorted(session.scalars(select(AlertState.alertname).where(
        AlertState.incident_id == incident.id, AlertState.status == "firing",
        AlertState.fingerprint != state.fingerprint)))
    if firing:
        return f"alerts still firing: {', '.join(firing)}"
    busy = session.scalar(select(func.count()).select_from(Action).where(
        Action.incident_id == incident.id, Action.status.in_(ActionStatus.OPEN | ActionStatus.RUNNING))) or 0
    if busy:
        return "an action of it awaits a decision or is running"
    if not can_transition(incident.status, IncidentStatus.RESOLVED):
        return f"it is {incident.status}"
    return None
