"""Telemetry names the detectors read: dcgm-exporter's GPU fields and kube-state-metrics' node series."""

from __future__ import annotations

from detectors.findings import FindingKind

GPU_TEMP = "DCGM_FI_DEV_GPU_TEMP"
MEMORY_TEMP = "DCGM_FI_DEV_MEMORY_TEMP"
POWER_USAGE = "DCGM_FI_DEV_POWER_USAGE"
POWER_MGMT_LIMIT = "DCGM_FI_DEV_POWER_MGMT_LIMIT"  # the enforced power limit (W), where exported
SM_CLOCK = "DCGM_FI_DEV_SM_CLOCK"
GPU_UTIL = "DCGM_FI_DEV_GPU_UTIL"
MEM_COPY_UTIL = "DCGM_FI_DEV_MEM_COPY_UTIL"
FB_USED = "DCGM_FI_DEV_FB_USED"
FB_FREE = "DCGM_FI_DEV_FB_FREE"
GR_ENGINE_ACTIVE = "DCGM_FI_PROF_GR_ENGINE_ACTIVE"
SM_ACTIVE = "DCGM_FI_PROF_SM_ACTIVE"
PIPE_TENSOR_ACTIVE = "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE"
DRAM_ACTIVE = "DCGM_FI_PROF_DRAM_ACTIVE"
XID_ERRORS = "DCGM_FI_DEV_XID_ERRORS"
ECC_SBE_VOL_TOTAL = "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL"
ECC_DBE_VOL_TOTAL = "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL"
UNCORRECTABLE_REMAPPED_ROWS = "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS"
CORRECTABLE_REMAPPED_ROWS = "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS"
ROW_REMAP_FAILURE = "DCGM_FI_DEV_ROW_REMAP_FAILURE"
NVLINK_CRC_FLIT_ERRORS = "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL"
PCIE_REPLAY_COUNTER = "DCGM_FI_DEV_PCIE_REPLAY_COUNTER"
POWER_VIOLATION = "DCGM_FI_DEV_POWER_VIOLATION"
THERMAL_VIOLATION = "DCGM_FI_DEV_THERMAL_VIOLATION"

# kube-state-metrics' `kube_node_status_condition{condition="Ready",status="true"}`, carried as a node metric
# under this name: 1 while the node is Ready, 0 otherwise.
NODE_READY = 'kube_node_status_condition{condition="Ready",status="true"}'
# kube-state-metrics' `kube_node_spec_unschedulable`: 1 while the node is cordoned.
NODE_UNSCHEDULABLE = "kube_node_spec_unschedulable"

# Gauges a GPU keeps reporting while it is on the bus: when all of them are missing, the GPU is gone.
PRESENCE_METRICS: tuple[str, ...] = (GPU_TEMP, POWER_USAGE, GPU_UTIL, FB_USED, SM_CLOCK)

# Monotone counters whose rate is watched for change (metric -> finding kind).
COUNTER_RATE_METRICS: dict[str, FindingKind] = {
    ECC_SBE_VOL_TOTAL: FindingKind.ECC,
    NVLINK_CRC_FLIT_ERRORS: FindingKind.NVLINK,
    PCIE_REPLAY_COUNTER: FindingKind.PCIE,
}

# Gauges fed to the per-series baselines and the multivariate model (metric -> finding kind).
GAUGE_METRICS: dict[str, FindingKind] = {
    GPU_TEMP: FindingKind.THERMAL,
    MEMORY_TEMP: FindingKind.THERMAL,
    POWER_USAGE: FindingKind.POWER,
    SM_CLOCK: FindingKind.ANOMALY,
    GPU_UTIL: FindingKind.ANOMALY,
    FB_USED: FindingKind.ANOMALY,
}
