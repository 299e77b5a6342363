"""`gpuops cluster`: read-only views of the Kubernetes cluster through gpuops' own cluster port.

Changing the cluster is left to runbooks (behind policy and approval), so these commands only read.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

from connectors.kubernetes.adapter import KubernetesCluster
from connectors.kubernetes.errors import ClusterError
from connectors.kubernetes.models import NodeInfo, PodInfo

T = TypeVar("T")


def _connection_options(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--api-url",
            envvar="GPUOPS_KUBE_API_URL",
            default=None,
            help="Kubernetes API server URL (env GPUOPS_KUBE_API_URL), e.g. the fleet twin's.",
        ),
        click.option(
            "--token",
            envvar="GPUOPS_KUBE_TOKEN",
            default=None,
            help="Bearer token for --api-url (env GPUOPS_KUBE_TOKEN).",
        ),
        click.option(
            "--kubeconfig",
            envvar="KUBECONFIG",
            default=None,
            type=click.Path(dir_okay=False),
            help="Kubeconfig file when no --api-url is given (env KUBECONFIG).",
        ),
        click.option("--context", default=None, help="Kubeconfig context."),
        click.option(
            "--in-cluster",
            is_flag=True,
            envvar="GPUOPS_KUBE_IN_CLUSTER",
            help="Use the pod's service account (env GPUOPS_KUBE_IN_CLUSTER).",
        ),
        click.option(
            "--verify-ssl/--no-verify-ssl",
            default=True,
            envvar="GPUOPS_KUBE_VERIFY_SSL",
            help="Check the API server's TLS certificate for --api-url (env GPUOPS_KUBE_VERIFY_SSL).",
        ),
        click.option("--json", "as_json", is_flag=True, help="Machine-readable output."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _connect(
    api_url: str | None,
    token: str | None,
    kubeconfig: str | None,
    context: str | None,
    in_cluster: bool,
    verify_ssl: bool,
) -> KubernetesCluster:
    try:
        return KubernetesCluster.connect(
            api_url=api_url,
            token=token,
            kubeconfig=kubeconfig,
            context=context,
            in_cluster=in_cluster,
            verify_ssl=verify_ssl,
        )
    except ClusterError as exc:
        raise click.ClickException(str(exc)) from exc


def _run(cluster: KubernetesCluster, read: Callable[[KubernetesCluster], T]) -> T:
    try:
        return read(cluster)
    except ClusterError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        cluster.close()


def _node_row(node: NodeInfo) -> dict[str, Any]:
    ready = {True: "Ready", False: "NotReady", None: "Unknown"}[node.ready]
    return {
        "name": node.name,
        "ready": ready,
        "unschedulable": node.unschedulable,
        "cordoned_by_gpuops": node.cordoned_by_gpuops,
        "gpus": node.gpu_capacity,
        "gpus_allocatable": node.gpu_allocatable,
        "taints": [dataclasses.asdict(t) for t in node.taints],
        "annotations": dict(node.annotations),
    }


def _pod_row(pod: PodInfo) -> dict[str, Any]:
    row = dataclasses.asdict(pod)
    row["labels"], row["annotations"] = dict(pod.labels), dict(pod.annotations)
    row["gpu_indices"] = list(pod.gpu_indices)
    return row


@click.group("cluster")
def cluster_group() -> None:
    """Read the Kubernetes cluster the way gpuops sees it (nodes, cordons, pods and their GPUs)."""


@cluster_group.command("nodes")
@_connection_options
def nodes_command(
    api_url: str | None,
    token: str | None,
    kubeconfig: str | None,
    context: str | None,
    in_cluster: bool,
    verify_ssl: bool,
    as_json: bool,
) -> None:
    """List nodes: readiness, cordon (and whether gpuops owns it), GPUs, taints."""
    nodes = _run(
        _connect(api_url, token, kubeconfig, context, in_cluster, verify_ssl), lambda c: c.list_nodes()
    )
    rows = [_node_row(n) for n in nodes]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'NODE':<24} {'STATUS':<9} {'CORDON':<8} {'GPUS':>9}  TAINTS")
    for row in rows:
        cordon = "gpuops" if row["cordoned_by_gpuops"] else ("other" if row["unschedulable"] else "-")
        taints = ",".join(f"{t['key']}:{t['effect']}" for t in row["taints"]) or "-"
        gpus = f"{row['gpus_allocatable']}/{row['gpus']}"
        click.echo(f"{row['name']:<24} {row['ready']:<9} {cordon:<8} {gpus:>9}  {taints}")


@cluster_group.command("pods")
@click.argument("node")
@_connection_options
def pods_command(
    node: str,
    api_url: str | None,
    token: str | None,
    kubeconfig: str | None,
    context: str | None,
    in_cluster: bool,
    verify_ssl: bool,
    as_json: bool,
) -> None:
    """List the pods on NODE with what a drain needs to know: owner, GPUs, DaemonSet, emptyDir."""
    pods = _run(
        _connect(api_url, token, kubeconfig, context, in_cluster, verify_ssl), lambda c: c.list_pods(node)
    )
    rows = [_pod_row(p) for p in pods]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'NAMESPACE/POD':<48} {'PHASE':<10} {'OWNER':<12} {'GPUS':<16} FLAGS")
    for row in rows:
        flags = [
            f
            for f, on in (
                ("daemonset", row["is_daemonset"]),
                ("mirror", row["is_mirror"]),
                ("emptydir", row["uses_empty_dir"]),
                ("terminating", row["terminating"]),
            )
            if on
        ]
        gpus = ",".join(map(str, row["gpu_indices"])) or str(row["gpu_count"])
        click.echo(
            f"{row['namespace'] + '/' + row['name']:<48} {row['phase']:<10} "
            f"{row['owner_kind'] or '-':<12} {gpus:<16} {','.join(flags) or '-'}"
        )


def register(group: click.Group) -> None:
    group.add_command(cluster_group)
