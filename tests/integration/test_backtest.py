"""`gpuops backtest` through a real Prometheus: a scenario's telemetry is written in batch, loaded with promtool,
replayed cycle by cycle; abrupt faults are found within two scrape steps, findings follow the contract."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from detectors.findings import FINDING_KINDS, SEVERITIES
from tests.conftest import GPUOPS, gpuops_env
from tests.prometheus_server import running_prometheus

SCENARIO = """
name: backtest-abrupt
seed: 7
fleet: {nodes: 4, gpus_per_node: 8, gpu_model: H100 80GB}
duration: 50m
step: 15s
faults:
  - {kind: xid79, node: gpu-node-002, gpu: 3, at: 20m}
  - {kind: node_not_ready, node: gpu-node-003, at: 30m, duration: 10m}
approval: auto_approve
"""


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


@pytest.fixture(scope="module")
def backtest_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, object]], dict[str, object]]:
    promtool = shutil.which("promtool")
    assert promtool, "promtool comes with Debian's prometheus package; run scripts/ensure-services.sh"
    work = tmp_path_factory.mktemp("backtest")
    (work / "scenario.yaml").write_text(SCENARIO)
    sim = subprocess.run([GPUOPS, "sim", "--scenario", str(work / "scenario.yaml"), "--openmetrics",
                          str(work / "om.txt"), "--truth", str(work / "truth.json"), "--json"],
                         env=gpuops_env(), capture_output=True, text=True, timeout=120)
    assert sim.returncode == 0, sim.stderr
    blocks = subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", str(work / "om.txt"),
                             str(work / "data")], capture_output=True, text=True, timeout=120)
    assert blocks.returncode == 0, blocks.stderr
    truth = json.loads((work / "truth.json").read_text())
    start, step = float(truth["start"]), float(truth["step"])
    # Backfilled blocks carry no staleness markers (a scraping Prometheus writes one at the first scrape that
    # misses a series), so the lookback is one scrape step: vanished series vanish as they do live.
    with running_prometheus(work / "prom", storage=work / "data",
                            extra_args=[f"--query.lookback-delta={int(step)}s"]) as prom:
        out = work / "findings.jsonl"
        run = subprocess.run([GPUOPS, "backtest", "--prometheus-url", prom.url, "--start", _iso(start + step),
                              "--end", _iso(start + 50 * 60), "--step", "15s", "--out", str(out),
                              "--incidents-out", str(work / "incidents.jsonl"), "--json"],
                             env=gpuops_env(), capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr
    findings = [json.loads(line) for line in out.read_text().splitlines()]
    incidents = [json.loads(line) for line in (work / "incidents.jsonl").read_text().splitlines()]
    assert json.loads(run.stdout)["incidents"] == len(incidents)
    return findings, {**truth, "paged": incidents}


def test_findings_follow_the_contract(backtest_run: tuple[list[dict[str, object]], dict[str, object]]) -> None:
    findings, _ = backtest_run
    assert findings
    keys = {"ts", "hostname", "gpu", "uuid", "kind", "severity", "score", "predicted_failure_at", "detector",
            "evidence"}
    for f in findings:
        assert set(f) == keys
        assert f["kind"] in FINDING_KINDS and f["severity"] in SEVERITIES
        assert str(f["ts"]).endswith("Z") and isinstance(f["evidence"], dict)
    assert [f["ts"] for f in findings] == sorted(f["ts"] for f in findings)  # type: ignore[type-var]


@pytest.mark.parametrize(("kind", "finding_kinds"), [("xid79", {"gpu_lost", "xid"}),
                                                     ("node_not_ready", {"node_not_ready"})])
def test_abrupt_faults_are_found_within_two_scrape_steps(
    backtest_run: tuple[list[dict[str, object]], dict[str, object]], kind: str, finding_kinds: set[str]
) -> None:
    findings, truth = backtest_run
    fault = next(f for f in truth["faults"] if f["kind"] == kind)  # type: ignore[attr-defined]
    onset = _parse(fault["onset"])
    hits = [f for f in findings if f["kind"] in finding_kinds and f["hostname"] == fault["node"]
            and (fault["gpu"] is None or f["gpu"] in (fault["gpu"], None)) and _parse(str(f["ts"])) >= onset]
    assert hits, f"{kind} on {fault['node']} was not detected"
    delay = _parse(str(hits[0]["ts"])) - onset
    assert delay <= 2 * float(truth["step"]), f"{kind} detected {delay:.0f}s after onset"


def test_bad_range_is_refused(tmp_path: Path) -> None:
    run = subprocess.run([GPUOPS, "backtest", "--prometheus-url", "http://127.0.0.1:9", "--start",
                          "2026-01-01T01:00:00Z", "--end", "2026-01-01T00:00:00Z", "--out",
                          str(tmp_path / "f.jsonl")], env=gpuops_env(), capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and "--end" in run.stderr


def test_unreachable_prometheus_fails_loudly(tmp_path: Path) -> None:
    run = subprocess.run([GPUOPS, "backtest", "--prometheus-url", "http://127.0.0.1:9", "--start",
                          "2026-01-01T00:00:00Z", "--end", "2026-01-01T00:05:00Z", "--timeout", "2", "--out",
                          str(tmp_path / "f.jsonl")], env=gpuops_env(), capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and "Traceback" not in run.stderr and "Error" in run.stderr


def test_the_incidents_a_user_is_paged_with(backtest_run: tuple[list[dict[str, object]], dict[str, object]]) -> None:
    """Each fault pages once, on its node, through the production incident service; nothing else pages."""
    _, truth = backtest_run
    paged: list[dict[str, object]] = truth["paged"]  # type: ignore[assignment]
    for row in paged:
        assert set(row) >= {"opened_at", "hostname", "gpu", "kind", "scope", "severity", "findings"}
        assert str(row["opened_at"]).endswith("Z") and row["findings"]
    assert sorted(str(row["hostname"]) for row in paged) == ["gpu-node-002", "gpu-node-003"]
    xid = next(row for row in paged if row["hostname"] == "gpu-node-002")
    assert xid["gpu"] == 3 and xid["severity"] == "critical"
