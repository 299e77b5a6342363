"""The deployment files: docker-compose.yml validates against the Compose Specification's JSON schema and wires
the roles together; the Kubernetes manifests grant exactly the connector's calls; every container runs a real
`gpuops` command."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from typing import Any

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
    command = cli.commands.get(args[0])
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


def test_kubernetes_rbac_is_least_privilege() -> None:
    (role,) = [o for o in kubernetes_objects() if o["kind"] == "ClusterRole"]
    granted = {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
               for resource in rule["resources"] for verb in rule["verbs"]}
    expected = {("", "nodes", v) for v in ("get", "list", "watch", "patch")} | {
        ("", "pods", v) for v in ("get", "list", "watch", "patch", "delete")} | {
        ("", "pods/eviction", "create"), ("", "events", "create"),
        ("apps", "deployments/scale", "get"), ("apps", "deployments/scale", "patch")} | {
        ("gpuops.io", r, v) for r in ("gpuresets", "nodereboots") for v in ("create", "get", "list")}
    assert granted == expected
    assert not any("*" in part for grant in granted for part in grant)


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
