"""`make demo`, for real: `gpuops demo` in its own process (the fleet twin at 10x, the embedded daemon, the
dashboard), driven in Debian's Chromium the way the README tells it: sign in with the printed password, wait
for the incident, approve the cordon, see it executed and verified, and find the node cordoned through the
twin's Kubernetes API. Screenshots land in test-artifacts/demo/ (the README's comes from here)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from playwright import sync_api as playwright_api

from tests.conftest import REPO_ROOT
from tests.e2e.test_dashboard_browser import CHROMIUM, CHROMIUM_ARGS, require_chromium
from tests.waiting import wait_for

ARTIFACTS = REPO_ROOT / "test-artifacts" / "demo"
GPUOPS = Path(sys.executable).with_name("gpuops")

expect = playwright_api.expect


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Demo:
    process: subprocess.Popen[str]
    url: str
    lines: list[str] = field(default_factory=list)

    def wait_for(self, pattern: str, timeout_s: float = 60.0) -> re.Match[str]:
        """The first line the demo printed that matches `pattern`; fails at once if the demo exits without one."""

        def never_printed() -> str:
            return f"the demo never printed {pattern!r}; it printed:\n" + "\n".join(self.lines[-40:])

        def printed() -> re.Match[str] | None:
            exited = self.process.poll() is not None
            for line in list(self.lines):
                if (match := re.search(pattern, line)) is not None:
                    return match
            assert not exited, never_printed()
            return None

        return wait_for(printed, timeout=timeout_s, interval=0.2, message=never_printed)


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GPUOPS_", "SLACK_", "OPENAI_"))}
    process = subprocess.Popen(
        [str(GPUOPS), "demo", "--port", str(port), "--database-url", f"sqlite:///{tmp_path / 'demo.db'}"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    demo = Demo(process, f"http://127.0.0.1:{port}")

    def _read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            demo.lines.append(line.rstrip())

    threading.Thread(target=_read, daemon=True).start()
    try:
        yield demo
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)  # the demo's own log, to read when the story breaks
        (ARTIFACTS / "demo.log").write_text("\n".join(demo.lines) + "\n")


def test_the_demo_story_sign_in_approve_the_cordon_and_see_it_verified(demo: Demo) -> None:
    require_chromium()
    password = demo.wait_for(r"sign in as admin with password (\S+)").group(1)
    # the reboot needs two different approvers: the demo prints a second one, so its story can be finished
    second = demo.wait_for(r"needs a second approver: sign in as oncall with password (\S+)").group(1)
    fleet_url = demo.wait_for(r"at (http://127\.0\.0\.1:\d+), 10x real time").group(1)
    wait_for(lambda: _answers(f"{demo.url}/healthz"), timeout=60, interval=0.2,
             message="the demo's dashboard never answered")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(base_url=demo.url, viewport={"width": 1400, "height": 900}).new_page()
            page.set_default_timeout(20_000)
            page.goto("/")
            page.fill("input[name=username]", "admin")
            page.fill("input[name=password]", password)
            page.click("button[type=submit]")
            # within a minute and a half of wall time a GPU falls off the bus and its plan waits for a human
            row = page.locator("#incidents tr", has_text="gpu lost on gpu-node-003 GPU 2")
            expect(row).to_contain_text("awaiting_approval", timeout=120_000)
            page.screenshot(path=str(ARTIFACTS / "incidents.png"), full_page=True)
            row.locator("a").first.click()
            card = page.locator("[id^=action-]", has_text="cordon_node").first
            expect(card.locator("[data-action-status]")).to_have_text("awaiting_approval")
            page.screenshot(path=str(ARTIFACTS / "awaiting-approval.png"), full_page=True)
            card.locator("textarea[name=reason]").fill("XID 79 on GPU 2: keep new work off the node")
            card.locator("button.approve").click()
            expect(page.locator("#flash")).to_contain_text("approved by admin")
            # executed by the embedded daemon against the twin's Kubernetes API, then verified
            expect(card.locator("[data-action-status]")).to_have_text("succeeded", timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "executed.png"), full_page=True)
            page.screenshot(path=str(ARTIFACTS / "executed-view.png"))
            # the evidence was kept with the incident when it opened (and after the cordon, a moment after it
            # shows succeeded): the job the fault hit, the whole plan with the reboot's two approvers, and charts
            # drawn from the store
            page.reload()
            expect(page.locator("#blast-radius")).to_contain_text("The fault already stopped job training/pretrain-00")
            expect(page.locator("#whole-plan li.step", has_text="Drain and reboot a node")).to_contain_text(
                "needs 2 approvers")
            kept = re.compile(r"kept with the incident \(\d snapshots?\)")
            expect(page.locator("#charts-source")).to_contain_text(kept)
        finally:
            browser.close()
    # the CLI, pointed at the demo's store as the demo says, sees the same incident
    store_url = demo.wait_for(r"from another terminal: GPUOPS_DATABASE_URL='([^']+)' gpuops incidents list").group(1)
    listed = subprocess.run([str(GPUOPS), "incidents", "list"], env={**os.environ, "GPUOPS_DATABASE_URL": store_url},
                            capture_output=True, text=True, timeout=60, cwd="/")
    assert listed.returncode == 0, listed.stderr
    assert "gpu-node-003" in listed.stdout and "gpu_lost" in listed.stdout
    # one clock per record: the dashboard's decision and the agent's steps share the fleet's time
    auth = ("admin", password)
    oncall = httpx.get(f"{demo.url}/api/incidents/1", auth=("oncall", second), timeout=10)
    assert oncall.status_code == 200, oncall.text
    trail = httpx.get(f"{demo.url}/api/audit?limit=1000&verify=false", auth=auth, timeout=10).json()["events"]
    stamps = [datetime.fromisoformat(e["ts"]) for e in sorted(trail, key=lambda e: e["seq"])]
    assert len(stamps) > 3 and stamps == sorted(stamps), "the audit trail's times go backwards"
    incident = httpx.get(f"{demo.url}/api/incidents/1", auth=auth, timeout=10).json()
    opened = datetime.fromisoformat(incident["opened_at"])
    recorded = [datetime.fromisoformat(t["ts"]) for t in incident["timeline"] if t["source"] != "finding"]
    assert recorded and min(recorded) >= opened, "something was recorded about the incident before it opened"
    node = httpx.get(f"{fleet_url}/api/v1/nodes/gpu-node-003", timeout=10).json()
    assert node["spec"].get("unschedulable") is True
    assert any("gpuops" in key for key in node["metadata"].get("annotations", {}))
