"""A node's diagnostic before it returns to service: a NodeValidation request that the node agent carries out
(DCGM diag, runbooks/NODE_AGENT.md). It never blocks: the first examination creates the request and answers
"pending", later ones (the sweep) read it until the agent reports, or until no agent answered in time."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from connectors.kubernetes.errors import ClusterError
from connectors.kubernetes.port import NodeValidations
from gpuops.execution.returns import Check

CHECK = "node_validation"


def validation_name(node: str, request_id: str) -> str:
    """A DNS-1123 name, stable for one probation's examination (a new probation asks again)."""
    raw = f"gpuops-validate-{node}-{request_id}".lower()
    name = "".join(c if c.isalnum() or c == "-" else "-" for c in raw).strip("-")
    return name[:63].rstrip("-")


class ClusterNodeDiagnostics:
    """`NodeDiagnostics` through NodeValidation requests on the cluster."""

    def __init__(self, cluster: NodeValidations, *, level: int = 2, timeout_s: float = 3600.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.cluster = cluster
        self.level = level
        self.timeout_s = timeout_s
        self.clock = clock

    def diagnose(self, node: str, *, gpus: Sequence[int], request_id: str = "") -> list[Check]:
        name = validation_name(node, request_id or "once")
        try:
            request = self.cluster.request_node_validation(node, name=name, gpus=list(gpus), level=self.level)
        except ClusterError as exc:
            return [Check(CHECK, False, f"the NodeValidation {name} could not be created or read: {exc}",
                          pending=True)]
        if not request.finished:
            waited = self.clock() - request.created_at if request.created_at is not None else 0.0
            if waited > self.timeout_s:
                return [Check(CHECK, False, f"{name} still {request.phase} after {self.timeout_s:g}s: no node agent "
                                            f"answered (is the node-agent DaemonSet running on {node}?)")]
            return [Check(CHECK, False, f"{name} is {request.phase}: waiting for the node agent's diagnostic",
                          pending=True)]
        if request.phase == "Failed":
            return [Check(CHECK, False, f"{name}: the diagnostic could not run: {request.message}")]
        if request.passed:
            return [Check(CHECK, True, f"{name}: {request.message or 'DCGM diagnostics passed'}")]
        failed = ", ".join(request.failed_tests) or request.message
        return [Check(CHECK, False, f"{name}: DCGM diagnostics failed: {failed}")]
