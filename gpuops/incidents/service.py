"""Findings become incidents: dedup by host, GPU and family; merge into the node's open incident; flap
control for soft anomalies; reopen on recurrence; silences and maintenance windows; fleet-wide correlation
into one escalated fleet incident with no node actions."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, Field
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from detectors.findings import Finding
from domain import HARD_KINDS, ActionStatus, FindingKind, IncidentStatus, Severity, clock, is_corroborated, is_hard
from gpuops.execution.probation import HeldBack, held_back
from gpuops.incidents.lifecycle import add_timeline, transition
from gpuops.logs import log_context
from gpuops.store.audit import append_event
from gpuops.store.models import Action, FindingRecord, Incident, NodeLease, Silence

log = logging.getLogger(__name__)

# Hard signals open an incident at once. An XID is hard when the catalogue calls it critical (reset, reboot,
# NVIDIA workflow); application XIDs (13, 31, 43, …) are warnings or info and must repeat, like anomalies.
# What a job's other GPUs show when one of its GPUs or nodes fails: they wait (hung, straggling) or their load
# changes. A memory leak or a cooling fault on another GPU is its own fault, never folded into the job's incident.
JOB_CONSEQUENCES = frozenset({FindingKind.HUNG_JOB, FindingKind.STRAGGLER, FindingKind.ANOMALY, FindingKind.POWER})
# Failures that stop a job for as long as they last: its ranks wait on the missing link, GPU or node.
STALLS_JOBS = frozenset({FindingKind.FABRIC, FindingKind.GPU_LOST, FindingKind.NODE_NOT_READY})
# A job's episodes (straggling, hung, saturated): one incident per job, however many of its nodes show it.
JOB_HOSTS_LOOKBACK_S = 3600.0
EPISODE_KINDS = frozenset({FindingKind.STRAGGLER, FindingKind.HUNG_JOB, FindingKind.OVERLOAD})
# What gpuops' own actions do to a node or a job, for a while after they ran: a reboot takes the node NotReady and
# its GPUs out of the exporter, a reset drops the GPU (a fence hides it), a drain or a restart moves pods and
# stalls the job while it restarts. These are expected and attributed to the action's incident, never new incidents.
OWN_EFFECT_WINDOW_S = 1800.0
OWN_EFFECTS: dict[str, frozenset[str]] = {
    "reboot_node": frozenset({FindingKind.NODE_NOT_READY, FindingKind.GPU_LOST, FindingKind.ANOMALY,
                              FindingKind.POWER, FindingKind.STRAGGLER, FindingKind.HUNG_JOB}),
    "reset_gpu": frozenset({FindingKind.GPU_LOST, FindingKind.ANOMALY, FindingKind.POWER, FindingKind.STRAGGLER,
                            FindingKind.HUNG_JOB}),
    "drain_node": frozenset({FindingKind.ANOMALY, FindingKind.POWER, FindingKind.STRAGGLER, FindingKind.HUNG_JOB}),
    "cordon_node": frozenset({FindingKind.ANOMALY, FindingKind.POWER}),
    "fence_gpu": frozenset({FindingKind.GPU_LOST}),  # an exporter restarted after the fence no longer sees it
    "restart_pod": frozenset({FindingKind.ANOMALY, FindingKind.POWER, FindingKind.STRAGGLER, FindingKind.HUNG_JOB}),
    "reschedule_pods": frozenset({FindingKind.ANOMALY, FindingKind.POWER, FindingKind.STRAGGLER,
                                  FindingKind.HUNG_JOB}),
}
# Incidents no action has touched yet: a fleet incident folds these in (one already acting on is left to finish).
UNTOUCHED = (IncidentStatus.OPEN, IncidentStatus.INVESTIGATING, IncidentStatus.AWAITING_APPROVAL)


class IncidentConfig(BaseModel):
    dedup_window_s: float = Field(default=6 * 3600, gt=0)
    flap_window_s: float = Field(default=15 * 60, gt=0)
    soft_min_occurrences: int = Field(default=3, ge=1)
    reopen_window_s: float = Field(default=24 * 3600, ge=0)
    fleet_window_s: float = Field(default=10 * 60, gt=0)
    fleet_min_nodes: int = Field(default=3, ge=2)
    fleet_fraction: float = Field(default=0.2, gt=0, le=1)


@dataclass
class IngestResult:
    opened: list[int] = field(default_factory=list)
    merged: list[int] = field(default_factory=list)
    reopened: list[int] = field(default_factory=list)
    suppressed: list[int] = field(default_factory=list)
    fleet: list[int] = field(default_factory=list)
    pending: int = 0  # soft findings below the flap threshold, or not corroborated by a second signal
    attributed: int = 0  # findings that are the expected effect of gpuops' own action

    @property
    def touched(self) -> list[int]:
        return sorted(set(self.opened + self.merged + self.reopened + self.fleet))


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def dedup_key(hostname: str, gpu: int | None, family: str) -> str:
    return f"{hostname}/{'' if gpu is None else gpu}/{family}"


def _is_hard(f: Finding) -> bool:
    return is_hard(f.kind, f.severity, f.evidence)


def _persistent(f: Finding) -> bool:
    """A warning whose source already required it to persist (an alert rule's `for:`, a memory-leak forecast
    made only after the climb was watched for its whole span, and reported once) needs no repeats here."""
    return f.evidence.get("persistent") is True and f.severity != Severity.INFO


def _silenced(session: Session, f: Finding, now: datetime) -> Silence | None:
    stmt = select(Silence).where(
        Silence.starts_at <= now, Silence.ends_at > now,
        or_(Silence.hostname.is_(None), Silence.hostname == f.hostname),
        or_(Silence.family.is_(None), Silence.family == f.kind),
    )
    return session.scalars(stmt).first()


def _silenced_hosts(session: Session, family: str, now: datetime) -> set[str]:
    """Nodes whose findings of `family` a silence or maintenance window in force covers: what they report there is
    expected (a node under maintenance goes NotReady), so it never counts towards a fleet-wide event."""
    return set(session.scalars(select(Silence.hostname).where(
        Silence.hostname.is_not(None), Silence.starts_at <= now, Silence.ends_at > now,
        or_(Silence.family.is_(None), Silence.family == family))))


def _title(f: Finding) -> str:
    where = f"{f.hostname} GPU {f.gpu}" if f.gpu is not None else f.hostname
    xid = f.evidence.get("xid")
    what = f"XID {xid}" if f.kind == "xid" and xid is not None else f.kind.replace("_", " ")
    if f.kind == FindingKind.FABRIC and f.evidence.get("device"):
        condition = str(f.evidence.get("condition", "fault")).replace("_", " ")
        what = f"InfiniBand {condition} ({f.evidence['device']} port {f.evidence.get('port', '1')})"
    return f"{what} on {where}"[:300]


def _record(session: Session, f: Finding) -> FindingRecord:
    record = FindingRecord(
        ts=_dt(f.ts), hostname=f.hostname, gpu=f.gpu, uuid=f.uuid, kind=f.kind, severity=f.severity,
        score=float(f.score), detector=f.detector, evidence=f.evidence,
        predicted_failure_at=_dt(f.predicted_failure_at) if f.predicted_failure_at is not None else None,
    )
    session.add(record)
    return record


def _merge(session: Session, incident: Incident, f: Finding, record: FindingRecord, now: datetime) -> None:
    record.incident_id = incident.id
    incident.occurrences += 1
    incident.updated_at = now
    if Severity(f.severity).rank > Severity(incident.severity).rank:
        incident.severity = f.severity
    if incident.gpu is not None and f.gpu != incident.gpu and _widens(incident, f):
        incident.scope, incident.gpu = "node", None  # several GPUs of one node: the node is the unit
        incident.dedup_key = dedup_key(incident.hostname or f.hostname, None, incident.family)
    if f.kind != incident.family and _is_hard(f) and incident.family not in HARD_KINDS:
        # The harder signal names the incident: a dying GPU explains a straggling job, not the reverse.
        incident.family = f.kind
        incident.dedup_key = dedup_key(incident.hostname or f.hostname, incident.gpu, f.kind)
        incident.title = _title(f)
    add_timeline(session, incident, kind="finding", message=f"{f.kind} from {f.detector} (score {f.score:.2f})",
                 now=now, data={"finding_kind": f.kind, "gpu": f.gpu, "evidence": f.evidence})


def _widens(incident: Incident, f: Finding) -> bool:
    """Whether a finding on another GPU makes a GPU's incident the node's: the same trouble, or a hard fault, on
    another GPU of its node. A soft symptom elsewhere that the incident takes in (a job's idle GPUs after its
    GPU failed, another GPU's memory emptied by gpuops' drain) is the incident's consequence: it neither widens
    what gpuops acts on nor hides the incident from the GPU's next symptom."""
    return f.hostname == incident.hostname and (f.kind == incident.family or _is_hard(f))


