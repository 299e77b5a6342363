"""`gpuops sim`: help, batch OpenMetrics output with ground truth, clear refusals."""

from __future__ import annotations

import json
from pathlib import Path

import click
from click.testing import CliRunner

from entrypoints.commands import sim as sim_commands


def cli() -> click.Group:
    group = click.Group("gpuops")
    sim_commands.register(group)
    return group


def scenario_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(body)
    return path


def test_help_names_the_options() -> None:
    result = CliRunner().invoke(cli(), ["sim", "--help"])
    assert result.exit_code == 0
    for option in (
        "--scenario",
        "--nodes",
        "--gpus-per-node",
        "--seed",
        "--speed",
        "--port",
        "--truth",
        "--openmetrics",
        "--external-node-agent",
        "--json",
    ):
        assert option in result.output


def test_batch_writes_openmetrics_and_truth(tmp_path: Path) -> None:
    path = scenario_file(
        tmp_path,
        """
name: tiny
seed: 3
fleet: {nodes: 2, gpus_per_node: 2}
duration: 10m
step: 30s
faults:
  - {kind: xid79, node: gpu-node-002, gpu: 1, at: 5m}
""",
    )
    out, truth = tmp_path / "t.om", tmp_path / "truth.json"
    result = CliRunner().invoke(
        cli(), ["sim", "--scenario", str(path), "--openmetrics", str(out), "--truth", str(truth), "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["samples"] > 0 and summary["faults"] == 1
    text = out.read_text()
    assert text.endswith("# EOF\n")
    assert text.count("# TYPE DCGM_FI_DEV_GPU_TEMP gauge") == 1
    assert "# TYPE DCGM_FI_DEV_ECC_SBE_VOL_TOTAL unknown" in text
    temps = [line for line in text.splitlines() if line.startswith("DCGM_FI_DEV_GPU_TEMP{")]
    # 4 GPUs × 20 steps (30 s … 600 s), minus the fallen GPU's 11 steps from 300 s on
    assert len(temps) == 4 * 20 - 11
    stamps = [float(line.rsplit(" ", 1)[1]) for line in temps]
    assert stamps == sorted(stamps)
    facts = json.loads(truth.read_text())
    assert facts["faults"][0]["kind"] == "xid79" and facts["faults"][0]["failure_s"] == 300


def test_overrides_apply(tmp_path: Path) -> None:
    out = tmp_path / "o.om"
    result = CliRunner().invoke(
        cli(),
        [
            "sim",
            "--nodes",
            "1",
            "--gpus-per-node",
            "2",
            "--duration",
            "1m",
            "--openmetrics",
            str(out),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = [line for line in out.read_text().splitlines() if line.startswith("DCGM_FI_DEV_SM_CLOCK{")]
    assert len(lines) == 2 * 4  # 2 GPUs × four 15 s steps


def test_bad_scenario_is_refused_naming_the_field(tmp_path: Path) -> None:
    path = scenario_file(tmp_path, "name: x\nfleet: {nodes: many}\n")
    result = CliRunner().invoke(cli(), ["sim", "--scenario", str(path), "--openmetrics", str(tmp_path / "o")])
    assert result.exit_code == 2 and "fleet.nodes" in result.output
    path = scenario_file(
        tmp_path, "name: x\nfaults: [{kind: straggler, node: gpu-node-001, gpu: 0, at: 1m, slowdown: 9}]\n"
    )
    result = CliRunner().invoke(cli(), ["sim", "--scenario", str(path), "--openmetrics", str(tmp_path / "o")])
    assert result.exit_code == 2 and "slowdown" in result.output
    result = CliRunner().invoke(cli(), ["sim", "--scenario", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "cannot read" in result.output
