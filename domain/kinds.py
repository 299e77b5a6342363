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
    FABRIC = "fabric"  # an InfiniBand/RoCE port: down, flapping, degraded, erroring, or its HCA lost
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


# Kinds that are facts, not suspicions: a GPU gone, an uncorrectable memory error, a node down.
HARD_KINDS = frozenset({FindingKind.GPU_LOST, FindingKind.ECC, FindingKind.ROW_REMAP, FindingKind.NODE_NOT_READY})


def is_hard(kind: str, severity: str, evidence: object = None) -> bool:
    """Whether a finding states a fact (a hard kind, or anything critical such as XID 79) rather than a
    suspicion that needs persistence and a second signal before anyone acts on it. A finding whose detector
    says no second signal confirms it (a node that went NotReady after someone cordoned it, a whole node's
    exporter falling silent) is a suspicion whatever its kind."""
    return (kind in HARD_KINDS or severity == Severity.CRITICAL) and is_corroborated(evidence)


def is_corroborated(evidence: object) -> bool:
    """Whether a soft finding's detector saw an independent second signal agree. Findings whose detector does
    not say (rules, hard signals) count as corroborated."""
    return not (isinstance(evidence, dict) and evidence.get("corroborated") is False)
