"""Prometheus text exposition in the exact shape of NVIDIA dcgm-exporter and kube-state-metrics.

dcgm-exporter writes, per counter, `# HELP` and `# TYPE` lines, then one line per GPU with the
labels `gpu`, `UUID`, `pci_bus_id`, `device`, `modelName`, `Hostname`, then the label fields
(`DCGM_FI_DRIVER_VERSION`) and the Kubernetes pod mapping (`container`, `namespace`, `pod`) in
Go's sorted map-key order; integer fields print as integers, double fields with `%f`.
Counters below come from its `default-counters.csv` and `dcp-metrics-included.csv` plus the extras
commonly enabled (ECC volatile totals, NVLink CRC totals, violations, `DCGM_EXP_XID_ERRORS_COUNT`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from simulator.physics import FleetPhysics


@dataclass(frozen=True)
class Counter:
    """One dcgm-exporter counter: its field name, Prometheus type, help text, how it prints."""

    name: str
    prom_type: str
    help: str
    integer: bool
    read: Callable[[FleetPhysics], npt.NDArray[np.float64]]


def _zeros(p: FleetPhysics) -> npt.NDArray[np.float64]:
    return np.zeros(p.n)


def _const(value: float) -> Callable[[FleetPhysics], npt.NDArray[np.float64]]:
    return lambda p: np.full(p.n, value)


COUNTERS: tuple[Counter, ...] = (
    Counter("DCGM_FI_DEV_SM_CLOCK", "gauge", "SM clock frequency (in MHz).", True, lambda p: p.sm_clock),
    Counter(
        "DCGM_FI_DEV_MEM_CLOCK",
        "gauge",
        "Memory clock frequency (in MHz).",
        True,
        lambda p: np.full(p.n, p.spec.mem_clock_mhz),
    ),
    Counter(
        "DCGM_FI_DEV_MEMORY_TEMP", "gauge", "Memory temperature (in C).", True, lambda p: p.reading_mem_temp
    ),
    Counter("DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (in C).", True, lambda p: p.reading_temp),
    Counter("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W).", False, lambda p: p.reading_power),
    Counter("DCGM_FI_DEV_POWER_MGMT_LIMIT", "gauge", "Power management limit (in W).", False,
            lambda p: p.power_limit),
    Counter(
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        "counter",
        "Total energy consumption since boot (in mJ).",
        True,
        lambda p: p.energy_mj,
    ),
    Counter(
        "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
        "counter",
        "Total number of PCIe retries.",
        True,
        lambda p: p.pcie_replay,
    ),
    Counter("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %).", True, lambda p: p.util),
    Counter(
        "DCGM_FI_DEV_MEM_COPY_UTIL",
        "gauge",
        "Memory utilization (in %).",
        True,
        lambda p: p.dram_active * 100.0,
    ),
    Counter("DCGM_FI_DEV_ENC_UTIL", "gauge", "Encoder utilization (in %).", True, _zeros),
    Counter("DCGM_FI_DEV_DEC_UTIL", "gauge", "Decoder utilization (in %).", True, _zeros),
    Counter(
        "DCGM_FI_DEV_XID_ERRORS",
        "gauge",
        "Value of the last XID error encountered.",
        True,
        lambda p: p.last_xid,
    ),
    Counter(
        "DCGM_FI_DEV_POWER_VIOLATION",
        "counter",
        "Throttling duration due to power constraints (in us).",
        True,
        lambda p: p.power_violation_us,
    ),
    Counter(
        "DCGM_FI_DEV_THERMAL_VIOLATION",
        "counter",
        "Throttling duration due to thermal constraints (in us).",
        True,
        lambda p: p.thermal_violation_us,
    ),
    Counter(
        "DCGM_FI_DEV_FB_FREE",
        "gauge",
        "Framebuffer memory free (in MiB).",
        True,
        lambda p: p.spec.fb_total_mib - p.spec.fb_reserved_mib - p.fb_used,
    ),
    Counter("DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer memory used (in MiB).", True, lambda p: p.fb_used),
    Counter(
        "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
        "counter",
        "Total number of single-bit volatile ECC errors.",
        True,
        lambda p: p.sbe,
    ),
    Counter(
        "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
        "counter",
        "Total number of double-bit volatile ECC errors.",
        True,
        lambda p: p.dbe,
    ),
    Counter(
        "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL",
        "counter",
        "Total number of NVLink flow-control CRC errors.",
        True,
        lambda p: p.crc_flit,
    ),
    Counter(
        "DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL",
        "counter",
        "Total number of NVLink data CRC errors.",
        True,
        lambda p: p.crc_data,
    ),
    Counter(
        "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL",
        "counter",
        "Total number of NVLink bandwidth counters for all lanes",
        True,
        lambda p: p.nvlink_bandwidth_kib,
    ),
    Counter("DCGM_FI_DEV_VGPU_LICENSE_STATUS", "gauge", "vGPU License status", True, _zeros),
    Counter(
        "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
        "counter",
        "Number of remapped rows for uncorrectable errors",
        True,
        lambda p: p.uncorrectable_remaps,
    ),
    Counter(
        "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
        "counter",
        "Number of remapped rows for correctable errors",
        True,
        lambda p: p.correctable_remaps,
    ),
    Counter(
        "DCGM_FI_DEV_ROW_REMAP_FAILURE",
        "gauge",
        "Whether remapping of rows has failed",
        True,
        lambda p: p.row_remap_failure,
    ),
    Counter(
        "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
        "gauge",
        "Ratio of time the graphics engine is active.",
        False,
        lambda p: p.gr_active,
    ),
    Counter(
        "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
        "gauge",
        "Ratio of cycles the tensor (HMMA) pipe is active.",
        False,
        lambda p: p.tensor_active,
    ),
    Counter(
        "DCGM_FI_PROF_DRAM_ACTIVE",
        "gauge",
        "Ratio of cycles the device memory interface is active sending or receiving data.",
        False,
        lambda p: p.dram_active,
    ),
    Counter(
        "DCGM_FI_PROF_PCIE_TX_BYTES",
        "gauge",
        "The rate of data transmitted over the PCIe bus - including both protocol headers and data "
        "payloads - in bytes per second.",
        True,
        lambda p: p.pcie_tx,
    ),
    Counter(
        "DCGM_FI_PROF_PCIE_RX_BYTES",
        "gauge",
        "The rate of data received over the PCIe bus - including both protocol headers and data "
        "payloads - in bytes per second.",
        True,
        lambda p: p.pcie_rx,
    ),
)
COUNTER_NAMES: tuple[str, ...] = tuple(c.name for c in COUNTERS)
XID_COUNT_NAME = "DCGM_EXP_XID_ERRORS_COUNT"
XID_COUNT_HELP = "Count of XID Errors within user-specified time window (see xid-count-window-size param)."
XID_WINDOW_MS = 300_000


def escape(value: str) -> str:
    """A label value escaped for the text format."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def format_values(values: npt.NDArray[np.float64], integer: bool) -> list[str]:
    """Values as dcgm-exporter prints them: `%d` for integer fields, `%f` for doubles."""
    if integer:
        return [str(v) for v in np.nan_to_num(values).astype(np.int64).tolist()]
    return [f"{v:f}" for v in values.tolist()]


