"""The node agent reads nvidia-smi's CSV queries and `dcgmi diag -j` as NVIDIA documents them. The fixtures are
written from the documented formats (no NVIDIA GPU was at hand to record real ones)."""

from __future__ import annotations

import json

import pytest

from gpuops.nodeagent import nvidia
from gpuops.nodeagent.agent import failed_tests, verdict_line
from gpuops.nodeagent.commands import command_line, run_command
from gpuops.nodeagent.settings import NodeAgentSettings

UUIDS = """0, GPU-34bf77d1-c686-6821-79a8-32d326c5039c
1, GPU-f5046fa5-3db4-45e8-870a-dc1376becaa5
"""
APPS = """GPU-34bf77d1-c686-6821-79a8-32d326c5039c, 31337, /usr/bin/python3
GPU-f5046fa5-3db4-45e8-870a-dc1376becaa5, 4242, [Not Found]
"""
DCGM3 = {
    "DCGM GPU Diagnostic": {
        "test_categories": [
            {"category": "Deployment", "tests": [
                {"name": "Denylist", "results": [{"status": "Pass"}]},
                {"name": "Inforom", "results": [{"status": "Skip"}]},
            ]},
            {"category": "Hardware", "tests": [
                {"name": "GPU Memory", "results": [
                    {"gpu_ids": "0", "status": "Pass"},
                    {"gpu_ids": "1", "status": "Fail",
                     "warnings": [{"warning": "GPU 1: DBE errors found", "error_id": 71}]},
                ]},
                {"name": "Diagnostic", "results": [{"gpu_ids": "0", "status": "Warn", "info": ["slow clocks"]},
                                                   {"gpu_ids": "1", "status": "Pass"}]},
            ]},
        ]
    },
    "version": "3.3.5",
}
DCGM4 = {
    "DCGM Diagnostic": {
        "test_categories": [
            {"category": "Hardware", "tests": [
                {"name": "memory", "results": [
                    {"entity_group": "GPU", "entity_group_id": 1, "entity_id": 3, "status": "Fail",
                     "warnings": [{"message": "Memory test failed"}]},
                ], "test_summary": {"status": "Fail"}},
                {"name": "pcie", "results": [], "test_summary": {"status": "Skip"}},
            ]},
        ]
    },
    "version": "4.1.1",
}


def test_gpu_uuids_and_compute_apps() -> None:
    assert nvidia.gpu_uuids(UUIDS) == {0: "GPU-34bf77d1-c686-6821-79a8-32d326c5039c",
                                       1: "GPU-f5046fa5-3db4-45e8-870a-dc1376becaa5"}
    apps = nvidia.compute_apps(APPS)
    assert apps[0] == nvidia.ComputeApp("GPU-34bf77d1-c686-6821-79a8-32d326c5039c", 31337, "/usr/bin/python3")
    assert apps[1].name == "[Not Found]"
    assert nvidia.compute_apps("") == [] and nvidia.compute_apps("\n") == []


@pytest.mark.parametrize("text", ["No devices were found", "0, GPU-1, extra", "x, GPU-1"])
def test_unexpected_csv_is_refused(text: str) -> None:
    with pytest.raises(nvidia.OutputError):
        nvidia.gpu_uuids(text)


def test_dcgm3_diag_results() -> None:
    results = nvidia.diag_results("Successfully ran diagnostic for group.\n" + json.dumps(DCGM3, indent=4))
    assert [(r.test, r.gpu, r.status) for r in results] == [
        ("Denylist", None, "Pass"), ("Inforom", None, "Skip"), ("GPU Memory", 0, "Pass"), ("GPU Memory", 1, "Fail"),
        ("Diagnostic", 0, "Warn"), ("Diagnostic", 1, "Pass")]
    assert results[3].detail == "GPU 1: DBE errors found"
    assert failed_tests(results) == ["GPU Memory (GPU 1)"]
    assert verdict_line(2, results) == "dcgmi diag -r 2: failed (3 pass, 1 warn, 1 skip, 1 fail): GPU Memory (GPU 1)"
    assert results[4].as_status() == {"category": "Hardware", "test": "Diagnostic", "result": "Warn", "gpu": 0,
                                      "message": "slow clocks"}


def test_dcgm4_diag_results() -> None:
    results = nvidia.diag_results(json.dumps(DCGM4))
    assert [(r.test, r.gpu, r.status, r.detail) for r in results] == [
        ("memory", 3, "Fail", "Memory test failed"), ("pcie", None, "Skip", "")]


@pytest.mark.parametrize("text", [
    "Error: Unable to connect to host engine. Host engine connection invalid/disconnected.",
    '{"DCGM GPU Diagnostic": {}}',
    '{"DCGM GPU Diagnostic": {"test_categories": [{"tests": [{"name": "x", "results": [{"status": "Odd"}]}]}]}}',
])
def test_a_diag_that_did_not_run_is_no_result(text: str) -> None:
    with pytest.raises(nvidia.OutputError):
        nvidia.diag_results(text)


def test_commands_are_configurable_and_bounded() -> None:
    assert command_line("'/opt/nvidia tools/nvidia-smi' -q") == ["/opt/nvidia tools/nvidia-smi", "-q"]
    with pytest.raises(ValueError):
        NodeAgentSettings(dcgmi="  ")
    hung = run_command(["sleep", "30"], timeout_s=0.2)
    assert hung.timed_out and hung.returncode is None and "did not finish in time" in hung.last_line()
    missing = run_command(["/nonexistent/nvidia-smi"], timeout_s=1)
    assert missing.missing and missing.last_line() == "/nonexistent/nvidia-smi not found"
    failed = run_command(["sh", "-c", "echo first; echo 'the last line' >&2; exit 3"], timeout_s=5)
    assert failed.returncode == 3 and failed.last_line() == "the last line"
