"""`gpuops sim`: run the fleet twin, live on a port or as a batch written to OpenMetrics."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from simulator.faults import build_faults
from simulator.scenario import Scenario, ScenarioError, read_scenario_data, scenario_from_dict
from simulator.scenario_files import scenario_from_file_data


def build_scenario(
    path: Path | None, nodes: int | None, gpus_per_node: int | None, seed: int | None, duration: str | None
) -> Scenario:
    """The scenario file (or the default fleet) with command-line overrides, validated once."""
    data: Any = read_scenario_data(path) if path else {"name": "default", "duration": "24h"}
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}: expected a mapping at the top level")
    fleet = dict(data.get("fleet") or {})
    if nodes is not None:
        fleet["nodes"] = nodes
    if gpus_per_node is not None:
        fleet["gpus_per_node"] = gpus_per_node
    data = {**data, "fleet": fleet}
    if seed is not None:
        data["seed"] = seed
    if duration is not None:
        data["duration"] = duration
    scenario = (
        scenario_from_file_data(data, source=str(path), folder=path.parent)  # replay paths are relative to it
        if path
        else scenario_from_dict(data, source="default scenario")
    )
    try:
        build_faults(scenario, scenario.start, np.random.default_rng(0))
    except ValueError as exc:
        raise ScenarioError(f"{path or 'scenario'}: {exc}") from exc
    return scenario


def _batch(scenario: Scenario, openmetrics: Path, truth: Path | None, as_json: bool) -> None:
    from simulator.batch import write_openmetrics
    from simulator.twin import Twin

    twin = Twin(scenario)
    began = time.perf_counter()
    samples = write_openmetrics(twin, openmetrics)
    elapsed = time.perf_counter() - began
    if truth:
        twin.write_truth(truth)
    summary = {
        "scenario": scenario.name,
        "seed": scenario.seed,
        "openmetrics": str(openmetrics),
        "samples": samples,
        "simulated_s": scenario.duration,
        "wall_s": round(elapsed, 3),
        "faults": len(twin.faults),
        "truth": str(truth) if truth else None,
    }
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(
            f"wrote {samples} samples of {scenario.name!r} ({scenario.duration:g}s simulated) to "
            f"{openmetrics} in {elapsed:.1f}s; load with: promtool tsdb create-blocks-from openmetrics "
            f"{openmetrics} DATA_DIR"
        )


def _serve(scenario: Scenario, host: str, port: int, speed: float, truth: Path | None, as_json: bool,
           external_node_agent: bool = False, sysfs: Path | None = None) -> None:
    import uvicorn

    from simulator.server import TwinClock, build_app
    from simulator.twin import Twin

    twin = Twin(scenario.model_copy(update={"start": float(int(time.time()))}), external_node_agent=external_node_agent)
    if truth:
        twin.write_truth(truth)
    clock = TwinClock(twin, speed=speed, sysfs_root=sysfs)
    announce = {
        "scenario": scenario.name,
        "url": f"http://{host}:{port}",
        "metrics": f"http://{host}:{port}/metrics",
        "speed": speed,
        "nodes": scenario.fleet.nodes,
        "gpus_per_node": scenario.fleet.gpus_per_node,
        "external_node_agent": external_node_agent,
        "sysfs": str(sysfs) if sysfs else None,
    }
    click.echo(
        json.dumps(announce)
        if as_json
        else f"serving twin {scenario.name!r} at {announce['url']} "
        f"(/metrics, Kubernetes API) at {speed:g}x real time"
    )
    clock.start()
    try:
        uvicorn.run(build_app(twin), host=host, port=port, log_level="warning")
    finally:
        clock.stop()
        if truth:
            twin.write_truth(truth)


@click.command("sim")
@click.option(
    "--scenario",
    "scenario_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Scenario YAML file (default: a fault-free fleet with the default workload mix).",
)
@click.option("--nodes", type=click.IntRange(1, 10_000), help="Override the fleet's node count.")
@click.option("--gpus-per-node", type=click.IntRange(1, 16), help="Override GPUs per node.")
@click.option("--seed", type=int, help="Override the scenario's seed.")
@click.option("--duration", help="Override the scenario's duration, e.g. 6h.")
@click.option(
    "--speed",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Simulated seconds per real second when serving.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=9400,
    show_default=True,
    help="Port for /metrics and the Kubernetes API.",
)
@click.option(
    "--truth",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the faults' ground truth (JSON) here.",
)
@click.option(
    "--openmetrics",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Batch mode: run the whole scenario now and write its telemetry as OpenMetrics here.",
)
@click.option(
    "--external-node-agent",
    is_flag=True,
    envvar="GPUOPS_SIM_EXTERNAL_NODE_AGENT",
    help="Leave GPUReset, NodeReboot and NodeValidation requests to `gpuops node-agent` processes (their "
    "nvidia-smi, dcgmi and reboot reach the simulated hosts at /sim/nodes/NODE/...).",
)
@click.option(
    "--sysfs",
    type=click.Path(path_type=Path, file_okay=False),
    help="When serving, keep each node's /sys/class/infiniband tree under DIR/<node>/ for a node exporter "
    "(--path.sysfs=DIR/<node> --collector.infiniband).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def sim(
    scenario_path: Path | None,
    nodes: int | None,
    gpus_per_node: int | None,
    seed: int | None,
    duration: str | None,
    speed: float,
    host: str,
    port: int,
    truth: Path | None,
    openmetrics: Path | None,
    external_node_agent: bool,
    sysfs: Path | None,
    as_json: bool,
) -> None:
    """Run the fleet twin: dcgm-exporter /metrics and a Kubernetes API on one port, or a batch file."""
    try:
        scenario = build_scenario(scenario_path, nodes, gpus_per_node, seed, duration)
    except ScenarioError as exc:
        raise click.UsageError(str(exc)) from exc
    if openmetrics is not None:
        _batch(scenario, openmetrics, truth, as_json)
    else:
        _serve(scenario, host, port, speed, truth, as_json, external_node_agent, sysfs)


def register(group: click.Group) -> None:
    group.add_command(sim)
