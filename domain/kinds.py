"""What a finding is about and how bad it is, as ARCHITECTURE.md's Findings contract spells them. The values
are the contract's strings: a member equals its string and serialises as it."""

from __future__ import annotations

from enum import StrEnum


class FindingKind(StrEnum):
    """The kind of trouble a detector reports; an incident's family is the kind of its findings."""

    XID = "xid"
    GPU_LOST = "gpu_lost"
    ECC = "ecc"
    ROW_REMAP = "row_remap"
    THERMAL = "thermal"
    NVLINK = "nvlink"
    PCIE = "pcie"
    POWER = "power"
    STRAGGLER = "straggler"
    HUNG_JOB = "hung_job"
    MEMORY_LEAK = "memory_leak"
    NODE_NOT_READY = "node_not_ready"
    OVERLOAD = "overload"
    ANOMALY = "anomaly"


class Severity(StrEnum):
    """How urgent a finding or an incident is, from least to most."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """0 for info up to 2 for critical, for sorting and for taking the worst."""
        return _ORDER.index(self)


_ORDER = (Severity.INFO, Severity.WARNING, Severity.CRITICAL)
