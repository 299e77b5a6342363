"""The shipped Grafana dashboards ask only for what exists: every panel of deploy/grafana/gpuops.json names
metrics a running gpuops serves on /metrics (scraped here from the real app over HTTP), every panel of
deploy/grafana/gpuops-fleet.json names dcgm-exporter and kube-state-metrics series, with their labels, as the
fleet twin serves them; every expression parses (promtool, the Prometheus project's own parser), and both are
dashboards Grafana can import (the fleet one with the `node` and `gpu` variables incident links set)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gpuops.store.models import Action, DetectorState, Incident, NotificationOutbox
from simulator.scenario import scenario_from_dict
from simulator.server import serve_twin
from simulator.twin import Twin
from tests.conftest import REPO_ROOT
from tests.web_server import serve, web_container

DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "gpuops.json"
FLEET_DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "gpuops-fleet.json"
DASHBOARDS = [DASHBOARD, FLEET_DASHBOARD]
GRAFANA_RANGES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "6h"}
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("", "_sum", "_count", "_created"), "gauge": ("",), "info": ("_info",),
            "stateset": ("",), "gaugehistogram": ("_bucket", "_gsum", "_gcount"), "unknown": ("",)}
# PromQL words that are not metric names: aggregation operators (written `sum by (x) (...)` too), their
# modifiers, set and comparison operators.
KEYWORDS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
            "quantile", "limitk", "limit_ratio", "by", "without", "on", "ignoring", "group_left", "group_right",
            "and", "or", "unless", "bool", "offset", "inf", "nan"}


def expressions(path: Path = DASHBOARD) -> list[str]:
    return [t["expr"] for p in json.loads(path.read_text())["panels"] for t in p.get("targets", [])]


def label_names(expr: str) -> set[str]:
    """Label names an expression matches on or aggregates by (`le` of histograms left out)."""
    names = {m.group(1) for block in re.findall(r"\{([^}]*)\}", expr)
             for m in re.finditer(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", block)}
    for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        names.update(n.strip() for n in group.split(",") if n.strip())
    return names - {"le"}


def with_ranges(expr: str) -> str:
    for variable, value in GRAFANA_RANGES.items():
        expr = expr.replace(variable, value)
    return expr


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions (followed by `(`),
    keywords, label names (inside `{...}` or the parentheses after by/without/on/ignoring) or strings."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "{}", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word, rest = match.group(), text[match.end():].lstrip()
        if rest.startswith("(") or word.lower() in KEYWORDS or word[0].isdigit():
            continue
        if word in ("e",) and re.match(r"\d", text[match.start() - 1:match.start()] or "x"):
            continue  # the exponent of a number such as 1e-9
        names.add(word)
    return names


def exported(metrics_text: str) -> set[str]:
    """Every series name a /metrics page can serve, a declared family without samples yet included."""
    names: set[str] = set()
    for family in text_string_to_metric_families(metrics_text):
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


@pytest.fixture(scope="module")
def metrics_page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """/metrics of a served app whose store holds two actions and a detection shard's state."""
    container = web_container(f"sqlite:///{tmp_path_factory.mktemp('grafana') / 'gpuops.db'}")
    try:
        with container.uow() as uow:
            incident = Incident(dedup_key="k", scope="node", family="ecc", hostname="gpu-node-001",
                                severity="critical", title="DBE")
            uow.session.add(incident)
            uow.flush()
            for n, status in enumerate(["succeeded", "failed", "succeeded"]):
                uow.session.add(Action(incident_id=incident.id, runbook="drain_node", plan_hash="h" * 64,
                                       idempotency_key=f"k{n}", status=status))
            uow.session.add(DetectorState(shard="0/1", last_ts=1_764_800_000.0, cycles=42))
            uow.session.add(NotificationOutbox(channel="pagerduty", incident_id=incident.id, event="trigger",
                                               status="pending"))
            uow.commit()
        with serve(container) as server:
            httpx.get(f"{server.url}/healthz", timeout=10)  # an HTTP request, so its series have samples too
            yield httpx.get(f"{server.url}/metrics", timeout=10).text
    finally:
        container.close()


@pytest.fixture(scope="module")
def served_metrics(metrics_page: str) -> set[str]:
    return exported(metrics_page)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_the_dashboard_is_importable(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        assert panel["gridPos"]["x"] >= 0 and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])


