"""The deployment files: docker-compose.yml validates against the Compose Specification's JSON schema and wires
the roles together; the Kubernetes manifests grant exactly the connector's calls; every container runs a real
`gpuops` command."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from typing import Any

import click
import jsonschema
import pytest
import yaml

from entrypoints.cli import cli
from tests.conftest import REPO_ROOT

CACHE = REPO_ROOT / ".cache"
COMPOSE_WHEEL = "docker-compose==1.29.2"  # ships the Compose Specification schema as compose/config/compose_spec.json


def compose_schema() -> dict[str, Any]:
    """The schema, fetched once with pip into the ignored .cache folder (also `make deploy-schema`)."""
    target = CACHE / "compose_spec.json"
    if not target.exists():
        wheels = CACHE / "wheels"
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", COMPOSE_WHEEL, "-d", str(wheels)],
                       check=True, timeout=120)
        (wheel,) = wheels.glob("docker_compose-1.29.2-*.whl")
        with zipfile.ZipFile(wheel) as z:
            target.write_bytes(z.read("compose/config/compose_spec.json"))
    schema: dict[str, Any] = json.loads(target.read_text())
    return schema


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    return data


def gpuops_command(args: list[str]) -> str:
    """The `gpuops` subcommand the args run (the top-level group, then a nested group like `db upgrade`)."""
    command = cli.get_command(click.Context(cli), args[0])
    assert command is not None, f"gpuops has no command {args[0]!r}"
    if args[0] == "db":
        assert args[1] in command.commands  # type: ignore[attr-defined]
    return args[0]


def test_compose_file_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    validator = jsonschema.Draft201909Validator(compose_schema())
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]


def test_the_schema_check_catches_a_broken_file(compose: dict[str, Any]) -> None:
    broken = {**compose, "services": {**compose["services"], "worker": {**compose["services"]["worker"],
                                                                       "deploy": {"replicas": "many"}}}}
    assert not jsonschema.Draft201909Validator(compose_schema()).is_valid(broken)


def test_compose_wires_every_role(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"redis", "postgres", "prometheus", "twin", "migrate", "api", "worker", "beat"}
    commands = {name: gpuops_command(s["command"]) for name, s in services.items() if s.get("image") == "gpuops:latest"}
    assert commands == {"twin": "sim", "migrate": "db", "api": "api", "worker": "worker", "beat": "beat"}
    for name in ("api", "worker", "beat"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        env = services[name]["environment"]
        assert env["GPUOPS_BROKER_URL"].startswith("redis://redis:") and "@postgres:" in env["GPUOPS_DATABASE_URL"]
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker  # so `--scale worker=N` works
    assert services["beat"]["deploy"]["replicas"] == 1 and services["migrate"]["restart"] == "no"
    prometheus = yaml.safe_load((REPO_ROOT / "deploy/compose/prometheus.yml").read_text())
    targets = [t for job in prometheus["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == ["twin:9400"] and "9400" in services["twin"]["command"]


def test_dockerfile_copies_what_exists_and_runs_gpuops() -> None:
    lines = (REPO_ROOT / "Dockerfile").read_text().splitlines()
    for line in lines:
        if line.startswith("COPY") and "--from" not in line:
            for source in line.split()[1:-1]:
                assert (REPO_ROOT / source).exists(), source
    assert 'ENTRYPOINT ["gpuops"]' in lines and any(line.startswith("USER ") for line in lines)


def kubernetes_objects() -> list[dict[str, Any]]:
    base = REPO_ROOT / "deploy/kubernetes"
    kustomization = yaml.safe_load((base / "kustomization.yaml").read_text())
    objects = []
    for resource in kustomization["resources"]:
        objects += [doc for doc in yaml.safe_load_all((base / resource).read_text()) if doc]
    return objects


def granted_by(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


def test_kubernetes_rbac_is_least_privilege() -> None:
    roles = {o["metadata"]["name"]: o for o in kubernetes_objects() if o["kind"] == "ClusterRole"}
    assert set(roles) == {"gpuops", "gpuops-node-agent"}
    granted = granted_by(roles["gpuops"])
    expected = {("", "nodes", v) for v in ("get", "list", "watch", "patch")} | {
        ("", "pods", v) for v in ("get", "list", "watch", "patch", "delete")} | {
        ("", "pods/eviction", "create"), ("", "events", "create"),
        ("apps", "deployments/scale", "get"), ("apps", "deployments/scale", "patch")} | {
        ("gpuops.io", r, v) for r in ("gpuresets", "gpufences", "nodereboots", "nodevalidations")
        for v in ("create", "get", "list")}
    assert granted == expected
    assert not any("*" in part for grant in granted for part in grant)
    agent = granted_by(roles["gpuops-node-agent"])
    requests = ("gpuresets", "gpufences", "nodereboots", "nodevalidations")
    assert agent == {("gpuops.io", r, v) for r in requests for v in ("get", "list", "watch")} | {
        ("gpuops.io", f"{r}/status", v) for r in requests for v in ("patch", "update")} | {("", "nodes", "get")}
    bindings = {o["metadata"]["name"]: o for o in kubernetes_objects() if o["kind"] == "ClusterRoleBinding"}
    assert bindings["gpuops-node-agent"]["subjects"] == [
        {"kind": "ServiceAccount", "name": "gpuops-node-agent", "namespace": "gpuops"}]


def test_kubernetes_crds_match_the_node_agent_contract() -> None:
    crds = {o["spec"]["names"]["kind"]: o for o in kubernetes_objects() if o["kind"] == "CustomResourceDefinition"}
    assert set(crds) == {"GPUReset", "GPUFence", "NodeReboot", "NodeValidation"}
    for crd in crds.values():
        plural = crd["spec"]["names"]["plural"]
        assert crd["metadata"]["name"] == f"{plural}.gpuops.io" and crd["spec"]["scope"] == "Cluster"
        (version,) = crd["spec"]["versions"]
        assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
        assert version["subresources"] == {"status": {}}
        assert version["selectableFields"] == [{"jsonPath": ".spec.nodeName"}]
        schema = version["schema"]["openAPIV3Schema"]["properties"]
        assert "nodeName" in schema["spec"]["required"]
        status = schema["status"]["properties"]
        assert status["phase"]["enum"] == ["Pending", "Running", "Succeeded", "Failed"]
        assert {"message", "startTime", "completionTime", "heartbeatTime", "agent"} <= set(status)
    for kind in ("GPUReset", "GPUFence"):
        assert crds[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
            "required"] == ["nodeName", "gpu"]
    assert "bootID" in crds["NodeReboot"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
        "status"]["properties"]
    validation = crds["NodeValidation"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    assert validation["spec"]["properties"]["level"] == {"type": "integer", "minimum": 1, "maximum": 4, "default": 2}
    assert {"passed", "results", "failedTests"} <= set(validation["status"]["properties"])


def test_kubernetes_node_agent_daemonset() -> None:
    (ds,) = [o for o in kubernetes_objects() if o["kind"] == "DaemonSet"]
    spec = ds["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert ds["metadata"]["name"] == "gpuops-node-agent" and gpuops_command(container["args"]) == "node-agent"
    assert ds["spec"]["updateStrategy"]["rollingUpdate"]["maxSurge"] == 0
    assert spec["serviceAccountName"] == "gpuops-node-agent" and spec["hostPID"] is True
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert container["securityContext"]["privileged"] is True
    assert container["resources"]["limits"]["memory"] and container["resources"]["limits"]["cpu"]
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})  # it sees the GPUs, holds none
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert "systemctl reboot" in env["GPUOPS_NODE_AGENT_REBOOT_COMMAND"]["value"]


def test_kubernetes_workloads_run_gpuops_commands() -> None:
    objects = kubernetes_objects()
    pods = {o["metadata"]["name"]: o["spec"]["template"]["spec"] for o in objects if o["kind"] in ("Deployment", "Job")}
    commands = {name: gpuops_command(spec["containers"][0]["args"]) for name, spec in pods.items()
                if spec["containers"][0]["image"] == "gpuops"}
    assert commands == {"gpuops-api": "api", "gpuops-worker": "worker", "gpuops-beat": "beat",
                        "gpuops-migrate": "db"}
    beat = next(o for o in objects if o["metadata"]["name"] == "gpuops-beat")
    assert beat["spec"]["replicas"] == 1 and beat["spec"]["strategy"]["type"] == "Recreate"
    for name in ("gpuops-api", "gpuops-worker", "gpuops-beat"):
        assert pods[name]["serviceAccountName"] == "gpuops"
    assert pods["gpuops-migrate"]["automountServiceAccountToken"] is False
