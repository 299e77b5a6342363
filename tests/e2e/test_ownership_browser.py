"""Incident ownership in a real browser (Debian's Chromium, headless, kept off the network, driven by Playwright)
against uvicorn and the real PostgreSQL store, with the real agent graph, policy and runbooks acting on the
in-memory Kubernetes cluster: a rejected plan, a re-plan without the rejected step, its approval and execution; a
note (shown as text, never markup); an acknowledgement; a maintenance window created from the Silences page.
Screenshots land in test-artifacts/e2e/."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright import sync_api as playwright_api
from sqlalchemy import select

from gpuops.config import Settings
from gpuops.pipeline import Pipeline, ThreadedDispatcher
from gpuops.store import migrate
from gpuops.store.models import Action, Incident, Silence
from gpuops.wiring import bootstrap
from tests.agent.helpers import open_incident
from tests.agent.world import build_context, default_cluster, executed
from tests.e2e.test_dashboard_browser import browser, new_page, shot
from tests.waiting import wait_for
from tests.web_server import SESSION_SECRET, WebServer, serve, users_setting

pytestmark = [pytest.mark.postgres]
expect = playwright_api.expect
__all__ = ["browser"]  # the module-scoped Chromium fixture


@pytest.fixture
def agent_web(postgres_url: str, tmp_path: Path) -> Iterator[tuple[WebServer, Pipeline, Path]]:
    """The dashboard whose decisions resume the real agent on a thread, as `gpuops api` without a broker does."""
    journal = tmp_path / "journal"
    cluster = default_cluster(journal)
    migrate.upgrade(postgres_url)
    container = bootstrap(Settings(database_url=postgres_url, users=users_setting(), session_secret=SESSION_SECRET),
                          cluster=cluster)
    dispatcher = ThreadedDispatcher(time.time)
    pipeline = Pipeline(container, dispatcher,
                        agent_context=lambda c: build_context(c, journal, cluster=cluster))
    dispatcher.bind(pipeline.run)
    try:
        with serve(container, pipeline) as server:
            yield server, pipeline, journal
    finally:
        container.close()


def _actions(web: WebServer, incident_id: int) -> list[tuple[int, str, str]]:
    with web.container.session_factory() as session:
        return [(a.id, a.runbook, a.status) for a in session.scalars(
            select(Action).where(Action.incident_id == incident_id).order_by(Action.id))]


def _status(web: WebServer, incident_id: int) -> str:
    with web.container.session_factory() as session:
        incident = session.get(Incident, incident_id)
        assert incident is not None
        return incident.status


def _waiting(web: WebServer, incident_id: int, runbook: str) -> int:
    """The id of the incident's `runbook` action once the agent proposed it and it waits for approval."""
    def found() -> int | None:
        return next((i for i, name, status in _actions(web, incident_id)
                     if name == runbook and status == "awaiting_approval"), None)

    action_id: int = wait_for(found, timeout=30, interval=0.2, message=f"{runbook} was never proposed")
    return action_id


def test_reject_replan_approve_a_note_an_acknowledgement_and_a_maintenance_window(
        browser: object, agent_web: tuple[WebServer, Pipeline, Path]) -> None:
    web, pipeline, journal = agent_web
    incident_id = open_incident(web.container, "xid", evidence={"xid": 79})
    pipeline.agent_step(incident_id)
    cordon = _waiting(web, incident_id, "cordon_node")

    page = new_page(browser, web, "april")
    page.goto(f"/incidents/{incident_id}")
    card = page.locator(f"#action-{cordon}")
    expect(card).to_contain_text("cordon_node")
    card.locator("textarea[name=reason]").fill("not a cordon: the job checkpoints in 10 minutes")
    card.locator("button.reject").click()
    expect(page.locator("#flash")).to_contain_text("rejected by april")
    wait_for(lambda: _status(web, incident_id) == "escalated", timeout=30, interval=0.2,
             message="the rejection did not escalate the incident")
    page.reload()
    replan = page.locator("#replan-form")
    expect(replan).to_contain_text("cordon_node")
    shot(page, "ownership-rejected")
    replan.locator("textarea[name=reason]").fill("drain once the checkpoint is written")
    replan.locator("button[type=submit]").click()
    expect(page.locator("#flash")).to_contain_text("Re-plan requested by april")

    drain = _waiting(web, incident_id, "drain_node")
    assert [name for _, name, _ in _actions(web, incident_id)].count("cordon_node") == 1  # never proposed again
    page.reload()
    card = page.locator(f"#action-{drain}")
    expect(card).to_contain_text("drain_node")
    card.locator("textarea[name=reason]").fill("checkpoint written; drain it")
    card.locator("button.approve").click()
    expect(page.locator("#flash")).to_contain_text("approved by april")
    wait_for(lambda: dict((i, s) for i, _, s in _actions(web, incident_id))[drain] == "succeeded", timeout=60,
             interval=0.2, message="the approved drain did not run")
    assert "cordon gpu-node-003" in executed(journal) and any(line.startswith("evict train/llm-3-")
                                                               for line in executed(journal))

    page.reload()
    note = page.locator("#note-form")
    note.locator("textarea[name=text]").fill("<b>PSU</b> swapped by the DC team")
    note.locator("button[type=submit]").click()
    expect(page.locator("#flash")).to_contain_text("Note added by april")
    expect(page.locator("#notes .note-text").first).to_have_text("<b>PSU</b> swapped by the DC team")
    expect(page.locator("#notes .note-author").first).to_have_text("april")
    page.locator("#ack-form button").click()
    expect(page.locator("#ownership-ack")).to_contain_text("april")
    shot(page, "ownership-noted-acknowledged")

    page.click("nav a:has-text('Silences')")
    expect(page).to_have_url(re.compile(r"/silences$"))
    form = page.locator("#silence-form")
    form.locator("select[name=kind]").select_option("maintenance")
    form.locator("input[name=hostname]").fill("gpu-node-005")
    form.locator("input[name=duration]").fill("2h")
    form.locator("input[name=reason]").fill("PSU swap in rack 4")
    form.locator("button[type=submit]").click()
    expect(page.locator("#flash")).to_contain_text("Maintenance window")
    row = page.locator("#silences tbody tr", has_text="gpu-node-005")
    expect(row).to_contain_text("active")
    expect(row).to_contain_text("PSU swap in rack 4")
    shot(page, "ownership-maintenance-window")
    with web.container.session_factory() as session:
        window = session.scalars(select(Silence)).one()
    assert (window.kind, window.hostname, window.created_by) == ("maintenance", "gpu-node-005", "april")
