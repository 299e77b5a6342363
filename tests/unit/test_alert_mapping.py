"""Alertmanager's alerts as findings: the node, GPU, kind and severity each alert's labels name."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from gpuops.incidents.alerts import AlertmanagerWebhook, WebhookAlert, finding_of, hostname_of, kind_of, severity_of

STARTS = "2026-06-01T12:00:00.123456789Z"


def alert(status: str = "firing", **labels: str) -> WebhookAlert:
    return WebhookAlert.model_validate({"status": status, "labels": labels, "annotations": {"summary": "hot"},
                                        "startsAt": STARTS, "endsAt": "0001-01-01T00:00:00Z",
                                        "fingerprint": "c0ffee0123456789", "generatorURL": "http://prom/graph"})


@pytest.mark.parametrize(("alertname", "kind"), [
    ("GPUXidError", "xid"), ("DCGMXidErrors", "xid"), ("GpuDoubleBitEccError", "ecc"), ("GPU_DBE_Volatile", "ecc"),
    ("GPURowRemapFailure", "row_remap"), ("GpuUncorrectableRemappedRows", "row_remap"),
    ("GPUTemperatureHigh", "thermal"), ("GpuThermalThrottling", "thermal"), ("NVLinkCRCErrors", "nvlink"),
    ("GpuPCIeReplayRate", "pcie"), ("GPUPowerViolation", "power"), ("GPUFallenOffBus", "gpu_lost"),
    ("GpuMissing", "gpu_lost"), ("KubeNodeNotReady", "node_not_ready"), ("GpuMemoryLeak", "memory_leak"),
    ("TrainingJobHung", "hung_job"), ("InferenceSaturated", "overload"), ("SomethingOdd", "anomaly"), ("", "anomaly"),
])
def test_common_alert_names_map_to_kinds(alertname: str, kind: str) -> None:
    assert kind_of({"alertname": alertname}) == kind


def test_a_rule_may_name_the_kind_itself_and_a_bad_name_falls_back() -> None:
    assert kind_of({"alertname": "Whatever", "gpuops_kind": "nvlink"}) == "nvlink"
    assert kind_of({"alertname": "GPUXidError", "gpuops_kind": "not-a-kind"}) == "xid"


@pytest.mark.parametrize(("labels", "host"), [
    ({"Hostname": "gpu-node-003", "instance": "10.0.0.3:9400"}, "gpu-node-003"),
    ({"hostname": "gpu-node-004"}, "gpu-node-004"), ({"node": "gpu-node-005"}, "gpu-node-005"),
    ({"instance": "gpu-node-006:9400"}, "gpu-node-006"), ({"instance": "[fd00::6]:9400"}, "fd00::6"),
    ({"instance": "fd00::7"}, "fd00::7"), ({"instance": "gpu-node-008"}, "gpu-node-008"),
    ({"job": "dcgm"}, None), ({"Hostname": "bad host/name"}, None),
])
def test_the_node_comes_from_hostname_node_or_instance(labels: dict[str, str], host: str | None) -> None:
    assert hostname_of(labels) == host


@pytest.mark.parametrize(("label", "severity"), [
    ("critical", "critical"), ("page", "critical"), ("Warning", "warning"), ("info", "info"), ("", "warning"),
    ("unheard-of", "warning")])
def test_severity_label(label: str, severity: str) -> None:
    assert severity_of({"severity": label}) == severity


def test_a_firing_alert_becomes_a_finding_with_its_evidence() -> None:
    found = finding_of(alert(alertname="GPUDoubleBitError", Hostname="gpu-node-002", gpu="5", severity="critical",
                             UUID="GPU-abc"))
    assert not isinstance(found, str)
    assert (found.hostname, found.gpu, found.uuid, found.kind, found.severity) == \
        ("gpu-node-002", 5, "GPU-abc", "ecc", "critical")
    assert found.ts == datetime(2026, 6, 1, 12, 0, 0, 123456, tzinfo=UTC).timestamp()
    assert found.detector == "alertmanager"
    assert found.evidence["fingerprint"] == "c0ffee0123456789" and found.evidence["summary"] == "hot"
    assert found.evidence["persistent"] is True


def test_alerts_that_name_no_node_or_a_bad_gpu_are_refused_with_a_reason() -> None:
    assert "no node label" in str(finding_of(alert(alertname="GPUXidError")))
    assert "not a GPU index" in str(finding_of(alert(alertname="GPUXidError", node="n1", gpu="all")))
    node_level = finding_of(alert(alertname="KubeNodeNotReady", node="n1"))
    assert not isinstance(node_level, str) and node_level.gpu is None


def payload(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"version": "4", "receiver": "gpuops", "status": "firing", "groupKey": "{}:{}",
                            "alerts": [{"status": "firing", "labels": {"alertname": "X"}, "startsAt": STARTS,
                                        "fingerprint": "abc123"}]}
    return {**body, **overrides}


def test_the_webhook_payload_is_version_4_with_its_fields() -> None:
    assert len(AlertmanagerWebhook.model_validate(payload()).alerts) == 1
    for bad in (payload(version="3"), payload(alerts=[{"status": "pending", "labels": {}, "startsAt": STARTS,
                                                       "fingerprint": "a"}]),
                payload(alerts=[{"status": "firing", "labels": {"a": 1}, "startsAt": STARTS, "fingerprint": "a"}]),
                payload(alerts=[{"status": "firing", "labels": {}, "startsAt": STARTS, "fingerprint": "../x"}]),
                {"receiver": "gpuops"}):
        with pytest.raises(ValidationError):
            AlertmanagerWebhook.model_validate(bad)


@pytest.mark.parametrize("alertname", ["InfiniBandPortDown", "NodeInfinibandLinkDegraded", "RDMAErrors",
                                       "IBLinkFlapping", "FabricPortErrors"])
def test_fabric_alerts_map_to_fabric(alertname: str) -> None:
    assert kind_of({"alertname": alertname}) == "fabric"