def gpu_label_prefix(
    gpu: int, uuid: str, pci_bus_id: str, model_name: str, hostname: str, driver_version: str
) -> str:
    """The fixed labels of one GPU, in dcgm-exporter's order."""
    return (
        f'gpu="{gpu}",UUID="{uuid}",pci_bus_id="{pci_bus_id}",device="nvidia{gpu}",'
        f'modelName="{escape(model_name)}",Hostname="{escape(hostname)}",'
        f'DCGM_FI_DRIVER_VERSION="{driver_version}"'
    )


def pod_labels(pod: str, namespace: str, container: str) -> str:
    """The Kubernetes mapping labels (sorted like Go's map keys), or nothing for an unassigned GPU."""
    if not pod:
        return ""
    return f',container="{escape(container)}",namespace="{escape(namespace)}",pod="{escape(pod)}"'


def render_dcgm(
    physics: FleetPhysics,
    rows: Sequence[int],
    labels: Sequence[str],
    xid_counts: dict[int, dict[int, int]],
    suffix: str = "",
) -> str:
    """The /metrics body of every visible GPU (`rows`), `labels[i]` being row `rows[i]`'s label set.

    `suffix` follows every value: empty like the exporter, or a sample timestamp.
    """
    idx = np.asarray(rows, dtype=np.int64)
    out: list[str] = []
    for counter in COUNTERS:
        out.append(f"# HELP {counter.name} {counter.help}")
        out.append(f"# TYPE {counter.name} {counter.prom_type}")
        if len(idx):
            values = format_values(counter.read(physics)[idx], counter.integer)
            out.extend(
                f"{counter.name}{{{lab}}} {val}{suffix}" for lab, val in zip(labels, values, strict=True)
            )
    out.append(f"# HELP {XID_COUNT_NAME} {XID_COUNT_HELP}")
    out.append(f"# TYPE {XID_COUNT_NAME} gauge")
    for row, lab in zip(rows, labels, strict=True):
        counts = xid_counts.get(row)
        if not counts:
            out.append(f'{XID_COUNT_NAME}{{{lab},window_size_in_ms="{XID_WINDOW_MS}"}} 0{suffix}')
            continue
        for code, count in sorted(counts.items()):
            out.append(
                f'{XID_COUNT_NAME}{{{lab},window_size_in_ms="{XID_WINDOW_MS}",xid="{code}"}} {count}{suffix}'
            )
    out.append("")
    return "\n".join(out)