def ingest_findings(session: Session, findings: Iterable[Finding], *, fleet_nodes: int,
                    config: IncidentConfig | None = None, now: datetime | None = None) -> IngestResult:
    """Persist findings and open, merge, reopen or suppress incidents. Runs in the caller's transaction."""
    config = config or IncidentConfig()
    result = IngestResult()
    families: set[str] = set()
    job_hosts: dict[str, set[str]] = {}
    batch = sorted(findings, key=lambda f: f.ts)
    withheld_on: dict[str, HeldBack] = {}  # per node, read once a batch (ingesting changes none)
    for f in batch:
        at = now or _dt(f.ts)
        record = _record(session, f)
        session.flush()
        families.add(f.kind)
        if job_hosts and (job := _job_of(f.evidence)) is not None:  # the cache, once loaded, follows the batch
            job_hosts.setdefault(job, set()).add(f.hostname)
        withheld = _withheld_by(session, f, withheld_on)
        if withheld is not None:
            # A GPU its node returned to service without (the device plugin withholds it until its repair), or
            # an InfiniBand port it returned under a taint without: it goes on reporting its fault, as expected,
            # and nothing runs on it (or crosses it). The finding is kept with the incident that left it
            # behind, for as long as the repair takes; it never opens, reopens or widens an incident to plan the
            # same drain again.
            record.incident_id = withheld.id
            withheld.occurrences += 1
            result.attributed += 1
            continue
        key = dedup_key(f.hostname, f.gpu, f.kind)
        open_same = session.scalars(select(Incident).where(
            Incident.dedup_key == key, Incident.status.in_(IncidentStatus.ACTIVE),
            Incident.updated_at >= at - timedelta(seconds=config.dedup_window_s))).first()
        if open_same is not None:
            _merge(session, open_same, f, record, at)
            result.merged.append(open_same.id)
            continue
        on_node = next((i for i in session.scalars(select(Incident).where(
            Incident.hostname == f.hostname, Incident.status.in_(IncidentStatus.ACTIVE), Incident.scope != "fleet",
        ).order_by(Incident.id)) if _absorbs(i, f)), None)
        if on_node is not None:
            _merge(session, on_node, f, record, at)
            result.merged.append(on_node.id)
            continue
        fleet_event = _fleet_event(session, f, at, config)
        if fleet_event is not None:
            _join_fleet(session, fleet_event, f, record, at)
            result.merged.append(fleet_event.id)
            continue
        own = _own_action(session, f, at)
        if own is not None:
            _attribute(session, own, f, record, at)
            result.attributed += 1
            continue
        job_hard = _job_hard_incident(session, f, at - timedelta(seconds=config.fleet_window_s), job_hosts,
                                      hosts_since=at - timedelta(seconds=JOB_HOSTS_LOOKBACK_S))
        if job_hard is not None:
            _merge(session, job_hard, f, record, at)
            result.merged.append(job_hard.id)
            continue
        job_fleet = _job_fleet_incident(session, f, job_hosts)
        if job_fleet is not None:
            _fold_consequence(session, job_fleet, f, record, at)
            result.merged.append(job_fleet.id)
            continue
        job_same = _job_episode_incident(session, f, at - timedelta(seconds=config.flap_window_s))
        if job_same is not None:
            _merge(session, job_same, f, record, at)
            result.merged.append(job_same.id)
            continue
        if not _is_hard(f):
            seen = session.scalar(select(func.count()).select_from(FindingRecord).where(
                FindingRecord.hostname == f.hostname, FindingRecord.gpu.is_(None) if f.gpu is None
                else FindingRecord.gpu == f.gpu, FindingRecord.kind == f.kind,
                FindingRecord.ts >= _dt(f.ts) - timedelta(seconds=config.flap_window_s))) or 0
            if (seen < config.soft_min_occurrences and not _persistent(f)) or not is_corroborated(f.evidence):
                result.pending += 1
                continue
        recent_closed = session.scalars(select(Incident).where(
            Incident.dedup_key == key, Incident.status == IncidentStatus.RESOLVED,
            Incident.resolved_at >= at - timedelta(seconds=config.reopen_window_s),
        ).order_by(Incident.id.desc())).first()
        if recent_closed is not None and (silence := _silenced(session, f, at)) is not None:
            # a maintenance window's expected effects (NotReady, a vanished GPU) never reopen and page
            record.incident_id = recent_closed.id
            add_timeline(session, recent_closed, kind="silenced", now=at,
                         message=f"{f.kind} during {silence.kind} {silence.id} ({silence.reason}): not reopened",
                         data={"finding_kind": f.kind, "silence_id": silence.id})
            result.suppressed.append(recent_closed.id)
            continue
        held = recent_closed if recent_closed is not None else _resolved_on_gpu(session, f, at, config)
        if held is not None and _held_out(session, f.hostname):
            # The resolved incident's node is out of service on gpuops' lease (on probation, or kept out for
            # repair): the broken GPU goes on reporting, as expected (the same symptom, or the same part's next
            # one: an SBE storm's GPU failing row remapping), and nothing runs on it. The finding is kept with
            # the incident (probation's checks read it), but it neither reopens it nor opens another to plan the
            # same cordon, drain and ticket again.
            record.incident_id = held.id
            held.occurrences += 1
            if held is not recent_closed:
                add_timeline(session, held, kind="expected_effect", now=at,
                             message=f"{f.kind} on {f.hostname} GPU {f.gpu}, which is out of service with this "
                                     "incident: the same part's next symptom, kept here", data={"kind": f.kind})
            result.attributed += 1
            continue
        if recent_closed is not None:
            transition(session, recent_closed, IncidentStatus.OPEN, reason=f"{f.kind} recurred after resolution",
                       actor="incidents", now=at)
            recent_closed.details = {**recent_closed.details,
                                     "round": int(recent_closed.details.get("round", 0)) + 1}
            _merge(session, recent_closed, f, record, at)
            result.reopened.append(recent_closed.id)
            continue
        incident = Incident(dedup_key=key, scope="gpu" if f.gpu is not None else "node", family=f.kind,
                            hostname=f.hostname, gpu=f.gpu, severity=f.severity, title=_title(f),
                            summary="", opened_at=at, updated_at=at,
                            details={"uuid": f.uuid, **({"deployment": f.evidence["deployment"]}
                                                        if "deployment" in f.evidence else {}),
                                     **({"job": job} if f.kind in EPISODE_KINDS and (job := _job_of(f.evidence))
                                        else {})})
        session.add(incident)
        session.flush()
        record.incident_id = incident.id
        add_timeline(session, incident, kind="opened", message=f"opened by {f.detector}: {f.kind}", now=at,
                     data={"evidence": f.evidence, "score": f.score})
        append_event(session, actor="incidents", kind="incident.opened", incident_id=incident.id,
                     data={"key": key, "severity": f.severity, "detector": f.detector}, ts=at)
        silence = _silenced(session, f, at)
        if silence is not None:
            transition(session, incident, IncidentStatus.SUPPRESSED,
                       reason=f"{silence.kind} {silence.id}: {silence.reason}", actor="incidents", now=at)
            result.suppressed.append(incident.id)
        else:
            result.opened.append(incident.id)
        with log_context(incident_id=incident.id):
            log.info("incident opened", extra={"key": key, "severity": f.severity, "status": incident.status})
    at_end = now or (_dt(batch[-1].ts) if batch else clock.now())
    for family in sorted(families):
        fleet_id = correlate_fleet(session, family=family, fleet_nodes=fleet_nodes, config=config, now=at_end)
        if fleet_id is not None:
            result.fleet.append(fleet_id)
    return result


