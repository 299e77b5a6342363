"""SQLAlchemy 2 typed models: findings, incidents and their timeline, actions, approvals, and the
append-only, hash-chained audit trail."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from domain import ActionStatus, IncidentStatus, clock

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """The service's clock (gpuops.clock): row times never mix two clocks."""
    return clock.now()


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use timezone-aware UTC datetimes")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}


class FindingRecord(Base):
    """A detector's finding, as in ARCHITECTURE.md's Findings contract."""

    __tablename__ = "findings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ts: Mapped[datetime]
    hostname: Mapped[str] = mapped_column(String(253))
    gpu: Mapped[int | None]
    uuid: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(16))
    score: Mapped[float] = mapped_column(Float)
    predicted_failure_at: Mapped[datetime | None]
    detector: Mapped[str] = mapped_column(String(64))
    evidence: Mapped[dict[str, Any]] = mapped_column(default=dict)
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    incident: Mapped[Incident | None] = relationship(back_populates="findings")

    __table_args__ = (Index("ix_findings_host_gpu_kind_ts", "hostname", "gpu", "kind", "ts"),)


class Incident(Base):
    """A deduplicated problem on a GPU, a node or the fleet, with a lifecycle status."""

    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dedup_key: Mapped[str] = mapped_column(String(300), index=True)
    scope: Mapped[str] = mapped_column(String(8))  # gpu | node | fleet
    family: Mapped[str] = mapped_column(String(32))
    hostname: Mapped[str | None] = mapped_column(String(253))
    gpu: Mapped[int | None]
    status: Mapped[str] = mapped_column(String(24), default=IncidentStatus.OPEN, index=True)
    severity: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(String(300))
    summary: Mapped[str] = mapped_column(Text, default="")
    occurrences: Mapped[int] = mapped_column(Integer, default=1)
    opened_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    resolved_at: Mapped[datetime | None]
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id", ondelete="SET NULL"))
    held_until: Mapped[datetime | None] = mapped_column(index=True)  # the agent waits (soak) until this data time
    acknowledged_at: Mapped[datetime | None]
    acknowledged_by: Mapped[str | None] = mapped_column(String(128))
    assignee: Mapped[str | None] = mapped_column(String(128))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)

    findings: Mapped[list[FindingRecord]] = relationship(back_populates="incident")
    events: Mapped[list[IncidentEvent]] = relationship(
        back_populates="incident", order_by="IncidentEvent.id", cascade="all, delete-orphan"
    )
    actions: Mapped[list[Action]] = relationship(back_populates="incident", order_by="Action.id")


class IncidentEvent(Base):
    """One entry of an incident's timeline (status changes, findings merged, plans, decisions)."""

    __tablename__ = "incident_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"), index=True)
    ts: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(48))
    message: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)

    incident: Mapped[Incident] = relationship(back_populates="events")


class IncidentEvidence(Base):
    """What an incident's page is drawn from, kept with it: the node's telemetry (downsampled) and the workload on
    the node, taken when the incident opened and after each executed action, so the evidence outlives the
    telemetry source's retention and the pods that moved away."""

    __tablename__ = "incident_evidence"
    __table_args__ = (UniqueConstraint("incident_id", "moment", name="uq_incident_evidence_incident_moment"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"), index=True)
    moment: Mapped[str] = mapped_column(String(32))  # "opened", or "action-<id>" after that action ran
    taken_at: Mapped[datetime] = mapped_column(default=utcnow)
    window_start: Mapped[datetime]
    window_end: Mapped[datetime]
    series: Mapped[dict[str, Any]] = mapped_column(default=dict)
    workload: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Action(Base):
    """A runbook invocation proposed for an incident; executes at most once (unique idempotency key)."""

    __tablename__ = "actions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"), index=True)
    runbook: Mapped[str] = mapped_column(String(64))
    parameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    targets: Mapped[list[Any]] = mapped_column(default=list)
    plan_hash: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str] = mapped_column(String(128), unique=True)
    status: Mapped[str] = mapped_column(String(24), default=ActionStatus.PROPOSED, index=True)
    risk: Mapped[str] = mapped_column(String(16), default="medium")
    rationale: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    executed_at: Mapped[datetime | None]
    verified_at: Mapped[datetime | None]
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    approvals_required: Mapped[int] = mapped_column(Integer, default=1)
    verdict: Mapped[dict[str, Any]] = mapped_column(default=dict)
    diff: Mapped[dict[str, Any]] = mapped_column(default=dict)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    claim_expires_at: Mapped[datetime | None]

    incident: Mapped[Incident] = relationship(back_populates="actions")
    approvals: Mapped[list[Approval]] = relationship(back_populates="action", order_by="Approval.id")