def _family(
    out: list[str], name: str, help_text: str, samples: Iterable[tuple[str, float]], suffix: str
) -> None:
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} gauge")
    out.extend(f"{name}{{{labels}}} {value:g}{suffix}" for labels, value in samples)


def render_kube_state(
    nodes: list[dict[str, Any]],
    pods: list[dict[str, Any]],
    deployments: list[dict[str, Any]],
    suffix: str = "",
) -> str:
    """kube-state-metrics series for nodes, pods and deployments, from their Kubernetes JSON."""
    out: list[str] = []
    conditions = []
    unschedulable = []
    capacity = []
    for node in nodes:
        name = escape(node["metadata"]["name"])
        for cond in node.get("status", {}).get("conditions") or []:
            for status in ("true", "false", "unknown"):
                value = 1.0 if str(cond.get("status", "")).lower() == status else 0.0
                conditions.append((f'node="{name}",condition="{cond["type"]}",status="{status}"', value))
        unschedulable.append((f'node="{name}"', 1.0 if node.get("spec", {}).get("unschedulable") else 0.0))
        gpus = node.get("status", {}).get("capacity", {}).get("nvidia.com/gpu")
        if gpus is not None:
            capacity.append((f'node="{name}",resource="nvidia_com_gpu",unit="integer"', float(gpus)))
    _family(out, "kube_node_status_condition", "The condition of a cluster node.", conditions, suffix)
    _family(
        out, "kube_node_spec_unschedulable", "Whether a node can schedule new pods.", unschedulable, suffix
    )
    _family(
        out, "kube_node_status_capacity", "The capacity for different resources of a node.", capacity, suffix
    )
    info, phases = [], []
    for pod in pods:
        md, status = pod["metadata"], pod.get("status", {})
        ns, name, uid = escape(md["namespace"]), escape(md["name"]), md.get("uid", "")
        owner: dict[str, Any] = next(iter(md.get("ownerReferences") or []), {})
        bound = escape(pod.get("spec", {}).get("nodeName") or "")
        info.append(
            (
                f'namespace="{ns}",pod="{name}",uid="{uid}",host_ip="{status.get("hostIP", "")}",'
                f'pod_ip="{status.get("podIP", "")}",node="{bound}",'
                f'created_by_kind="{owner.get("kind", "")}",created_by_name="{owner.get("name", "")}",'
                f'priority_class="",host_network="false"',
                1.0,
            )
        )
        phase = status.get("phase", "Unknown")
        for candidate in ("Pending", "Succeeded", "Failed", "Unknown", "Running"):
            phases.append(
                (
                    f'namespace="{ns}",pod="{name}",uid="{uid}",phase="{candidate}"',
                    1.0 if phase == candidate else 0.0,
                )
            )
    _family(out, "kube_pod_info", "Information about pod.", info, suffix)
    _family(out, "kube_pod_status_phase", "The pods current phase.", phases, suffix)
    spec_replicas, available = [], []
    for dep in deployments:
        md = dep["metadata"]
        key = f'namespace="{escape(md["namespace"])}",deployment="{escape(md["name"])}"'
        spec_replicas.append((key, float(dep.get("spec", {}).get("replicas", 1))))
        available.append((key, float(dep.get("status", {}).get("availableReplicas", 0))))
    _family(
        out,
        "kube_deployment_spec_replicas",
        "Number of desired pods for a deployment.",
        spec_replicas,
        suffix,
    )
    _family(
        out,
        "kube_deployment_status_replicas_available",
        "The number of available replicas per deployment.",
        available,
        suffix,
    )
    out.append("")
    return "\n".join(out)