def _absorbs(incident: Incident, f: Finding) -> bool:
    """Whether an active incident on the finding's node takes the finding in. One handed to a human (escalated)
    keeps what it was escalated for: a hard fault there explains the node's other symptoms, but the escalation of
    a soft one (a deployment that cannot scale out, a straggler the budget left in place) says nothing about a new
    fault of another family on that node, which gets its own incident and its own remedy instead of waiting,
    unseen, in a queue that was about something else."""
    if incident.status != IncidentStatus.ESCALATED or incident.family == f.kind:
        return True
    return is_hard(incident.family, incident.severity)


def _resolved_on_gpu(session: Session, f: Finding, at: datetime, config: IncidentConfig) -> Incident | None:
    """The latest incident on the finding's GPU resolved within the reopen window, of any family (None for a
    node-level finding)."""
    if f.gpu is None:
        return None
    return session.scalars(select(Incident).where(
        Incident.hostname == f.hostname, Incident.gpu == f.gpu, Incident.status == IncidentStatus.RESOLVED,
        Incident.resolved_at >= at - timedelta(seconds=config.reopen_window_s),
    ).order_by(Incident.id.desc())).first()


def _held_out(session: Session, hostname: str | None) -> bool:
    """Whether gpuops holds the node out of service (an active lease: remediating, on probation or kept out)."""
    return hostname is not None and session.scalar(select(NodeLease.id).where(
        NodeLease.hostname == hostname, NodeLease.released_at.is_(None)).limit(1)) is not None


