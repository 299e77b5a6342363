"""What the incident page shows on top of the incident's view: the cause in a sentence, the blast radius of the
whole plan, every step of the plan at once, the charts from the evidence kept with the incident, human text in
place of machine text, a timeline whose repeats are folded, and links to Grafana and the runbooks' pages."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from entrypoints.web.humanize import (
    collapse,
    drop_echoes,
    duration,
    humane,
    mapping_text,
    when,
    words,
)
from entrypoints.web.incident_charts import IncidentCharts, incident_charts
from entrypoints.web.incident_plan import PlanInputs, plan_view
from entrypoints.web.links import grafana_url, runbook_doc_url
from gpuops.incidents.evidence import first_workload, snapshots
from gpuops.store.models import FindingRecord, Incident
from gpuops.wiring import Container
from runbooks.blast import JobImpact, Workload, fault_hit

MAX_CAUSE_FACTS = 6
FAMILY_WORDS = {
    "gpu_lost": "stopped answering (fell off the bus)", "xid": "the driver reported an error",
    "ecc": "memory errors (ECC)", "row_remap": "memory rows running out of spares", "thermal": "running hot",
    "nvlink": "NVLink errors", "pcie": "PCIe errors", "power": "power or clock anomaly",
    "straggler": "slower than its peers", "hung_job": "its job stopped making progress",
    "memory_leak": "GPU memory grows without bound", "node_not_ready": "the node is not Ready",
    "overload": "more requests than its replicas serve", "fabric": "a network fabric fault",
    "anomaly": "telemetry unlike its usual",
}


def cause_text(session: Session, incident: Incident, now: datetime) -> dict[str, Any]:
    """The cause in words: the title, where, since when, and the first finding's evidence as facts."""
    where = incident.hostname or "the fleet"
    if incident.gpu is not None:
        where = f"GPU {incident.gpu} of {incident.hostname}"
    first = session.scalars(select(FindingRecord).where(FindingRecord.incident_id == incident.id)
                            .order_by(FindingRecord.ts).limit(1)).first()
    facts = []
    if first is not None:
        simple = {k: v for k, v in (first.evidence or {}).items()
                  if isinstance(v, int | float | str | bool) and v != ""}
        facts = [f"{part}" for part in mapping_text(dict(list(simple.items())[:MAX_CAUSE_FACTS]), now).split("; ")
                 if part]
    xid = (first.evidence or {}).get("xid") if first is not None else None
    what = FAMILY_WORDS.get(incident.family, words(incident.family))
    if isinstance(xid, int | float) and xid:
        what += f", XID {xid:.0f}"
    return {"headline": humane(incident.title, now), "where": where, "what": what,
            "since": when(incident.opened_at, now),
            "summary": humane(incident.summary or "", now), "facts": facts,
            "detector": first.detector if first is not None else ""}


def blast_words(blast: dict[str, Any] | None) -> dict[str, Any] | None:
    """The plan's blast radius as lines a person reads at a glance."""
    if not blast:
        return None
    jobs = []
    for job in blast["jobs"]:
        spread = (f"{job['gpus_total']} GPUs on {len(job['nodes'])} node{'s' if len(job['nodes']) != 1 else ''}"
                  if job["nodes"] else f"{job['gpus_total']} GPUs")
        restore = ("restarts from its checkpoint" if job["checkpoints"] else
                   "has no checkpoint gpuops can ask for: work since its last one is lost")
        owner = f" ({job['owner'].replace('/', ' ')})" if job["owner"] else ""
        jobs.append({"job": job["job"], "owner": owner, "spread": spread, "gpus_here": job["gpus_here"],
                     "pods_here": job["pods_here"], "restore": restore,
                     "hours": job["gpu_hours_at_risk"],
                     "how": f"{job['gpus_total']} GPUs × {duration(job['restore_s'])}"})
    out = blast["gpus_out"]
    outage = (f"{out} GPUs of {blast['node']} out of service for about {duration(blast['outage_s'])}"
              if blast["outage_s"] > 0 else
              f"{out} GPUs of {blast['node']} taken out of scheduling" if out else "no GPU taken out of service")
    how = [j["how"] + f" ({j['job']})" for j in jobs]
    if blast["outage_gpu_hours"]:
        how.append(f"{out} GPUs × {duration(blast['outage_s'])} (the node away)")
    return {"jobs": jobs, "outage": outage, "pods": blast["pods_stopped"], "hours": blast["gpu_hours_at_risk"],
            "how": " + ".join(how) if how else "nothing stops", "unschedulable_only": blast["unschedulable_only"]}


