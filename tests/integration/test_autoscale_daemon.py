"""`gpuops daemon` with autoscaling enabled but nothing it needs configured stops at start, saying what is
missing, instead of failing every 15 s in its log."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import GPUOPS, gpuops_env


def test_the_daemon_refuses_to_start_autoscaling_without_a_cluster(tmp_path: Path) -> None:
    env = gpuops_env(GPUOPS_DATABASE_URL=f"sqlite:///{tmp_path / 'gpuops.db'}", GPUOPS_AUTOSCALE_ENABLED="true",
                     GPUOPS_PROMETHEUS_URL="http://127.0.0.1:9", KUBECONFIG=str(tmp_path / "no-kubeconfig"))
    proc = subprocess.run([GPUOPS, "daemon", "--no-api"], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0
    assert "GPUOPS_AUTOSCALE_ENABLED is set, but:" in proc.stderr
    assert "Kubernetes configuration" in proc.stderr


def test_a_malformed_autoscaling_setting_stops_the_daemon_naming_it(tmp_path: Path) -> None:
    env = gpuops_env(GPUOPS_DATABASE_URL=f"sqlite:///{tmp_path / 'gpuops.db'}",
                     GPUOPS_AUTOSCALE_GPU_BUDGET="plenty")
    proc = subprocess.run([GPUOPS, "daemon", "--no-api"], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0
    assert "GPUOPS_AUTOSCALE_GPU_BUDGET" in proc.stderr and "Traceback" not in proc.stderr