class Approval(Base):
    """A human decision on an action, bound to the plan hash it saw, valid until `expires_at`."""

    __tablename__ = "approvals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    action_id: Mapped[int] = mapped_column(ForeignKey("actions.id", ondelete="CASCADE"), index=True)
    approver: Mapped[str] = mapped_column(String(128))
    channel: Mapped[str] = mapped_column(String(16))  # slack | dashboard | cli | policy
    decision: Mapped[str] = mapped_column(String(16))  # approve | reject
    plan_hash: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text, default="")
    decided_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]

    action: Mapped[Action] = relationship(back_populates="approvals")

    __table_args__ = (UniqueConstraint("action_id", "approver", name="uq_approvals_action_approver"),)


class AuditEvent(Base):
    """An append-only audit record. `hash` covers this record's fields and `prev_hash`, so a modified,
    inserted or deleted record breaks the chain (see gpuops.store.audit.verify_chain)."""

    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                     autoincrement=False)
    ts: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(64), index=True)
    incident_id: Mapped[int | None] = mapped_column(index=True)
    action_id: Mapped[int | None] = mapped_column(index=True)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The id of the HMAC key that signed `hash`; NULL for an event written before the chain had a key.
    key_id: Mapped[str | None] = mapped_column(String(16), default=None)


class AuditHead(Base):
    """The single row holding the chain's last sequence number and hash. Appenders lock it, so the
    chain stays linear across workers."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    hash: Mapped[str] = mapped_column(String(64))


class Silence(Base):
    """A silence or maintenance window: matching findings are recorded but open only suppressed incidents.
    A null hostname or family matches any."""

    __tablename__ = "silences"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), default="silence")  # silence | maintenance
    hostname: Mapped[str | None] = mapped_column(String(253))
    family: Mapped[str | None] = mapped_column(String(32))
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    reason: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expired_at: Mapped[datetime | None]  # ended early by a person (ends_at then says when)
    expired_by: Mapped[str | None] = mapped_column(String(128))


class NodeLease(Base):
    """A node gpuops took out of service (cordoned, draining, rebooting). Active leases count against the
    budget of nodes out; a lease is released when gpuops returns the node."""

    __tablename__ = "node_leases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hostname: Mapped[str] = mapped_column(String(253), index=True)
    action_id: Mapped[int] = mapped_column(ForeignKey("actions.id", ondelete="CASCADE"), index=True)
    reason: Mapped[str] = mapped_column(String(64))
    acquired_at: Mapped[datetime] = mapped_column(default=utcnow)
    released_at: Mapped[datetime | None]


class PolicyState(Base):
    """The single row that serialises policy decisions across workers (locked with SELECT … FOR UPDATE)
    and holds the circuit breaker."""

    __tablename__ = "policy_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    breaker_open: Mapped[bool] = mapped_column(default=False)
    breaker_opened_at: Mapped[datetime | None]
    breaker_reason: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class HardwareTicket(Base):
    """An RMA request with its evidence, opened by the `open_hardware_ticket` runbook."""

    __tablename__ = "hardware_tickets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id", ondelete="SET NULL"), index=True)
    action_id: Mapped[int | None] = mapped_column(ForeignKey("actions.id", ondelete="SET NULL"))
    hostname: Mapped[str] = mapped_column(String(253))
    gpu: Mapped[int | None]
    uuid: Mapped[str | None] = mapped_column(String(64))
    summary: Mapped[str] = mapped_column(Text)
    evidence: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="open")
    webhook_status: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class NodeProbation(Base):
    """A node gpuops took out and remediated, waiting to return to service: it returns once `due_at` (data time)
    has been examined with its GPUs healthy, and stays out (with a hardware ticket) when a check fails. Status:
    probation, fencing (the fence of a GPU that needs replacing is under way), returning (the uncordon action is
    under way), ticketing (the ticket action is under way), returned, kept_out."""

    __tablename__ = "node_probations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hostname: Mapped[str] = mapped_column(String(253), index=True)
    gpu: Mapped[int | None]
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"), index=True)
    action_id: Mapped[int | None] = mapped_column(ForeignKey("actions.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(16), default="probation", index=True)
    started_at: Mapped[datetime]
    due_at: Mapped[datetime]
    checks: Mapped[list[Any]] = mapped_column(default=list)
    reason: Mapped[str] = mapped_column(Text, default="")
    return_action_id: Mapped[int | None] = mapped_column(ForeignKey("actions.id", ondelete="SET NULL"))
    ticket_action_id: Mapped[int | None] = mapped_column(ForeignKey("actions.id", ondelete="SET NULL"))
    fence_action_id: Mapped[int | None] = mapped_column(ForeignKey("actions.id", ondelete="SET NULL"))
    finished_at: Mapped[datetime | None]


class DetectorState(Base):
    """The streaming detectors' state of one shard of the fleet, handed from worker to worker. Locking the row
    serialises cycles of a shard, and `last_ts` makes a duplicate cycle (two beats) a no-op."""

    __tablename__ = "detector_states"

    shard: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_ts: Mapped[float] = mapped_column(Float, default=0.0)
    state: Mapped[bytes | None] = mapped_column(LargeBinary)
    cycles: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class DeadLetter(Base):
    """A task message gpuops gave up on (a payload that fails validation, a non-transient failure, or too many
    deliveries), kept with its error so the queue moves on and an operator can look at it."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task: Mapped[str] = mapped_column(String(128), index=True)
    task_id: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    reason: Mapped[str] = mapped_column(String(32))  # invalid_payload | failed | too_many_deliveries
    error: Mapped[str] = mapped_column(Text, default="")
    deliveries: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SlackMessage(Base):
    """The Slack approval message of an action: its channel, and its ts once Slack accepted the post."""

    __tablename__ = "slack_messages"

    action_id: Mapped[int] = mapped_column(ForeignKey("actions.id", ondelete="CASCADE"), primary_key=True)
    channel: Mapped[str] = mapped_column(String(64))
    ts: Mapped[str | None] = mapped_column(String(32))
    posted_at: Mapped[datetime | None]


