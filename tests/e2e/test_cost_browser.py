"""The Cost page in a real browser (Debian's Chromium through Playwright, real uvicorn and PostgreSQL), with the
store filled by detection cycles and a cordon executed against the Kubernetes twin: reached from the nav, its
charts drawn with their values readable, nothing wider than a laptop's screen. Screenshot in test-artifacts/e2e/."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright import sync_api as playwright_api

from connectors.telemetry import InMemoryTelemetry
from domain import clock
from tests.e2e.test_dashboard_browser import browser, new_page, shot
from tests.integration.test_cost_view import STEP, WINDOW, cordoned_for_two_hours, fleet, run_cycles
from tests.runbook_twin import Twin
from tests.web_server import serve, web_container

pytestmark = [pytest.mark.postgres]
expect = playwright_api.expect
__all__ = ["browser"]  # the module-scoped Chromium fixture


@pytest.fixture
def twin() -> Iterator[Twin]:
    twin = Twin().start()
    for i in range(1, 11):
        twin.state.add_node(f"gpu-node-{i:03d}", 4)
    try:
        yield twin
    finally:
        twin.stop()


def test_the_cost_page_reads_on_a_laptop_screen(browser: object, postgres_url: str, twin: Twin) -> None:
    frame, _ = fleet(with_gap=False)
    container = web_container(postgres_url, step_seconds=STEP, window_seconds=WINDOW, gpu_hour_price=2.5)
    container._telemetry = InMemoryTelemetry(frame)
    try:
        with clock.using(twin.clock):
            run_cycles(container)
            cordoned_for_two_hours(container, twin)
            with serve(container) as web:
                page = new_page(browser, web, "vera")
                page.set_viewport_size({"width": 1366, "height": 768})
                page.click("nav >> text=Cost")
                expect(page).to_have_url(f"{web.url}/cost")
                expect(page.locator("svg.bar-chart")).to_have_count(5)
                expect(page.locator("#idle-cost-per-hour")).to_have_text("$5.00")
                values = page.locator("#losses svg.bar-chart .bar-value").all_text_contents()
                assert values.count("8.0") == 3  # per incident, per runbook, per week
                box = page.locator("#deployments svg.bar-chart").bounding_box()
                assert box is not None and box["width"] <= 760
                assert page.evaluate("document.documentElement.scrollWidth") <= 1366
                shot(page, "cost")
    finally:
        container.close()