def _withheld_by(session: Session, f: Finding, known: dict[str, HeldBack]) -> Incident | None:
    """The incident whose node returned to service without the finding's GPU (withheld by the device plugin, on
    an open hardware ticket, for however long the repair takes), if it is such a GPU and no pod holds it now; or
    without the finding's InfiniBand port (the node serving under a taint only work that never crosses it, since
    its probation or from the start).
    `known` keeps each node's withheld GPUs and ports once read."""
    if f.hostname is None:
        return None
    if f.hostname not in known:
        known[f.hostname] = held_back(session, f.hostname)
    if f.gpu is None:
        ports = known[f.hostname].port_incidents() if f.kind == "fabric" else {}
        incident_id = ports.get(str(f.evidence.get("device")))
        return session.get(Incident, incident_id) if incident_id is not None else None
    returned = known[f.hostname].gpus.get(f.gpu)
    if returned is None:
        return None
    if f.evidence.get("pod_now") and (returned.finished_at is None or _dt(f.ts) >= returned.finished_at):
        # a pod holds the GPU since the node returned without it: the device plugin gives it out again (it
        # restarted, and offers every GPU it finds), so its fault is no longer kept away from work
        return None
    return session.get(Incident, returned.incident_id)


def _fleet_event(session: Session, f: Finding, at: datetime, config: IncidentConfig) -> Incident | None:
    """The fleet incident of `f`'s family still being reported, which `f` belongs to when it stands on its own: a
    fleet-wide event that goes on longer than the correlation window stays one incident, its scope growing."""
    if not (_is_hard(f) or is_corroborated(f.evidence)):
        return None
    return session.scalars(select(Incident).where(
        Incident.dedup_key == f"fleet//{f.kind}", Incident.status.in_(IncidentStatus.ACTIVE),
        Incident.updated_at >= at - timedelta(seconds=config.flap_window_s))).first()


