"""The node agent's settings: environment variables `GPUOPS_NODE_AGENT_*` (or the CLI's options), checked at start.

Each command is a path and its arguments as one shell-like line; the agent appends the arguments the request
needs (`-i N`, `-r LEVEL -j`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gpuops.nodeagent.commands import command_line


class NodeAgentSettings(BaseSettings):
    """What the agent runs and how long it waits for each."""

    model_config = SettingsConfigDict(env_prefix="GPUOPS_NODE_AGENT_", extra="ignore")

    nvidia_smi: str = Field(default="nvidia-smi", description="nvidia-smi's path (and leading arguments)")
    dcgmi: str = Field(default="dcgmi", description="dcgmi's path (and leading arguments)")
    reboot_command: str = Field(
        default="nsenter -t 1 -m -u -i -n -p -- systemctl reboot",
        description="reboots the host: from a privileged pod with hostPID, through the host's init",
    )
    plugin_restart_command: str = Field(
        default="nsenter -t 1 -m -u -i -n -p -- pkill -x nvidia-device-plug",
        description="makes the NVIDIA device plugin list the node's GPUs again after a GPUFence (its container "
                    "restarts and enumerates through NVML, which no longer shows a drained GPU); pkill matches the "
                    "first 15 characters of a process name",
    )
    query_timeout_s: float = Field(default=30.0, gt=0, le=3600, description="an nvidia-smi query")
    reset_timeout_s: float = Field(default=120.0, gt=0, le=3600, description="nvidia-smi --gpu-reset")
    diag_timeout_s: float = Field(default=3600.0, gt=0, le=86_400, description="dcgmi diag (level 2: minutes)")
    reboot_timeout_s: float = Field(default=60.0, gt=0, le=3600, description="the reboot command to return")
    diag_level: int = Field(default=2, ge=1, le=4, description="dcgmi diag -r LEVEL unless the request says")
    watch_timeout_s: float = Field(default=60.0, gt=0, le=3600, description="one watch call before it is renewed")
    heartbeat_s: float = Field(
        default=10.0, gt=0, le=600,
        description="how often a running request's status.heartbeatTime is renewed; one silent for three of these "
                    "was left by an agent that is gone",
    )
    selector: Literal["field", "label"] = Field(
        default="field",
        description="how the agent picks its node's requests: a field selector on spec.nodeName (Kubernetes 1.31+), "
                    "or the gpuops.io/node label gpuops puts on each",
    )
    proc_root: str = Field(default="/proc", description="the host's /proc (hostPID): a holder's pod from its cgroup")
    retry_s: float = Field(default=5.0, gt=0, le=600, description="wait after the API server failed")

    @field_validator("nvidia_smi", "dcgmi", "reboot_command", "plugin_restart_command")
    @classmethod
    def _command(cls, value: str) -> str:
        command_line(value)
        return value
