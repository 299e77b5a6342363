"""The dashboard in a real browser: Debian's Chromium, headless and kept off the network, driven by Playwright,
against uvicorn on a free port and the real PostgreSQL store. Screenshots land in test-artifacts/e2e/."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright import sync_api as playwright_api
from sqlalchemy import text

from gpuops.store.audit import append_event
from gpuops.store.models import Incident
from tests.conftest import REPO_ROOT
from tests.web_server import PASSWORDS, WebServer, action_state, seed_awaiting, serve_on

CHROMIUM = os.environ.get("GPUOPS_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = REPO_ROOT / "test-artifacts" / "e2e"
# Headless, and nothing leaves the machine: every host but the loopback fails to resolve.
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-default-apps",
    "--disable-extensions", "--disable-domain-reliability", "--disable-client-side-phishing-detection",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]

pytestmark = [pytest.mark.postgres]
expect = playwright_api.expect


def require_chromium() -> None:
    """`make test` installs Debian's Chromium, so its absence fails the browser tests instead of skipping them."""
    if shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: run `make test` (ensure-services installs it)")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    require_chromium()
    with playwright_api.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def web(postgres_url: str) -> Iterator[WebServer]:
    with serve_on(postgres_url) as server:
        yield server


def new_page(browser: object, web: WebServer, name: str) -> playwright_api.Page:
    context = browser.new_context(base_url=web.url)  # type: ignore[attr-defined]
    context.set_default_timeout(10_000)
    page: playwright_api.Page = context.new_page()
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", PASSWORDS[name])
    page.click("button[type=submit]")
    expect(page.locator("#signed-in-as")).to_have_text(name)
    return page


def shot(page: playwright_api.Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_sign_in_then_a_new_incident_appears_without_reload(browser: object, web: WebServer) -> None:
    page = new_page(browser, web, "april")
    expect(page.locator("#live-status.on")).to_be_visible()
    page.evaluate("window.__notReloaded = true")
    now = datetime.now(tz=UTC)
    with web.container.uow() as uow:
        uow.session.add(Incident(dedup_key="gpu-node-009/1/thermal", scope="gpu", family="thermal",
                                 hostname="gpu-node-009", gpu=1, severity="warning", status="open",
                                 title="GPU 1 running hot", opened_at=now, updated_at=now))
        uow.commit()
    expect(page.locator("#incidents tr", has_text="GPU 1 running hot")).to_be_visible()
    assert page.evaluate("window.__notReloaded") is True
    shot(page, "incident-appears-live")


def test_approve_with_a_reason_and_watchers_see_the_status_change_live(browser: object, web: WebServer) -> None:
    incident_id, action_id, _ = seed_awaiting(web.container, title="ECC double-bit errors on GPU 2")
    watcher = new_page(browser, web, "vera")
    watcher.goto(f"/incidents/{incident_id}")
    expect(watcher.locator(f"#action-{action_id} [data-action-status]")).to_have_text("awaiting_approval")
    expect(watcher.locator("#live-status.on")).to_be_visible()
    watcher.evaluate("window.__notReloaded = true")

    page = new_page(browser, web, "april")
    page.click("a:has-text('ECC double-bit errors on GPU 2')")
    expect(page.locator("h1")).to_contain_text("ECC double-bit errors on GPU 2")
    card = page.locator(f"#action-{action_id}")
    expect(card).to_contain_text("drain_node")
    expect(card.locator(".approvals")).to_have_text("0/1")
    expect(card).to_contain_text("4.5 GPU-hours at risk")
    shot(page, "awaiting-approval")
    card.locator("textarea[name=reason]").fill("DBEs confirmed on GPU 2; the job checkpointed")
    card.locator("button.approve").click()

    expect(page.locator("#flash")).to_contain_text("approved by april")
    expect(page.locator(f"#action-{action_id} [data-action-status]")).to_have_text("approved")
    expect(page.locator(f"#action-{action_id} .decided-by")).to_have_text("april")
    shot(page, "approved")
    assert action_state(web.container, action_id)[:2] == ("approved", [("april", "dashboard", "approve")])

    expect(watcher.locator(f"#action-{action_id} [data-action-status]")).to_have_text("approved")
    expect(watcher.locator(f"#action-{action_id} .decided-by")).to_have_text("april")
    assert watcher.evaluate("window.__notReloaded") is True
    shot(watcher, "approved-seen-live")


def test_a_viewer_sees_no_approve_button_and_a_forged_post_is_refused(browser: object, web: WebServer) -> None:
    incident_id, action_id, plan_hash = seed_awaiting(web.container)
    page = new_page(browser, web, "vera")
    page.goto(f"/incidents/{incident_id}")
    expect(page.locator(f"#action-{action_id}")).to_contain_text("cannot decide")
    expect(page.locator("button.approve")).to_have_count(0)
    shot(page, "viewer-no-approve")
    statuses = page.evaluate("""async ([url, hash]) => {
        const post = async (body) => (await fetch(url, {method: "POST", body: new URLSearchParams(body),
                                                        redirect: "manual"})).status;
        const token = document.cookie;  // HttpOnly: the session (and its token) is out of a script's reach
        return [await post({decision: "approve", plan_hash: hash, reason: "forged"}),
                await post({decision: "approve", plan_hash: hash, reason: "forged", csrf_token: "guess"}),
                token];
    }""", [f"/incidents/{incident_id}/actions/{action_id}/decision", plan_hash])
    assert statuses == [403, 403, ""]
    assert action_state(web.container, action_id)[:2] == ("awaiting_approval", [])


def test_the_audit_page_shows_the_chain_ok_then_broken_after_tampering(browser: object, web: WebServer) -> None:
    with web.container.uow() as uow:
        for n in range(3):
            append_event(uow.session, actor="e2e", kind="test.event", data={"n": n})
        uow.commit()
    page = new_page(browser, web, "adam")
    page.click("nav a:has-text('Audit')")
    expect(page.locator("#chain-status")).to_contain_text("Chain OK: 3 event(s) verified")
    shot(page, "audit-ok")
    with web.container.engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only"))
        conn.execute(text("UPDATE audit_events SET actor = 'mallory' WHERE seq = 2"))
        conn.execute(text("ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only"))
    page.reload()
    expect(page.locator("#chain-status")).to_contain_text("Chain BROKEN")
    expect(page.locator("#chain-status")).to_contain_text("event 2: event modified")
    shot(page, "audit-broken")