class SlackOutbox(Base):
    """A Slack post waiting to go out (the prompt, an update of it, a reply in its thread). Rows are sent in order
    per action; an unreachable Slack leaves them pending with a growing back-off until they go through."""

    __tablename__ = "slack_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    action_id: Mapped[int] = mapped_column(ForeignKey("actions.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # post | update | reply
    text: Mapped[str] = mapped_column(Text, default="")
    broadcast: Mapped[bool] = mapped_column(default=False)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)  # pending | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]


class NotificationLedger(Base):
    """What one outside channel (pagerduty, webhook) has been told about one incident; the reconciler compares it
    with the incident and queues only the difference, in the same transaction that moves the ledger on."""

    __tablename__ = "notification_ledger"

    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"), primary_key=True)
    triggered: Mapped[bool] = mapped_column(default=False)
    escalated: Mapped[bool] = mapped_column(default=False)
    acknowledged_at: Mapped[datetime | None]  # the incident's acknowledgement last told
    resolved: Mapped[bool] = mapped_column(default=False, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class NotificationOutbox(Base):
    """An incident event waiting to go to a channel (trigger, acknowledge, resolve). Rows go out in id order per
    channel and incident; a channel that is down leaves them pending with a growing back-off, a refusal marks the
    row failed with the channel's message."""

    __tablename__ = "notification_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"), index=True)
    event: Mapped[str] = mapped_column(String(16))  # trigger | acknowledge | resolve
    body: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_notification_outbox_due", "status", "channel", "next_attempt_at"),)