def _join_fleet(session: Session, fleet: Incident, f: Finding, record: FindingRecord, now: datetime) -> None:
    record.incident_id = fleet.id
    fleet.occurrences += 1
    fleet.updated_at = now
    hosts = list(fleet.details.get("hosts", []))
    if f.hostname not in hosts:
        fleet.details = {**fleet.details, "hosts": sorted([*hosts, f.hostname])}
        add_timeline(session, fleet, kind="scope", message=f"{f.hostname} joins the fleet-wide {f.kind} event",
                     now=now, data={"hostname": f.hostname, "gpu": f.gpu})


def _own_action(session: Session, f: Finding, at: datetime) -> Action | None:
    """gpuops' own recent action whose expected effect `f` is: on the node (or GPU) the action touched, or on the
    job whose incident the action served. Facts the action cannot cause (an XID, an ECC error) are never its."""
    since = at - timedelta(seconds=OWN_EFFECT_WINDOW_S)
    job = _job_of(f.evidence)
    recent = session.scalars(select(Action).where(
        Action.runbook.in_(OWN_EFFECTS), Action.status.in_(ActionStatus.EXECUTED), Action.executed_at >= since,
        Action.executed_at <= at).order_by(Action.executed_at.desc()))
    for action in recent:
        if f.kind not in OWN_EFFECTS[action.runbook]:
            continue
        keys = {str(t) for t in action.targets or []}
        on_target = f"node/{f.hostname}" in keys or (f.gpu is not None and f"gpu/{f.hostname}/{f.gpu}" in keys) \
            or (f.gpu is None and any(k.startswith(f"gpu/{f.hostname}/") for k in keys))
        if on_target:
            return action
        if job is not None and (action.incident.details or {}).get("job") == job:
            return action
    return None


