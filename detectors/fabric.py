"""The fabric detector: each InfiniBand/RoCE port in the frame (the node exporter's `node_infiniband_*`, one row per
node, HCA and port) checked once a cycle. Hard states are rules: a port not ACTIVE, a port training below the
fleet's rate, an HCA whose series vanished while the node's others still report. Error counters are rates: the
link going down and recovering again and again (a flap), symbol errors climbing (a bad cable or transceiver).

A condition is reported when it begins (a hard one once, a soft one on its first `soft_repeats` cycles, enough
for the incident service's flap control) and again only after it cleared: a port that stays down is one fact,
not a stream that would look like a fleet-wide event an hour later.

Every finding is about the node (gpu is null; the HCA and port are in the evidence, with the job the HCA's GPU
runs): a job slowed or stalled by one node's link is that node's incident, and its ranks' stalls on every node
fold into it as the job's consequence (gpuops.incidents)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from detectors.findings import Finding, FindingKind, Severity
from detectors.frame import FleetFrame, FloatArray
from detectors.stream import CycleView

STATE = "node_infiniband_state_id"
PHYS_STATE = "node_infiniband_physical_state_id"
RATE = "node_infiniband_rate_bytes_per_second"
LINK_DOWNED = "node_infiniband_link_downed_total"
SYMBOL_ERRORS = "node_infiniband_symbol_error_total"
ACTIVE = 4.0
HcaKey = tuple[str, str, str]


@dataclass(frozen=True)
class FabricLimits:
    flap_window_s: float = 15 * 60.0  # link-downs within this long count towards a flap
    flap_downs: int = 2               # … and this many make one
    symbol_errors_per_s: float = 1.0  # sustained over a cycle: a bad cable or transceiver
    soft_repeats: int = 3             # cycles a soft condition is reported for, once it begins


def _last(values: FloatArray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite[-1]) if finite.size else float("nan")


@dataclass
class FabricStage:
    """Streaming over cycles: remembers which ports reported, their counters, and recent link-downs."""

    limits: FabricLimits = field(default_factory=FabricLimits)
    name: str = "fabric"
    seen: set[HcaKey] = field(default_factory=set)
    counters: dict[tuple[HcaKey, str], float] = field(default_factory=dict)
    downs: dict[HcaKey, deque[float]] = field(default_factory=dict)
    ongoing: dict[HcaKey, tuple[str, int]] = field(default_factory=dict)  # condition, cycles reported

    def update(self, view: CycleView) -> list[Finding]:
        frame = view.frame
        state = frame.hca_metrics.get(STATE)
        if not frame.hcas or state is None or view.n_new <= 0:
            return []
        start, now = view.start, float(frame.timestamps[-1])
        elapsed = max(float(frame.timestamps[-1] - frame.timestamps[max(start - 1, 0)]), 1e-9)
        new = {name: arr[:, start:] for name, arr in frame.hca_metrics.items()}
        rates = new.get(RATE)
        fleet_rate = float(np.nanmax(rates[:, -1])) if rates is not None and np.isfinite(rates[:, -1]).any() \
            else float("nan")
        reporting = {frame.hcas[i][0] for i in range(len(frame.hcas)) if np.isfinite(new[STATE][i]).any()}
        found: dict[HcaKey, Finding] = {}
        for i, key in enumerate(frame.hcas):
            node = key[0]
            if not np.isfinite(new[STATE][i]).any():
                if key in self.seen and node in reporting:
                    found[key] = self._finding(frame, key, now, Severity.CRITICAL, "hca_lost", {})
                continue
            self.seen.add(key)
            st, phys = _last(new[STATE][i]), _last(new[PHYS_STATE][i]) if PHYS_STATE in new else float("nan")
            facts: dict[str, float] = {"state_id": st, "physical_state_id": phys}
            downs = self._increase(key, LINK_DOWNED, new.get(LINK_DOWNED), i)
            recent = self.downs.setdefault(key, deque())
            if downs > 0:
                recent.extend([now] * int(min(downs, 100)))
            while recent and recent[0] < now - self.limits.flap_window_s:
                recent.popleft()
            symbols = self._increase(key, SYMBOL_ERRORS, new.get(SYMBOL_ERRORS), i)
            rate = _last(rates[i]) if rates is not None else float("nan")
            if len(recent) >= self.limits.flap_downs:  # down now or not, it keeps going down
                found[key] = self._finding(frame, key, now, Severity.CRITICAL, "link_flap",
                                           {**facts, "link_downs_recent": float(len(recent))})
            elif st != ACTIVE:
                found[key] = self._finding(frame, key, now, Severity.CRITICAL, "link_down", facts)
            elif np.isfinite(rate) and np.isfinite(fleet_rate) and rate < fleet_rate:
                found[key] = self._finding(frame, key, now, Severity.CRITICAL, "link_degraded",
                                           {**facts, "rate_gbps": rate * 8 / 1e9,
                                            "fleet_rate_gbps": fleet_rate * 8 / 1e9})
            elif symbols / elapsed > self.limits.symbol_errors_per_s:
                found[key] = self._finding(frame, key, now, Severity.WARNING, "symbol_errors",
                                           {**facts, "symbol_errors_per_s": round(symbols / elapsed, 2)})
        return self._onsets(found)

    def _onsets(self, found: dict[HcaKey, Finding]) -> list[Finding]:
        """The findings whose condition began now (or, for a soft one, within its first cycles)."""
        out = []
        for key in [k for k in self.ongoing if k not in found]:
            del self.ongoing[key]  # cleared: reported again if it comes back
        for key, f in found.items():
            condition = str(f.evidence["condition"])
            previous, cycles = self.ongoing.get(key, ("", 0))
            cycles = cycles + 1 if previous == condition else 1
            self.ongoing[key] = (condition, cycles)
            limit = 1 if f.severity == Severity.CRITICAL else self.limits.soft_repeats
            if cycles <= limit:
                out.append(f)
        return out

    def _increase(self, key: HcaKey, metric: str, values: FloatArray | None, row: int) -> float:
        """How much a counter rose over the new columns (from its last value of the previous cycle); a reset
        (the counter going down) counts from zero."""
        if values is None:
            return 0.0
        finite = values[row][np.isfinite(values[row])]
        if finite.size == 0:
            return 0.0
        previous = self.counters.get((key, metric))
        series = finite if previous is None else np.concatenate([[previous], finite])
        steps = np.diff(series)
        self.counters[(key, metric)] = float(finite[-1])
        return float(np.where(steps >= 0, steps, series[1:]).sum())

    @staticmethod
    def _finding(frame: FleetFrame, key: HcaKey, now: float, severity: Severity, condition: str,
                 facts: dict[str, float]) -> Finding:
        node, device, port = key
        evidence: dict[str, object] = {"condition": condition, "device": device, "port": port,
                                       **{k: (None if not np.isfinite(v) else round(v, 3)) for k, v in facts.items()}}
        hca = device.rpartition("_")[2]
        if hca.isdigit():
            evidence["hca"] = int(hca)
            job = _job_on(frame, node, int(hca))
            if job:
                evidence["job"] = job
        return Finding(ts=now, hostname=node, gpu=None, uuid=None, kind=FindingKind.FABRIC, severity=severity,
                       score=1.0 if severity == Severity.CRITICAL else 0.7, detector=f"fabric.{condition}",
                       evidence=evidence)


def _job_on(frame: FleetFrame, node: str, gpu: int) -> str | None:
    """The job of the GPU whose traffic the HCA carries (HCA i beside GPU i)."""
    from domain.jobs import job_of

    for host, index, pod, namespace in zip(frame.gpus.hostname, frame.gpus.gpu, frame.gpus.pod,
                                           frame.gpus.namespace, strict=True):
        if host == node and index == gpu:
            return job_of(pod, namespace)
    return None
