"""Links from the dashboard to other places: an incident's time range in Grafana, a runbook's documentation page.

Pure functions of settings and an incident, so a template, a view, a Slack message or a notification can
build the same link."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Protocol
from urllib.parse import quote, urlencode

from domain import clock
from gpuops.config import Settings


class IncidentTimes(Protocol):
    """What a Grafana link needs of an incident (the store's Incident row has it)."""

    @property
    def opened_at(self) -> datetime: ...

    @property
    def resolved_at(self) -> datetime | None: ...

    @property
    def hostname(self) -> str | None: ...

    @property
    def gpu(self) -> int | None: ...


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def grafana_url(settings: Settings, incident: IncidentTimes, *, now: datetime | None = None) -> str | None:
    """The configured Grafana dashboard over the incident's time range (opened until resolved, or until now
    while it is open) with GPUOPS_GRAFANA_MARGIN_SECONDS either side, narrowed to its node and GPU through the
    dashboard's `node` and `gpu` variables; None when GPUOPS_GRAFANA_URL is unset."""
    if not settings.grafana_url:
        return None
    margin = timedelta(seconds=settings.grafana_margin_seconds)
    end = incident.resolved_at or now or clock.now()
    end = max(end, incident.opened_at)
    params: list[tuple[str, str]] = [
        ("from", str(_ms(incident.opened_at - margin))),
        ("to", str(_ms(end + margin))),
    ]
    if incident.hostname:
        params.append(("var-node", incident.hostname))
    if incident.gpu is not None:
        params.append(("var-gpu", str(incident.gpu)))
    uid = quote(settings.grafana_dashboard_uid, safe="")
    return f"{settings.grafana_url}/d/{uid}?{urlencode(params)}"


def runbook_doc_url(runbook_name: str) -> str:
    """The dashboard's documentation page of a runbook (served by entrypoints.web.runbook_docs)."""
    return f"/runbooks/{quote(runbook_name, safe='')}"
