"""The twin's API errors; each maps to one Kubernetes Status (code and reason)."""

from __future__ import annotations

from typing import Any


class KubeError(Exception):
    """An error the API server answers with a Status object."""

    code = 500
    reason = "InternalError"

    def __init__(self, message: str, *, kind: str = "", name: str = "", group: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.name = name
        self.group = group

    def status(self) -> dict[str, Any]:
        """The metav1.Status body for this error."""
        details: dict[str, Any] = {}
        if self.name:
            details["name"] = self.name
        if self.kind:
            details["kind"] = self.kind
        if self.group:
            details["group"] = self.group
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": details,
            "code": self.code,
        }


class NotFound(KubeError, KeyError):
    code = 404
    reason = "NotFound"

    def __str__(self) -> str:
        return self.message


class AlreadyExists(KubeError):
    code = 409
    reason = "AlreadyExists"


class Conflict(KubeError):
    code = 409
    reason = "Conflict"


class Gone(KubeError):
    """A watch asked for history the twin no longer keeps; the client lists again."""

    code = 410
    reason = "Expired"


class Invalid(KubeError):
    code = 422
    reason = "Invalid"


class BadRequest(KubeError):
    code = 400
    reason = "BadRequest"


class UnsupportedMediaType(KubeError):
    code = 415
    reason = "UnsupportedMediaType"


class MethodNotAllowed(KubeError):
    code = 405
    reason = "MethodNotAllowed"


class DisruptionBudgetBlocked(KubeError):
    """An eviction a PodDisruptionBudget does not allow now (HTTP 429, as the real API server)."""

    code = 429
    reason = "TooManyRequests"

    def status(self) -> dict[str, Any]:
        body = super().status()
        body["details"]["causes"] = [{"reason": "DisruptionBudget", "message": self.message}]
        return body