def test_every_panel_asks_only_for_metrics_gpuops_exports(served_metrics: set[str]) -> None:
    asked = set().union(*(metric_names(e) for e in expressions()))
    assert {"gpuops_incidents", "gpuops_actions", "gpuops_detection_cycles_total", "gpuops_notifications",
            "gpuops_http_request_duration_seconds_bucket", "gpuops_desired_replicas"} <= asked
    assert asked - served_metrics == set(), f"not on /metrics: {sorted(asked - served_metrics)}"


def test_actions_detection_cycles_and_notifications_come_from_the_store(metrics_page: str) -> None:
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(metrics_page) for s in family.samples}
    assert samples[("gpuops_actions", (("runbook", "drain_node"), ("status", "succeeded")))] == 2
    assert samples[("gpuops_actions", (("runbook", "drain_node"), ("status", "failed")))] == 1
    assert samples[("gpuops_detection_cycles_total", (("shard", "0/1"),))] == 42
    assert samples[("gpuops_detection_last_data_timestamp_seconds", (("shard", "0/1"),))] == 1_764_800_000.0
    assert samples[("gpuops_notifications", (("channel", "pagerduty"), ("status", "pending")))] == 1


def test_the_name_check_finds_what_is_not_exported(served_metrics: set[str]) -> None:
    expr = 'sum by (runbook) (rate(gpuops_action_total{status="verified"}[5m])) / on(route) gpuops_store_up'
    assert metric_names(expr) == {"gpuops_action_total", "gpuops_store_up"}
    assert metric_names(expr) - served_metrics == {"gpuops_action_total"}
    assert metric_names("histogram_quantile(0.9, x_bucket) * 1e-9 > bool 2") == {"x_bucket"}


def _promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: run scripts/ensure-services.sh (it installs Prometheus and its promtool)"
    return path


def _check(rules: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_promtool(), "check", "rules", str(rules)], capture_output=True, text=True, timeout=60,
                          check=False)


@pytest.fixture(scope="module")
def fleet_page() -> Iterator[str]:
    """The fleet twin's /metrics (dcgm-exporter and kube-state-metrics), over HTTP."""
    twin = Twin(scenario_from_dict({"name": "grafana", "seed": 3, "duration": "10m", "step": "15s", "faults": [],
                                    "fleet": {"nodes": 2, "gpus_per_node": 2, "gpu_model": "H100"}}))
    served = serve_twin(twin)
    try:
        yield httpx.get(f"{served.url}/metrics", timeout=10).text
    finally:
        served.stop()


def test_the_fleet_dashboard_asks_for_dcgm_series_by_their_labels(fleet_page: str) -> None:
    labels: dict[str, set[str]] = {}  # read as Prometheus does (prometheus_client's parser renames counters)
    for line in fleet_page.splitlines():
        if line and not line.startswith("#"):
            name = re.split(r"[{\s]", line, maxsplit=1)[0]
            labels.setdefault(name, set()).update(re.findall(r'([A-Za-z_][A-Za-z0-9_]*)="', line.split("}")[0]))
    dashboard = json.loads(FLEET_DASHBOARD.read_text())
    queries = [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    assert {v["name"] for v in dashboard["templating"]["list"]} >= {"node", "gpu"}  # what incident links set
    for expr in expressions(FLEET_DASHBOARD) + [q.replace("label_values(", "").rsplit(",", 1)[0] for q in queries]:
        names = metric_names(expr)
        assert names and names <= set(labels), f"{expr}: not served: {sorted(names - set(labels))}"
        wanted = label_names(expr) | ({q.rsplit(",", 1)[1].strip(" )") for q in queries if expr in q})
        served = set().union(*(labels[n] for n in names))
        assert wanted <= served, f"{expr}: labels {sorted(wanted - served)} are not on {sorted(names)}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_expression_parses(tmp_path: Path, path: Path) -> None:
    rules = [{"record": f"gpuops:dashboard_panel_{n}", "expr": with_ranges(e).replace("$node", ".*").replace(
        "$gpu", ".*")} for n, e in enumerate(expressions(path))]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = _check(path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(rules)} rules found" in result.stdout
    path.write_text(yaml.safe_dump({"groups": [{"name": "bad", "rules": [
        {"record": "x", "expr": "sum by (route (rate(gpuops_http_requests_total[5m]))"}]}]}))
    assert _check(path).returncode != 0  # the parser does refuse broken PromQL
