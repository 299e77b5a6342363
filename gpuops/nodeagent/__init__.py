"""The node agent (`gpuops node-agent`, one pod per GPU node): carries out GPUReset, NodeReboot and NodeValidation
requests for its own node through the Kubernetes API (runbooks/NODE_AGENT.md)."""

from gpuops.nodeagent.agent import NodeAgent
from gpuops.nodeagent.settings import NodeAgentSettings

__all__ = ["NodeAgent", "NodeAgentSettings"]