def _attribute(session: Session, action: Action, f: Finding, record: FindingRecord, now: datetime) -> None:
    """File `f` under the incident `action` served, as that action's expected effect: counted on the incident,
    with one timeline line per kind of effect (not one per finding)."""
    incident = action.incident
    record.incident_id = incident.id
    effects = dict((incident.details or {}).get("expected_effects") or {})
    first = f.kind not in effects
    effects[str(f.kind)] = int(effects.get(str(f.kind), 0)) + 1
    incident.details = {**(incident.details or {}), "expected_effects": effects}
    if first:
        add_timeline(session, incident, kind="expected_effect", now=now,
                     message=f"{f.kind} on {f.hostname}{'' if f.gpu is None else f' GPU {f.gpu}'} is the expected "
                             f"effect of gpuops' {action.runbook} (action {action.id}); no new incident",
                     data={"finding_kind": f.kind, "action_id": action.id, "gpu": f.gpu})


def _job_of(evidence: object) -> str | None:
    job = evidence.get("job") if isinstance(evidence, dict) else None
    return job if isinstance(job, str) and job else None


def _job_hard_incident(session: Session, f: Finding, since: datetime, job_hosts: dict[str, set[str]],
                       hosts_since: datetime | None = None) -> Incident | None:
    """A soft finding on a GPU of a job that lost a GPU or a node (a hard incident, or one a critical finding
    such as XID 79 opened, on a host the job ran on)
    is that incident's consequence: the job's other GPUs idle or restart elsewhere, also just after gpuops
    drained the failed node and resolved the incident (within `since`). Merge it there.
    `job_hosts` caches, for one batch, the hosts each job had findings on since `hosts_since` (default `since`):
    a job stalls as long as its failure stays unresolved, so a failure that opened since then still explains
    it. An older one mostly does not: a job that hangs hours after an ECC error gpuops escalated has a trouble
    of its own. But a failure that stops a job for as long as it lasts (a link down, a lost GPU, a node not
    Ready: `STALLS_JOBS`), still unresolved on a node the job still reports from, explains the stall whatever its
    age: restarting the job would only bring it back onto the same failure."""
    job = _job_of(f.evidence)
    if job is None:
        return None
    if not job_hosts:
        job_hosts[""] = set()  # loaded marker
        for host, evidence in session.execute(select(FindingRecord.hostname, FindingRecord.evidence).where(
                FindingRecord.ts >= (hosts_since or since))):
            if (known := _job_of(evidence)) is not None:
                job_hosts.setdefault(known, set()).add(host)
    hosts = job_hosts.setdefault(job, set())
    hosts.add(f.hostname)
    if _is_hard(f) or f.kind not in JOB_CONSEQUENCES:
        return None
    return session.scalars(select(Incident).where(
        Incident.hostname.in_(hosts), Incident.scope != "fleet",
        or_(Incident.status.in_(IncidentStatus.ACTIVE) & (Incident.opened_at >= (hosts_since or since)),
            Incident.status.in_(IncidentStatus.ACTIVE) & Incident.family.in_(STALLS_JOBS),
            Incident.resolved_at >= since),
        or_(Incident.family.in_(HARD_KINDS), Incident.severity == Severity.CRITICAL)).order_by(Incident.id)).first()