def _hit_words(job: JobImpact) -> dict[str, Any]:
    """A job the fault already stopped, in words."""
    pods = ", ".join(p.partition("/")[2] for p in job.pods_here)
    where = (f"{job.gpus_total} GPUs on {', '.join(job.nodes)} now" if job.nodes else
             "no pod of it runs anywhere now")
    restore = ("restarts from its checkpoint" if job.checkpoints else
               "has no checkpoint gpuops can ask for: work since its last one is lost")
    return {"job": job.job, "owner": f" ({job.owner.replace('/', ' ')})" if job.owner else "", "pods": pods,
            "where": where, "restore": restore, "hours": job.gpu_hours_at_risk,
            "how": f"{job.gpus_total} GPUs × {duration(job.restore_s)}"}


def _step_words(step: dict[str, Any], now: datetime) -> dict[str, Any]:
    blast = step.get("blast")
    if blast is None:
        cost = "unknown: no workload was recorded for the node"
    elif blast["unschedulable_only"]:
        cost = f"{blast['gpus_out']} GPUs out of scheduling; running pods keep running"
    elif blast["pods_stopped"] or blast["gpus_out"]:
        jobs = ", ".join(j["job"] for j in blast["jobs"]) or "no job"
        stops = f"stops {len(blast['pods_stopped'])} pod(s) of {jobs}" if blast["pods_stopped"] else \
            "stops no running pod"
        away = f"; {blast['gpus_out']} GPUs away ~{duration(blast['outage_s'])}" if blast["outage_s"] else ""
        cost = f"{stops}{away}; {blast['gpu_hours_at_risk']:.1f} GPU-hours at risk"
    else:
        cost = "stops no pod"
    needed = int(step["approvals_required"])
    approvals = "none (policy approves it)" if needed == 0 else f"{needed} approver{'s' if needed > 1 else ''}"
    return {**step, "cost": cost, "params_text": mapping_text(step["params"], now),
            "doc_url": runbook_doc_url(step["runbook"]), "status_words": step["status"].replace("_", " "),
            "approvals_words": approvals}


def incident_page_context(container: Container, session: Session, incident: Incident, view: dict[str, Any],
                  now: datetime) -> dict[str, Any]:
    """The template's context beyond the incident's view."""
    evidence = snapshots(session, incident.id)
    workload: Workload | None = first_workload(evidence)
    hit = [_hit_words(j) for j in fault_hit(workload, container.runbook_settings)] if workload is not None else []
    plan = plan_view(incident, PlanInputs(container.catalogue, container.policy, container.runbook_settings),
                     workload)
    charts: IncidentCharts = incident_charts(container, incident, now, evidence)
    for action in view["actions"]:
        action["params_text"] = mapping_text(action["parameters"], now)
        action["doc_url"] = runbook_doc_url(action["runbook"])
        action["verdict_words"] = [humane(str(r), now) for r in (action.get("verdict") or {}).get("reasons") or []]
        for decision in action["decisions"]:
            decision["when"] = when(decision["decided_at"], now)
    for entry in view["timeline"]:
        entry["message"] = humane(entry["message"], now)
    return {
        "cause": cause_text(session, incident, now),
        "blast": blast_words(plan["blast"]), "hit": hit,
        "workload_at": when(evidence[0].taken_at, now) if workload is not None else "",
        "plan": {**plan, "steps": [_step_words(s, now) for s in plan["steps"]]},
        "charts": charts,
        "timeline": collapse(drop_echoes(view["timeline"]), now),
        "grafana_url": grafana_url(container.settings, incident, now=now),
        "opened": when(incident.opened_at, now), "updated": when(incident.updated_at, now),
        "resolved": when(incident.resolved_at, now),
        "rationale": [humane(r, now) for r in view["rationale"]],
    }
