"""The Finding: what a detector emits, in the shape of ARCHITECTURE.md's Findings contract. Its kinds and
severities are the shared vocabulary's (domain.kinds)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from domain.kinds import FindingKind, Severity

__all__ = ["FINDING_KINDS", "SEVERITIES", "Finding", "FindingKind", "Severity", "iso_utc"]

FINDING_KINDS: frozenset[str] = frozenset(FindingKind)
SEVERITIES: tuple[str, ...] = tuple(Severity)


def iso_utc(ts: float) -> str:
    """Unix seconds as ISO 8601 UTC with a trailing Z."""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ").replace(".000000Z", "Z")


@dataclass(frozen=True)
class Finding:
    """One detector's statement about a GPU or node at a data time `ts` (unix seconds)."""

    ts: float
    hostname: str
    gpu: int | None
    uuid: str | None
    kind: FindingKind
    severity: Severity
    score: float
    detector: str
    evidence: dict[str, Any] = field(default_factory=dict)
    predicted_failure_at: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in FINDING_KINDS:
            raise ValueError(f"unknown finding kind {self.kind!r}; expected one of {sorted(FINDING_KINDS)}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}; expected one of {SEVERITIES}")
        object.__setattr__(self, "kind", FindingKind(self.kind))  # a caller's plain string becomes the member
        object.__setattr__(self, "severity", Severity(self.severity))

    def to_json(self) -> dict[str, Any]:
        """The contract's JSON object (ISO timestamps, null for absent values)."""
        return {
            "ts": iso_utc(self.ts),
            "hostname": self.hostname,
            "gpu": self.gpu,
            "uuid": self.uuid,
            "kind": self.kind,
            "severity": self.severity,
            "score": float(self.score),
            "predicted_failure_at": (
                iso_utc(self.predicted_failure_at) if self.predicted_failure_at is not None else None
            ),
            "detector": self.detector,
            "evidence": self.evidence,
        }
