"""The incident page in a real browser (Debian's Chromium through Playwright, against uvicorn and the real
PostgreSQL store), on the demo's story: within a laptop's first screen the cause, the whole plan's blast radius and
every step of the plan; on a phone nothing runs off the side; dark mode follows the system. Screenshots land in
the test's temporary folder."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from playwright import sync_api as playwright_api

from connectors.telemetry.fake import InMemoryTelemetry
from gpuops.incidents.evidence import EvidenceSources, keep_evidence
from runbooks.settings import RunbookSettings
from tests.e2e.test_dashboard_browser import browser
from tests.incident_story import OPENED, seed_story, story_frame, training_twin
from tests.runbook_twin import connect
from tests.web_server import PASSWORDS, WebServer, serve, web_container

pytestmark = [pytest.mark.postgres]
expect = playwright_api.expect
__all__ = ["browser"]  # the module-scoped Chromium fixture
LAPTOP = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def story(postgres_url: str) -> Iterator[tuple[WebServer, int]]:
    """The dashboard over an incident whose evidence was kept when it opened (through the real Kubernetes client
    against the twin's API); the dashboard itself has no telemetry source, so its charts come from the store."""
    container = web_container(postgres_url)
    twin = training_twin()
    cluster = connect(twin)
    try:
        incident_id, _ = seed_story(container, OPENED)
        sources = EvidenceSources(telemetry=InMemoryTelemetry(story_frame(OPENED)), cluster=cluster,
                                  runbook_settings=RunbookSettings(), step_s=15.0)
        with container.uow() as uow:
            keep_evidence(uow.session, incident_id=incident_id, sources=sources, now=OPENED + timedelta(minutes=20))
            uow.commit()
        with serve(container) as server:
            yield server, incident_id
    finally:
        cluster.close()
        twin.stop()
        container.close()


def open_incident(browser: playwright_api.Browser, web: WebServer, incident_id: int, *,
                  viewport: dict[str, int], color_scheme: str = "light") -> playwright_api.Page:
    context = browser.new_context(base_url=web.url, viewport=viewport,  # type: ignore[arg-type]
                                  color_scheme=color_scheme)  # type: ignore[arg-type]
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.goto(f"/incidents/{incident_id}")
    page.fill("input[name=username]", "april")
    page.fill("input[name=password]", PASSWORDS["april"])
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_contain_text("gpu lost on gpu-node-003 GPU 2")
    return page


def within_first_screen(page: playwright_api.Page, selector: str, viewport: dict[str, int]) -> None:
    box = page.locator(selector).bounding_box()
    assert box is not None, f"{selector} is not drawn"
    assert box["x"] >= 0 and box["x"] + box["width"] <= viewport["width"], f"{selector} runs off the side: {box}"
    assert box["y"] >= 0 and box["y"] + box["height"] <= viewport["height"], f"{selector} needs scrolling: {box}"


def test_the_cause_the_blast_radius_and_the_whole_plan_fit_a_laptop_screen(
        browser: playwright_api.Browser, story: tuple[WebServer, int], tmp_path: Path) -> None:
    web, incident_id = story
    page = open_incident(browser, web, incident_id, viewport=LAPTOP)
    page.screenshot(path=str(tmp_path / "incident-laptop.png"))
    page.screenshot(path=str(tmp_path / "incident-laptop-full.png"), full_page=True)
    for selector in ("#cause", "#blast-radius", "#whole-plan"):
        within_first_screen(page, selector, LAPTOP)
    blast = page.locator("#blast-radius")
    expect(blast).to_contain_text("training/pretrain")
    expect(blast).to_contain_text("24 GPUs on 3 nodes, 8 of them here")
    expect(blast).to_contain_text("restarts from its checkpoint")
    expect(blast).to_contain_text("8 GPUs of gpu-node-003 out of service for about 15 min")
    expect(blast).to_contain_text("6.0 GPU-hours at risk")  # 24 GPUs × 10 min + 8 GPUs × 15 min
    steps = page.locator("#whole-plan li.step")
    expect(steps).to_have_count(3)
    expect(steps.nth(0)).to_contain_text("awaiting approval")
    expect(steps.nth(0).locator("a.status")).to_have_attribute("href", re.compile(r"^#action-\d+$"))
    expect(steps.nth(1)).to_contain_text("high risk")
    expect(steps.nth(2)).to_contain_text("Drain and reboot a node")
    expect(steps.nth(2)).to_contain_text("needs 2 approvers")
    expect(steps.nth(2)).to_contain_text("8 GPUs away ~15 min")
    expect(steps.nth(2).locator("a.runbook-doc")).to_have_attribute("href", "/runbooks/reboot_node")
    cause = page.locator("#cause")
    # the story happened on a fixed day: the page names the day once that is not today
    expect(cause).to_contain_text(re.compile(r"GPU 2 of gpu-node-003: stopped answering \(fell off the bus\), "
                                             r"XID 79, since (4 Dec )?14:02 UTC"))
    expect(cause).to_contain_text("row in frame: yes")
    expect(page.locator("main")).not_to_contain_text("row_in_frame")
    expect(page.locator("main")).not_to_contain_text("last_seen=")
    # the evidence kept with the incident draws the charts; XID 79 is an event, not a flat line
    expect(page.locator("#charts-source")).to_contain_text("kept with the incident (1 snapshot)")
    expect(page.locator("svg.chart-events")).to_contain_text("XID 79 on GPU 2")
    expect(page.locator("svg.chart[aria-label='GPU temperature (°C)']")).to_have_count(1)
    # the repeated finding is one line
    folded = page.locator("#timeline tr.tl-finding")
    expect(folded).to_have_count(1)
    expect(folded).to_contain_text(re.compile(r"×37, last (\d+ \w{3} )?\d\d:\d\d"))


def test_on_a_phone_nothing_overflows_sideways(browser: playwright_api.Browser, story: tuple[WebServer, int],
                                               tmp_path: Path) -> None:
    web, incident_id = story
    page = open_incident(browser, web, incident_id, viewport=PHONE)
    page.screenshot(path=str(tmp_path / "incident-phone.png"), full_page=True)
    widths = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert widths[0] <= widths[1], f"the page is {widths[0]}px wide on a {widths[1]}px screen"
    within_first_screen(page, "#cause", PHONE)


def test_dark_mode_follows_the_system(browser: playwright_api.Browser, story: tuple[WebServer, int],
                                      tmp_path: Path) -> None:
    web, incident_id = story
    page = open_incident(browser, web, incident_id, viewport=LAPTOP, color_scheme="dark")
    page.screenshot(path=str(tmp_path / "incident-dark.png"))

    def luminance(selector: str, prop: str) -> float:
        rgb = page.evaluate(f"getComputedStyle(document.querySelector('{selector}'))['{prop}']")
        r, g, b = (int(x) for x in re.findall(r"\d+", rgb)[:3])
        return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255

    assert luminance("body", "backgroundColor") < 0.2
    assert luminance("body", "color") > 0.7
    assert luminance("#blast-radius", "backgroundColor") < 0.2
