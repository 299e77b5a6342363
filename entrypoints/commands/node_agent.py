"""`gpuops node-agent`: the node agent's process (a DaemonSet pod per GPU node)."""

from __future__ import annotations

import os
import signal
import socket
import threading
from types import FrameType
from typing import Any

import click
from pydantic import ValidationError

from connectors.kubernetes.adapter import KubernetesCluster
from connectors.kubernetes.errors import ClusterError
from connectors.kubernetes.node_requests import KubernetesNodeRequests
from gpuops.logs import configure_logging
from gpuops.nodeagent import NodeAgent, NodeAgentSettings

SETTING_OPTIONS = {
    "nvidia_smi": "nvidia-smi's path and leading arguments",
    "dcgmi": "dcgmi's path and leading arguments",
    "reboot_command": "the command that reboots the host",
    "plugin_restart_command": "the command that restarts the device plugin after a GPU is fenced off",
    "diag_level": "dcgmi diag -r LEVEL when a NodeValidation names none",
    "query_timeout_s": "seconds for an nvidia-smi query",
    "reset_timeout_s": "seconds for nvidia-smi --gpu-reset",
    "diag_timeout_s": "seconds for dcgmi diag",
    "reboot_timeout_s": "seconds for the reboot command to return",
    "watch_timeout_s": "seconds of one watch call",
    "heartbeat_s": "seconds between heartbeats of a running request",
    "selector": "field (spec.nodeName, Kubernetes 1.31+) or label (gpuops.io/node)",
}


def _setting_options(command: Any) -> Any:
    for name, help_text in reversed(SETTING_OPTIONS.items()):
        flag = "--" + name.replace("_", "-")
        command = click.option(flag, name, default=None, help=f"{help_text} (env GPUOPS_NODE_AGENT_{name.upper()})")(
            command)
    return command


@click.command("node-agent")
@click.option("--node", envvar="NODE_NAME", required=True, help="This node's name (env NODE_NAME, the downward API).")
@click.option("--api-url", envvar="GPUOPS_KUBE_API_URL", default=None,
              help="Kubernetes API server URL (env GPUOPS_KUBE_API_URL); default: the pod's service account.")
@click.option("--token", envvar="GPUOPS_KUBE_TOKEN", default=None, help="Bearer token for --api-url.")
@click.option("--kubeconfig", envvar="KUBECONFIG", default=None, type=click.Path(dir_okay=False),
              help="Kubeconfig file, when neither --api-url nor a service account is there.")
@click.option("--verify-ssl/--no-verify-ssl", default=True, envvar="GPUOPS_KUBE_VERIFY_SSL")
@click.option("--agent-id", envvar="POD_NAME", default=None, help="Written into the requests it takes (env POD_NAME).")
@_setting_options
@click.pass_context
def node_agent(ctx: click.Context, /, node: str, api_url: str | None, token: str | None, kubeconfig: str | None,
               verify_ssl: bool, agent_id: str | None, **options: str | None) -> None:
    """Carry out this node's GPUReset, NodeReboot and NodeValidation requests (runbooks/NODE_AGENT.md)."""
    obj = ctx.obj or {}
    configure_logging(obj.get("log_format") or "text", obj.get("log_level") or "INFO")
    try:
        given: dict[str, Any] = {k: v for k, v in options.items() if v is not None}
        settings = NodeAgentSettings.model_validate(given)
    except ValidationError as exc:
        raise click.UsageError(f"node agent settings: {exc}") from exc
    in_cluster = api_url is None and kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ
    try:
        cluster = KubernetesCluster.connect(api_url=api_url, token=token, verify_ssl=verify_ssl,
                                            kubeconfig=kubeconfig, in_cluster=in_cluster)
    except ClusterError as exc:
        raise click.ClickException(str(exc)) from exc
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    requests = KubernetesNodeRequests(cluster.api_client, selector=settings.selector)
    agent = NodeAgent(node=node, requests=requests, settings=settings,
                      agent_id=agent_id or f"{socket.gethostname()}/{os.getpid()}")
    try:
        agent.run(stop)
    except ClusterError as exc:
        raise click.ClickException(f"node agent on {node}: {exc}") from exc
    finally:
        cluster.close()


def register(group: click.Group) -> None:
    group.add_command(node_agent)
