"""The agent's own errors. The core translates them into its error tree where it calls the graph
(`gpuops.agent_wiring`), so the agent never imports the core to raise."""

from __future__ import annotations


class AgentError(Exception):
    """Base of every error the agent raises on purpose."""


class IncidentNotFound(AgentError):
    """The incident a thread works on does not exist in the store."""


class ThreadNotFound(AgentError):
    """An incident has no graph thread to resume; start it first."""


class CheckpointConfigError(AgentError):
    """The database URL names a backend the checkpointer cannot use; use sqlite or postgresql."""
