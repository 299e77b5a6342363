"""NVIDIA's XID catalogue: what each code means, how bad it is, and what NVIDIA recommends doing.

Recommended actions follow NVIDIA's XID error documentation, grouped by the action column.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from detectors.findings import FindingKind, Severity

XidAction = Literal[
    "restart_application", "count_and_trend", "reset_gpu", "reboot_node", "nvidia_workflow", "report",
]


@dataclass(frozen=True)
class XidEntry:
    """One XID code: its name, fault family, the finding kind and severity it raises, and the action."""

    code: int
    name: str
    family: str
    kind: FindingKind
    severity: Severity
    action: XidAction


def _entry(code: int, name: str, family: str, action: XidAction,
           kind: FindingKind = FindingKind.XID, severity: Severity | None = None) -> XidEntry:
    default: dict[XidAction, Severity] = {
        "restart_application": Severity.WARNING, "count_and_trend": Severity.INFO, "reset_gpu": Severity.CRITICAL,
        "reboot_node": Severity.CRITICAL, "nvidia_workflow": Severity.CRITICAL, "report": Severity.WARNING,
    }
    return XidEntry(code, name, family, kind, severity or default[action], action)


_ENTRIES: tuple[XidEntry, ...] = (
    _entry(13, "Graphics engine exception", "application", "restart_application"),
    _entry(31, "GPU memory page fault", "application", "restart_application"),
    _entry(68, "Video processor exception", "application", "restart_application"),
    _entry(69, "Graphics engine class error", "application", "restart_application"),
    _entry(94, "Contained ECC error", "memory", "restart_application", kind=FindingKind.ECC),
    _entry(43, "GPU stopped processing (reset channel)", "application", "count_and_trend"),
    _entry(63, "Row remapping or page retirement recorded", "memory", "count_and_trend", kind=FindingKind.ROW_REMAP),
    _entry(92, "High single-bit ECC error rate", "memory", "count_and_trend", kind=FindingKind.ECC),
    _entry(121, "C2C link corrected error", "interconnect", "count_and_trend", kind=FindingKind.NVLINK),
    _entry(46, "GPU stopped processing", "hardware", "reset_gpu"),
    _entry(62, "Internal micro-controller halt", "firmware", "reset_gpu"),
    _entry(64, "Row remapping or page retirement failed to record", "memory", "reset_gpu", kind=FindingKind.ROW_REMAP),
    _entry(95, "Uncontained ECC error", "memory", "reset_gpu", kind=FindingKind.ECC),
    _entry(109, "Context switch timeout", "hardware", "reset_gpu"),
    _entry(119, "GSP RPC timeout", "firmware", "reset_gpu"),
    _entry(120, "GSP error", "firmware", "reset_gpu"),
    _entry(136, "Link training failure", "interconnect", "reset_gpu"),
    _entry(140, "Unrecovered ECC error", "memory", "reset_gpu", kind=FindingKind.ECC),
    _entry(143, "GPU initialisation failure", "hardware", "reset_gpu"),
    _entry(155, "Internal hardware error (reset required)", "hardware", "reset_gpu"),
    _entry(156, "Internal hardware error (reset required)", "hardware", "reset_gpu"),
    _entry(158, "Internal hardware error (reset required)", "hardware", "reset_gpu"),
    _entry(79, "GPU has fallen off the bus", "hardware", "reboot_node", kind=FindingKind.GPU_LOST),
    _entry(160, "Internal hardware error (node reboot required)", "hardware", "reboot_node"),
    _entry(45, "Preemptive cleanup after previous errors", "application", "nvidia_workflow",
           severity=Severity.WARNING),
    _entry(48, "Double-bit ECC error", "memory", "nvidia_workflow", kind=FindingKind.ECC),
    _entry(74, "NVLink error", "interconnect", "nvidia_workflow", kind=FindingKind.NVLINK),
    *(_entry(c, "NVLink or C2C link error", "interconnect", "nvidia_workflow", kind=FindingKind.NVLINK)
      for c in range(144, 151)),
    _entry(61, "Internal micro-controller breakpoint or warning", "firmware", "report"),
)

XID_CATALOGUE: dict[int, XidEntry] = {e.code: e for e in _ENTRIES}


def lookup(code: int) -> XidEntry:
    """The catalogue entry of a code; unknown codes are reported as a warning so nothing is lost."""
    entry = XID_CATALOGUE.get(code)
    if entry is not None:
        return entry
    return XidEntry(code, f"XID {code} (not in the catalogue)", "unknown", FindingKind.XID, Severity.WARNING, "report")
