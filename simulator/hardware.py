"""Healthy operating ranges of the simulated GPU model, from published specifications.

Sources:
- NVIDIA H100 Tensor Core GPU datasheet (H100 SXM5 80GB): max thermal design power up to 700 W,
  80 GB HBM3, max boost clock 1980 MHz.
- `nvidia-smi -q` on H100 80GB HBM3 (SXM5) systems as published in vendor and user reports:
  FB memory total 81559 MiB, memory clock 2619 MHz, idle SM clock around 345 MHz, idle power
  60–75 W, GPU slowdown temperature 89–90 °C and shutdown temperature 92 °C, GPU max
  operating temperature 87 °C, memory max operating temperature 95 °C.
- dcgm-exporter's README sample output on an H100 80GB HBM3 (idle SM clock 345 MHz, memory
  clock 2619 MHz).
Temperatures under sustained training load in air- or liquid-cooled HGX chassis sit around
60–75 °C (GPU) and a few degrees higher for HBM; idle GPUs sit around 30–35 °C at 20–27 °C inlet
(ASHRAE A1 recommended inlet 18–27 °C).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GpuModelSpec:
    """Static limits and typical operating points of one GPU model."""

    model_name: str
    fb_total_mib: int
    fb_reserved_mib: int
    power_limit_w: float
    idle_power_w: float
    max_sm_clock_mhz: float
    idle_sm_clock_mhz: float
    mem_clock_mhz: float
    slowdown_temp_c: float
    shutdown_temp_c: float
    max_operating_temp_c: float
    # Thermal resistance inlet -> die (°C/W) and time constant (s) of a healthy HGX slot: gives
    # ~30 °C idle and ~70 °C at 700 W with a 25 °C inlet.
    thermal_resistance_c_per_w: float
    thermal_tau_s: float
    hbm_offset_c_per_w: float
    nvlink_links: int
    pcie_gen5_bytes_per_s: float


H100_80GB_SXM = GpuModelSpec(
    model_name="NVIDIA H100 80GB HBM3",
    fb_total_mib=81559,
    fb_reserved_mib=479,
    power_limit_w=700.0,
    idle_power_w=68.0,
    max_sm_clock_mhz=1980.0,
    idle_sm_clock_mhz=345.0,
    mem_clock_mhz=2619.0,
    slowdown_temp_c=89.0,
    shutdown_temp_c=92.0,
    max_operating_temp_c=87.0,
    thermal_resistance_c_per_w=0.064,
    thermal_tau_s=90.0,
    hbm_offset_c_per_w=0.012,
    nvlink_links=18,
    pcie_gen5_bytes_per_s=64e9,
)

SPECS: dict[str, GpuModelSpec] = {"H100 80GB": H100_80GB_SXM}
DRIVER_VERSION = "550.127.05"