Records = list[tuple[str | None, dict[str, object]]]


def _not_consequences(session: Session, family: str, records: Records) -> Records:
    """A job stall's findings less those a fleet-wide event of another family explains: the jobs with a GPU on
    one of its nodes (a leaf switch down hangs every job across it). They are that event's consequence; counted
    here, they would open a second fleet incident for the same event."""
    covered: set[str] = set()
    for fleet in session.scalars(select(Incident).where(Incident.scope == "fleet", Incident.family != family,
                                                        Incident.status.in_(IncidentStatus.ACTIVE))):
        covered |= set((fleet.details or {}).get("hosts", []))
    if not covered:
        return records
    jobs = {job for host, evidence in records if host in covered and (job := _job_of(evidence))}
    return [(host, evidence) for host, evidence in records
            if host not in covered and _job_of(evidence) not in jobs]


def _job_fleet_incident(session: Session, f: Finding, job_hosts: dict[str, set[str]]) -> Incident | None:
    """The fleet-wide event (a leaf switch, a power event) holding one of the nodes of the job a soft finding's
    job stall or slowdown belongs to: the stall is that event's consequence, not an incident of its own.
    `job_hosts` is the batch's cache that `_job_hard_incident` filled."""
    job = _job_of(f.evidence)
    if job is None or _is_hard(f) or f.kind not in JOB_CONSEQUENCES:
        return None
    hosts = job_hosts.get(job, set())
    fleets = session.scalars(select(Incident).where(Incident.scope == "fleet",
                                                    Incident.status.in_(IncidentStatus.ACTIVE)).order_by(Incident.id))
    return next((i for i in fleets if hosts & set((i.details or {}).get("hosts", []))), None)


def _fold_consequence(session: Session, fleet: Incident, f: Finding, record: FindingRecord, now: datetime) -> None:
    """File a job's stall under the fleet incident that explains it, with one timeline line per job."""
    record.incident_id = fleet.id
    fleet.occurrences += 1
    fleet.updated_at = now
    job = _job_of(f.evidence) or ""
    jobs = dict((fleet.details or {}).get("job_consequences") or {})
    first = job not in jobs
    jobs[job] = int(jobs.get(job, 0)) + 1
    fleet.details = {**(fleet.details or {}), "job_consequences": jobs}
    if first:
        add_timeline(session, fleet, kind="job_consequence", now=now,
                     message=f"{f.kind} of job {job} on {f.hostname} is a consequence of this fleet-wide event; no "
                             "incident of its own", data={"job": job, "finding_kind": f.kind})


