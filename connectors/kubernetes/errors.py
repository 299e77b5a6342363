"""The one exception tree the cluster port raises; vendor errors are translated into it at the boundary.

Messages say what happened and what to do next, so runbooks and the agent can pass them on as is.
"""

from __future__ import annotations


class ClusterError(Exception):
    """Base of every error the cluster port raises."""


class NotFound(ClusterError):
    """The node, pod, deployment or request does not exist (it may have been deleted meanwhile)."""


class Conflict(ClusterError):
    """The object changed while we were writing it, or already exists; re-read and decide again."""


class AlreadyExists(Conflict):
    """An object with that name already exists."""


class DisruptionBlocked(ClusterError):
    """A PodDisruptionBudget still forbids evicting the pod when the deadline passed."""


class NotCordonedByGpuops(ClusterError):
    """gpuops refuses to uncordon a node it did not cordon (only what gpuops did is undone)."""


class InvalidRequest(ClusterError):
    """The API server rejected the request as malformed or invalid (400, 422)."""


class AccessDenied(ClusterError):
    """The API server refused our credentials (401, 403)."""


class ClusterUnavailable(ClusterError):
    """The API server could not be reached or failed (connection error, timeout, 5xx, throttling)."""


class ClusterNotConfigured(ClusterError):
    """No usable configuration says which cluster to talk to (not transient: retrying changes nothing)."""


class MalformedResponse(ClusterError):
    """The API server answered with something the client could not read (a broken or foreign server)."""