class ApiToken(Base):
    """An API token for scripts: it acts as `user_name` with that user's role. Only a SHA-256 digest of its secret
    is kept; the token itself is shown once, when it is created."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    user_name: Mapped[str] = mapped_column(String(128), index=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    revoked_by: Mapped[str | None] = mapped_column(String(128))


class AlertState(Base):
    """The last state Alertmanager reported for one alert (its fingerprint): repeats of a firing alert add
    nothing, and its resolution finds the incident it opened."""

    __tablename__ = "alert_states"

    fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True)
    alertname: Mapped[str] = mapped_column(String(253))
    status: Mapped[str] = mapped_column(String(16))  # firing or resolved
    starts_at: Mapped[datetime]
    hostname: Mapped[str | None] = mapped_column(String(253))
    gpu: Mapped[int | None]
    kind: Mapped[str] = mapped_column(String(32))
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id", ondelete="SET NULL"), index=True)
    opened: Mapped[bool] = mapped_column(default=False)  # this alert opened (or reopened) its incident
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class GpuUsage(Base):
    """One GPU as the cost view last saw it (data time): the pod bound to it, its state (busy, low: under the idle
    utilisation, unknown: no utilisation sample, free: no pod) and since when it has been low without a break."""

    __tablename__ = "gpu_usage"

    hostname: Mapped[str] = mapped_column(String(253), primary_key=True)
    gpu: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    model_name: Mapped[str] = mapped_column(String(128), default="")
    namespace: Mapped[str] = mapped_column(String(253), default="", index=True)
    pod: Mapped[str] = mapped_column(String(253), default="")
    deployment: Mapped[str] = mapped_column(String(253), default="")
    state: Mapped[str] = mapped_column(String(16), index=True)  # busy | low | unknown | free
    low_since: Mapped[datetime | None]
    seen_at: Mapped[datetime]  # the last sample taken into account
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class GpuHours(Base):
    """GPU time of one deployment on one UTC day: provisioned (GPU-seconds with a pod of it bound and a utilisation
    sample) and busy (the same seconds weighted by utilisation)."""

    __tablename__ = "gpu_hours"

    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD, UTC
    namespace: Mapped[str] = mapped_column(String(253), primary_key=True)
    deployment: Mapped[str] = mapped_column(String(253), primary_key=True)
    provisioned_s: Mapped[float] = mapped_column(Float, default=0.0)
    busy_s: Mapped[float] = mapped_column(Float, default=0.0)


class AutoscaleColdStart(Base):
    """A cold start the autoscaler saw: one replica's pod from creation to Ready. Kept so that every process that
    runs the cycle, and every restart, plans with the cold starts seen so far (one row per pod)."""

    __tablename__ = "autoscale_cold_starts"
    __table_args__ = (Index("ix_autoscale_cold_starts_deployment", "namespace", "deployment"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    namespace: Mapped[str] = mapped_column(String(253))
    deployment: Mapped[str] = mapped_column(String(253))
    pod: Mapped[str] = mapped_column(String(253), unique=True)  # the pod's uid (its name when it has none)
    seconds: Mapped[float] = mapped_column(Float)
    ready_at: Mapped[datetime]


class AutoscaleCycle(Base):
    """When the autoscaling cycle last ran, on one row: a cycle claims it under a row lock, so that two workers
    handed the same period (a beat restarted, a message redelivered) do not both decide."""

    __tablename__ = "autoscale_cycles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_run: Mapped[float] = mapped_column(Float, default=0.0)
    worker: Mapped[str] = mapped_column(String(253), default="")
