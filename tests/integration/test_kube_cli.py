"""`gpuops cluster nodes|pods` against the twin over real HTTP."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from entrypoints.commands import cluster
from tests.integration.kube_twin import KubeTwin, gpu_deployment


@pytest.fixture
def twin() -> Iterator[KubeTwin]:
    twin = KubeTwin(speed=100).start()
    twin.state.add_node("gpu-node-001", 8)
    twin.state.add_node("gpu-node-002", 8)
    try:
        yield twin
    finally:
        twin.stop()


@pytest.fixture
def cli() -> click.Group:
    group = click.Group("gpuops")
    cluster.register(group)
    return group


def test_help(cli: click.Group) -> None:
    for args in (["cluster", "--help"], ["cluster", "nodes", "--help"], ["cluster", "pods", "--help"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0 and "Usage" in result.output


def test_nodes_json_shows_gpuops_cordon(cli: click.Group, twin: KubeTwin) -> None:
    twin.state.update_object(
        "nodes",
        "",
        "gpu-node-002",
        lambda n: {
            **n,
            "metadata": {**n["metadata"], "annotations": {"gpuops.io/cordoned-by": "gpuops"}},
            "spec": {"unschedulable": True},
        },
    )
    result = CliRunner().invoke(cli, ["cluster", "nodes", "--api-url", twin.url, "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert rows["gpu-node-001"]["ready"] == "Ready" and not rows["gpu-node-001"]["unschedulable"]
    assert rows["gpu-node-002"]["cordoned_by_gpuops"] and rows["gpu-node-002"]["gpus"] == 8
    table = CliRunner().invoke(
        cli, ["cluster", "nodes"], env={"GPUOPS_KUBE_API_URL": twin.url, "GPUOPS_KUBE_VERIFY_SSL": "false"}
    )
    assert "gpu-node-002" in table.output and "gpuops" in table.output


def test_pods_lists_gpus_and_flags(cli: click.Group, twin: KubeTwin) -> None:
    twin.state.add_deployment(gpu_deployment("train", 1, 8))
    result = CliRunner().invoke(cli, ["cluster", "pods", "gpu-node-001", "--api-url", twin.url, "--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)
    assert row["owner_kind"] == "Deployment" and row["gpu_indices"] == list(range(8))
    text = CliRunner().invoke(cli, ["cluster", "pods", "gpu-node-001", "--api-url", twin.url])
    assert "ml/train-" in text.output and "0,1,2,3,4,5,6,7" in text.output


def test_unreachable_server_is_a_clean_error(cli: click.Group) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = CliRunner().invoke(cli, ["cluster", "nodes", "--api-url", f"http://127.0.0.1:{port}"])
    assert result.exit_code == 1
    assert "cannot reach the Kubernetes API server" in result.output
    assert "Traceback" not in result.output