def _job_episode_incident(session: Session, f: Finding, since: datetime) -> Incident | None:
    """The open incident of the same episode kind for the same job, still being reported since `since`: a hung
    or straggling job is one incident however many of its nodes show it. An episode days ago that a human
    still holds is another episode."""
    job = _job_of(f.evidence)
    if f.kind not in EPISODE_KINDS or job is None:
        return None
    candidates = session.scalars(select(Incident).where(
        Incident.family == f.kind, Incident.status.in_(IncidentStatus.ACTIVE), Incident.scope != "fleet",
        Incident.updated_at >= since).order_by(Incident.id))
    return next((i for i in candidates if (i.details or {}).get("job") == job), None)


def correlate_fleet(session: Session, *, family: str, fleet_nodes: int, config: IncidentConfig,
                    now: datetime) -> int | None:
    """When `family` hit many nodes within the window, fold their incidents into one escalated fleet incident.
    Node incidents folded in are suppressed, so no node action is proposed for them."""
    since = now - timedelta(seconds=config.fleet_window_s)
    # Only what stands on its own counts towards a fleet event: facts, and suspicions a second signal agrees with.
    # A finding of a hard kind that says no second signal confirms it (a whole node's exporter falling silent, a
    # node NotReady after someone cordoned it) is a suspicion: scrape gaps on many nodes are no fleet event.
    records = [(host, evidence) for host, evidence in session.execute(
        select(FindingRecord.hostname, FindingRecord.evidence).where(
            FindingRecord.kind == family, FindingRecord.ts >= since))
        if is_corroborated(evidence)]
    silenced = _silenced_hosts(session, family, now)
    records = [(host, evidence) for host, evidence in records if host not in silenced]
    if family in JOB_CONSEQUENCES:
        records = _not_consequences(session, family, records)
    hosts = {host for host, _ in records}
    # one job's own trouble over many nodes is one source, not many: a hung multi-node job is not a fleet event.
    # A hardware or driver signal is each node's own, whatever job the GPU ran (a rollout hits one job's nodes).
    by_job = family in JOB_CONSEQUENCES | EPISODE_KINDS
    sources = {(_job_of(evidence) if by_job else None) or f"host:{host}" for host, evidence in records}
    threshold = max(config.fleet_min_nodes, int(config.fleet_fraction * fleet_nodes + 0.9999))
    if len(hosts) < threshold or len(sources) < threshold:
        return None
    key = f"fleet//{family}"
    fleet = session.scalars(select(Incident).where(Incident.dedup_key == key,
                                                   Incident.status.in_(IncidentStatus.ACTIVE))).first()
    if fleet is None:
        fleet = Incident(dedup_key=key, scope="fleet", family=family, hostname=None, gpu=None,
                         severity=Severity.CRITICAL,
                         title=f"Fleet-wide {family.replace('_', ' ')} on {len(hosts)} of {fleet_nodes} nodes",
                         summary="Many nodes at once points to a common cause (a driver or firmware rollout, "
                                 "a network or power event). No node is drained automatically; a human decides.",
                         opened_at=now, updated_at=now, details={"hosts": sorted(hosts)})
        session.add(fleet)
        session.flush()
        add_timeline(session, fleet, kind="opened", message=f"{len(hosts)} nodes reported {family} within "
                     f"{config.fleet_window_s:.0f}s (threshold {threshold})", now=now, data={"hosts": sorted(hosts)})
        append_event(session, actor="incidents", kind="incident.fleet_opened", incident_id=fleet.id,
                     data={"family": family, "hosts": sorted(hosts)}, ts=now)
        transition(session, fleet, IncidentStatus.ESCALATED,
                   reason="fleet-wide event: escalated to a human, no node actions", actor="incidents", now=now)
    else:
        fleet.details = {**fleet.details, "hosts": sorted(set(fleet.details.get("hosts", [])) | hosts)}
        fleet.updated_at = now
    children = session.scalars(select(Incident).where(
        Incident.family == family, Incident.scope != "fleet", Incident.status.in_(UNTOUCHED),
        Incident.hostname.in_(hosts))).all()
    for child in children:
        child.parent_id = fleet.id
        transition(session, child, IncidentStatus.SUPPRESSED, reason=f"folded into fleet incident {fleet.id}",
                   actor="incidents", now=now)
    return fleet.id
